"""How full etcd's backend is: the database size against the quota, and its alarms.

etcd keeps every version of every key until it is compacted, and refuses all writes
(alarm NOSPACE) once its database reaches ``--quota-backend-bytes``; compaction frees
space inside the file for reuse, only defragmentation returns it (docs/etcd.md,
"Storage: compaction, quota, defragmentation"). The server polls this to expose it
as metrics, so an operator is alerted well before the quota is reached.
"""

from __future__ import annotations

from dataclasses import dataclass

from aetcd import rpc

from trellis.adapters.etcd.client import EtcdClient


@dataclass(frozen=True, slots=True)
class StorageStatus:
    db_size: int
    """Bytes of the database file of the member answering (what the quota is checked against)."""
    db_size_in_use: int
    """Bytes of it holding live data (the rest is free after compaction, until a defrag)."""
    alarms: tuple[str, ...]
    """Active cluster alarms (NOSPACE, CORRUPT); empty when none."""


async def storage_status(client: EtcdClient) -> StorageStatus:
    """One Status and one Alarm (GET) call. Raises BackendUnavailable."""
    status = await client.call("Status", rpc.StatusRequest())
    alarms = await client.call("Alarm", rpc.AlarmRequest(action=rpc.AlarmRequest.GET))
    names = tuple(sorted({rpc.AlarmType.Name(member.alarm) for member in alarms.alarms}))
    return StorageStatus(int(status.dbSize), int(status.dbSizeInUse), names)
