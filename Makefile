# Raíces — `make run` to serve, `make test` to test. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000
export PORT

.DEFAULT_GOAL := help
.PHONY: help run stop test lint install db clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "error: cannot create a virtual environment; install python3-venv (Debian: apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

NODE_STAMP := node_modules/.installed-stamp
$(NODE_STAMP): package.json
	@command -v npm >/dev/null || { echo "error: npm is needed for the map page (Debian: apt-get install npm)"; exit 1; }
	npm install --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

install: $(STAMP) $(NODE_STAMP) ## Create .venv and install the project with its dev tools, and the map's JS

db: $(STAMP) $(NODE_STAMP) ## Start (or reuse) the local PostGIS cluster, migrate, load what is missing, score
	$(BIN)/raices db start
	$(BIN)/raices db upgrade
	$(BIN)/raices load all --missing
	$(BIN)/raices score --top 5

# run does what db does in the serving process (one Python start-up, not five): start the cluster, migrate and
# load only when something is missing, then serve; the default profile is scored once /health answers
run: $(STAMP) $(NODE_STAMP) ## Set everything up and serve on http://127.0.0.1:$(PORT)
	$(BIN)/raices serve --prepare --port $(PORT)

stop: ## Stop the local PostGIS cluster
	@if [ -x $(BIN)/raices ]; then $(BIN)/raices db stop; else echo "Nothing to stop (no .venv)."; fi

test: $(STAMP) $(NODE_STAMP) ## Run the whole suite against a throwaway PostGIS
	$(BIN)/pytest

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check app tests migrations benchmarks notebooks
	$(BIN)/ruff format --check app tests migrations
	$(BIN)/mypy

clean: stop ## Stop the cluster and delete .data/ and .venv/
	rm -rf .data $(VENV)
