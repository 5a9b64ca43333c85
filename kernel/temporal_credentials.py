"""What one kind of process presents to Temporal, checked before it connects; what a refusal means.

A deployment's Temporal is reached over TLS: with the cluster's own CA (`server_ca_file`),
a client certificate where the server (or the proxy in front of it) demands mTLS, or an API key
(Temporal Cloud). Each file is read and checked here, so a missing, unreadable, expired or
mismatched certificate is one line naming its setting, and no worker has started; what the
server refuses is said the same way, from the transport's error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kernos.kernel.config import ProcessKind, TemporalCredentials, TemporalSettings
from kernos.kernel.errors import ConfigError, KernosError

#: Settings that travel together: a kind that sets one of a group takes the whole group from
#: its own section. Who a process is (its certificate and key, or its API key) is one group:
#: a kind given a certificate of its own presents no shared API key besides it.
_GROUPS = (
    ("tls",),
    ("server_ca_file",),
    ("server_name",),
    ("client_cert_file", "client_key_file", "api_key", "api_key_file"),
)


@dataclass(frozen=True)
class Presented:
    """One kind of process's credentials, each with the setting it came from (for errors)."""

    kind: ProcessKind
    credentials: TemporalCredentials
    where: dict[str, str]

    def setting(self, name: str) -> str:
        """`[temporal] name`, or `[temporal.<kind>] name` where the kind's section set it."""
        return self.where[name]

    @property
    def tls(self) -> bool:
        """Whether this process speaks TLS to Temporal."""
        c = self.credentials
        if c.tls is not None:
            return c.tls
        given = (c.server_ca_file, c.server_name, c.client_cert_file, c.api_key, c.api_key_file)
        return any(value is not None for value in given)


def presented(temporal: TemporalSettings, kind: ProcessKind) -> Presented:
    """The credentials `kind` connects with: its own section's over `[temporal]`'s."""
    own = getattr(temporal, kind)
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for group in _GROUPS:
        overridden = own is not None and any(name in own.model_fields_set for name in group)
        source, section = (own, f"[temporal.{kind}]") if overridden else (temporal, "[temporal]")
        for name in group:
            values[name] = getattr(source, name)
            where[name] = f"{section} {name}"
    return Presented(kind, TemporalCredentials.model_validate(values), where)


@dataclass(frozen=True)
class ConnectOptions:
    """What `Client.connect` takes from the credentials: its `tls` and `api_key`."""

    tls: Any = field(repr=False)  # temporalio.service.TLSConfig | bool (it holds a key)
    api_key: str | None = field(repr=False)


def connect_options(presented: Presented, *, now: datetime | None = None) -> ConnectOptions:
    """Read and check every file `presented` names; ConfigError naming the first that fails."""
    from temporalio.service import TLSConfig

    c = presented.credentials
    api_key = c.api_key.get_secret_value() if c.api_key is not None else None
    if c.api_key_file is not None:
        api_key = _read(presented, "api_key_file").decode(errors="replace").strip()
        if not api_key:
            raise ConfigError(f"{presented.setting('api_key_file')} ({c.api_key_file}) is empty")
    if not presented.tls:
        if api_key is not None:
            raise ConfigError(
                f"{presented.setting('tls')} is false, but an API key would then cross the "
                "network in the clear: Temporal takes API keys over TLS only"
            )
        return ConnectOptions(tls=False, api_key=None)
    when = now or datetime.now(UTC)
    config = TLSConfig(domain=c.server_name)
    if c.server_ca_file is not None:
        config.server_root_ca_cert = _read(presented, "server_ca_file")
        # A bundle may keep an old CA beside its successor while certificates rotate: only a
        # bundle with no CA valid now is refused.
        _check_certificates(
            presented, "server_ca_file", config.server_root_ca_cert, when, bundle=True
        )
    if c.client_cert_file is not None and c.client_key_file is not None:
        config.client_cert = _read(presented, "client_cert_file")
        config.client_private_key = _read(presented, "client_key_file")
        # The process's own certificate comes first; what follows is its chain, checked by
        # the server.
        leaf = _check_certificates(presented, "client_cert_file", config.client_cert, when)
        _check_key(presented, config.client_private_key, leaf)
    return ConnectOptions(tls=config, api_key=api_key)


def _read(presented: Presented, name: str) -> bytes:
    path: Path = getattr(presented.credentials, name)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{presented.setting(name)} ({path}) cannot be read: {exc.strerror or exc}"
        ) from exc


def _check_certificates(
    presented: Presented, name: str, pem: bytes, now: datetime, *, bundle: bool = False
) -> Any:
    """The file's first certificate, checked: PEM, and valid now.

    A `bundle` (of CAs) passes where any of its certificates is valid now.
    """
    from cryptography import x509

    path = getattr(presented.credentials, name)
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certificates = []
    if not certificates:
        raise ConfigError(f"{presented.setting(name)} ({path}) holds no PEM certificate")
    checked = certificates if bundle else certificates[:1]
    if any(_invalid_now(certificate, now) is None for certificate in checked):
        return certificates[0]
    raise ConfigError(f"{presented.setting(name)} ({path}): {_invalid_now(checked[0], now)}")


