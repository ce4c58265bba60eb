"""What a dispatch carries besides the call, and how a tool wants to be called.

* DispatchContext: who asks (session, node), which attempt, until when, and the
  fencing token of the session's lock, so that a sidecar can refuse a caller that
  has since lost the lock and run a retried call once (by its idempotency key).
* ToolInfo and RetryPolicy: what a dispatcher declares about each tool it serves
  (ActionDispatcher.ListTools), in the shape Temporal users know: initial interval,
  backoff coefficient, maximum interval, maximum attempts, non-retryable types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from trellis.domain import JSONValue

# The error types the dispatch layer itself gives to a failed attempt.
TIMEOUT_ERROR = "Timeout"
UNAVAILABLE_ERROR = "Unavailable"
STALE_FENCE_ERROR = "StaleFencingToken"
INVALID_ARGUMENTS_ERROR = "InvalidArguments"
TOOL_NOT_FOUND_ERROR = "ToolNotFound"


@dataclass(frozen=True, slots=True)
class DispatchContext:
    session_id: str = ""
    node_id: str = ""
    attempt: int = 1
    deadline: float | None = None  # wall clock (time.time()) when the caller stops waiting
    idempotency_key: str = ""
    fencing_token: int = 0  # 0: the caller holds no lock

    def next_attempt(self) -> DispatchContext:
        return replace(self, attempt=self.attempt + 1)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float | None = None  # None: 100 x initial_interval
    maximum_attempts: int = 1  # the first attempt included; 0 = until the deadline
    non_retryable_error_types: frozenset[str] = frozenset()

    def wait_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 = the first retry)."""
        cap = self.maximum_interval if self.maximum_interval is not None else 100 * self.initial_interval
        return min(cap, self.initial_interval * self.backoff_coefficient ** max(attempt - 2, 0))

    def allows(self, attempt: int) -> bool:
        """Whether ``attempt`` may be made at all (deadline aside)."""
        return self.maximum_attempts == 0 or attempt <= self.maximum_attempts

    def retries(self, error_type: str) -> bool:
        return error_type not in self.non_retryable_error_types


@dataclass(frozen=True, slots=True)
class ToolInfo:
    name: str
    description: str = ""
    args_schema: Mapping[str, JSONValue] = field(default_factory=dict)
    idempotent: bool = False
    timeout: float | None = None  # seconds of one attempt; None: the caller's default
    retry: RetryPolicy | None = None  # None: no retries


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """A server's own say on a tool, which wins over what the sidecar declares."""

    timeout: float | None = None
    retry: RetryPolicy | None = None
    idempotent: bool | None = None
    # allow | deny | confirm (trellis.tool_approval); applied by the session manager
    approval: str = "allow"

    def over(self, declared: ToolInfo | None, name: str) -> ToolInfo:
        base = declared or ToolInfo(name=name)
        return replace(
            base,
            timeout=self.timeout if self.timeout is not None else base.timeout,
            retry=self.retry if self.retry is not None else base.retry,
            idempotent=self.idempotent if self.idempotent is not None else base.idempotent,
        )
