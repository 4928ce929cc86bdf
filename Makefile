# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create ./.venv and install everything they need into it.
VENV  ?= .venv
PY    := $(VENV)/bin/python
# CPU torch: 2.13.0 is the build this project is tested with. On a GPU machine, set TORCH_SPEC
# to the CUDA build you want (or install it into the venv first; a satisfied spec installs nothing).
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test test-all lint format benchmark-cpu benchmark-gpu benchmark-wholescan-cpu benchmark-wholescan-gpu benchmark-brain-cpu benchmark-brain-gpu clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[dev,eval,brain]'
	touch $@

demo: venv
	$(VENV)/bin/lefusion demo --out outputs/demo

test: venv
	$(PY) -m pytest -q

test-all: venv
	$(PY) -m pytest -q -m ''

# House rules (configured in pyproject.toml): `make lint` checks, `make format` rewrites.
lint: venv
	$(VENV)/bin/ruff check src tests scripts benchmarks
	$(VENV)/bin/ruff format --check src tests scripts benchmarks

format: venv
	$(VENV)/bin/ruff check --fix src tests scripts benchmarks
	$(VENV)/bin/ruff format src tests scripts benchmarks

# Does synthetic data help? The phantom segmentation benchmark, end to end (resumes when re-run).
# cpu: 2 CPU cores, under 30 minutes. gpu: a CUDA GPU and CUDA torch in the venv (e.g. TORCH_SPEC=torch); not timed yet.
benchmark-cpu: venv
	$(PY) scripts/segmentation_benchmark.py --profile cpu --workdir outputs/benchmark-cpu

benchmark-gpu: venv
	$(PY) scripts/segmentation_benchmark.py --profile gpu --workdir outputs/benchmark-gpu

# The same question on whole scans: patch-trained U-Net, sliding windows, real vs real + `lefusion augment`.
benchmark-wholescan-cpu: venv
	$(PY) scripts/whole_scan_benchmark.py --profile cpu --workdir outputs/wholescan-cpu

benchmark-wholescan-gpu: venv
	$(PY) scripts/whole_scan_benchmark.py --profile gpu --workdir outputs/wholescan-gpu

# Brain MRI (FLAIR, MS lesions): every method, real only / synthetic only / real + synthetic, and reconstruction scores.
benchmark-brain-cpu: venv
	$(PY) scripts/brain_benchmark.py --profile cpu --workdir outputs/brain-cpu

benchmark-brain-gpu: venv
	$(PY) scripts/brain_benchmark.py --profile gpu --workdir outputs/brain-gpu

clean:
	rm -rf $(VENV) outputs
