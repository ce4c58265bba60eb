"""The server's own timeout and retry policy per tool (``dispatcher: policies:``), which
wins over what a sidecar declares in ListTools::

    dispatcher:
      sidecars: [unix:///run/tools/payments.sock]
      policies:
        charge:
          timeout: 5s
          idempotent: true
          approval: confirm         # allow (default) | deny | confirm (trellis.tool_approval)
          retry: {initial_interval: 200ms, backoff_coefficient: 2, maximum_interval: 2s,
                  maximum_attempts: 4, non_retryable_error_types: [CardDeclined]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trellis.dispatching import RetryPolicy, ToolPolicy
from trellis.errors import ConfigError
from trellis.go_values import parse_duration
from trellis.tool_approval import Approval, ToolApprovals

_POLICY_KEYS = frozenset({"timeout", "idempotent", "retry", "approval"})
_APPROVALS = ("allow", "deny", "confirm")
_RETRY_KEYS = frozenset(
    {"initial_interval", "backoff_coefficient", "maximum_interval", "maximum_attempts",
     "non_retryable_error_types"}
)
MAX_ATTEMPTS_LIMIT = 100


def parse_policies(value: Any, where: str) -> dict[str, ToolPolicy]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must map tool names to policies")
    return {str(name): _policy(entry, f"{where}.{name}") for name, entry in value.items()}


def approvals_of(policies: Mapping[str, ToolPolicy]) -> ToolApprovals:
    """The approval part of the policies, for the session manager."""
    return ToolApprovals({name: Approval(policy.approval) for name, policy in policies.items()})


def _policy(entry: Any, where: str) -> ToolPolicy:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: must be a mapping (known keys: {', '.join(sorted(_POLICY_KEYS))})")
    unknown = set(entry) - _POLICY_KEYS
    if unknown:
        known = ", ".join(sorted(_POLICY_KEYS))
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {known})")
    idempotent = entry.get("idempotent")
    if idempotent is not None and not isinstance(idempotent, bool):
        raise ConfigError(f"{where}.idempotent: must be true or false")
    timeout = _seconds(entry["timeout"], f"{where}.timeout") if "timeout" in entry else None
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"{where}.timeout: must be positive")
    retry = _retry(entry["retry"], f"{where}.retry") if "retry" in entry else None
    approval = entry.get("approval", "allow")
    if approval not in _APPROVALS:
        raise ConfigError(f"{where}.approval: must be one of {', '.join(_APPROVALS)}, got {approval!r}")
    return ToolPolicy(timeout=timeout, retry=retry, idempotent=idempotent, approval=approval)


def _retry(entry: Any, where: str) -> RetryPolicy:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: must be a mapping (known keys: {', '.join(sorted(_RETRY_KEYS))})")
    unknown = set(entry) - _RETRY_KEYS
    if unknown:
        known = ", ".join(sorted(_RETRY_KEYS))
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {known})")
    initial = _seconds(entry.get("initial_interval", 1.0), f"{where}.initial_interval")
    maximum = entry.get("maximum_interval")
    coefficient = entry.get("backoff_coefficient", 2.0)
    if isinstance(coefficient, bool) or not isinstance(coefficient, int | float) or coefficient < 1:
        raise ConfigError(f"{where}.backoff_coefficient: must be a number of at least 1")
    attempts = entry.get("maximum_attempts", 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 0 <= attempts <= MAX_ATTEMPTS_LIMIT:
        raise ConfigError(f"{where}.maximum_attempts: must be an integer from 0 to {MAX_ATTEMPTS_LIMIT}")
    types = entry.get("non_retryable_error_types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{where}.non_retryable_error_types: must be a list of strings")
    return RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=float(coefficient),
        maximum_interval=_seconds(maximum, f"{where}.maximum_interval") if maximum is not None else None,
        maximum_attempts=attempts,
        non_retryable_error_types=frozenset(types),
    )


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: must be a duration like '500ms'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        try:
            seconds = parse_duration(str(value))
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a duration (e.g. '500ms', '2s')") from None
    if seconds < 0:
        raise ConfigError(f"{where}: must not be negative")
    return seconds
