"""The central aggregator's YAML config: merging, escalation, speakers, notifiers, plans.

Response plans are the software form of the site's "micro-plans": for a zone kind, alarm kind
and risk grade, which loudspeakers say what, which notifiers fire, how long to stay quiet after
speaking, and whom to call next when nobody acknowledges. An emergency mode (typhoon, flood,
cold wave) swaps in another plan set at runtime.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from common.yamlconfig import Loaded, Strict, load_yaml_model


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


class CentralSettings(Strict):
    merge_window_s: float = Field(120.0, gt=0, le=86400)
    neighbours: dict[str, list[str]] = Field(default_factory=dict,
                                             description="zones that merge into one incident")
    ack_timeout_s: dict[str, float] = Field(
        default_factory=lambda: {"high": 30.0, "medium": 120.0, "low": 600.0},
        description="per risk grade: escalate when not acknowledged in time")
    escalation_repeat_s: float = Field(120.0, gt=0)
    retention_days: float = Field(30.0, gt=0)
    known_zones: list[str] | None = Field(None, description="reject alarms of other zones")


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


def load_central_config(path: Path) -> Loaded[CentralConfig]:
    """Parse and validate; ConfigError lines name file, line and field."""
    return load_yaml_model(path, CentralConfig)
