# The README's two commands are `make run` and `make test`; both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

# node_modules/.installed is a file target (npm ci).
.PHONY: install install-run system-deps system-deps-test run test lint format bench preview clean

install: system-deps $(STAMP)

# `make run` needs only the service's own packages: on a fresh clone that is about half the
# download of the test tools (Playwright, schemathesis …), so the app is up sooner.
install-run: system-deps $(RUN_STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(RUN_STAMP)

$(RUN_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

system-deps:
	@scripts/system-deps.sh run

system-deps-test:
	@scripts/system-deps.sh test

run: install-run
	$(BIN)/dispatch dev $(DEV_ARGS)

# The page checkers the tests run (axe-core in Chromium, the Nu Html Checker on Java), from npm
# into ./node_modules, at the versions package-lock.json pins.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

test: install system-deps-test node_modules/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install system-deps-test
	$(BIN)/python -m bench

# Render the seed letter and turn its pages into PNG images under preview/, and screenshot every
# page of the app at 1366 px and on a 390 × 844 phone (preview/pages/<page>-<width>.png).
preview: install system-deps-test node_modules/.installed
	mkdir -p preview/pages
	DISPATCH_PAGES_DIR=$(CURDIR)/preview/pages $(BIN)/pytest -q -p no:cacheprovider \
		tests/test_pages.py -k every_page
	$(BIN)/dispatch render official_letters/pc-covid-2021 --number 4321 --date 2021-11-15 \
		--pdf preview/letter.pdf --docx preview/letter.docx
	pdftoppm -r 80 -png preview/letter.pdf preview/page
	@echo "Pages: $$(ls preview/page-*.png | tr '\n' ' ')"
	@echo "Screens: $$(ls preview/pages/*.png | wc -l) under preview/pages/"

clean:
	rm -rf $(VENV) build dist *.egg-info preview out node_modules