def _invalid_now(certificate: Any, now: datetime) -> str | None:
    """Why the certificate is not valid at `now`; None where it is."""
    subject = certificate.subject.rfc4514_string() or "(no subject)"
    if certificate.not_valid_after_utc < now:
        return (
            f"the certificate {subject} expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; renew it"
        )
    if certificate.not_valid_before_utc > now:
        return (
            f"the certificate {subject} is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (or this machine's clock "
            "is wrong)"
        )
    return None


def _check_key(presented: Presented, pem: bytes, certificate: Any) -> None:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    path = presented.credentials.client_key_file
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{presented.setting('client_key_file')} ({path}) holds no unencrypted PEM private "
            f"key: {exc}"
        ) from exc
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise ConfigError(
            f"{presented.setting('client_key_file')} ({path}) is not the key of "
            f"{presented.setting('client_cert_file')} ({presented.credentials.client_cert_file})"
        )


def refused(
    exc: BaseException, address: str, presented: Presented, namespace: str = "default"
) -> KernosError:
    """One line for a failed connection to Temporal, naming the setting that would mend it."""
    said = str(exc)
    c = presented.credentials
    if "UnknownIssuer" in said:
        trusted = (
            f"the CA in {presented.setting('server_ca_file')} ({c.server_ca_file})"
            if c.server_ca_file is not None
            else f"a CA this system trusts: set {presented.setting('server_ca_file')}"
        )
        return ConfigError(f"Temporal at {address}: its certificate is not signed by {trusted}")
    name = re.search(r"NotValidForName\w*\s*\{\s*expected: DnsName\(\"([^\"]+)\"\)", said)
    if name is not None or "NotValidForName" in said:
        host = name.group(1) if name is not None else address
        return ConfigError(
            f"Temporal at {address}: its certificate is not for {host!r}: set "
            f"{presented.setting('server_name')} to a name the certificate carries"
        )
    if re.search(r"InvalidCertificate\((Expired|NotValidYet)", said):
        return ConfigError(
            f"Temporal at {address}: its certificate (the server's) is expired or not yet "
            "valid: the server's to renew, or this machine's clock is wrong"
        )
    if _refused_by_peer(said):
        # A TLS alert is the server's word; an HTTP 400 is what nginx answers a request whose
        # certificate it refuses, and what some other proxy may answer for another reason.
        how = "" if "alert" in said.lower() else " (it answered HTTP 400, as a proxy does)"
        if c.client_cert_file is None:
            return ConfigError(
                f"Temporal at {address} refused this {presented.kind}{how}; it demands a client "
                f"certificate: set {presented.setting('client_cert_file')} and "
                f"{presented.setting('client_key_file')}"
            )
        return ConfigError(
            f"Temporal at {address} refused the client certificate in "
            f"{presented.setting('client_cert_file')} ({c.client_cert_file}){how}: not one it "
            "trusts (another CA's, or revoked)"
        )
    if presented.tls and ("InvalidContentType" in said or "CorruptMessage" in said):
        return ConfigError(
            f"Temporal at {address} does not speak TLS: unset the TLS settings, or set "
            f"{presented.setting('tls')} = false"
        )
    # Plaintext HTTP/2 to a TLS endpoint: its TLS alert read as a frame, or (nginx, at times)
    # the connection closed before the client read anything.
    hung_up = ("FRAME_SIZE_ERROR", "http2 error", "connection closed")
    if not presented.tls and any(sign in said for sign in hung_up):
        return ConfigError(
            f"Temporal at {address} did not answer plaintext gRPC (a TLS endpoint?): set "
            f"{presented.setting('server_ca_file')}, or {presented.setting('tls')} = true"
        )
    lowered = said.lower()
    denied = ("unauthenticated", "permissiondenied", "401 unauthorized", "403 forbidden")
    if any(word in lowered for word in denied):
        key = "api_key_file" if c.api_key_file is not None else "api_key"
        what = (
            presented.setting(key)
            if c.api_key is not None or c.api_key_file is not None
            else f"{presented.setting('client_cert_file')}, or {presented.setting('api_key')}"
        )
        scope = (
            f", or they do not admit it to namespace {namespace!r}"
            if "permissiondenied" in lowered
            else ""
        )
        return ConfigError(
            f"Temporal at {address} refused this {presented.kind}'s credentials ({what}"
            f"{scope}): {_reason(said)}"
        )
    return KernosError(
        f"cannot reach Temporal at {address} (setting [temporal] address): {_first_line(said)}"
    )


def _refused_by_peer(said: str) -> bool:
    """The server or its proxy refused the client's certificate.

    A TLS alert, or an HTTP 400 answer from a proxy that checks certificates after the handshake,
    as nginx does.
    """
    lowered = said.lower()
    alerts = ("certificaterequired", "badcertificate", "unknownca", "certificateunknown")
    if "alert" in lowered and any(alert in lowered.replace(" ", "") for alert in alerts):
        return True
    return "status: 400 bad request" in lowered or "400 bad request" in lowered


def _reason(said: str) -> str:
    """What the server said: its gRPC message, or the HTTP status a proxy answered with.

    Never the transport's metadata dump, which may carry headers.
    """
    http = re.search(r"response with status: (\d{3} [A-Za-z ]+)", said)
    if http is not None:
        return f"HTTP {http.group(1).strip()}"
    message = re.search(r'message: "([^"]*)"', said)
    return message.group(1) if message is not None else _first_line(said.split(", metadata")[0])


def _first_line(said: str) -> str:
    line = said.strip().splitlines()[0] if said.strip() else "no reason given"
    return line if len(line) <= 300 else line[:297] + "..."
