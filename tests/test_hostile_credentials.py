"""Attack 1, credentials: agent code, at import and in runs, finds no secret of the kernel's.

The probe (tests.hostile_agents) looks where the embedded stack keeps them: the environment
(`KERNOS_*`, DSNs, keys), other processes' environments in /proc, the state directory's
`kernel.toml`, files a root process could read. Unconfined, it finds them; confined, nothing,
and its import-time code never touched this host's filesystem.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from kernos import KernosClient
from kernos.infra.confine import NOBODY
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from tests.conftest import workers
from tests.hostile import Mode, hostile_settings, probe

#: Where hostile_agents' import-time code writes (it cannot be imported here to ask).
IMPORT_MARK = Path("/tmp/kernos-hostile-import-mark")


def state_with_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state directory as `kernos up` leaves one, named in this process's environment."""
    state = tmp_path / "state"
    state.mkdir()
    kernel = state / "kernel.toml"
    kernel.write_text('[database]\ndsn = "postgresql://kernos:hunter2@/kernos"\n')
    monkeypatch.setenv("KERNOS_STATE_DIR", str(state))
    return kernel


def secret_files(postgres: EmbeddedPostgres, kernel_toml: Path) -> list[str]:
    """Files agent code must not read: the kernel's settings, the database's own files, and a
    file of the project the worker was started in (where a `.env` would be)."""
    project = Path(__file__).resolve().parent.parent / "pyproject.toml"
    return [str(kernel_toml), str(postgres.data_dir / "PG_VERSION"), str(project)]


async def probe_for_credentials(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, mode: Mode, kernel_toml: Path
) -> dict[str, Any]:
    IMPORT_MARK.unlink(missing_ok=True)
    settings = hostile_settings(temporal, postgres, mode)
    tenant = f"evil-{uuid.uuid4().hex[:6]}"
    async with workers(settings), await KernosClient.connect(settings) as client:
        return await probe(client, tenant, files=secret_files(postgres, kernel_toml))


async def test_confined_agent_code_finds_no_credential(
    temporal: TemporalDevServer,
    postgres: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel_toml = state_with_secrets(tmp_path, monkeypatch)
    found = await probe_for_credentials(temporal, postgres, "bwrap", kernel_toml)
    for where in (found, found["at_import"]):
        assert isinstance(where, dict)
        assert where["uid"] == NOBODY
        assert where["environment"] == []
        assert where["others_environment"] == []
        assert where["files"] == []
        # Its own PID namespace: bubblewrap's init and itself.
        assert where["processes"] <= 2
    assert found["read"] == []
    # Its /tmp is its own, and not even writable: the mark is nowhere on this host.
    assert found["at_import"]["marked"] is False
    assert not IMPORT_MARK.exists()


async def test_unconfined_the_same_probe_finds_them(
    temporal: TemporalDevServer,
    postgres: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the probe finds in the worker's own process: the reason pools exist.
    kernel_toml = state_with_secrets(tmp_path, monkeypatch)
    try:
        found = await probe_for_credentials(temporal, postgres, "in_process", kernel_toml)
        assert "KERNOS_STATE_DIR" in found["environment"]
        assert found["read"] == secret_files(postgres, kernel_toml)
        assert IMPORT_MARK.exists()
    finally:
        IMPORT_MARK.unlink(missing_ok=True)
