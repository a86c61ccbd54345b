# pushgate — every command a developer runs. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.stamp-install
NODE_DEPS := tests/node_modules/.stamp-install
CONFIG ?= pushgate.toml

.PHONY: install run test lint format bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(NODE_DEPS): tests/package.json tests/package-lock.json
	cd tests && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(INSTALLED)

run: $(INSTALLED)
	$(VENV)/bin/pushgate serve --config $(CONFIG)

test: $(INSTALLED) $(NODE_DEPS)
	$(PY) -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check pushgate tests bench
	$(VENV)/bin/ruff format --check pushgate

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix pushgate tests bench
	$(VENV)/bin/ruff format pushgate

bench: $(INSTALLED)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) tests/node_modules .pytest_cache .ruff_cache
