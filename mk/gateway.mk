# Gateway benchmark (`make serve` is in the main Makefile); included by the main Makefile, which defines PY and MODELS_DIR.
PY ?= .venv/bin/python
MODELS_DIR ?= exported_models
# e.g. BENCH_ARGS="--compare-tree /tmp/axon-before --duration 10" (see benchmarks/bench_gateway.py)
BENCH_ARGS ?=

.PHONY: bench

bench: install ## gateway benchmark: Axon vs BentoML adaptive batching vs Starlette+ORT (c=1/16/64)
	@test -f $(MODELS_DIR)/digits-cnn/1/model.onnx || $(PY) -m training models --models-dir $(MODELS_DIR)
	$(PY) benchmarks/bench_gateway.py --models-dir $(MODELS_DIR) $(BENCH_ARGS)
