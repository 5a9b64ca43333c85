"""PostgreSQL over TLS: the kernel's connections verify the server, and may present a certificate.

The server is Debian's PostgreSQL in a throwaway cluster that takes TLS only
(`tests.tls_servers`): the embedded server is built without OpenSSL. It holds no kernel schema
(Debian's has no pgvector), so what is tested is the connection path every kernel connection
takes, the DSN as libpq reads it: the kernel's pool and the policy store's engine connect with
`sslmode=verify-full`, a role logs in by its client certificate alone, and each refusal is one
line that names the setting and what libpq found wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from kernos.kernel.config import DatabaseSettings
from kernos.kernel.db.pool import open_pool
from kernos.kernel.errors import KernosError
from kernos.kernel.policy_store import PolicyStore
from tests.certificates import TestCA
from tests.tls_servers import TlsPostgres, tls_postgres

#: A server of Debian's: not in the fast tier (`make test-fast`).
pytestmark = pytest.mark.servers

SSL_OF_THIS_SESSION = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@dataclass(frozen=True)
class SecuredPostgres:
    ca: TestCA
    server: TlsPostgres

    def dsn(self, user: str = "kernos", host: str = "localhost", **params: str) -> str:
        """A URL that verifies the server against the test's CA, `params` added or replaced."""
        password = f":{self.server.password}" if user == "kernos" else ""
        query = {"sslmode": "verify-full", "sslrootcert": str(self.ca.ca), **params}
        joined = "&".join(f"{name}={value}" for name, value in query.items())
        return f"postgresql://{user}{password}@{host}:{self.server.port}/postgres?{joined}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredPostgres]:
    ca = TestCA(tmp_path_factory.mktemp("pg-ca"))
    # For `localhost` alone: verify-full to 127.0.0.1 must fail on the name.
    with tls_postgres(ca.server("db", "localhost"), ca.ca) as server:
        yield SecuredPostgres(ca, server)


async def test_the_kernels_connections_verify_the_server(secured: SecuredPostgres) -> None:
    pool = await open_pool(DatabaseSettings(dsn=SecretStr(secured.dsn())))
    try:
        async with pool.connection() as conn:
            row = await (await conn.execute(SSL_OF_THIS_SESSION)).fetchone()
        assert row == {"ssl": True}
    finally:
        await pool.close()
    # The policy store's engine, from a key=value DSN (libpq's other form).
    store = PolicyStore(
        f"host=localhost port={secured.server.port} dbname=postgres user=kernos "
        f"password={secured.server.password} sslmode=verify-full sslrootcert={secured.ca.ca}"
    )
    try:
        async with store.engine.connect() as conn:
            assert (await conn.execute(text(SSL_OF_THIS_SESSION))).scalar() is True
    finally:
        await store.aclose()


async def test_a_role_logs_in_by_its_client_certificate(
    secured: SecuredPostgres, tmp_path: Path
) -> None:
    issued = secured.ca.client("kernos_cert", "kernos_cert")
    dsn = secured.dsn("kernos_cert", sslcert=str(issued.cert), sslkey=str(issued.key))
    pool = await open_pool(DatabaseSettings(dsn=SecretStr(dsn)))
    try:
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT current_user AS who")).fetchone()
        assert row == {"who": "kernos_cert"}
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("without TLS", "rejects connection for host \"127.0.0.1\", user \"kernos\", "
         "database \"postgres\", no encryption"),
        ("another CA trusted", "certificate verify failed"),
        ("a name the certificate lacks", "does not match host name \"127.0.0.1\""),
        ("no CA file", "does not exist"),
        ("no client certificate", "connection requires a valid client certificate"),
        ("a stranger's client certificate", "unknown ca"),
    ],
)  # fmt: skip
async def test_a_refused_connection_is_one_line_naming_the_setting(
    secured: SecuredPostgres, tmp_path: Path, case: str, said: str
) -> None:
    stranger = TestCA(tmp_path / "stranger", "stranger CA")
    them = stranger.client("kernos_cert", "kernos_cert")
    dsn = {
        "without TLS": lambda: secured.dsn(host="127.0.0.1", sslmode="disable"),
        "another CA trusted": lambda: secured.dsn(sslrootcert=str(stranger.ca)),
        "a name the certificate lacks": lambda: secured.dsn(host="127.0.0.1"),
        "no CA file": lambda: secured.dsn(sslrootcert=str(tmp_path / "gone.pem")),
        "no client certificate": lambda: secured.dsn("kernos_cert"),
        "a stranger's client certificate": lambda: secured.dsn(
            "kernos_cert", sslcert=str(them.cert), sslkey=str(them.key)
        ),
    }[case]()
    with pytest.raises(KernosError) as refused:
        await open_pool(DatabaseSettings(operator_dsn=SecretStr(dsn)), operator=True)
    message = str(refused.value)
    assert message.startswith("cannot connect to PostgreSQL ([database] operator_dsn): ")
    assert said in message
    assert "\n" not in message and secured.server.password not in message
