# Load, soak and fault-injection targets (docs/reliability.md); included by the main
# Makefile, which defines PY, MODELS_DIR and install.
PY ?= .venv/bin/python
MODELS_DIR ?= exported_models
LOAD_OUT ?= runs/loadtest
SOAK_OUT ?= runs/soak
CHAOS_OUT ?= runs/chaos

.PHONY: loadtest loadtest-quick soak chaos security

define need-models
	@test -f $(MODELS_DIR)/digits-cnn/1/model.onnx -a -f $(MODELS_DIR)/sunspots-lstm/1/model.onnx \
	  -a -f $(MODELS_DIR)/digits-gan/1/model.onnx || $(PY) -m training models --models-dir $(MODELS_DIR)
endef

loadtest: install ## Locust load test (URL=… or a fresh axon serve): CSV + report.png in runs/loadtest
	$(if $(URL),,$(need-models))
	$(PY) -m tests.load.run --models-dir $(MODELS_DIR) --out $(LOAD_OUT) $(if $(URL),--url $(URL)) \
	  $(if $(USERS),--users $(USERS)) $(if $(DURATION),--duration $(DURATION))

loadtest-quick: install ## the 20 s load test the suite runs
	$(if $(URL),,$(need-models))
	$(PY) -m tests.load.run --quick --models-dir $(MODELS_DIR) --out $(LOAD_OUT)-quick $(if $(URL),--url $(URL))

soak: install ## 10-minute soak: load + RSS of every process, fails if memory is not flat
	$(need-models)
	$(PY) -m tests.load.run --soak --models-dir $(MODELS_DIR) --out $(SOAK_OUT)

chaos: install ## fault-injection scenarios on real processes; prints the tables (runs/chaos/tables.md)
	@mkdir -p $(CHAOS_OUT) && rm -f $(CHAOS_OUT)/tables.md
	AXON_CHAOS_REPORT=$(CHAOS_OUT)/tables.md $(PY) -m pytest -q -s tests/chaos
	@echo && cat $(CHAOS_OUT)/tables.md

security: install ## fuzzing (schemathesis, hypothesis), auth, limits, Redis AUTH/TLS, model integrity
	$(PY) -m pytest -q tests/security
