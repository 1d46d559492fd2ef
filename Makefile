# Two commands do all the set-up; each installs into .venv first.
#   make demo   train on the bundled digits sample with the embedded SQLite default
#   make test   run the test suite
.PHONY: demo test search-demo lint

VENV := .venv/bin

demo:
	./scripts/bootstrap
	$(VENV)/ml-init-config --sample digits data/digits --optuna --yes --force
	$(VENV)/ml-train --config configs/digits_config.yaml --epochs 5
	@echo "TensorBoard logs are under runs/digits/: $(VENV)/tensorboard --logdir runs"

test:
	./scripts/bootstrap
	@if command -v go >/dev/null 2>&1; then ./scripts/build-kube >/dev/null || echo "make test: scripts/build-kube failed; tests/cluster will skip"; \
	else echo "make test: Go not found; tests/cluster (the real Kubernetes control plane) will skip. Install Go 1.26+ to run them."; fi
	$(VENV)/python -m pytest $(PYTEST_ARGS)

lint:
	./scripts/bootstrap
	$(VENV)/ruff check trainer_image operator tests bench
