# Gateway benchmark (`make serve` is in the main Makefile); included by the main Makefile, which defines PY and MODELS_DIR.
PY ?= .venv/bin/python
MODELS_DIR ?= exported_models
# e.g. BENCH_ARGS="--compare-tree /tmp/axon-before --duration 10" (see benchmarks/bench_gateway.py)
BENCH_ARGS ?=
# Axon and Starlette measured this many times in alternation; issue 12's targets are judged on the medians (BENCH_PAIRS=1 with --compare-tree)
BENCH_PAIRS ?= 3
# e.g. PROTOCOL_BENCH_ARGS="--duration 2 --worker onnx" (see benchmarks/bench_binary.py)
PROTOCOL_BENCH_ARGS ?=

# e.g. CPU_BENCH_ARGS="--tree /tmp/axon-before --tree . --rounds 3" or "--variant AXON_GC_THRESHOLD=0" (see benchmarks/bench_gateway_cpu.py)
CPU_BENCH_ARGS ?=
# e.g. JOBS_BENCH_ARGS="--rounds 5 --concurrency 16" (see benchmarks/bench_jobs.py)
JOBS_BENCH_ARGS ?=
# e.g. SHADOW_BENCH_ARGS="--rounds 5 --concurrency 16" (see benchmarks/bench_shadow.py)
SHADOW_BENCH_ARGS ?=

# e.g. CAPTURE_BENCH_ARGS="--rounds 5 --limit 500" (see benchmarks/bench_capture.py)
CAPTURE_BENCH_ARGS ?=

.PHONY: bench bench-tools bench-protocols bench-redis-client bench-gateway-cpu bench-jobs bench-shadow bench-capture bench-families

# wrk drives the load (Debian's package); installed when missing, as `make tools` does for tests.
bench-tools: ## install wrk (the benchmark's load generator) when it is missing
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null 2>&1 \
	  || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1) \
	  || { echo "bench-tools: could not install wrk (apt-get install wrk)" >&2; exit 1; }

bench-protocols: install ## REST JSON vs REST binary vs gRPC per request (1 and 64 images, 64 generated; c=1/8); fails if binary < 3x JSON at 64 images
	@test -f $(MODELS_DIR)/digits-cnn/1/model.onnx -a -f $(MODELS_DIR)/digits-gan/1/model.onnx \
	  || $(PY) -m training models --models-dir $(MODELS_DIR)
	$(PY) benchmarks/bench_binary.py --models-dir $(MODELS_DIR) $(PROTOCOL_BENCH_ARGS)

# Each part runs even when an earlier one failed its check (bench-protocols' 3x floor is
# machine-dependent); the target fails at the end if any did.
bench: install bench-tools ## bench-protocols, the gateway benchmark (Axon and Axon with 2 gateway processes against Starlette+ORT in 3 alternating pairs, BentoML adaptive batching; c=1/16/64), then bench-families
	@test -f $(MODELS_DIR)/digits-cnn/1/model.onnx -a -f $(MODELS_DIR)/digits-gan/1/model.onnx \
	  || $(PY) -m training models --models-dir $(MODELS_DIR)
	@status=0; \
	$(PY) benchmarks/bench_binary.py --models-dir $(MODELS_DIR) $(PROTOCOL_BENCH_ARGS) || status=1; \
	$(PY) benchmarks/bench_gateway.py --models-dir $(MODELS_DIR) --traced --gateway-workers 2 --pairs $(BENCH_PAIRS) $(BENCH_ARGS) || status=1; \
	$(PY) benchmarks/bench_families.py --models-dir $(MODELS_DIR) $(FAMILIES_BENCH_ARGS) || status=1; \
	exit $$status

bench-families: install bench-tools ## every model family (CNN, LSTM, GAN): Axon vs Starlette+ORT rows/s at c=16/64 (benchmarks/bench_families.py)
	@test -f $(MODELS_DIR)/digits-gan/1/model.onnx || $(PY) -m training models --models-dir $(MODELS_DIR)
	$(PY) benchmarks/bench_families.py --models-dir $(MODELS_DIR) $(FAMILIES_BENCH_ARGS)

bench-gateway-cpu: install bench-tools ## CPU µs per request of gateway / worker / Redis at c=64 (CPU_BENCH_ARGS="--tree DIR --tree DIR2" compares trees)
	@test -f $(MODELS_DIR)/digits-cnn/1/model.onnx || $(PY) -m training models --models-dir $(MODELS_DIR)
	$(PY) benchmarks/bench_gateway_cpu.py --models-dir $(MODELS_DIR) $(CPU_BENCH_ARGS)

bench-redis-client: install ## CPU and wall µs per Redis command: redis-py's asyncio client vs FastRedis's own connections (benchmarks/bench_redis_client.py)
	$(PY) benchmarks/bench_redis_client.py

bench-jobs: install ## sync p50/p99 alone vs with 1,000 async jobs queued / submitted meanwhile (ratios; benchmarks/bench_jobs.py)
	@test -f $(MODELS_DIR)/digits-cnn/1/model.onnx || $(PY) -m training models --models-dir $(MODELS_DIR)
	$(PY) benchmarks/bench_jobs.py --models-dir $(MODELS_DIR) $(JOBS_BENCH_ARGS)

bench-shadow: install ## primary p50/p99 with no shadow vs a shadow at 100 %, shadow worker at niceness 19 then 0 (ratios; benchmarks/bench_shadow.py)
	@test -f $(MODELS_DIR)/digits-cnn/1/model.onnx || $(PY) -m training models --models-dir $(MODELS_DIR)
	$(PY) benchmarks/bench_shadow.py --models-dir $(MODELS_DIR) --shadow-nice 19 $(SHADOW_BENCH_ARGS)
	$(PY) benchmarks/bench_shadow.py --models-dir $(MODELS_DIR) --shadow-nice 0 $(SHADOW_BENCH_ARGS)

bench-capture: install ## p50/p99 with capture off vs at 100 % (two gateways), then axon replay --version 2 on the captures (benchmarks/bench_capture.py)
	@test -f $(MODELS_DIR)/digits-cnn/1/model.onnx || $(PY) -m training models --models-dir $(MODELS_DIR)
	$(PY) benchmarks/bench_capture.py --models-dir $(MODELS_DIR) $(CAPTURE_BENCH_ARGS)
