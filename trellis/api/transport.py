"""What both ends of a trellis gRPC connection agree on: the message size, TLS
credentials, the bearer token's metadata, and how a client target
(``HOST:PORT?options``) is written. Used by the server, the remote adapters and
the SDK alike, so none of them imports another's module for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import grpc  # type: ignore[import-untyped]

from trellis.api import DEFAULT_MAX_MESSAGE_BYTES
from trellis.errors import ConfigError
from trellis.go_values import parse_duration

MAX_METADATA_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """How to reach a server. Every field has a usable default for a plaintext loopback server."""

    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    token: str = ""
    timeout: float = 30.0
    """Default deadline of a unary call, in seconds (0 = none)."""
    retries: int = 4
    """Extra attempts of an idempotent call that failed with UNAVAILABLE."""
    backoff_base: float = 0.05
    backoff_cap: float = 2.0
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): exponential, capped, jittered."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2**attempt))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


_BOOL = {
    "1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False
}


def parse_target(target: str, base: ChannelOptions | None = None) -> tuple[str, ChannelOptions]:
    """``HOST:PORT[?key=value&...]`` or ``unix:PATH[?...]`` → the address and its options.

    Keys: ``tls`` (1/0), ``ca``, ``cert``, ``key`` (PEM files; any of them implies
    TLS), ``token_file`` (a file whose first line is the bearer token), ``timeout``
    (a duration, e.g. ``5s``), ``retries``. Raises ConfigError naming the bad key.
    """
    address, _, query = target.partition("?")
    address = address.rstrip("/")
    host, sep, port = address.rpartition(":")
    if address.startswith("unix:"):
        # A Unix domain socket (``unix:PATH`` or ``unix:///ABSOLUTE``), as grpc spells it.
        if not address[len("unix:"):].strip("/"):
            raise ConfigError(f"grpc target {target!r}: unix: needs a socket path")
    elif not sep or not host or not port.isdigit():
        raise ConfigError(f"grpc target {target!r} is not HOST:PORT (e.g. grpc://127.0.0.1:50051)")
    options = base or ChannelOptions()
    changes: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key == "tls":
            if value.lower() not in _BOOL:
                raise ConfigError(f"grpc target {target!r}: tls must be 1 or 0, got {value!r}")
            changes["tls"] = _BOOL[value.lower()]
        elif key in ("ca", "cert", "key"):
            changes[f"{key}_file"] = value
            changes.setdefault("tls", True)
        elif key == "token_file":
            changes["token"] = _read_token(value, target)
        elif key == "timeout":
            try:
                changes["timeout"] = parse_duration(value)
            except ValueError:
                raise ConfigError(f"grpc target {target!r}: timeout {value!r} is not a duration") from None
        elif key == "retries":
            if not value.isdigit():
                raise ConfigError(f"grpc target {target!r}: retries must be a number, got {value!r}")
            changes["retries"] = int(value)
        elif key != "tools":  # tools= belongs to the dispatcher factory
            raise ConfigError(
                f"grpc target {target!r}: unknown option {key!r} "
                "(known: tls, ca, cert, key, token_file, timeout, retries, tools)"
            )
    return address, replace(options, **changes)


def _read_token(path: str, target: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise ConfigError(
            f"grpc target {target!r}: cannot read token file {path!r}: {exc.strerror}"
        ) from None
    if not lines:
        raise ConfigError(f"grpc target {target!r}: token file {path!r} holds no token")
    return lines[0]


def read_pem(path: str, what: str) -> bytes:
    """The bytes of a certificate, key or token file; a ConfigError naming it when unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} '{path}': {exc.strerror}") from None


def server_credentials(cert_file: str, key_file: str, client_ca_file: str = "") -> Any:
    """TLS credentials for the server; with ``client_ca_file``, clients must present a
    certificate signed by that CA (mutual TLS)."""
    if not cert_file or not key_file:
        raise ConfigError("TLS needs both a certificate (tls_cert) and a private key (tls_key)")
    pair = (read_pem(key_file, "TLS key"), read_pem(cert_file, "TLS certificate"))
    if client_ca_file:
        return grpc.ssl_server_credentials(
            [pair], root_certificates=read_pem(client_ca_file, "client CA"), require_client_auth=True
        )
    return grpc.ssl_server_credentials([pair])


def channel_credentials(ca_file: str = "", cert_file: str = "", key_file: str = "") -> Any:
    """TLS credentials for a client channel: ``ca_file`` to trust a private CA (else the
    system roots), ``cert_file``+``key_file`` to authenticate to a mutual-TLS server."""
    if bool(cert_file) != bool(key_file):
        raise ConfigError("a client certificate needs both cert_file and key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca_file, "CA certificate") if ca_file else None,
        private_key=read_pem(key_file, "client key") if key_file else None,
        certificate_chain=read_pem(cert_file, "client certificate") if cert_file else None,
    )


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token`` (for clients of a token-protected server)."""
    return (("authorization", f"Bearer {token}"),)
