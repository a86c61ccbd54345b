# pushgate — every command a developer runs. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.stamp-install
NODE_DEPS := tests/node_modules/.stamp-install
CHROMIUM := chromium-installed
CONFIG ?= pushgate.toml

.PHONY: install run screenshots test lint format proto bench fuzz conformance soak clean $(CHROMIUM)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Debian's chromium for the browser tests (tests/browser.py); Playwright never downloads one.
$(CHROMIUM):
	@command -v chromium >/dev/null 2>&1 || { \
		apt-get update && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends chromium; }

$(NODE_DEPS): tests/package.json tests/package-lock.json
	cd tests && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(INSTALLED)

# pushgate and the team board demo on one port: http://127.0.0.1:8000/demo/ (another
# port: `make run PORT=8001`; `pushgate serve --config $(CONFIG)` runs pushgate alone).
# Board data: $$DEMO_DB.
run: $(INSTALLED)
	$(PY) -m demo --config $(CONFIG) $(if $(PORT),--port $(PORT))

# docs/img/*.png for the README: the demo in chromium, desktop and phone sizes.
screenshots: $(INSTALLED) $(CHROMIUM)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m demo.screenshots docs/img
	PUSHGATE_SCREENSHOTS=1 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m pytest -q tests/in_browser/test_browser_admin.py

test: $(INSTALLED) $(NODE_DEPS) $(CHROMIUM)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m pytest

# ruff, and mypy over pushgate/ ([tool.mypy] in pyproject.toml: strict on hub, protocol, engine)
lint: $(INSTALLED)
	$(VENV)/bin/ruff check pushgate tests bench demo
	$(VENV)/bin/ruff format --check pushgate
	$(PY) -m mypy

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix pushgate tests bench
	$(VENV)/bin/ruff format pushgate

# pushgate/protocol/centrifugo/client_pb2.py (and its types, client_pb2.pyi) from client.proto
# beside it, with the pinned
# grpcio-tools of the test extras (tests/unit/test_protobuf_codegen.py checks they agree)
PROTO := pushgate/protocol/centrifugo/client.proto
proto: $(INSTALLED)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. $(PROTO)

# every scenario of bench/run.py (ARGS="fanout --sizes 10000" for a subset); needs .[bench]
# and gcc for the native load client (bench/wsload.c → bench/.build/wsload-native)
bench: $(INSTALLED)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m bench.native || echo 'bench: no native load client; use ARGS="cluster --cluster-client python"'
	$(PY) -m bench.run $(ARGS)

# RFC 6455 conformance of every WebSocket endpoint (docs/conformance.md); `make test`
# runs the same cases on /connection/websocket and /stomp only.
conformance: $(INSTALLED)
	PUSHGATE_CONFORMANCE=full $(PY) -m pytest -q -rx tests/conformance

# atheris over every parser (fuzz/targets.py), FUZZ_SECONDS per target; not in CI.
# A crash leaves fuzz/crashes/<target>-crash-*: add it to CRASHES in tests/unit/test_fuzz_parsers.py.
FUZZ_SECONDS ?= 60
fuzz: $(INSTALLED)
	$(PY) -m pip install --quiet atheris
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS) $(TARGETS)

# two workers + Redis under connection churn and publishing, SOAK_SECONDS long; not in CI.
# Writes soak/results/soak.json and rss.png; fails if a connected client lost or doubled one.
SOAK_SECONDS ?= 600
soak: $(INSTALLED)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m soak.run --seconds $(SOAK_SECONDS) $(ARGS)

clean:
	rm -rf $(VENV) tests/node_modules .pytest_cache .ruff_cache .mypy_cache
