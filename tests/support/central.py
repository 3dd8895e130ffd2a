"""The central's in-process path for tests: the intake's gate in front of an aggregator, and
registries of made-up sites.

In production the gate runs at the MQTT intake and the aggregator in the incident worker,
with a partition stream between them; tests of merging, persistence and rejection drive both
in one process, message by message.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from central.incidents.aggregator import Aggregator, IngestResult
from central.incidents.book import IncidentBook
from central.incidents.store import RedisStore
from central.intake.mqtt import Incoming
from central.intake.validate import AlarmGate
from central.registry import Registry
from zones.site import SensorRef, SiteTopology, ZoneRef

if TYPE_CHECKING:
    from central.metrics import CentralMetrics


def topology(site: str, zones: Iterable[str], cameras: Iterable[str] = ("cam1",),
             edge: str = "edge-1") -> SiteTopology:
    """One edge of ``site`` whose cameras all watch all of ``zones`` (water, high risk)."""
    zs = tuple(zones)
    return SiteTopology(site=site, edge=edge,
                        sensors=tuple(SensorRef(id=c, kind="camera", zones=zs)
                                      for c in cameras),
                        zones=tuple(ZoneRef(id=z, kind="water", risk="high")  # type: ignore[arg-type]
                                    for z in zs))


def registry(site: str, zones: Iterable[str], cameras: Iterable[str] = ("cam1",),
             edge: str = "edge-1") -> Registry:
    """A registry of one site with one edge (see ``topology``)."""
    return Registry([topology(site, zones, cameras, edge)])


class CheckedAggregator(Aggregator):
    """An aggregator that takes raw messages: checked by the gate, then applied on arrival
    (the aggregator's clock)."""

    def __init__(self, store: RedisStore, book: IncidentBook | None = None, *,
                 known_zones: Collection[str] | None = None,
                 registry: Registry | None = None,
                 metrics: CentralMetrics | None = None):
        super().__init__(store, book, metrics=metrics)
        self.gate = AlarmGate(store.dead_letter, registry=registry, known_zones=known_zones,
                              counts=self.counts, metrics=metrics)

    def ingest(self, payload: bytes, topic: str) -> IngestResult:
        """One message from an edge: refused (counted, dead-lettered; the reason says why)
        or applied."""
        checked = self.gate.check(payload, topic)
        if isinstance(checked, str):
            self.gate.reject(payload, topic, checked)
            return IngestResult(False, checked)
        return self.apply(checked.alarm, checked.site)


class AggregatorSink:
    """``central.intake.mqtt.Sink`` straight into a ``CheckedAggregator`` (no partition
    streams): what an MQTT intake test needs."""

    def __init__(self, agg: CheckedAggregator):
        self.agg = agg

    def prepare(self, items: list[Incoming]) -> list[Any]:
        out = []
        for item in items:
            admitted = self.agg.gate.admit(item.payload, item.topic)
            if admitted is not None:
                out.append((admitted, item))
        return out

    def store(self, prepared: list[Any]) -> object:
        for admitted, item in prepared:
            self.agg.apply(admitted.alarm, admitted.site, item.arrived)
        return len(prepared)

    def reject(self, payload: bytes, topic: str, reason: str) -> None:
        self.agg.gate.reject(payload, topic, reason)

    def unstored(self, prepared: list[Any]) -> list[tuple[bytes, str]]:
        return [(item.payload, item.topic) for _, item in prepared]
