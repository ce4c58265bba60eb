"""How to reach etcd: endpoints, TLS, credentials, key prefix, timeouts.

One dataclass, filled from code or parsed from a URL of the composition root::

    etcd://[user:password@]host:port[,host:port...][/prefix][?option=value&...]

Options: ``ca``, ``cert``, ``key`` (PEM file paths; any of them turns TLS on),
``tls=true`` (TLS with the system's roots), ``user``, ``password``,
``dial_timeout``, ``request_timeout``, ``lease_ttl``, ``session_ttl`` (Go
durations such as ``5s``, ``1m30s``), ``max_request_bytes``. A URL without hosts
(``etcd:`` or ``etcd:///prefix``) takes the endpoints of a base configuration.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from trellis.errors import ConfigError
from trellis.go_values import parse_duration

DEFAULT_PORT = 2379
DEFAULT_PREFIX = "/trellis"
ETCD_MAX_REQUEST_BYTES = 1572864
"""etcd's default --max-request-bytes (1.5 MiB): the largest request a server accepts."""


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    endpoints: tuple[str, ...] = (f"127.0.0.1:{DEFAULT_PORT}",)
    """``host:port`` of each member; the client fails over between them."""
    prefix: str = DEFAULT_PREFIX
    """Every key lives under this prefix, so several deployments can share one etcd."""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls: bool = False
    """TLS on; implied by any of the three files above."""
    username: str = ""
    password: str = ""
    dial_timeout: float = 5.0
    """Seconds to wait for a first connection."""
    request_timeout: float = 5.0
    """Seconds before one request is abandoned (BackendUnavailable)."""
    lease_ttl: float = 10.0
    """TTL of the process lease when a caller gives none (the locker passes its own)."""
    session_ttl: float = 0.0
    """Stored sessions expire this long after their last save; 0 = never."""
    max_request_bytes: int = ETCD_MAX_REQUEST_BYTES
    """Requests larger than this are refused before sending (StateTooLarge)."""

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ConfigError("etcd: at least one endpoint is required")
        for endpoint in self.endpoints:
            split_endpoint(endpoint)
        if self.prefix and (not self.prefix.startswith("/") or self.prefix.endswith("/")):
            raise ConfigError(f"etcd: prefix {self.prefix!r} must start with '/' and not end with '/'")
        for name in ("dial_timeout", "request_timeout", "lease_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"etcd: {name} must be positive, got {getattr(self, name)}")
        if self.session_ttl < 0:
            raise ConfigError(f"etcd: session_ttl must not be negative, got {self.session_ttl}")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("etcd: a client certificate needs both 'cert' and 'key'")
        if bool(self.username) != bool(self.password):
            raise ConfigError("etcd: authentication needs both a user and a password")

    @property
    def use_tls(self) -> bool:
        return self.tls or bool(self.ca_file or self.cert_file)

    def key(self, *parts: str) -> bytes:
        """``<prefix>/<part>/<part>...`` as bytes."""
        return "/".join((self.prefix, *parts)).encode()

    @classmethod
    def from_url(cls, url: str, base: EtcdConfig | None = None) -> EtcdConfig:
        return parse_etcd_url(url, base)[0]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "etcd") -> EtcdConfig:
        """From a configuration file's ``etcd:`` section. Keys: ``endpoints`` (list or
        comma-separated), ``prefix``, ``ca``, ``cert``, ``key``, ``tls``, ``user``,
        ``password``, ``dial_timeout``, ``request_timeout``, ``lease_ttl``, ``session_ttl``
        (seconds or Go durations such as ``5s``), ``max_request_bytes``."""
        changes: dict[str, Any] = {}
        for name, value in values.items():
            field_name = _MAPPING_KEYS.get(name)
            if field_name is None:
                known = ", ".join(sorted(_MAPPING_KEYS))
                raise ConfigError(f"{where}: unknown key {name!r} (known: {known})")
            if field_name == "endpoints":
                items = value.split(",") if isinstance(value, str) else value
                if not isinstance(items, list | tuple) or not all(isinstance(e, str) for e in items):
                    raise ConfigError(f"{where}: 'endpoints' must be a list of host:port strings")
                changes[field_name] = tuple(e.strip() for e in items if e.strip())
            elif field_name in _DURATIONS:
                changes[field_name] = _seconds(value, f"{where}: '{name}'")
            elif field_name == "tls":
                if not isinstance(value, bool):
                    raise ConfigError(f"{where}: 'tls' must be true or false")
                changes[field_name] = value
            elif field_name == "max_request_bytes":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigError(f"{where}: 'max_request_bytes' must be a number of bytes")
                changes[field_name] = value
            else:
                if not isinstance(value, str):
                    raise ConfigError(f"{where}: '{name}' must be a string")
                changes[field_name] = value.rstrip("/") if field_name == "prefix" else value
        return cls(**changes)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``host`` → (host, port). Raises ConfigError."""
    text = endpoint.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    if not text:
        raise ConfigError("etcd: empty endpoint")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"etcd: endpoint {endpoint!r} is not [ipv6]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ConfigError(f"etcd: endpoint {endpoint!r}: write IPv6 addresses as [address]:port")
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise ConfigError(f"etcd: endpoint {endpoint!r} has an invalid port {port_text!r}") from None
    if not host or not 0 < port < 65536:
        raise ConfigError(f"etcd: endpoint {endpoint!r} is not host:port")
    return host, port


_DURATIONS = ("dial_timeout", "request_timeout", "lease_ttl", "session_ttl")
_MAPPING_KEYS = {
    "endpoints": "endpoints",
    "prefix": "prefix",
    "ca": "ca_file",
    "cert": "cert_file",
    "key": "key_file",
    "tls": "tls",
    "user": "username",
    "password": "password",
    "max_request_bytes": "max_request_bytes",
    **{name: name for name in _DURATIONS},
}


def _seconds(value: object, what: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value) if value.replace(".", "", 1).isdigit() else parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from None
    raise ConfigError(f"{what} must be a number of seconds or a duration such as '5s'")


def parse_etcd_url(
    url: str, base: EtcdConfig | None = None, extra: Collection[str] = ()
) -> tuple[EtcdConfig, dict[str, str]]:
    """Parse ``url`` over ``base`` (defaults when None). Query keys named in
    ``extra`` (e.g. ``graph`` for the loader) are returned apart instead of being
    refused as unknown. Raises ConfigError naming the part that is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "etcd":
        raise ConfigError(f"etcd: URL {url!r} must start with 'etcd:'")
    config = base or EtcdConfig()
    changes: dict[str, object] = {}
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        changes["username"] = urllib.parse.unquote(user)
        changes["password"] = urllib.parse.unquote(password)
    if netloc:
        changes["endpoints"] = tuple(e for e in netloc.split(",") if e)
    if parts.path not in ("", "/"):
        changes["prefix"] = urllib.parse.unquote(parts.path).rstrip("/")
    elif parts.path == "/":
        changes["prefix"] = ""
    extras: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name in extra:
            extras[name] = value
        elif name in ("ca", "cert", "key"):
            changes[f"{name}_file"] = value
        elif name in ("user", "password"):
            changes["username" if name == "user" else name] = value
        elif name == "tls":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ConfigError(f"etcd: URL option tls={value!r} must be true or false")
            changes["tls"] = value.lower() in ("true", "1")
        elif name in _DURATIONS:
            changes[name] = _seconds(value, f"etcd: URL option {name}={value!r}")
        elif name == "max_request_bytes":
            if not value.isdigit():
                raise ConfigError(f"etcd: URL option max_request_bytes={value!r} must be a number")
            changes[name] = int(value)
        else:
            known = sorted({"ca", "cert", "key", "tls", "user", "password", *_DURATIONS, *extra})
            raise ConfigError(f"etcd: unknown URL option {name!r} (known: {', '.join(known)})")
    return dataclasses.replace(config, **changes), extras  # type: ignore[arg-type]
