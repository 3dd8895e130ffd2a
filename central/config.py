"""The central aggregator's YAML config: merging, escalation, speakers, notifiers, plans.

Response plans are the software form of the site's "micro-plans": for a zone kind, alarm kind
and risk grade, which loudspeakers say what, which notifiers fire, how long to stay quiet after
speaking, and whom to call next when nobody acknowledges. An emergency mode (typhoon, flood,
cold wave) swaps in another plan set at runtime.

``central.sites`` names the edge config files of the sites served: the registry of what
exists (``central.registry``); ``load_central_config`` resolves them beside this file and
reads them, so a broken one is a config error naming its own file and line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from common.yamlconfig import ConfigError, Loaded, Strict, load_yaml_model


class Speech(Strict):
    """What a loudspeaker plays: a pre-rendered clip, or text spoken offline (Mandarin)."""

    text: str | None = Field(None, max_length=500, description="spoken by espeak-ng")
    clip: str | None = Field(None, description="a pre-rendered audio file on the speaker")
    voice: str = Field("cmn-latn-pinyin", description="espeak-ng voice")
    priority: int = Field(5, ge=0, le=9, description="9 interrupts everything lower")
    repeat: int = Field(1, ge=1, le=10)

    @model_validator(mode="after")
    def _something(self) -> Speech:
        if not self.text and not self.clip:
            raise ValueError("a speech needs text or a clip")
        return self


class Step(Strict):
    """One step of a plan: who speaks and who is told."""

    speak: Speech | None = None
    speakers: list[str] | None = Field(None, description="speaker ids; default: the zone's")
    notify: list[str] = Field(default_factory=list, description="notifier ids")


class LatePolicy(Strict):
    """What a *late* incident still triggers: one opened by an alarm that arrived long after
    it happened (an edge's outbox emptying after an outage; ``central.clock.late_s``). The
    person a loudspeaker would warn is long gone, so by default only the notifiers fire (the
    incident is kept for the record either way). If a timely alarm joins it later, it stops
    being late and the plan's first step runs in full."""

    speak: bool = Field(False, description="loudspeakers speak for a late incident")
    notify: bool = Field(True, description="notifiers fire for a late incident")


class Plan(Strict):
    """Matches incidents by zone kind, alarm kind and risk (empty = any)."""

    name: str = Field(min_length=1)
    zone_kinds: list[str] = Field(default_factory=list)
    alarm_kinds: list[str] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list)
    first: Step = Field(default_factory=Step, description="on a new incident")
    cooldown_s: float = Field(30.0, ge=0, le=3600, description="quiet time per speaker")
    escalation: list[Step] = Field(default_factory=list,
                                   description="steps when nobody acknowledges in time")
    late: LatePolicy = Field(default_factory=LatePolicy,
                             description="what a late incident still triggers (first step and "
                                         "escalations)")


