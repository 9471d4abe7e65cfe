# The two commands a new user runs (README): `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: setup browser quickstart test lint bench clean

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1: the pair that imports together on these machines
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# the MLflow UI test drives Debian's Chromium headless (browser downloads do not work here)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver)

quickstart: setup
	$(VENV)/bin/raysparse sweep search_spaces/quickstart.yaml

test: setup browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/orchestration.py

clean:
	rm -rf $(VENV)
