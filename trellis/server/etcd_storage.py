"""Metrics of etcd's storage, so an alert fires well before etcd's quota stops all writes.

Every step writes a whole state and etcd keeps each version until it is compacted;
once the database reaches ``--quota-backend-bytes`` etcd raises the NOSPACE alarm and
refuses every write (docs/etcd.md, "Storage"). etcd 3.4/3.5's Status does not report
the quota, so the server is told it (``etcd_quota_bytes``, the same number as etcd's
flag) and exports the ratio:

  trellis_etcd_db_size_bytes         the database file (what the quota counts)
  trellis_etcd_db_size_in_use_bytes  live data in it (the rest is reclaimed by a defrag)
  trellis_etcd_db_quota_ratio        db size / quota: alert at 0.8
  trellis_etcd_alarm{alarm}          1 while etcd reports that alarm (NOSPACE, CORRUPT)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from prometheus_client import CollectorRegistry, Gauge

from trellis.adapters.etcd.client import EtcdClient
from trellis.adapters.etcd.storage import storage_status
from trellis.errors import TrellisError

LOG = logging.getLogger("trellis.server")
WARN_AT: Final = 0.8
"""Quota ratio from which the server also logs a warning (the metric is for alerting)."""
ALARMS: Final = ("NOSPACE", "CORRUPT")


class EtcdStorageMetrics:
    def __init__(
        self, client: EtcdClient, registry: CollectorRegistry, quota_bytes: int, interval: float = 15.0
    ) -> None:
        self._client = client
        self._quota = quota_bytes
        self._interval = interval
        self._warned = False
        self.db_size = Gauge(
            "trellis_etcd_db_size_bytes",
            "Size of etcd's database file (counted against its quota)",
            registry=registry,
        )
        self.in_use = Gauge(
            "trellis_etcd_db_size_in_use_bytes",
            "Bytes of etcd's database holding live data",
            registry=registry,
        )
        self.ratio = Gauge(
            "trellis_etcd_db_quota_ratio",
            "etcd database size over its quota (etcd_quota_bytes)",
            registry=registry,
        )
        self.alarm = Gauge(
            "trellis_etcd_alarm",
            "1 while etcd reports the alarm (NOSPACE: writes refused)",
            ["alarm"],
            registry=registry,
        )

    async def refresh(self) -> None:
        """Read etcd's status once and set the gauges. Raises BackendUnavailable."""
        status = await storage_status(self._client)
        self.db_size.set(status.db_size)
        self.in_use.set(status.db_size_in_use)
        ratio = status.db_size / self._quota
        self.ratio.set(ratio)
        for name in {*ALARMS, *status.alarms}:
            self.alarm.labels(name).set(1 if name in status.alarms else 0)
        if ratio >= WARN_AT and not self._warned:
            LOG.warning(
                "etcd's database is %.0f%% of its quota (%d of %d bytes): compact and defragment "
                "(docs/etcd.md, Storage) before etcd refuses writes",
                ratio * 100,
                status.db_size,
                self._quota,
            )
        self._warned = ratio >= WARN_AT

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except TrellisError as exc:
                LOG.debug("etcd storage status not read: %s", exc)  # the health probe reports outages
            await asyncio.sleep(self._interval)