class SpeakerConfig(Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    zones: list[str] = Field(default_factory=list, description="zones this speaker covers")
    http_url: str | None = Field(None, description="IP speaker taking commands over HTTP")


class NotifierConfig(Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str = Field(pattern=r"^(webhook|mqtt)$")
    url: str | None = Field(None, description="webhook endpoint (kind webhook)")
    secret_env: str | None = Field(None, description="env var holding the HMAC secret")
    topic: str | None = Field(None, description="MQTT topic (kind mqtt)")


class ClockSettings(Strict):
    """How an alarm's own time (the edge's clock) is judged against the central's clock when
    it arrives. Incident timing always runs on the central's clock; these only flag (count,
    mark) alarms and decide which are *late*."""

    late_s: float = Field(60.0, gt=0, le=86400,
                          description="an alarm this much older than its arrival is late: "
                                      "recorded, no loudspeaker unless its plan says so")
    past_s: float = Field(86400.0, gt=0, le=366 * 86400,
                          description="older than this: flagged 'past' (an edge clock far "
                                      "behind, or a very old outbox); also late")
    future_s: float = Field(300.0, gt=0, le=86400,
                            description="stamped further ahead than this: flagged 'future' "
                                        "(an edge clock ahead); handled as arriving now")
    publish_s: float = Field(5.0, ge=1, le=300,
                             description="how often the central publishes its clock to the "
                                         "edges (retained), which report their offset")

    @model_validator(mode="after")
    def _order(self) -> ClockSettings:
        if self.late_s > self.past_s:
            raise ValueError("late_s must not exceed past_s")
        return self


class DeadLetterSettings(Strict):
    """The dead-letter stream's bounds: at most ``max_entries`` entries of at most
    ``payload_bytes`` of the refused payload each (plus reason, topic, size and hash), so a
    flood of garbage costs a bounded amount of Redis memory (README: "Dead letters")."""

    max_entries: int = Field(10_000, ge=100, le=1_000_000,
                             description="entries kept (the oldest are trimmed)")
    payload_bytes: int = Field(4096, ge=256, le=65536,
                               description="bytes of each refused payload kept")


class CentralSettings(Strict):
    merge_window_s: float = Field(120.0, gt=0, le=86400)
    neighbours: dict[str, list[str]] = Field(default_factory=dict,
                                             description="zones that merge into one incident")
    ack_timeout_s: dict[str, float] = Field(
        default_factory=lambda: {"high": 30.0, "medium": 120.0, "low": 600.0},
        description="per risk grade: escalate when not acknowledged in time")
    escalation_repeat_s: float = Field(120.0, gt=0)
    retention_days: float = Field(30.0, gt=0)
    sites: list[str] = Field(default_factory=list,
                             description="the sites' edge config files (relative to this "
                                         "file): alarms of sites, cameras and zones they do "
                                         "not name are refused")
    accept_any_site: bool = Field(False, description="labs and load tests only: accept "
                                                     "alarms of any site, camera and zone")
    known_zones: list[str] | None = Field(None, description="deprecated (use sites): refuse "
                                                            "alarms of zones not listed")
    clock: ClockSettings = Field(default_factory=ClockSettings)
    deadletter: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    backlog_warn: int = Field(100_000, ge=100, le=100_000_000,
                              description="warn when a partition stream holds this many "
                                          "entries no worker has applied yet")


class CentralConfig(Strict):
    central: CentralSettings = Field(default_factory=CentralSettings)
    speakers: list[SpeakerConfig] = Field(default_factory=list)
    notifiers: list[NotifierConfig] = Field(default_factory=list)
    plans: list[Plan] = Field(default_factory=list)
    modes: dict[str, list[Plan]] = Field(default_factory=dict,
                                         description="emergency plan sets by name")

    @model_validator(mode="after")
    def _references(self) -> CentralConfig:
        speakers = {s.id for s in self.speakers}
        notifiers = {n.id for n in self.notifiers}
        for plan in [*self.plans, *(p for ps in self.modes.values() for p in ps)]:
            for step in [plan.first, *plan.escalation]:
                for s in step.speakers or []:
                    if s not in speakers:
                        raise ValueError(f"plan {plan.name}: unknown speaker {s!r}")
                for n in step.notify:
                    if n not in notifiers:
                        raise ValueError(f"plan {plan.name}: unknown notifier {n!r}")
        return self


def _site_file(loaded: Loaded[CentralConfig], value: str) -> Path:
    """An edge config named in ``central.sites``: as given or beside the central config;
    one that exists nowhere is reported where it was expected, beside the central config."""
    found = loaded.resolve_path(value)
    if not found.exists() and not Path(value).is_absolute():
        found = loaded.path.parent / value
    return found.resolve()


def load_central_config(path: Path) -> Loaded[CentralConfig]:
    """Parse and validate, the sites' edge configs included (their paths made absolute in
    the result); ConfigError lines name file, line and field."""
    from central.registry import read_topologies

    loaded = load_yaml_model(path, CentralConfig)
    settings = loaded.config.central
    if not settings.sites and not settings.accept_any_site and settings.known_zones is None:
        raise ConfigError([f"{loaded.where(('central', 'sites'))}: name the edge config files "
                           "of the sites this central serves (or, in a lab, set "
                           "accept_any_site: true)"])
    files = [_site_file(loaded, s) for s in settings.sites]
    read_topologies(files)  # every problem of every file, each with its own file and line
    central = settings.model_copy(update={"sites": [str(f) for f in files]})
    return Loaded(loaded.config.model_copy(update={"central": central}), loaded.path,
                  loaded.lines)
