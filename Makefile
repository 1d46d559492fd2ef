# Two commands do all the set-up; each installs into .venv first.
#   make demo   the README's Quick Start, run for real in ./demo (started afresh each time):
#               write the digits sample and a config, search it, plot the study, retrain the best
#   make test   run the test suite
#   make images build the operator and the two trainer images, tagged with kubetune's version
#   make push REGISTRY=ghcr.io/acme   the same images tagged for that registry, pushed there;
#               then `helm install … --set image.registry=ghcr.io/acme` pulls them
.PHONY: demo test lint docs images push

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
	  ./scripts/build-kueue >/dev/null || echo "make test: scripts/build-kueue failed; tests/cluster/test_kueue.py will skip"; \
	else echo "make test: Go not found; tests/cluster (the real Kubernetes control plane) will skip. Install Go 1.26+ to run them."; fi
	$(VENV)/python -m pytest $(PYTEST_ARGS)

# ruff over everything; mypy with the settings in pyproject.toml (strict for the search
# core and the operator).
lint:
	./scripts/bootstrap
	$(VENV)/ruff check trainer_image operator tests bench scripts examples
	$(VENV)/mypy

# The documentation site, built strictly into ./site; the generated references must be
# current (regenerate them with `.venv/bin/python scripts/gen_docs.py`).
docs:
	./scripts/bootstrap
	$(VENV)/python scripts/gen_docs.py --check
	$(VENV)/mkdocs build --strict

# The three images the chart pulls (charts/kubetune/values.yaml, values-gpu.yaml), tagged
# with kubetune.__version__ = the chart's appVersion = the chart's default tag.
DOCKER ?= docker
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' trainer_image/kubetune/__init__.py)
PREFIX := $(if $(REGISTRY),$(patsubst %/,%,$(REGISTRY))/,)
# OCI labels every image shares (each Dockerfile stage sets its own title and description).
SOURCE := https://github.com/kubetune/kubetune
OCI := org.opencontainers.image
LABEL_ARGS = --label $(OCI).version=$(VERSION) --label $(OCI).revision=$(shell git rev-parse HEAD 2>/dev/null || echo unknown) \
  --label $(OCI).created=$(shell date -u +%Y-%m-%dT%H:%M:%SZ) --label $(OCI).source=$(SOURCE) --label $(OCI).url=$(SOURCE) \
  --label $(OCI).documentation=$(SOURCE)/blob/main/docs/kubernetes/install.md --label $(OCI).licenses=Apache-2.0 \
  --label $(OCI).vendor=kubetune
IMAGES := kubetune-operator kubetune-trainer-cpu kubetune-trainer-cuda

images:
	$(DOCKER) build -f operator/Dockerfile $(LABEL_ARGS) -t $(PREFIX)kubetune-operator:$(VERSION) .
	$(DOCKER) build -f trainer_image/Dockerfile --target cpu $(LABEL_ARGS) -t $(PREFIX)kubetune-trainer-cpu:$(VERSION) .
	$(DOCKER) build -f trainer_image/Dockerfile --target cuda $(LABEL_ARGS) -t $(PREFIX)kubetune-trainer-cuda:$(VERSION) .

push:
	@test -n "$(REGISTRY)" || { echo "make push: REGISTRY must name where your nodes pull from, e.g. make push REGISTRY=ghcr.io/acme" >&2; exit 2; }
	$(MAKE) images REGISTRY=$(REGISTRY)
	$(foreach image,$(IMAGES),$(DOCKER) push $(PREFIX)$(image):$(VERSION) &&) true
	@echo "pushed; install with: helm install kubetune charts/kubetune -n kubetune --create-namespace --set image.registry=$(patsubst %/,%,$(REGISTRY)) --set postgresql.auth.password=\$$PW"
