# Two commands matter: `make demo` and `make test`. Both run `setup` first; every setup step is idempotent.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup host venv demo test lint typecheck bench deb clean

setup: host venv

host:
	@bash packaging/host-setup.sh

venv:
	@bash packaging/venv-setup.sh $(VENV)

demo: setup
	$(PY) -m vhtune demo

LINT_DIRS := $(wildcard vhtune tests bench)

lint: venv
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check $(LINT_DIRS)

typecheck: venv
	$(VENV)/bin/mypy

test: setup lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench

deb: venv
	PYTHON=$(PY) bash packaging/build-deb.sh dist

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
