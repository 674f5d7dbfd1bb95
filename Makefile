# Set-up and everyday targets. Each target creates .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU wheel by default; on a GPU machine: make TORCH_SPEC="torch" (CUDA build from PyPI)
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_out

.PHONY: venv demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,onnx,cluster]"
	touch $@

venv: $(VENV)/.installed

## Runs the whole chain on the built-in synthetic CEUS phantom into $(DEMO_OUT)/
demo: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" bash pipelines/demo.sh $(DEMO_OUT)

## The test suite (CPU only; generates its own data)
test: venv
	$(PY) -m pytest -q

bench: venv
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) benchmarks/run_all.py

clean:
	rm -rf $(DEMO_OUT) bench_out .pytest_cache
