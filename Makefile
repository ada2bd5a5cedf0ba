# kdtutor: the two commands a fresh machine needs are `make book` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: venv lock browser test test-fast lint book book-times book-student assignments clean

LOCK   := requirements/book.lock

## venv: create .venv with the exact versions the book is built with (requirements/book.lock),
##   then kdtutor itself, editable (idempotent; redone when pyproject.toml or the lock changes)
venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## lock: re-resolve pyproject.toml's dependencies (and the dev, notebooks, tensorboard and timm
##   extras) into .venv and write the exact versions to requirements/book.lock
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev,notebooks,tensorboard,timm,coursework]"
	{ head -n 2 $(LOCK); $(PY) -m pip freeze --all --exclude-editable | grep -v -e '^kdtutor' -e '^pip=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

## browser: headless Chromium for the book's browser test (Debian package; needs root the first time)
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "Chromium is needed by the browser test: run 'apt-get install chromium' as root."; exit 1; }

## test: lint, then every test, in two runs (pytest's "no tests ran" counts as a failure in each):
##   the unit and methods tiers in one process (they compute with torch in-process: two xdist
##   workers on 2 cores made the methods tier 7x slower), then the notebooks and book tiers on
##   two xdist workers (their time goes to kernels and subprocesses: 4:01 -> 2:14 on 2 cores).
##   `make test XDIST=` runs the second part in one process too.
XDIST ?= -n 2 --dist loadgroup
test: venv lint browser
	$(PY) -m pytest -q -m "unit or methods"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing"; rc=1; fi; \
	$(PY) -m pytest -q $(XDIST) -m "notebooks or book"; rc2=$$?; \
	if [ $$rc2 -eq 5 ]; then echo "pytest ran no test: failing"; rc2=1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$rc2

## test-fast: the edit loop: the unit and methods tiers without slow tests, no lint, no notebooks,
##   no book (about 1 minute on 2 busy cores; tiers and slow tests: tests/conftest.py)
test-fast: venv
	$(PY) -m pytest -q -m "(unit or methods) and not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing"; exit 1; fi; exit $$rc

lint: venv
	$(VENV)/bin/ruff check kdtutor tests scripts book/_ext
	$(VENV)/bin/ruff format --check kdtutor tests scripts book/_ext

## book: re-run the notebooks whose source or used files changed (book scale), refresh the table of times, build the HTML
book: venv
	$(PY) scripts/execute_notebooks.py --changed
	$(PY) scripts/book_times.py
	$(PY) scripts/build_book.py
	@echo "open _build/html/index.html"

## book-times: re-run every notebook at book scale (about 40 minutes on 2 cores) and table the wall times
##   (book/_generated/book_times.md, shown on "How to use this book"; data/results/book_times.json)
book-times: venv
	$(PY) scripts/book_times.py --run

## assignments: the student notebooks and the autograder zips of every assignment
##   (assignments/*.ipynb -> _build/assignments/NAME/{student,autograder}); grade a folder with
##   `.venv/bin/kdtutor assignments grade NAME FOLDER --out scores.csv`
assignments: venv
	$(VENV)/bin/kdtutor assignments student --out _build/assignments

## book-student: the student edition: no solution in the pages, the downloadable sources or
##   the search index
book-student: venv
	$(PY) scripts/build_book.py --student

clean:
	rm -rf _build .pytest_cache .ruff_cache
