"""Prometheus metrics of the central aggregator.

``CentralMetrics`` holds the metric objects in one ``CollectorRegistry`` (the process-wide
``REGISTRY`` unless given: tests pass a fresh one); the HTTP API serves that registry at
``/metrics``. Counters and histograms are updated where things happen; the gauges are read at
scrape time from the objects ``attach``-ed (the aggregator, the MQTT intake, the notifiers),
and a source that fails (Redis down) only drops its own samples, never the scrape.

Where each is measured:

``perimeter_central_messages_total{result}``
    ``accepted``, ``duplicate``, ``orphan_clear`` (``Aggregator.apply``),
    ``rejected:<reason>`` (``AlarmGate`` at the intake: retained, too_large, bad_topic,
    bad_json, bad_schema, invalid, topic_mismatch, unknown_site, unknown_camera, wrong_edge,
    unknown_zone, error; see ``central.intake.validate``), and ``error`` when storing raised
    (Redis down; the entry is applied again).
``perimeter_central_dead_letters_total{reason}``
    rejected messages written to the dead-letter stream (reason as above).
``perimeter_central_incidents_opened_total{site,zone}``, ``perimeter_central_alarms_total``
    ``{kind,zone}``: accepted alarm events (duplicates excluded) and the incidents they opened.
``perimeter_central_edge_to_intake_seconds``
    the alarm's arrival at the intake (the central's clock) minus its ``time`` (the edge's
    frame time), for accepted alarms; clock skew below zero is counted as 0. Replays with a
    ``--start-time`` in the past land in ``+Inf``.
``perimeter_central_alarm_time_flags_total{flag}``
    accepted alarms whose own time is far from their arrival: ``late``, ``past`` (both
    recorded without loudspeakers unless the plan says), ``future`` (an edge clock ahead).
``perimeter_central_intake_to_speaker_command_seconds``
    from the start of ``apply`` to the return of the MQTT publish of each speaker command of
    a new incident's first plan step (escalations are not counted: no message triggered them).
``perimeter_central_command_to_playback_seconds{speaker}``
    speaker command published -> the speaker's ``done`` report (speech rendering and
    playback included: seconds, not milliseconds).
``perimeter_central_notification_delivery_seconds{notifier}``
    notification stored in the webhook outbox -> delivered (retries and outages included).
``perimeter_central_speaker_commands_total{speaker}``, ``perimeter_central_notifications_total``
    ``{notifier}``: ``Central.execute`` (first steps and escalations); notifications once
    stored in their outbox.
``perimeter_central_escalations_total{risk}``
    ``Central.tick``: incidents escalated because nobody acknowledged them in time.
``perimeter_central_incidents_open``
    at scrape time: incidents in the book not resolved.
``perimeter_central_notifier_backlog{notifier}``
    at scrape time: ``backlog()`` of each notifier (webhook: outbox entries not yet delivered
    or dead), or ``unacknowledged()`` (MQTT bridge: messages not yet acknowledged by the
    broker); a notifier whose read fails is left out of that scrape.
``perimeter_central_mqtt_reconnects``
    at scrape time: the intake's disconnect count since start.
``perimeter_central_intake_queued``, ``perimeter_central_intake_store_retries``
    at scrape time: messages taken from the broker and not yet stored (so not yet
    acknowledged); failed store attempts while Redis was unavailable.
``perimeter_central_worker_partitions``, ``..._worker_applied``, ``..._worker_skipped``,
``..._worker_fenced_out``
    at scrape time: partition streams this worker owns; entries applied; entries skipped
    as unappliable (each logged); batches refused because the worker had lost the lease.
``perimeter_central_partition_backlog{partition}``
    at the last check (every 5 s): entries in each partition stream, i.e. alarms waiting for
    a worker (never trimmed before one applied them; ``central.backlog_warn`` logs a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from common.once import Once

log = logging.getLogger(__name__)

EDGE_TO_INTAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                          60.0)
INTAKE_TO_COMMAND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                             1.0, 2.5)
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class _StateCollector(Collector):
    """The scrape-time gauges, read from whatever ``CentralMetrics.attach`` was given."""

    def __init__(self, metrics: CentralMetrics):
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering never reads the (not yet attached) sources.
        return [GaugeMetricFamily("perimeter_central_incidents_open", ""),
                GaugeMetricFamily("perimeter_central_notifier_backlog", "", labels=["notifier"]),
                GaugeMetricFamily("perimeter_central_mqtt_reconnects", ""),
                GaugeMetricFamily("perimeter_central_intake_queued", ""),
                GaugeMetricFamily("perimeter_central_intake_store_retries", ""),
                GaugeMetricFamily("perimeter_central_worker_partitions", ""),
                GaugeMetricFamily("perimeter_central_worker_applied", ""),
                GaugeMetricFamily("perimeter_central_worker_skipped", ""),
                GaugeMetricFamily("perimeter_central_worker_fenced_out", ""),
                GaugeMetricFamily("perimeter_central_partition_backlog", "",
                                  labels=["partition"])]

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        open_ = GaugeMetricFamily("perimeter_central_incidents_open",
                                  "Incidents not yet resolved")
        if m.aggregator is not None:
            n = _open_incidents(m.aggregator)
            if n is not None:
                open_.add_metric([], n)
        yield open_
        backlog = GaugeMetricFamily("perimeter_central_notifier_backlog",
                                    "Notifications stored but not yet delivered, per notifier",
                                    labels=["notifier"])
        for nid, notifier in list(m.notifiers.items()):
            read = getattr(notifier, "backlog", None) or getattr(notifier, "unacknowledged", None)
            if read is None:
                continue
            try:
                backlog.add_metric([nid], float(read()))
            except Exception as exc:  # Redis down: leave this sample out, keep the scrape
                log.debug("notifier backlog unreadable", extra={"notifier": nid,
                                                                "error": str(exc)})
        yield backlog
        reconnects = GaugeMetricFamily("perimeter_central_mqtt_reconnects",
                                       "MQTT intake disconnections since start")
        if m.intake is not None:
            reconnects.add_metric([], float(getattr(m.intake, "reconnects", 0)))
        yield reconnects
        yield from _plain_gauges([
            ("perimeter_central_intake_queued", "Messages taken from the broker, not yet "
             "stored (nor acknowledged)", m.intake, "queued"),
            ("perimeter_central_intake_store_retries", "Intake store attempts that failed "
             "(Redis unavailable) since start", m.intake, "store_retries"),
            ("perimeter_central_worker_partitions", "Partition streams this worker owns",
             m.worker, "owned"),
            ("perimeter_central_worker_applied", "Stream entries this worker applied and "
             "acknowledged since start", m.worker, "applied"),
            ("perimeter_central_worker_skipped", "Stream entries skipped because they could "
             "not be applied (logged) since start", m.worker, "skipped"),
            ("perimeter_central_worker_fenced_out", "Batches not stored because this worker "
             "had lost the partition's lease since start", m.worker, "fenced_out"),
        ])
        backlog = GaugeMetricFamily("perimeter_central_partition_backlog",
                                    "Entries in each partition stream at the last check "
                                    "(alarms waiting for a worker)", labels=["partition"])
        for p, n in enumerate(getattr(m.upkeep, "backlog", None) or []):
            backlog.add_metric([str(p)], float(n))
        yield backlog


def _plain_gauges(specs: list[tuple[str, str, Any, str]]) -> Iterator[Metric]:
    """Gauges read from an attribute of an attached object (a set counts its members)."""
    for name, doc, source, attr in specs:
        g = GaugeMetricFamily(name, doc)
        if source is not None:
            value = getattr(source, attr, None)
            if value is not None:
                g.add_metric([], float(len(value) if isinstance(value, set) else value))
        yield g


def _open_incidents(aggregator: Any) -> float | None:
    """Unresolved incidents, read without the aggregator's lock (a Redis stall holds it)."""
    for _ in range(3):
        try:
            incidents = list(aggregator.book.incidents.values())
        except RuntimeError:  # changed size while copied: try again
            continue
        return float(sum(1 for i in incidents if i.status.value != "resolved"))
    return None


