# The few commands that matter. Each creates .venv on first use.
PYTHON_SYSTEM ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Go and Rust as their own installers lay them out, in case a login shell's PATH is not the one make was given.
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/.cargo/bin

.PHONY: demo test test-fast lint format venv clean ci-prereqs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_SYSTEM) -m venv $(VENV)
	# The pinned torch first (PyPI's build, with CUDA libraries, ~3 GB; it runs on the CPU too): installed before the
	# project, so no open range in its dependencies can pull another version.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,package,loggers]'
	touch $(STAMP)

venv: $(STAMP)

# node_modules too where npm exists, so that `torchport conformance runs/digits/bundle` can reach Node.js and the browser
demo: $(STAMP) $(if $(shell command -v npm),node_modules)
	$(VENV)/bin/torchport run --overwrite

test: $(STAMP) ci-prereqs
	$(PY) -m pytest -q

# The pinned npm packages of the Node.js and browser runners (package.json + package-lock.json); --ignore-scripts:
# onnxruntime-node ships its CPU binaries in the package, its install script would only fetch GPU extras.
node_modules: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch node_modules

# Under CI=true the runtime and client tests must not skip: install what the conformance runtimes (Chromium, a JDK
# and Maven, the C libraries) and the v2 clients (Mono, R with jsonlite, curl and openssl) need when it is missing.
# Elsewhere those tests skip with a reason, so `make test` works on a fresh machine without them. Debian's Go and
# cargo are too old for the Go and Rust runners (Go 1.22+, Rust 1.92+): those come from go.dev and rustup.
ci-prereqs:
	@if [ "$$CI" = "true" ]; then \
	  missing=""; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	  command -v g++ >/dev/null || missing="$$missing g++"; \
	  command -v wrk >/dev/null || missing="$$missing wrk"; \
	  command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
	  command -v mvn >/dev/null || missing="$$missing maven"; \
	  [ -f /usr/include/jansson.h ] || missing="$$missing libjansson-dev"; \
	  [ -f /usr/include/openssl/evp.h ] || missing="$$missing libssl-dev"; \
	  [ -f /usr/include/nlohmann/json.hpp ] || missing="$$missing nlohmann-json3-dev"; \
	  command -v mcs >/dev/null || missing="$$missing mono-complete"; \
	  for pkg in jsonlite curl openssl; do \
	    [ -d /usr/lib/R/site-library/$$pkg ] || [ -d /usr/lib/R/library/$$pkg ] || missing="$$missing r-cran-$$pkg"; \
	  done; \
	  command -v Rscript >/dev/null || missing="$$missing r-base-core"; \
	  if [ -n "$$missing" ]; then apt-get update && apt-get install -y $$missing; fi; \
	  [ -d node_modules ] || npm ci --ignore-scripts --no-audit --no-fund; \
	  command -v go >/dev/null || { echo "CI needs Go 1.22+ on PATH (go.dev/dl)"; exit 1; }; \
	  command -v cargo >/dev/null || { echo "CI needs Rust 1.92+ on PATH (rustup)"; exit 1; }; \
	fi

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
