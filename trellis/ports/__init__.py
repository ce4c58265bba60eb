"""Ports: the async protocols every adapter implements (one per module).

Re-exported here so callers write ``from trellis.ports import StateStore``.
"""

from trellis.ports.content import ContentConverter
from trellis.ports.dispatcher import ActionDispatcher
from trellis.ports.engine import EnginePort, LifecycleHook
from trellis.ports.loader import GraphChange, GraphLoader, Watchable
from trellis.ports.locker import DistributedLocker, LockHandle
from trellis.ports.sessions import DiffStream, SessionsPort
from trellis.ports.store import SessionPage, StateStore, StepStore

__all__ = [
    "ActionDispatcher",
    "ContentConverter",
    "DiffStream",
    "DistributedLocker",
    "EnginePort",
    "GraphChange",
    "GraphLoader",
    "LifecycleHook",
    "LockHandle",
    "SessionPage",
    "SessionsPort",
    "StateStore",
    "StepStore",
    "Watchable",
]
