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
	$(VENV)/python -m pytest $(PYTEST_ARGS)

lint:
	./scripts/bootstrap
	$(VENV)/ruff check trainer_image operator tests bench
