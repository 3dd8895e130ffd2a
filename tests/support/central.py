"""The central's in-process path for tests: the intake's gate in front of an aggregator.

In production the gate runs at the MQTT intake and the aggregator in the incident worker,
with a partition stream between them; tests of merging, persistence and rejection drive both
in one process, message by message.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from central.incidents.aggregator import Aggregator, IngestResult
from central.incidents.book import IncidentBook
from central.incidents.store import RedisStore
from central.intake.validate import AlarmGate

if TYPE_CHECKING:
    from central.metrics import CentralMetrics


class CheckedAggregator(Aggregator):
    """An aggregator that takes raw messages: checked by the gate, then applied."""

    def __init__(self, store: RedisStore, book: IncidentBook | None = None, *,
                 known_zones: Collection[str] | None = None,
                 metrics: CentralMetrics | None = None):
        super().__init__(store, book, metrics=metrics)
        self.gate = AlarmGate(store.dead_letter, known_zones=known_zones, counts=self.counts,
                              metrics=metrics)

    def ingest(self, payload: bytes, topic: str) -> IngestResult:
        """One message from an edge: refused (counted, dead-lettered) or applied."""
        checked = self.gate.check(payload, topic)
        if isinstance(checked, str):
            self.gate.reject(payload, topic, checked)
            return IngestResult(False, checked)
        return self.apply(checked.alarm, checked.site)