class CentralMetrics:
    """The aggregator's metric objects in one registry (default: the process-wide one)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.registry = registry
        self.messages = Counter("perimeter_central_messages",
                                "Alarm messages handed to the aggregator, by result",
                                ["result"], registry=registry)
        self.dead_letters = Counter("perimeter_central_dead_letters",
                                    "Rejected messages written to the dead-letter stream",
                                    ["reason"], registry=registry)
        self.incidents_opened = Counter("perimeter_central_incidents_opened",
                                        "Incidents opened", ["site", "zone"], registry=registry)
        self.alarms = Counter("perimeter_central_alarms",
                              "Accepted alarm events (duplicates excluded)", ["kind", "zone"],
                              registry=registry)
        self.edge_to_intake = Histogram(
            "perimeter_central_edge_to_intake_seconds",
            "Aggregator receive wall time minus the alarm's (edge frame) time",
            buckets=EDGE_TO_INTAKE_BUCKETS, registry=registry)
        self.intake_to_command = Histogram(
            "perimeter_central_intake_to_speaker_command_seconds",
            "Seconds from the start of ingesting an alarm to publishing its speaker command",
            buckets=INTAKE_TO_COMMAND_BUCKETS, registry=registry)
        self.command_to_playback = Histogram(
            "perimeter_central_command_to_playback_seconds",
            "Seconds from publishing a speaker command to the speaker reporting it played",
            ["speaker"], buckets=DELIVERY_BUCKETS, registry=registry)
        self.notification_delivery = Histogram(
            "perimeter_central_notification_delivery_seconds",
            "Seconds from storing a notification in its outbox to its delivery",
            ["notifier"], buckets=DELIVERY_BUCKETS, registry=registry)
        self.speaker_commands = Counter("perimeter_central_speaker_commands",
                                        "Speaker commands published", ["speaker"],
                                        registry=registry)
        self.notifications = Counter("perimeter_central_notifications",
                                     "Notifications stored in their notifier's outbox",
                                     ["notifier"], registry=registry)
        self.time_flags = Counter("perimeter_central_alarm_time_flags",
                                  "Accepted alarms whose own time is far from their arrival",
                                  ["flag"], registry=registry)
        self.escalations = Counter("perimeter_central_escalations",
                                   "Incidents escalated for want of acknowledgement", ["risk"],
                                   registry=registry)
        # children touched per message, bound once
        self.accepted = self.messages.labels("accepted")
        self.duplicate = self.messages.labels("duplicate")
        self.orphan_clear = self.messages.labels("orphan_clear")
        self.error = self.messages.labels("error")
        self.aggregator: Any = None
        self.intake: Any = None
        self.worker: Any = None
        self.upkeep: Any = None
        self.notifiers: Mapping[str, Any] = {}
        registry.register(_StateCollector(self))

    def attach(self, *, aggregator: Any = None, intake: Any = None, worker: Any = None,
               notifiers: Mapping[str, Any] | None = None, upkeep: Any = None) -> None:
        """The objects the scrape-time gauges read (those given replace earlier ones)."""
        if upkeep is not None:
            self.upkeep = upkeep
        if worker is not None:
            self.worker = worker
        if aggregator is not None:
            self.aggregator = aggregator
        if intake is not None:
            self.intake = intake
        if notifiers is not None:
            self.notifiers = dict(notifiers)

    def rejected(self, reason: str) -> None:
        """One rejected message, by the reason's code (the text before ':')."""
        self.messages.labels(f"rejected:{reason}").inc()


_default = Once(CentralMetrics)


def default_metrics() -> CentralMetrics:
    """The process-wide ``CentralMetrics`` on ``REGISTRY`` (created once)."""
    return _default.get()
