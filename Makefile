# Atalaia — the README's commands. Everything runs from a local virtualenv (.venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test fuzz soak bench lint fmt clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -P -m pip install -q --upgrade pip
	$(BIN)/python -P -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install  ## start the all-in-one demo: embedded broker, worker, ingest, console, demo feed
	$(BIN)/atalaia up --demo

test: install  ## the whole test suite (unit, property, integration on a real broker)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 3 --dist loadfile  # 3 workers on 2 cores: the live tests wait on their brokers and workers about half the time

fuzz: install  ## property tests with fresh random draws, six rounds (looks for bugs the fixed, smaller draws of make test miss)
	for round in 1 2 3 4 5 6; do ATALAIA_HYPOTHESIS=fuzz $(BIN)/python -m pytest -q -n 2 --dist loadfile -p no:cacheprovider \
	  $$(grep -l '^from hypothesis' tests/*.py) || exit 1; done

soak: install  ## the long fault suite of issue 10 (about 25 min; figures in tests/README.md)
	$(BIN)/python -m pytest -q -rP -m soak tests/soak -n 3 --dist load > $(VENV)/soak.log 2>&1; \
	  rc=$$?; grep -E 'FAULT-FIGURES|passed|failed|rror' $(VENV)/soak.log; echo "full log: $(VENV)/soak.log"; exit $$rc

bench: install  ## benchmarks that print figures and ratios (not part of make test)
	$(BIN)/python -m benchmarks

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .atalaia .pytest_cache build *.egg-info
