"""Server configuration: one YAML file, then TRELLIS_* environment variables, then
command-line flags; each later source wins over the earlier ones, key by key.

Every port is one URL-like setting (see trellis.plugins for how schemes are found):

    loader:     dir:./flows/tour | memory: | grpc://HOST:PORT | etcd:GRAPH | etcd://H:P/PREFIX?graph=G
    store:      memory: | file:./.trellis/sessions | grpc://... | etcd: | etcd://H:P/PREFIX
    locker:     local: | etcd:
    dispatcher: process:./tools.yaml | grpc://HOST:PORT
    tool_routes: {charge: grpc://localhost:50053}   (per tool; others go to dispatcher)

The YAML file holds the keys of ServerConfig (flat), except that ``dispatcher``
may also be a mapping ``{default: URL, routes: {tool: URL}, sidecars: [URL],
policies: {tool: {timeout, idempotent, retry, approval}}}`` (sidecars: dispatchers whose
ListTools answers route the tools they list; policies: trellis.server.tool_policies). The environment
variable of a key is TRELLIS_ + the key in upper case (TRELLIS_STORE,
TRELLIS_TLS_CERT, ...); TRELLIS_TOOL_ROUTES is ``tool=URL,tool=URL``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from trellis.adapters.directory_loader import entry_node_id, has_default_error_node
from trellis.api import DEFAULT_MAX_MESSAGE_BYTES
from trellis.dispatching import ToolPolicy
from trellis.errors import ConfigError
from trellis.evaluation_limits import (
    DEFAULT_MAX_CONDITION_COST,
    DEFAULT_MAX_PRINTF_WIDTH,
    DEFAULT_MAX_RANGE_ITERATIONS,
    DEFAULT_MAX_TEMPLATE_OUTPUT_BYTES,
    EvaluationLimits,
)
from trellis.go_values import parse_duration
from trellis.plugins import Kind, parse_url
from trellis.sanitize import DEFAULT_INPUT_LIMIT, input_limit_from_env
from trellis.server.watch_streams import DEFAULT_MAX_WATCH_STREAMS

# Contexts carried in a request: larger than one answer, but never megabytes of JSON per step.
DEFAULT_MAX_CONTEXT_BYTES = 256 * 1024
REPLY_ENVELOPE_BYTES = 16 * 1024
"""What a step reply holds besides the state and the actions: tags and lengths of the
nested messages, the state's signature, the terminal flag (a few hundred bytes; the
rest is margin)."""


def derived_state_limit(max_message_bytes: int) -> int:
    """The default state limit: half of a reply after its envelope (the render gets the other half).

    A state is counted as its encoded JSON document, which is never smaller than the
    state's protobuf form in a reply (same JSON for the contexts, longer field names)."""
    return (max_message_bytes - REPLY_ENVELOPE_BYTES) // 2


def check_state_limit(max_state_bytes: int, max_message_bytes: int) -> None:
    """A configured state limit must leave a reply room for a render as big as its envelope."""
    room = max_message_bytes - 2 * REPLY_ENVELOPE_BYTES
    if max_state_bytes > room:
        raise ConfigError(
            f"max_state_bytes ({max_state_bytes}) must be at most {room}: a reply of "
            f"max_message_bytes ({max_message_bytes}) holds the state, its render and "
            f"{REPLY_ENVELOPE_BYTES} bytes of envelope"
        )


ENV_PREFIX = "TRELLIS_"
CONFIG_ENV = "TRELLIS_CONFIG"
DEFAULT_LISTEN = "127.0.0.1:50051"


