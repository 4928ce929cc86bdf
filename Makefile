# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create ./.venv and install everything they need into it.
VENV  ?= .venv
PY    := $(VENV)/bin/python
# CPU torch: 2.13.0 is the build this project is tested with. On a GPU machine, set TORCH_SPEC
# to the CUDA build you want (or install it into the venv first; a satisfied spec installs nothing).
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test test-all clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	$(VENV)/bin/lefusion demo --out outputs/demo

test: venv
	$(PY) -m pytest -q

test-all: venv
	$(PY) -m pytest -q -m ''

clean:
	rm -rf $(VENV) outputs
