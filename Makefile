# kdtutor: the two commands a fresh machine needs are `make book` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test lint book clean

## venv: create .venv with the pinned dependencies (idempotent; redone when pyproject.toml changes)
venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

## test: lint, then every test (pytest's "no tests ran" counts as a failure)
test: venv lint
	$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing"; exit 1; fi; exit $$rc

lint: venv
	$(VENV)/bin/ruff check kdtutor tests scripts
	$(VENV)/bin/ruff format --check kdtutor tests scripts

## book: the package is installed and checked; the Jupyter Book arrives with the book issue
book: venv
	$(PY) -c "import kdtutor; print('kdtutor', kdtutor.__version__, 'installed')"
	@echo "The Jupyter Book build arrives with the book issue (#4); for now 'make book' installs the package."

clean:
	rm -rf _build .pytest_cache .ruff_cache
