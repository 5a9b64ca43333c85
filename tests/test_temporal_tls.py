"""Temporal over TLS with client certificates: each kind of process with its own, and refusals.

Temporal here is the dev server behind nginx, which terminates TLS and demands a client
certificate signed by the test's CA (`tests.tls_servers`), as a secured self-hosted cluster
does. Workers, the gateway, an app's client and the CLI connect through it, each with the
certificate of its kind, and the proxy's log shows which one each presented. Without a
certificate, with a stranger's, an expired one or the wrong CA, the process says so in one line
naming the setting, and nothing has started.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kernos import KernosClient, RunSpec, Settings, load_settings
from kernos.client import connect_temporal
from kernos.infra.ports import free_port
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import DatabaseSettings, TemporalSettings
from kernos.kernel.errors import ConfigError, KernosError
from kernos.kernel.temporal_credentials import connect_options, presented, refused
from kernos.remote import RemoteClient
from tests.certificates import TestCA
from tests.conftest import make_settings, workers
from tests.hostile import Mode, hostile_settings, probe
from tests.test_cli import assert_one_line_error, config_file, kernos
from tests.test_gateway import gateway
from tests.tls_servers import GrpcTlsProxy, grpc_tls_proxy

#: The name on the proxy's certificate: not its address, so `server_name` must say it.
SERVER_NAME = "temporal.test"
KINDS = ("client", "gateway", "kernel_worker", "agent_worker")


@dataclass(frozen=True)
class SecuredTemporal:
    ca: TestCA
    proxy: GrpcTlsProxy

    def credentials(self, stem: str, common_name: str | None = None) -> dict[str, str]:
        issued = self.ca.client(stem, common_name or stem)
        return {"client_cert_file": str(issued.cert), "client_key_file": str(issued.key)}

    def settings(
        self, temporal: TemporalDevServer, postgres: EmbeddedPostgres, **connection: Any
    ) -> Settings:
        """Settings that reach Temporal through the proxy, trusting the test's CA."""
        return make_settings(
            temporal, postgres,
            temporal={
                "address": self.proxy.address, "server_ca_file": str(self.ca.ca),
                "server_name": SERVER_NAME, **connection,
            },
        )  # fmt: skip


@pytest.fixture
def secured(temporal: TemporalDevServer, tmp_path: Path) -> Iterator[SecuredTemporal]:
    ca = TestCA(tmp_path / "ca")
    server = ca.server("server", SERVER_NAME)
    with grpc_tls_proxy(temporal.address, server, ca.ca, tmp_path / "nginx") as proxy:
        yield SecuredTemporal(ca, proxy)


async def test_each_kind_of_process_reaches_temporal_with_its_own_certificate(
    secured: SecuredTemporal, temporal: TemporalDevServer, postgres: EmbeddedPostgres,
    tmp_path: Path,
) -> None:  # fmt: skip
    own = {kind: secured.credentials(kind) for kind in KINDS if kind != "client"}
    settings = secured.settings(temporal, postgres, **secured.credentials("client"), **own)
    # An agent worker holds no database credentials (as `kernos worker --kind agent` loads).
    agents = settings.model_copy(update={"database": DatabaseSettings()})
    async with (
        workers(settings, kind="kernel"),
        workers(agents, kind="agent"),
        await KernosClient.connect(settings) as client,
        gateway(settings) as url,
    ):
        run = await client.submit(RunSpec(agent="echo", task="over mTLS"))
        assert "over mTLS" in (await run.result()).output
        _, key = await client.create_key(user="bob", tenant=f"tls-{uuid.uuid4().hex[:6]}")
        async with RemoteClient(url, key) as remote:
            remote_run = await remote.submit(RunSpec(agent="echo", task="through the gateway"))
            assert "through the gateway" in (await remote.result(remote_run, timeout_s=60)).output
        code, out, err = await kernos(config_file(settings, tmp_path), "ps", "--json")
        assert code == 0, err
        assert run.run_id in out and remote_run in out
    assert secured.proxy.subjects() >= {f"CN={kind}" for kind in KINDS}
    assert "-" not in secured.proxy.subjects()  # every request came with a certificate


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("no certificate", "refused this kernel_worker (it answered HTTP 400, as a proxy does); "
         "it demands a client certificate: set "
         "[temporal] client_cert_file and [temporal] client_key_file"),
        ("a stranger's certificate", "refused the client certificate in "
         "[temporal.kernel_worker] client_cert_file"),
        ("another CA trusted", "its certificate is not signed by the CA in "
         "[temporal] server_ca_file"),
        ("the system's CAs trusted", "not signed by a CA this system trusts: set "
         "[temporal] server_ca_file"),
        ("another server name", "its certificate is not for 'temporal.example': set "
         "[temporal] server_name"),
        ("plaintext", "did not answer plaintext gRPC (a TLS endpoint?)"),
    ],
)  # fmt: skip
async def test_a_refused_connection_names_what_to_mend(
    secured: SecuredTemporal, temporal: TemporalDevServer, postgres: EmbeddedPostgres,
    tmp_path: Path, case: str, said: str,
) -> None:  # fmt: skip
    stranger = TestCA(tmp_path / "stranger", "stranger CA")
    mine = secured.credentials("kernel")
    them = stranger.client("them", "them")
    cases: dict[str, dict[str, Any]] = {
        "no certificate": {},
        "a stranger's certificate": {
            "kernel_worker": {
                "client_cert_file": str(them.cert),
                "client_key_file": str(them.key),
            }
        },
        "another CA trusted": {"server_ca_file": str(stranger.ca), **mine},
        "the system's CAs trusted": {"server_ca_file": None, **mine},
        "another server name": {"server_name": "temporal.example", **mine},
        "plaintext": {"server_ca_file": None, "server_name": None},
    }
    settings = secured.settings(temporal, postgres, **cases[case])
    with pytest.raises(KernosError) as refused:
        await connect_temporal(settings, "kernel_worker", traced=False)
    assert said in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("command", [["worker", "--kind", "kernel"], ["gateway"], ["ps"]])
