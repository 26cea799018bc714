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

.PHONY: book test student site-check bench bench-peer lock clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[book,test,dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## The website with every notebook executed: _build/html/index.html
## (MPLBACKEND emptied: the kernels must draw inline, or the pages get no figures.)
book: $(STAMP)
	MPLBACKEND= $(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going

## Every test: gramlib unit tests, repository checks, the book build (no execution,
## warnings as errors), the site in headless Chromium (skipped with a message where
## Chromium cannot be installed), then every notebook in _toc.yml under nbval.
test: $(STAMP)
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile
	$(BIN)/python tools/site_check.py --build-unexecuted
	$(BIN)/python -m pytest --nbval-lax -p no:cacheprovider $$($(BIN)/python -m tests.book_files notebooks)

## Student copies of every chapter (solution cells removed): _build/student/
student: $(STAMP)
	$(BIN)/python -m gramlib student --out _build/student $$($(BIN)/python -m tests.book_files notebooks)

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
	{ echo "# Exact versions for 'make book' and 'make test' (the one place where versions are pinned)."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(pip|setuptools)=='; } > constraints.txt

clean:
	rm -rf _build .pytest_cache
