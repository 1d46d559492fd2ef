# Two commands do all the set-up; each installs into .venv first.
#   make demo   the README's Quick Start, run for real in ./demo (started afresh each time):
#               write the digits sample and a config, search it, plot the study, retrain the best
#   make test   run the test suite
.PHONY: demo test lint docs

VENV := .venv/bin
DEMO := demo
STUDY := digits_optimization

# The four commands are the README's Quick Start as printed (tests/test_quick_start.py
# checks that they stay the same).
demo:
	./scripts/bootstrap
	rm -rf $(DEMO) && mkdir $(DEMO)
	cd $(DEMO) && PATH="$(CURDIR)/$(VENV):$$PATH" && \
	  ml-init-config --sample digits data/digits --optuna --yes && \
	  ml-search --config configs/digits_config.yaml && \
	  ml-visualise --mode search --study-name digits_optimization --format html && \
	  ml-train --config runs/optuna_studies/digits_optimization/best_config.yaml
	@echo "report:   $(DEMO)/runs/optuna_studies/$(STUDY)/plots/index.html"
	@echo "TensorBoard logs (every trial, then the retrained best config): $(DEMO)/runs"
	@echo "          $(VENV)/tensorboard --logdir $(DEMO)/runs"

test:
	./scripts/bootstrap
	@if command -v go >/dev/null 2>&1; then ./scripts/build-kube >/dev/null || echo "make test: scripts/build-kube failed; tests/cluster will skip"; \
	else echo "make test: Go not found; tests/cluster (the real Kubernetes control plane) will skip. Install Go 1.26+ to run them."; fi
	$(VENV)/python -m pytest $(PYTEST_ARGS)

# ruff over everything; mypy with the settings in pyproject.toml (strict for the search
# core and the operator).
lint:
	./scripts/bootstrap
	$(VENV)/ruff check trainer_image operator tests bench scripts
	$(VENV)/mypy

# The documentation site, built strictly into ./site; the generated references must be
# current (regenerate them with `.venv/bin/python scripts/gen_docs.py`).
docs:
	./scripts/bootstrap
	$(VENV)/python scripts/gen_docs.py --check
	$(VENV)/mkdocs build --strict
