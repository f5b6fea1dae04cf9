# The two commands of the README do all set-up themselves:
#   make book   execute every chapter (quick profile) and build the HTML
#   make test   unit tests, nbval over the chapters, and a build of the book
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
PROFILE ?= quick
CHAPTERS ?=
JB_FLAGS := -W -n --keep-going
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export MPLBACKEND ?= Agg
export PYDEVD_DISABLE_FILE_VALIDATION ?= 1
# MathJax is served with the site (_config.yml copies it to _static/mathjax), so that its
# mathematics renders offline: npm installs it into the git-ignored _vendor/.
MATHJAX_VERSION := 3.2.2
MATHJAX_STAMP := _vendor/.mathjax-$(MATHJAX_VERSION)

.PHONY: all book test setup bench bench-gpu tolerances reproduce lab clean clean-runs

all: book

$(STAMP): pyproject.toml constraints.txt | $(MATHJAX_STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (model-collapse book)" >/dev/null
	@# The browser test drives Debian's Chromium; without one it skips and says why.
	command -v chromium >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: could not install chromium; tests/test_browser.py will skip"
	touch $(STAMP)

# Part of the set-up above (an order-only prerequisite of $(STAMP), so a checkout set up before MathJax
# was bundled gets it on its next make): without npm it tries apt's, then stops saying so.
$(MATHJAX_STAMP):
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq npm >/dev/null; } || \
	  { echo "error: the book bundles MathJax from npm, and npm is missing: install Node.js and npm" \
	         "(Debian/Ubuntu: apt-get install npm), then run make again" >&2; exit 1; }
	rm -rf _vendor/node_modules/mathjax
	npm install --prefix _vendor --no-save --no-package-lock --no-audit --no-fund --loglevel=error mathjax@$(MATHJAX_VERSION)
	test -f _vendor/node_modules/mathjax/es5/tex-mml-chtml.js
	touch $@

setup: $(STAMP)

## Execute every chapter in the quick profile (in place), then build the HTML.
book: $(STAMP)
	$(PY) -m mcutils.reproduce --profile quick --in-place
	$(VENV)/bin/jupyter-book build . $(JB_FLAGS)
	@echo "Open _build/html/index.html"

## Unit tests, nbval over the chapters (re-executed), and a build of the book.
NBVAL_FLAGS := --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=3600
test: $(STAMP)
	$(PY) -m pytest tests book $(NBVAL_FLAGS) -ra $(PYTEST_ARGS)

## Run a profile's chapters with papermill into reproductions/$(PROFILE)/ and build its book:
##   make reproduce PROFILE=quick|paper|paper-smoke|path.yaml [CHAPTERS=02_discrete_chain,03_gaussian]
##   [REPRODUCE_ARGS="--param runs_dir=/data/runs --timeout 36000"]
## PROFILE=paper-smoke (the paper profile's code on local stand-ins, a CPU, minutes) builds its stand-ins first.
reproduce: $(STAMP)
	$(if $(filter paper-smoke,$(PROFILE)),$(PY) -m mcutils.smoke --out .mcutils_cache/paper-smoke)
	$(PY) -m mcutils.reproduce --profile $(PROFILE) $(if $(CHAPTERS),--chapters $(CHAPTERS)) $(REPRODUCE_ARGS)

## JupyterLab on the book's folder with the project's kernel (python3 of .venv).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=book --MappingKernelManager.default_kernel_name=python3 \
	  $(shell [ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run

## The LM engine at OPT-125m's size on a GPU (on a CPU: a small model, about a minute): training and
## 5-beam generation speed, peak memory, Fig. 1's projected time; writes benchmarks/RESULTS.md.
bench-gpu: $(STAMP)
	$(PY) -m benchmarks.run lm_gpu

## Measure how far each torch-trained key number moves under other CPU kernel paths and thread
## counts; writes book/_tolerances.json (then run `make book` so the chapters show the tolerances).
tolerances: $(STAMP)
	$(PY) tools/measure_tolerances.py --jobs 2 $(TOLERANCES_ARGS)

clean:
	rm -rf _build
clean-runs:
	rm -rf runs
