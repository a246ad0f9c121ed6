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

# The main job on an embedded default: DPDK virtio-user → vhtune's back-end with a CPU hog pinned to the
# back-end's CPU, recorded with the eBPF probes, analyzed, and written up as demo-report.html.
DEMO_SCENARIO ?= dpdk-sink
DEMO_FAULT    ?= cpu-hog
DEMO_DIR      ?= demo-recording

demo: setup
	@rm -rf $(DEMO_DIR)
	$(PY) -m vhtune doctor
	$(PY) -m vhtune lab run $(DEMO_SCENARIO) --fault $(DEMO_FAULT) --duration 8 --record $(DEMO_DIR)
	$(PY) -m vhtune analyze $(DEMO_DIR)
	$(PY) -m vhtune report $(DEMO_DIR) -o demo-report.html
	@echo "report: $(CURDIR)/demo-report.html"

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
