"""Servers that speak TLS for the deployment tests: Temporal behind an mTLS gRPC proxy, and a
PostgreSQL cluster that takes TLS only.

Both are Debian's packages (`make test-system` installs them), started by the test in a folder
of its own and stopped with it. nginx stands for a secured Temporal: it terminates TLS, demands
a client certificate from the test's CA, and passes gRPC on to the dev server, as a
TLS-terminating load balancer in front of a self-hosted cluster does. The embedded PostgreSQL
is built without OpenSSL, so the TLS cluster is Debian's server (no pgvector: the tests connect,
they keep no kernel records there).
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kernos.infra.ports import free_port, port_in_use
from tests.certificates import Issued

# Temporal's long polls last about 70 s: the proxy must wait longer for an answer (nginx's
# default is 60 s). A worker's many polls share one HTTP/2 connection, so it takes more streams
# than nginx's default 128, and a gRPC request may be larger than its default 1 MB body.
NGINX_CONF = """\
daemon off;
worker_processes 1;
user root;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format subjects '$ssl_client_s_dn';
    access_log {folder}/access.log subjects;
    client_body_temp_path {folder}/body;
    client_max_body_size 0;
    keepalive_requests 100000;
    http2_max_concurrent_streams 1000;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        ssl_client_certificate {client_ca};
        ssl_verify_client on;
        grpc_read_timeout 300s;
        grpc_send_timeout 300s;
        location / {{
            grpc_pass grpc://{upstream};
        }}
    }}
    # Temporal Cloud's other door: TLS without a client certificate, an API key as the bearer.
    server {{
        listen 127.0.0.1:{key_port} ssl http2;
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        grpc_read_timeout 300s;
        grpc_send_timeout 300s;
        location / {{
            if ($http_authorization != "Bearer {api_key}") {{
                return 401;
            }}
            grpc_pass grpc://{upstream};
        }}
    }}
}}
"""


def debian_binary(name: str, *candidates: str) -> str:
    """A Debian package's program, or an error saying how to install it."""
    found = shutil.which(name) or next((c for c in candidates if os.path.exists(c)), None)
    if found is None:
        raise RuntimeError(
            f"{name} is not installed: `make test-system` installs Debian's packages the "
            "deployment tests use (nginx, postgresql)"
        )
    return found


def _until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text() if log.exists() else '?'}")
        if port_in_use(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after 20 s")


@dataclass(frozen=True)
class GrpcTlsProxy:
    """nginx in front of Temporal: its addresses, and who connected (their certificates)."""

    address: str
    """Where a client certificate signed by the proxy's client CA is demanded."""
    key_address: str
    """Where the API key `api_key` is demanded instead (no client certificate)."""
    api_key: str
    access_log: Path

    def requests(self) -> list[str]:
        """Each request it passed on or refused, as its client certificate's subject (`-` for
        none), in order."""
        if not self.access_log.exists():
            return []
        return [line.strip() for line in self.access_log.read_text().splitlines()]

    def subjects(self) -> set[str]:
        """The subjects of the client certificates of the requests it passed on or refused."""
        return set(self.requests())


@contextmanager
def grpc_tls_proxy(
    upstream: str, server: Issued, client_ca: Path, folder: Path
) -> Iterator[GrpcTlsProxy]:
    """nginx terminating TLS on free ports, demanding a certificate signed by `client_ca` on
    one and an API key on the other."""
    nginx = debian_binary("nginx", "/usr/sbin/nginx")
    folder.mkdir(parents=True, exist_ok=True)
    port, key_port = free_port(), free_port()
    api_key = f"tc-{uuid.uuid4().hex}"
    conf = folder / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            folder=folder,
            port=port,
            key_port=key_port,
            api_key=api_key,
            upstream=upstream,
            server_cert=server.cert,
            server_key=server.key,
            client_ca=client_ca,
        )
    )
    if os.geteuid() != 0:  # the directive is root's alone
        conf.write_text(conf.read_text().replace("user root;\n", ""))
    with (folder / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [nginx, "-p", str(folder), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        _until_listening(port, process, folder / "error.log")
        _until_listening(key_port, process, folder / "error.log")
        yield GrpcTlsProxy(
            f"127.0.0.1:{port}", f"127.0.0.1:{key_port}", api_key, folder / "access.log"
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


#: Who may connect, and how: the kernel's role by password, a role by its certificate alone,
#: both over TLS only; anything without TLS is refused by name.
PG_HBA = """\
local   all  postgres                 trust
hostssl all  kernos       127.0.0.1/32 scram-sha-256
hostssl all  kernos_cert  127.0.0.1/32 cert
host    all  all          127.0.0.1/32 reject
"""


@dataclass(frozen=True)
class TlsPostgres:
    """A PostgreSQL cluster that takes TLS only, on 127.0.0.1:`port`."""

    port: int
    #: The password of role `kernos`; role `kernos_cert` logs in by certificate (its CN).
    password: str


@contextmanager
def tls_postgres(server: Issued, client_ca: Path) -> Iterator[TlsPostgres]:
    """Debian's PostgreSQL in a throwaway cluster: `server`'s certificate, client
    certificates checked against `client_ca`; removed afterwards."""
    initdb = debian_binary("initdb", *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")))
    binaries = Path(initdb).resolve().parent  # Debian links some into /usr/local/bin
    # PostgreSQL refuses to run as root: as root, the cluster is Debian's `postgres` user's,
    # in a folder of its own (the test's own is root's alone).
    user = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="kernos-tls-pg-"))
    data = folder / "data"
    port = free_port()
    password = uuid.uuid4().hex
    try:
        for name, source in (("server.crt", server.cert), ("server.key", server.key),
                             ("client-ca.crt", client_ca)):  # fmt: skip
            shutil.copyfile(source, folder / name)
            (folder / name).chmod(0o600)
        if user is not None:
            for path in (folder, *folder.iterdir()):
                shutil.chown(path, user, user)
        run = functools.partial(subprocess.run, check=True, capture_output=True, user=user,
                                timeout=60)  # fmt: skip
        run([initdb, "-D", str(data), "-U", "postgres", "--auth=trust"])
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                f"unix_socket_directories = '{folder}'\nssl = on\n"
                f"ssl_cert_file = '{folder}/server.crt'\nssl_key_file = '{folder}/server.key'\n"
                f"ssl_ca_file = '{folder}/client-ca.crt'\n"
            )
        (data / "pg_hba.conf").write_text(PG_HBA)
        run([str(binaries / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"),
             "start"])  # fmt: skip
        psql = [str(binaries / "psql"), "-h", str(folder), "-p", str(port), "-U", "postgres",
                "-v", "ON_ERROR_STOP=1", "-c"]  # fmt: skip
        run([*psql, f"CREATE ROLE kernos LOGIN PASSWORD '{password}'"])
        run([*psql, "CREATE ROLE kernos_cert LOGIN"])
        yield TlsPostgres(port, password)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True, user=user, timeout=60,
            )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
