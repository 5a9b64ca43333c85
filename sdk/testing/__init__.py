"""Fakes of the model servers kernos speaks to, for tests and benchmarks without a GPU.

`fake_sglang.FakeSGLangServer` speaks SGLang's native API (built from its source: tokenize,
streamed generate with priorities and aborts, loads), `fake_openai.FakeOpenAIServer` an
OpenAI-compatible chat API; both run in-process on a loopback port. Nothing in the kernel
imports them.
"""
