"""trellis's distributed mode on etcd: locker, state store, graph loader.

One ``EtcdClient`` per process backs all three; see docs/etcd.md.
"""

from trellis.adapters.etcd.client import EtcdClient, Health
from trellis.adapters.etcd.config import EtcdConfig, parse_etcd_url
from trellis.adapters.etcd.lease import ProcessLease
from trellis.adapters.etcd.loader import EtcdGraphLoader
from trellis.adapters.etcd.locker import EtcdLocker, EtcdLockHandle
from trellis.adapters.etcd.store import EtcdStateStore

__all__ = [
    "EtcdClient",
    "EtcdConfig",
    "EtcdGraphLoader",
    "EtcdLockHandle",
    "EtcdLocker",
    "EtcdStateStore",
    "Health",
    "ProcessLease",
    "parse_etcd_url",
]
