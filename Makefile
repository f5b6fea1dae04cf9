# The two commands of the README do all set-up themselves:
#   make book   execute every chapter (quick profile) and build the HTML
#   make test   unit tests, nbval over the chapters, and a build of the book
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JB_FLAGS := -W -n --keep-going
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export MPLBACKEND ?= Agg
export PYDEVD_DISABLE_FILE_VALIDATION ?= 1

.PHONY: all book test setup bench reproduce lab clean clean-runs

all: book

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (model-collapse book)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

## Execute every chapter in the quick profile (in place), then build the HTML.
book: $(STAMP)
	$(PY) -m mcutils.reproduce --profile quick --in-place
	$(VENV)/bin/jupyter-book build . $(JB_FLAGS)
	@echo "Open _build/html/index.html"

## Unit tests, nbval over the chapters (re-executed), and a build of the book.
NBVAL_FLAGS := --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=1800
test: $(STAMP)
	$(PY) -m pytest tests book $(NBVAL_FLAGS) -ra $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf _build
clean-runs:
	rm -rf runs
