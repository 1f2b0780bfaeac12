# The README's two commands: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# checkov scans terraform/ in tests/test_terraform.py; it gets its own venv because its
# pins conflict with the project's. The venv ignores itself in git.
SCAN_VENV       ?= .venv-scan
CHECKOV_VERSION := 3.3.30
SCAN_STAMP      := $(SCAN_VENV)/.checkov-$(CHECKOV_VERSION)

.PHONY: demo test bench bench-smoke clean venv scan-venv system-packages wheel

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

scan-venv: $(SCAN_STAMP)

$(SCAN_STAMP):
	test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	echo '*' > $(SCAN_VENV)/.gitignore
	$(SCAN_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $(SCAN_STAMP)

demo: $(STAMP)
	$(BIN)/r53lb demo

# The wheel to install on a controller host (README: "Install on the controller host").
wheel: $(STAMP)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/r53lb-*.whl

# Real programs the tests run (Postfix, HAProxy, nginx, ...): installed from Debian when missing.
system-packages:
	scripts/install-system-packages

test: $(STAMP) $(SCAN_STAMP) system-packages
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --smoke

clean:
	rm -rf $(VENV) $(SCAN_VENV) .pytest_cache build dist *.egg-info
