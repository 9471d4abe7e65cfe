# The two commands a new user runs (README): `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: setup lock browser postgres quickstart test lint bench clean

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# every package at the version the green test suite ran with (refresh: make lock)
CONSTRAINTS = constraints.txt
TORCH_PAIR  = "torch==2.14.1" "torchvision==0.29.1"

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1: the pair that imports together on these machines
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) $(TORCH_PAIR)
	# hf: the tests build HuggingFace models (model.name: hf)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev,hf]"
	touch $@

setup: $(VENV)/.installed

# the newest versions pyproject.toml allows, resolved in a fresh venv, written to constraints.txt;
# then `make clean test` proves them before they are committed
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet $(TORCH_PAIR)
	.venv-lock/bin/python -m pip install --quiet -e ".[dev,hf]"
	(echo "# pip install -c constraints.txt: what the green test suite ran with (written by make lock)"; \
	 .venv-lock/bin/python -m pip freeze --all --exclude-editable) > $(CONSTRAINTS)
	rm -rf .venv-lock

# the MLflow UI test drives Debian's Chromium headless (browser downloads do not work here)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver)

# the PostgreSQL test starts Debian's server (initdb / pg_ctl) in a temporary directory
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql)

quickstart: setup
	$(VENV)/bin/raysparse sweep search_spaces/quickstart.yaml

test: setup browser postgres
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/orchestration.py
	$(PY) benchmarks/deploy.py

clean:
	rm -rf $(VENV)
