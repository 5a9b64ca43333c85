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

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kernos.infra.ports import free_port
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
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after 20 s")


@dataclass(frozen=True)
class GrpcTlsProxy:
    """nginx in front of Temporal: its address, and who connected (their certificates)."""

    address: str
    access_log: Path

    def subjects(self) -> set[str]:
        """The subjects of the client certificates of the requests it passed on or refused."""
        if not self.access_log.exists():
            return set()
        return {line.strip() for line in self.access_log.read_text().splitlines()}


@contextmanager
def grpc_tls_proxy(
    upstream: str, server: Issued, client_ca: Path, folder: Path
) -> Iterator[GrpcTlsProxy]:
    """nginx terminating TLS on a free port, demanding a certificate signed by `client_ca`."""
    nginx = debian_binary("nginx", "/usr/sbin/nginx")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            folder=folder,
            port=port,
            upstream=upstream,
            server_cert=server.cert,
            server_key=server.key,
            client_ca=client_ca,
        )
    )
    if os.geteuid() != 0:  # the directive is root's alone
        conf.write_text(conf.read_text().replace("user root;\n", ""))
    process = subprocess.Popen(
        [nginx, "-p", str(folder), "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=(folder / "stderr.log").open("wb"),
    )  # fmt: skip
    try:
        _until_listening(port, process, folder / "error.log")
        yield GrpcTlsProxy(f"127.0.0.1:{port}", folder / "access.log")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
