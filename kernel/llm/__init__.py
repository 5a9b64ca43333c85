"""The LLM core: one backend per server kind, built from settings.

Backends: `llamacpp`, `sglang`, `openai`, `scripted`, each an `base.LLMBackend`, built by
`registry.build_backend`. Nothing is imported here: a module that needs one backend's types
(an agent's, in a pool's child) does not pay for every backend's HTTP client.
"""