async def test_a_process_with_another_cas_certificate_is_refused_in_one_line(
    secured: SecuredTemporal, temporal: TemporalDevServer, postgres: EmbeddedPostgres,
    tmp_path: Path, command: list[str],
) -> None:  # fmt: skip
    them = TestCA(tmp_path / "stranger", "stranger CA").client("them", "them")
    settings = secured.settings(
        temporal, postgres, client_cert_file=str(them.cert), client_key_file=str(them.key)
    )
    if command == ["gateway"]:
        command = ["gateway", "--port", str(free_port())]
    code, out, err = await kernos(config_file(settings, tmp_path), *command)
    assert_one_line_error(
        code, err, f"Temporal at {secured.proxy.address} refused the client certificate in "
        "[temporal] client_cert_file"
    )  # fmt: skip
    assert "polling" not in out and "Uvicorn running" not in out + err


async def test_a_server_certificate_out_of_date_is_named(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "ca")
    stale = ca.server("stale", SERVER_NAME, expired=True)
    with grpc_tls_proxy(temporal.address, stale, ca.ca, tmp_path / "nginx") as proxy:
        settings = make_settings(
            temporal, postgres,
            temporal={"address": proxy.address, "server_ca_file": str(ca.ca),
                      "server_name": SERVER_NAME, **SecuredTemporal(ca, proxy).credentials("k")},
        )  # fmt: skip
        with pytest.raises(ConfigError, match=r"its certificate \(the server's\) is expired"):
            await connect_temporal(settings, traced=False)


def test_a_ca_bundle_passes_while_one_of_its_cas_is_valid(tmp_path: Path) -> None:
    """Rotating CAs: the old one, expired, beside its successor is no reason to refuse."""
    old, new = TestCA(tmp_path / "old", "old CA", expired=True), TestCA(tmp_path / "new")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(old.ca.read_bytes() + new.ca.read_bytes())
    temporal = TemporalSettings(server_ca_file=bundle)
    assert connect_options(presented(temporal, "client")).tls is not False
    bundle.write_bytes(old.ca.read_bytes())
    with pytest.raises(ConfigError, match=r"\[temporal\] server_ca_file .*: the certificate "
                       r"CN=old CA expired on"):  # fmt: skip
        connect_options(presented(temporal, "client"))


async def test_a_worker_with_a_bad_certificate_file_says_which_and_never_polls(
    secured: SecuredTemporal, temporal: TemporalDevServer, postgres: EmbeddedPostgres,
    tmp_path: Path,
) -> None:  # fmt: skip
    expired = secured.ca.client("expired", "kernel-worker", expired=True)
    other = secured.ca.client("other", "other")
    cases = [
        ({"client_cert_file": str(expired.cert), "client_key_file": str(expired.key)},
         f"[temporal.kernel_worker] client_cert_file ({expired.cert}): the certificate "
         "CN=kernel-worker expired on "),
        ({"client_cert_file": str(tmp_path / "gone.pem"), "client_key_file": str(expired.key)},
         f"[temporal.kernel_worker] client_cert_file ({tmp_path / 'gone.pem'}) cannot be read: "
         "No such file or directory"),
        ({"client_cert_file": str(other.cert), "client_key_file": str(expired.key)},
         f"[temporal.kernel_worker] client_key_file ({expired.key}) is not the key of "
         f"[temporal.kernel_worker] client_cert_file ({other.cert})"),
        ({"client_cert_file": str(secured.ca.ca.with_suffix(".key")),
          "client_key_file": str(expired.key)}, "holds no PEM certificate"),
    ]  # fmt: skip
    before = len(secured.proxy.requests())
    for kernel_worker, said in cases:
        settings = secured.settings(temporal, postgres, kernel_worker=kernel_worker)
        code, out, err = await kernos(config_file(settings, tmp_path), "worker", "--kind", "kernel")
        assert_one_line_error(code, err, said)
        assert "polling" not in out
    # Checked before connecting: the proxy saw none of them.
    assert len(secured.proxy.requests()) == before