@dataclass(slots=True)
class ServerConfig:
    # where the flow lives; the default loader and tools file derive from it
    flow_dir: str = ""
    listen: str = DEFAULT_LISTEN
    # the services for composing replicas and sidecars (StateStore, ActionDispatcher) are
    # served only here, never on `listen`; "" = not served at all (see docs/server.md, Exposure)
    internal_listen: str = ""
    # the public services over Connect (HTTP/1.1 JSON or protobuf) and session events as
    # server-sent events (trellis.server.http, docs/http.md); "" = not served
    http_listen: str = ""
    # a web page on the HTTP listener (/inspector/) that draws the graph, lists and watches
    # sessions and walks one, through the public API only (docs/inspector.md); needs http_listen
    inspector: bool = False
    # ports, one URL each ("" = the embedded default)
    loader: str = ""
    store: str = "memory:"
    locker: str = "local:"
    # encryption at rest: a file of KEY_ID:BASE64 lines, the first the active key (docs/server.md)
    store_keys_file: str = ""
    # PII masking of stored states: {keys: [PATTERN], values: [PATTERN]} (trellis.adapters.masking_store)
    store_masking: dict[str, Any] = field(default_factory=dict)
    dispatcher: str = ""
    tool_routes: dict[str, str] = field(default_factory=dict)
    # dispatcher sidecars whose ListTools answers route the tools they list
    sidecars: list[str] = field(default_factory=list)
    # per-tool timeout/retry policy, winning over the sidecars' (trellis.server.tool_policies)
    tool_policies: dict[str, ToolPolicy] = field(default_factory=dict)
    # engine
    # "" = as `trellis run` picks them for a flow directory (start, main, index or the
    # directory's name; `error` when the flow has one), else "start" and none.
    entry_node: str = ""
    # where a failed or denied tool goes when its node names no target
    # (docs/engine.md, "Tools and sagas"); "" = none
    default_error_node: str = ""
    # true: no default error node even when the flow has an `error` node (a failed or
    # denied tool without its own target then fails the step / ends the session)
    no_default_error_node: bool = False
    # true: interpolated values are HTML-escaped (the engine's HTML interpolator)
    html: bool = False
    lock_ttl: float = 30.0
    # durable timers: a node's `timeout:` fires on the server (trellis.timers; docs/server.md)
    timers: bool = True
    timer_poll_interval: float = 0.2
    timer_claim_ttl: float = 10.0
    # evaluation budgets (trellis.evaluation_limits)
    max_condition_cost: int = DEFAULT_MAX_CONDITION_COST
    max_range_iterations: int = DEFAULT_MAX_RANGE_ITERATIONS
    max_template_output_bytes: int = DEFAULT_MAX_TEMPLATE_OUTPUT_BYTES
    max_printf_width: int = DEFAULT_MAX_PRINTF_WIDTH
    # etcd connection for etcd:// schemes (endpoints, tls, auth, prefix), read by their factories
    etcd: dict[str, Any] = field(default_factory=dict)
    # etcd's --quota-backend-bytes (its default: 2 GiB), for the trellis_etcd_db_quota_ratio metric
    etcd_quota_bytes: int = 2 * 1024 * 1024 * 1024
    # observability
    metrics_listen: str = ""
    log_level: str = "info"
    # OpenTelemetry traces, exported as the OTEL_* variables say (trellis.server.tracing)
    tracing: bool = False
    # security
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    token_file: str = ""
    token: str = ""
    signing_key_file: str = ""
    signing_key: str = ""
    # transport
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_input_bytes: int = DEFAULT_INPUT_LIMIT
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES
    # one encoded state, in every store and every reply; 0 = derived from max_message_bytes
    max_state_bytes: int = 0
    # the memory store's quota (other stores have their own backends' limits)
    memory_max_sessions: int = 10_000
    memory_max_bytes: int = 64 * 1024 * 1024
    # concurrent GraphLoader.Watch + Sessions.Watch streams, server-wide
    max_watch_streams: int = DEFAULT_MAX_WATCH_STREAMS
    keepalive_time: float = 60.0
    keepalive_timeout: float = 20.0
    shutdown_grace: float = 10.0
    health_probe_interval: float = 5.0
    # the event loop: asyncio (its own) | uvloop (opt-in, when installed; docs/server.md)
    event_loop: str = "asyncio"

    def evaluation_limits(self) -> EvaluationLimits:
        return EvaluationLimits(
            max_condition_cost=self.max_condition_cost,
            max_range_iterations=self.max_range_iterations,
            max_template_output_bytes=self.max_template_output_bytes,
            max_printf_width=self.max_printf_width,
        )

    def effective_loader(self) -> str:
        if self.loader:
            return self.loader
        if self.flow_dir:
            return f"dir:{self.flow_dir}"
        raise ConfigError("no loader configured: give a flow directory or set 'loader' (e.g. dir:./flow)")

    def effective_entry_node(self) -> str:
        if self.entry_node:
            return self.entry_node
        flow = self._served_directory()
        return entry_node_id(flow) if flow else "start"

    def effective_error_node(self) -> str:
        if self.no_default_error_node:
            if self.default_error_node:
                raise ConfigError(
                    f"default_error_node {self.default_error_node!r} and no_default_error_node "
                    "contradict each other: set one"
                )
            return ""
        if self.default_error_node:
            return self.default_error_node
        flow = self._served_directory()
        return "error" if flow and has_default_error_node(flow) else ""

    def _served_directory(self) -> str:
        """The flow directory the loader reads, when it is a directory loader."""
        if self.loader:
            spec = parse_url("loader", self.loader)
            return spec.target if spec.scheme == "dir" else ""
        return self.flow_dir

    def effective_max_state_bytes(self) -> int:
        """The state limit: as configured, or half of a reply (trellis.server.limits)."""
        if not self.max_state_bytes:
            return derived_state_limit(self.max_message_bytes)
        check_state_limit(self.max_state_bytes, self.max_message_bytes)
        return self.max_state_bytes

    def effective_dispatcher(self) -> str:
        if self.dispatcher:
            return self.dispatcher
        if self.flow_dir:
            return f"process:{Path(self.flow_dir) / 'tools.yaml'}"
        return ""


