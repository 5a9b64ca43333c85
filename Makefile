# One task runner: `make demo`, `make test`, `make lint`, `make bench`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PKG_DIRS := sdk sdk/examples kernel kernel/llm kernel/db kernel/db/migrations workflows activities policies infra

.PHONY: install demo test lint typecheck pytest bench clean

# The editable install is strict (a tree of links), so mypy can follow the package-dir mapping;
# it must be redone when a module is added, hence the package directories as prerequisites.
$(VENV)/.installed: pyproject.toml constraints.txt $(PKG_DIRS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt --config-settings editable_mode=strict -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m kernos.infra.demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) typecheck

typecheck: install
	$(BIN)/mypy -p kernos
	$(BIN)/mypy tests $(wildcard bench/*.py)

pytest: install
	$(BIN)/python -m pytest

test: lint pytest

bench: install
	$(BIN)/python bench/syscall_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
