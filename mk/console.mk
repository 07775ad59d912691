# The web console's browser tests (tests/e2e/console); included by the main Makefile.

.PHONY: browser-tools console-screenshots

# Debian's chromium and chromium-driver (matching versions), installed when missing, as
# bench-tools does for wrk. The tests fail, naming this target, when they are absent.
browser-tools: ## Chromium + chromedriver for the console's browser tests (part of `make tools`)
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } \
	  || apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
	  || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1) \
	  || { echo "browser-tools: could not install Chromium (apt-get install chromium chromium-driver)" >&2; exit 1; }

console-screenshots: install browser-tools ## rerun the console's browser tests and save their screenshots into docs/console
	AXON_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/e2e/console
