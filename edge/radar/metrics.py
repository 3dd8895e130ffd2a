"""Prometheus metrics of the radar intake (``edge.radar.RadarWorker``).

Registered in one ``CollectorRegistry``: the process-wide ``REGISTRY`` unless given (tests
pass a fresh one), so the edge's ``/metrics`` endpoint (``edge.metrics.serve``) shows them
beside the camera pipeline's.

``perimeter_radar_messages_total{radar,outcome}``
    every message taken off the broker, once: ``outcome`` is ``accepted`` or the drop reason
    (``malformed``, ``unknown_radar``, ``late``, ``future``, ``out_of_order``, ``duplicate``,
    ``out_of_coverage``, ``overflow``, ``error``). ``radar`` is the radar whose topic it
    came on (``unknown`` if none), never a value from the payload, so a flood of junk cannot
    create series.
``perimeter_radar_alarms_total{radar,zone,kind,state,source}``
    alarm events handed to the worker's sinks (``source``: ``radar`` or ``fused``).
``perimeter_radar_message_to_alarm_seconds{radar}``
    from the moment a message arrived from the broker to the moment its alarm event had been
    emitted (queueing, validation, rules, fusion and the sinks).
``perimeter_radar_queue_depth``
    messages waiting in the bounded queue between the MQTT thread and the rules thread.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from common.once import Once

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class RadarMetrics:
    """The radar intake's metric objects in one registry (``None``: unregistered)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY):
        self.registry = registry
        self.messages = Counter("perimeter_radar_messages",
                                "Radar messages by outcome: accepted or the drop reason",
                                ["radar", "outcome"], registry=registry)
        self.alarms = Counter("perimeter_radar_alarms",
                              "Radar and fused alarm events emitted to the sinks",
                              ["radar", "zone", "kind", "state", "source"], registry=registry)
        self.latency = Histogram(
            "perimeter_radar_message_to_alarm_seconds",
            "Seconds from a radar message's arrival to its alarm event's emission",
            ["radar"], buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_depth = Gauge("perimeter_radar_queue_depth",
                                 "Radar messages waiting for the rules thread",
                                 registry=registry)


_default = Once(RadarMetrics)


def default_radar_metrics() -> RadarMetrics:
    """The process-wide ``RadarMetrics`` on ``REGISTRY`` (created once: names register once)."""
    return _default.get()