_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}
_FLOATS = {name for name, f in _FIELDS.items() if f.type == "float"}
_INTS = {name for name, f in _FIELDS.items() if f.type == "int"}
_BOOLS = {name for name, f in _FIELDS.items() if f.type == "bool"}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# Secrets are never read from the YAML file (it tends to be committed); use the
# *_file keys or the environment.
_NOT_IN_FILE = frozenset({"token", "signing_key"})


def _coerce(name: str, value: Any, where: str) -> Any:
    if name in _BOOLS:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str) else ""
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ConfigError(f"{where}: '{name}' must be true or false, got {value!r}")
    if name in _FLOATS:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: '{name}' must be a duration or number of seconds")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return float(text)
            except ValueError:
                pass
            try:
                return parse_duration(text)
            except ValueError:
                raise ConfigError(f"{where}: '{name}' is not a duration: {value!r}") from None
        raise ConfigError(f"{where}: '{name}' must be a duration or number of seconds")
    if name in _INTS:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: '{name}' must be a positive integer")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: '{name}' must be a positive integer, got {value!r}") from None
        if number <= 0:
            raise ConfigError(f"{where}: '{name}' must be a positive integer, got {value!r}")
        return number
    if name == "tool_routes":
        if isinstance(value, str):
            return parse_routes(value, where)
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{where}: 'tool_routes' must map tool names to dispatcher URLs")
        return dict(value)
    if name == "sidecars":
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        if not isinstance(value, list) or not all(isinstance(url, str) for url in value):
            raise ConfigError(f"{where}: 'sidecars' must be a list of dispatcher URLs")
        return list(value)
    if name == "tool_policies":
        from trellis.server.tool_policies import parse_policies

        return parse_policies(value, f"{where}: dispatcher.policies")
    if name == "store_masking":
        return _masking(value, f"{where}: store_masking")
    if name == "etcd":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: 'etcd' must be a mapping")
        return dict(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: '{name}' must be a string, got {type(value).__name__}")
    return value


def _masking(value: Any, where: str) -> dict[str, Any]:
    """The masking section, checked now (a bad pattern is named at startup); the environment
    gives it as YAML or JSON text (TRELLIS_STORE_MASKING='{keys: [password]}')."""
    if isinstance(value, str):
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            value = YAML(typ="safe", pure=True).load(value)
        except YAMLError as exc:
            raise ConfigError(f"{where}: invalid YAML: {exc}") from None
    from trellis.adapters.masking_store import MaskingRules

    MaskingRules.from_config(value, where)
    return dict(value)


def parse_routes(text: str, where: str) -> dict[str, str]:
    """``tool=URL,tool=URL`` → mapping."""
    routes: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        tool, sep, url = item.partition("=")
        if not sep or not tool.strip() or not url.strip():
            raise ConfigError(f"{where}: tool route {item!r} is not TOOL=URL")
        routes[tool.strip()] = url.strip()
    return routes


def _apply(config: ServerConfig, values: Mapping[str, Any], where: str) -> None:
    for name, value in values.items():
        if name not in _FIELDS:
            raise ConfigError(f"{where}: unknown setting '{name}' (known: {', '.join(sorted(_FIELDS))})")
        if name == "tool_routes":
            config.tool_routes.update(_coerce(name, value, where))
        else:
            setattr(config, name, _coerce(name, value, where))


def read_file(path: Path) -> dict[str, Any]:
    """The settings of a YAML configuration file (flat keys; ``dispatcher`` may be a mapping)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of settings")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}: setting names must be strings, got {key!r}")
        if key in _NOT_IN_FILE:
            raise ConfigError(f"{path}: '{key}' is a secret: use '{key}_file' or {ENV_PREFIX}{key.upper()}")
        if key == "dispatcher" and isinstance(value, Mapping):
            unknown = set(value) - {"default", "routes", "sidecars", "policies"}
            if unknown:
                raise ConfigError(
                    f"{path}: dispatcher: unknown keys {sorted(unknown)} "
                    "(known: default, routes, sidecars, policies)"
                )
            if "sidecars" in value:
                values["sidecars"] = value["sidecars"]
            if "policies" in value:
                values["tool_policies"] = value["policies"]
            if "default" in value:
                values["dispatcher"] = value["default"]
            if "routes" in value:
                values["tool_routes"] = value["routes"]
            continue
        values[key] = value
    base = path.parent
    # Relative paths in a file are relative to the file, not to the working directory.
    for key in (
        "flow_dir",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "token_file",
        "signing_key_file",
        "store_keys_file",
    ):
        if isinstance(values.get(key), str) and values[key] and not Path(values[key]).is_absolute():
            values[key] = str(base / values[key])
    for key in ("loader", "store", "locker", "dispatcher"):
        if isinstance(values.get(key), str):
            values[key] = _relative_url(cast(Kind, key), values[key], base)
    if isinstance(values.get("tool_routes"), Mapping):
        values["tool_routes"] = {
            k: _relative_url("dispatcher", v, base) if isinstance(v, str) else v
            for k, v in values["tool_routes"].items()
        }
    return values


_PATH_SCHEMES = frozenset({"dir", "file", "process"})


def _relative_url(kind: Kind, url: str, base: Path) -> str:
    """``dir:flow`` in a file at conf/trellis.yaml means conf/flow.

    The built-in path schemes take any relative target as a path. Any other scheme
    (a plugin's) gets the same only for a target that says it is a relative path,
    ``./`` or ``../`` first (``sqlite:./sessions.db``): its target may be
    anything else (a host, a name), which must not be rewritten."""
    try:
        spec = parse_url(kind, url)
    except ConfigError:
        return url  # reported, with its setting, when the port is built
    target = spec.target
    if not target or Path(target).is_absolute():
        return url
    if spec.scheme in _PATH_SCHEMES or target.startswith(("./", "../")):
        return f"{spec.scheme}:{base / target}"
    return url


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in environ and environ[key] != "":
            values[name] = environ[key]
    return values


def load_config(
    *,
    file: str | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """The configuration from ``file`` (or TRELLIS_CONFIG), the environment, then
    ``flags`` (None values = flag not given). Raises ConfigError naming the source
    and the setting that is wrong."""
    env = os.environ if environ is None else environ
    config = ServerConfig()
    # The sanitiser's variable (TRELLIS_MAX_INPUT_SIZE, docs/engine.md, "Input") sets the default
    # input limit; max_input_bytes from any source below overrides it.
    config.max_input_bytes = input_limit_from_env(env)
    path = file or env.get(CONFIG_ENV, "")
    if path:
        _apply(config, read_file(Path(path)), str(path))
    _apply(config, read_env(env), "environment")
    if flags:
        _apply(config, {k: v for k, v in flags.items() if v is not None}, "command line")
    if config.inspector and not config.http_listen:
        raise ConfigError("inspector: the page is served on the HTTP listener: set http_listen too")
    return config
