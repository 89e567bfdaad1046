# tether: `make demo` serves the demo app through tether; `make test` runs every test.
# Both set up what they need: the Rust build, a Python venv with the pinned Panel, and
# (for the tests) redis-server and faketime from Debian.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
export TETHER_PYTHON := $(abspath $(VPY))
# An older Panel the tests also run against (tests/requirements-panel17.txt).
VENV17 := .venv-panel17
export TETHER_PYTHON_PANEL17 := $(abspath $(VENV17)/bin/python)
# The oldest Panel tether supports (tests/requirements-panel14.txt).
VENV14 := .venv-panel14

.PHONY: all build venv venv-panel17 venv-panel14 system-deps demo lint test e2e bench clean

all: build

build:
	cargo build --bin tether

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt
	touch $@

venv-panel17: $(VENV17)/.installed
venv-panel14: $(VENV14)/.installed

# An older Panel's venv, .venv-panelNN, from tests/requirements-panelNN.txt.
.venv-panel%/.installed: tests/requirements-panel%.txt
	$(PYTHON) -m venv .venv-panel$*
	.venv-panel$*/bin/python -m pip install --quiet --upgrade pip
	.venv-panel$*/bin/python -m pip install --quiet -r $<
	touch $@

# Debian packages the tests use: redis-server for the Redis store, faketime to step a
# gateway's wall clock. Installed only when missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	ls /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 >/dev/null 2>&1 \
	  || missing="$$missing faketime"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

demo: venv build
	./target/debug/tether serve examples/catalog.py --port $${PORT:-5006}

# Formatting and every clippy warning fail the build, tests included.
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test: venv venv-panel17 venv-panel14 system-deps lint
	cargo test --workspace --no-fail-fast
	# The suites a user's version matters to, again on the oldest supported Panel.
	TETHER_PYTHON=$(abspath $(VENV14)/bin/python) cargo test -p tether --no-fail-fast \
	  --test restore --test reattach --test causal
	$(MAKE) e2e

# The original request's five checks (and three more) in a real headless Chromium.
# Screenshots land in target/e2e/.
e2e: venv build
	bash scripts/e2e.sh

# Three-way benchmark (direct panel serve, tether, nginx) on loopback; writes target/bench/.
bench: venv
	bash scripts/bench.sh

clean:
	cargo clean
	rm -rf $(VENV) $(VENV17) $(VENV14) .tether
