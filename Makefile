# Two commands do all the set-up on a fresh Debian machine (see README):
#   make demo   installs everything, replays the bundled capture, writes inventory/findings/map
#   make test   installs what the tests need and runs them (this is what .ci/run runs)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
APT_PKGS := tcpdump tshark graphviz tcpreplay iproute2 chromium
OUT     ?= demo-out

.PHONY: demo test test-slow system venv lint bench clean

system:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/apisensor: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/apisensor

demo: system venv
	@mkdir -p $(OUT)
	rm -f $(OUT)/inventory.db* $(OUT)/map.png $(OUT)/report.html
	$(BIN)/apisensor replay pcaps/demo.pcap --db $(OUT)/inventory.db --graph $(OUT)/map.png --no-progress
	@echo; echo "== services"; $(BIN)/apisensor services --db $(OUT)/inventory.db
	@echo; echo "== endpoints"; $(BIN)/apisensor endpoints --db $(OUT)/inventory.db
	@echo; echo "== findings"; $(BIN)/apisensor findings --db $(OUT)/inventory.db
	@echo; echo "== actors"; $(BIN)/apisensor actors --db $(OUT)/inventory.db
	$(BIN)/apisensor openapi --db $(OUT)/inventory.db --service users.shop.local -o $(OUT)/users.openapi.yaml
	$(BIN)/apisensor report --db $(OUT)/inventory.db -o $(OUT)/report.html
	@echo; echo "inventory: $(OUT)/inventory.db   map: $(OUT)/map.png   spec: $(OUT)/users.openapi.yaml   report: $(OUT)/report.html"

test: system venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-slow: system venv
	$(BIN)/pytest -q -m slow

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
