# Set-up and entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv ignores pip.conf: hand it pip's find-links folder (where the local CPU torch wheel lives).
FIND_LINKS := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
UV_FLAGS := --python $(BIN)/python --compile-bytecode $(if $(FIND_LINKS),--find-links $(FIND_LINKS))
# The public data beside the checkout, unless the caller points elsewhere.
SHARED_DATA := $(abspath ../shared/data)
export VALUEHARM_DATA ?= $(if $(wildcard $(SHARED_DATA)/valueEval_10.csv),$(SHARED_DATA))
export HF_HUB_OFFLINE ?= 1
# CPU machines: constrain torch to the CPU build so no CUDA packages are pulled.
CONSTRAINTS := $(if $(shell command -v nvidia-smi),,-c constraints-cpu.txt)

.PHONY: setup demo test lint clean chromium

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install $(UV_FLAGS) $(CONSTRAINTS) -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/valueharm demo

# The report test renders the HTML report in headless Chromium (Debian's package; no browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: setup chromium
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