async def test_an_api_key_is_presented_over_tls_only(
    secured: SecuredTemporal, temporal: TemporalDevServer, postgres: EmbeddedPostgres,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Temporal Cloud's way: no client certificate, the key (from a file) as the bearer."""
    key_file = tmp_path / "temporal-api-key"
    key_file.write_text(secured.proxy.api_key + "\n")
    settings = make_settings(
        temporal, postgres,
        temporal={
            "address": secured.proxy.key_address, "server_ca_file": str(secured.ca.ca),
            "server_name": SERVER_NAME, "api_key_file": str(key_file),
        },
    )  # fmt: skip
    async with workers(settings), await KernosClient.connect(settings) as client:
        run = await client.submit(RunSpec(agent="echo", task="with a key"))
        assert "with a key" in (await run.result()).output
    key_file.write_text("tc-not-the-key\n")
    with pytest.raises(ConfigError) as refused:
        await connect_temporal(settings, "kernel_worker", traced=False)
    said = str(refused.value)
    assert "refused this kernel_worker's credentials ([temporal] api_key_file)" in said
    assert "tc-not-the-key" not in said and "\n" not in said
    # Never in the clear.
    plain = make_settings(
        temporal, postgres, temporal={"api_key_file": str(key_file), "tls": False}
    )
    with pytest.raises(ConfigError, match="an API key would then cross the network in the clear"):
        await connect_temporal(plain, traced=False)


@pytest.mark.parametrize("mode", ["bwrap", "in_process"])
async def test_agent_code_cannot_read_the_temporal_keys_on_its_host(
    secured: SecuredTemporal, temporal: TemporalDevServer, postgres: EmbeddedPostgres,
    tmp_path: Path, mode: Mode,
) -> None:  # fmt: skip
    """The agent worker's own key and the kernel worker's, kept where a confined child's view
    reaches (the venv, bound read-only for imports), are masked there: the agent worker loads
    its settings as `kernos worker --kind agent` does, which keeps no other kind's credential
    but the paths of its files. In the worker's own process, agent code reads both."""
    kept = Path(sys.prefix) / f"kernos-test-secrets-{uuid.uuid4().hex[:8]}"
    kept.mkdir()
    try:
        files: dict[str, dict[str, str]] = {}
        for kind in ("agent_worker", "kernel_worker"):
            issued = secured.ca.client(kind, kind)
            cert, key = kept / f"{kind}.pem", kept / f"{kind}.key"
            shutil.copyfile(issued.cert, cert)
            shutil.copyfile(issued.key, key)
            files[kind] = {"client_cert_file": str(cert), "client_key_file": str(key)}
        settings = hostile_settings(
            temporal, postgres, mode,
            temporal={
                "address": secured.proxy.address, "server_ca_file": str(secured.ca.ca),
                "server_name": SERVER_NAME, **secured.credentials("client"), **files,
            },
        )  # fmt: skip
        agents = load_settings(config_file(settings, tmp_path), credentials=False)
        agents = agents.model_copy(update={"database": DatabaseSettings()})
        keys = [files[kind]["client_key_file"] for kind in ("agent_worker", "kernel_worker")]
        async with (
            workers(settings, kind="kernel"),
            workers(agents, kind="agent"),
            await KernosClient.connect(settings) as client,
        ):
            found = await probe(client, f"evil-{uuid.uuid4().hex[:6]}", files=keys)
    finally:
        shutil.rmtree(kept)
    assert {"CN=agent_worker", "CN=kernel_worker"} <= secured.proxy.subjects()
    assert found["read"] == ([] if mode == "bwrap" else keys)


@pytest.mark.parametrize(
    "said",
    [
        "protocol error: frame with invalid size (FRAME_SIZE_ERROR)",
        'Failed client connect: `get_system_info` call error: hyper::Error(Canceled, "connection '
        'closed")',
    ],
    ids=["alert-read-as-a-frame", "hung-up"],
)
def test_plaintext_to_a_tls_endpoint_is_named_however_it_hangs_up(said: str) -> None:
    # nginx answers a plaintext HTTP/2 client with a TLS alert, or at times only closes the
    # connection: both are the same mistake, and are named so.
    plain = presented(TemporalSettings(), "kernel_worker")
    error = refused(RuntimeError(said), "127.0.0.1:7233", plain)
    assert "did not answer plaintext gRPC (a TLS endpoint?)" in str(error)
