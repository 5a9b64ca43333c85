"""The gateway's basics: a key's own runs listed, its limits (429 with Retry-After), HTTPS."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kernos import KernosClient
from kernos.client import RunFailed
from kernos.gateway import gateway_config
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.errors import ConfigError, RateLimited
from kernos.remote import RemoteClient
from tests.test_gateway import gateway, kernel_and_gateway, run_count, with_policy
from tests.waiting import eventually


async def test_a_key_lists_its_users_own_runs_newest_first_a_page_at_a_time(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"list-{uuid.uuid4().hex[:6]}"
    settings, _ = with_policy(temporal, postgres, tmp_path)
    async with kernel_and_gateway(settings) as (url, operator):
        _, bobs = await operator.create_key(user="bob", tenant=tenant)
        _, eves = await operator.create_key(user="eve", tenant=tenant)
        async with RemoteClient(url, bobs) as bob, RemoteClient(url, eves) as eve:
            mine = [await bob.submit({"agent": "echo", "task": f"hi {n}"}) for n in range(3)]
            failed = await bob.submit({"agent": "buggy", "task": "x"})
            theirs = await eve.submit({"agent": "echo", "task": "hi"})
            for run_id in mine:
                await bob.result(run_id, timeout_s=60)
            with pytest.raises(RunFailed):  # as it should
                await bob.result(failed, timeout_s=60)
            await eve.result(theirs, timeout_s=60)
            first = await bob.list_runs(limit=3)
            assert first.next_before is not None
            rest = await bob.list_runs(limit=3, before=first.next_before)
            completed = await bob.list_runs(status="completed")
            buggy = await bob.list_runs(agent="buggy")
            eves_own = await eve.list_runs()
        async with httpx.AsyncClient(base_url=url) as http:
            auth = {"Authorization": f"Bearer {bobs}"}
            bad_status = await http.get("/v1/runs?status=sleeping", headers=auth)
            bad_limit = await http.get("/v1/runs?limit=1000", headers=auth)
    listed = [run.run_id for run in first.data + rest.data]
    assert listed == [failed, *reversed(mine)] and rest.next_before is None
    assert {run.user for run in first.data + rest.data} == {"bob"}
    assert [run.run_id for run in completed.data] == list(reversed(mine))
    assert [run.run_id for run in buggy.data] == [failed]
    assert [run.run_id for run in eves_own.data] == [theirs]
    assert bad_status.status_code == 400 and "status: one of" in bad_status.text
    assert bad_limit.status_code == 400 and "limit: from 1 to 100" in bad_limit.text


async def test_a_key_past_its_limits_is_answered_429_with_when_to_retry(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"limits-{uuid.uuid4().hex[:6]}"
    settings, _ = with_policy(
        temporal, postgres, tmp_path, gateway={"key_requests_per_minute": 3, "key_running_runs": 1}
    )
    # No worker polls: an admitted run stays going.
    async with gateway(settings) as url, await KernosClient.connect(settings) as operator:
        _, key = await operator.create_key(user="bob", tenant=tenant)
        async with RemoteClient(url, key) as remote:
            going = await remote.submit({"agent": "echo", "task": "hi"})
            before = await run_count(operator)
            with pytest.raises(RateLimited, match="has 1 runs going") as running:
                await remote.submit({"agent": "echo", "task": "again"})
            assert running.value.retry_after_s >= 1
            assert await run_count(operator) == before  # nothing admitted
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
            await client.models.list()  # the third request of the minute
            with pytest.raises(openai.RateLimitError) as limited:
                await client.models.list()
        headers = limited.value.response.headers
        assert int(headers["retry-after"]) >= 1
        assert "more than 3 requests in a minute" in limited.value.message
        await operator.temporal.get_workflow_handle(going).terminate("test over")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key, and the key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kernos test gateway")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "gateway.crt", directory / "gateway.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_the_gateway_serves_https_with_its_certificate_and_plain_http_on_loopback_only(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    cert, key_file = self_signed(tmp_path)
    settings, _ = with_policy(
        temporal, postgres, tmp_path, gateway={"tls_cert": str(cert), "tls_key": str(key_file)}
    )
    trusted = ssl.create_default_context(cafile=str(cert))
    async with kernel_and_gateway(settings) as (url, operator):
        assert url.startswith("https://")
        _, key = await operator.create_key(user="bob", tenant="tls")
        async with RemoteClient(url, key, verify=trusted) as remote:
            run_id = await remote.submit({"agent": "echo", "task": "hi"})
            result = await remote.result(run_id, timeout_s=60)
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ConnectError):  # not trusted: no key crosses
                await http.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
            with pytest.raises(httpx.HTTPError):  # plain HTTP is not spoken there
                await http.get(url.replace("https://", "http://") + "/v1/models")
    assert result.syscalls == 1

    plain = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"tls_cert": None, "tls_key": None})}
    )
    with pytest.raises(ConfigError, match=r"plain HTTP on 0\.0\.0\.0: set \[gateway\] tls_cert"):
        gateway_config(plain, "0.0.0.0")
    behind_a_proxy = plain.model_copy(
        update={"gateway": plain.gateway.model_copy(update={"allow_plain_http": True})}
    )
    assert gateway_config(behind_a_proxy, "0.0.0.0").host == "0.0.0.0"
    missing = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"tls_key": tmp_path / "none"})}
    )
    with pytest.raises(ConfigError, match="tls_key: no file at"):
        gateway_config(missing)


async def test_a_key_holds_so_many_event_streams_open_and_one_closed_is_one_free(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings, _ = with_policy(temporal, postgres, tmp_path, gateway={"key_streams": 1})
    # No worker polls: the run stays going, and its stream open.
    async with gateway(settings) as url, await KernosClient.connect(settings) as operator:
        _, key = await operator.create_key(user="bob", tenant=f"s-{uuid.uuid4().hex[:6]}")
        auth = {"Authorization": f"Bearer {key}"}
        async with RemoteClient(url, key) as remote, httpx.AsyncClient(base_url=url) as http:
            run_id = await remote.submit({"agent": "echo", "task": "hi"})
            path = f"/v1/runs/{run_id}/events"
            async with http.stream("GET", path, headers=auth, timeout=30) as first:
                assert first.status_code == 200
                lines = first.aiter_lines()
                assert (await anext(lines)).startswith("id: 1")  # run.started
                second = await http.get(path, headers=auth)
            assert second.status_code == 429 and "1 event streams open" in second.text
            assert int(second.headers["retry-after"]) >= 1

            async def reopened() -> int:
                async with http.stream("GET", path, headers=auth, timeout=30) as again:
                    return again.status_code

            # The first one closed: its place is free again.
            await eventually(reopened, lambda status: status == 200, what="a stream reopened")
        await operator.temporal.get_workflow_handle(run_id).terminate("test over")
