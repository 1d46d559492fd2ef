#!/usr/bin/env bash
# The real-cluster test: a kind cluster, the CPU trainer and operator images built and
# loaded, `helm install` of charts/kubetune, the digits StudyJob run to Succeeded, and
# best_config.yaml plus plots checked on the results volume.
#
#   tests/e2e/kind/run.sh                 # create cluster kubetune-e2e, test, delete it
#   KUBETUNE_E2E_KEEP=1 tests/e2e/kind/run.sh      # keep the cluster (and release) afterwards
#   KUBETUNE_E2E_NODE_IMAGE=kindest/node:v1.29.14 tests/e2e/kind/run.sh   # another Kubernetes
#   KUBETUNE_E2E_SKIP_BUILD=1 ...         # reuse images already loaded into the cluster
#
# Needs docker (with a running engine), kind, kubectl and helm on PATH, and .venv
# (scripts/bootstrap). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../../.."

missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: not installed: ${missing[*]} (the kind e2e test needs docker, kind, kubectl, helm)" >&2
  exit 2
fi
if ! docker info >/dev/null 2>&1; then
  echo "run.sh: no Docker engine reachable (docker info failed); start Docker first" >&2
  exit 2
fi
./scripts/bootstrap
exec .venv/bin/python -m pytest tests/e2e/kind -m e2e -v -p no:cacheprovider \
  -o timeout=7200 "$@"
