# Two commands on a fresh machine:  `make book`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export JAX_PLATFORMS ?= cpu
export MPLBACKEND := Agg
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# pytest workers for the unit tests (pytest-xdist, one test file per worker; CI has 2 cores).
TEST_WORKERS ?= 2

.PHONY: book test student assignments site-check bench bench-peer lock clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[book,test,dev,teach]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The book build of `make book`, shared with `make test` so that the two cannot drift apart.
# `--all`: every page is rebuilt and every notebook executed, also when only gramlib changed.
# Every notebook is executed (a cell that runs 120 s fails the build, _config.yml) and Sphinx
# warnings are errors. MPLBACKEND emptied: the kernels must draw inline, or the pages get no figures.
BUILD_BOOK = rm -f _build/execution.json && MPLBACKEND= $(BIN)/jupyter-book build . --all --warningiserror --nitpick --keep-going

## The website with every notebook executed: _build/html/index.html
book: $(STAMP)
	$(BUILD_BOOK)

## Every test: gramlib unit tests and repository checks; then the book exactly as `make book`
## builds it (each notebook executed once, warnings as errors); each chapter's execution time
## (at most 180 s a notebook, 120 s a cell: tools/execution_record.py); and the executed
## site, figures included, in headless Chromium (skipped with a message where Chromium
## cannot be installed).
test: $(STAMP)
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile
	$(BUILD_BOOK)
	$(BIN)/python tools/execution_record.py
	$(BIN)/python tools/site_check.py _build/html

## Student copies of every chapter (solution cells removed): _build/student/
student: $(STAMP)
	$(BIN)/python -m gramlib student --out _build/student $$($(BIN)/python -m tests.book_files notebooks)

## Otter-Grader assignments of every chapter (the "teach" extra): _build/assignments/<chapter>/
## (student/ notebook and public tests, autograder/ zip and solutions; Otter Assign grades the solutions).
assignments: $(STAMP)
	$(BIN)/python -m gramlib assignments --out _build/assignments $$($(BIN)/python -m tests.book_files notebooks)

## Build the website, then open every page in headless Chromium (tools/site_check.py).
site-check: book
	$(BIN)/python tools/site_check.py _build/html

bench: $(STAMP)
	$(BIN)/python -m benchmarks

## gramlib against neural-tangents' Jacobian contraction, in one run (benchmarks/results/peer.csv);
## makes the peer's own virtual environment .peer-venv (JAX 0.4.30) with tools/make_peer_env.sh.
bench-peer: $(STAMP)
	$(BIN)/python -m benchmarks.bench_peer

## Re-pin every package to what the current install resolved to.
lock: $(STAMP)
	{ grep '^#' constraints.txt; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(pip|setuptools)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf _build .pytest_cache
