"""Agents written with other frameworks, run as kernos runs.

Each adapter turns a framework's own agent object into a `kernos.Agent`: its model calls
become `llm.chat` syscalls and its tools `tool.call` syscalls, so they are decided, audited,
scheduled and resumed like any other. Nothing imports an adapter unless an agent needs it: the
registry recognises a framework's object by its kind, inside the pool that runs it.

- `openai_agents`: the OpenAI Agents SDK (`agents.Agent`), extra `kernos[openai-agents]`
"""
