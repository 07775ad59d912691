# Model services targets; included by the main Makefile, which defines PY and MODELS_DIR.
PY ?= .venv/bin/python
MODELS_DIR ?= exported_models
# e.g. WORKER_BENCH_ARGS="--families classifier --max-batch 4 --concurrency 8 --tree /tmp/axon-before --tree . --rounds 6" (see benchmarks/bench_worker.py)
WORKER_BENCH_ARGS ?=

.PHONY: bench-worker bench-cold-start gpu-check

bench-worker: ## requests/s and CPU per request through Redis to one worker, max batch 1 vs 64, per model family
	$(PY) benchmarks/bench_worker.py --models-dir $(MODELS_DIR) $(WORKER_BENCH_ARGS)

bench-cold-start: ## a held request answered by a worker started with it (scale from zero), per family
	$(PY) benchmarks/bench_cold_start.py --models-dir $(MODELS_DIR)

gpu-check: ## on an NVIDIA GPU machine, CUDA provider used, CUDA vs CPU diffs, throughput
	PYTHON=$(PY) bash scripts/gpu_check.sh $(MODELS_DIR)
