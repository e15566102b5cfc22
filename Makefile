# CellScope: `make run` starts the app, `make test` runs every test. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8501
# Test processes (pytest-xdist) for all but the browser tests, which run after them on their own: a
# browser test's clicks time out when another process takes the cores (seen twice). The Dask tests
# run in a plain pytest: under xdist a restarted Dask worker re-ran execnet's bootstrap and died.
TEST_WORKERS ?= 2
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install run test test-fast lint bench example clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "CellScope needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	# Offline YOLO11 nuclei detectors (MIT). --no-deps: it pins an old ultralytics and pulls napari.
	$(PIP) install -q --no-deps napari-nuclephaser==0.5.0
	@n=$$($(BIN)/python -c "from importlib.metadata import distributions as d; print(sum(x.metadata['Name'].lower().startswith('opencv') for x in d()))"); \
	  test "$$n" = 1 || { echo "expected exactly one OpenCV distribution, found $$n"; exit 1; }
	touch $@

run: install
	$(BIN)/streamlit run app.py --server.port $(PORT)

test: install
	@status=0; \
	  $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not e2e" --ignore tests/test_batch.py || status=$$?; \
	  $(BIN)/python -m pytest tests/test_batch.py -m "not e2e" || status=$$?; \
	  $(BIN)/python -m pytest -m e2e || status=$$?; \
	  exit $$status

test-fast: install  ## everything except the browser test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not e2e"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/run_all.py

example: install  ## write the example dataset to ./example_data
	$(BIN)/python -m core example --out example_data

clean:
	rm -rf $(VENV) .pytest_cache artifacts
