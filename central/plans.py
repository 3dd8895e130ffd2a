"""Response plans: which speakers say what and who is notified, for an incident (pure).

``Planner.on_incident`` is called when an incident opens (or a late one gets a timely alarm);
``Planner.on_escalation`` when nobody acknowledged it in time. A *late* incident (opened by
an alarm that arrived long after it happened) gets only what its plan's ``late`` allows: by
default its notifications, no loudspeaker (the person is long gone). Both return effects
(speaker commands and notifications) for the I/O side to carry out. Speaker cooldowns live here so a
crowd that keeps re-alarming does not make a loudspeaker shout every second; a higher
priority message still gets through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from central.config import CentralConfig, Plan, Speech, Step
from central.incidents.book import Incident

# GB/T 28181 video alarm types, so a standards gateway is a mapping rather than a redesign.
GB28181_ALARM_TYPE = {"line_crossing": 5, "intrusion": 6, "dwell": 8, "crowd_density": 10}


@dataclass(frozen=True)
class SpeakerCommand:
    speaker: str
    incident: str
    speech: Speech
    level: int  # 0 first response, 1.. escalation steps


@dataclass(frozen=True)
class Notification:
    notifier: str
    incident: str
    payload: dict[str, Any]


@dataclass
class Planner:
    config: CentralConfig
    mode: str | None = None  # an emergency plan set from config.modes, or None
    # (site, speaker) -> (time, priority) of its last command: keyed by site too, so alarms
    # of one site (or a made-up one) never silence another site's speaker of the same id
    _last_spoken: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    def set_mode(self, mode: str | None) -> None:
        if mode is not None and mode not in self.config.modes:
            raise KeyError(f"no emergency mode {mode!r} (have: {sorted(self.config.modes)})")
        self.mode = mode

    @property
    def plans(self) -> Sequence[Plan]:
        return self.config.modes[self.mode] if self.mode else self.config.plans

    def plan_for(self, inc: Incident) -> Plan | None:
        """The first plan whose non-empty filters all match the incident."""
        for plan in self.plans:
            if plan.zone_kinds and inc.zone_kind not in plan.zone_kinds:
                continue
            if plan.alarm_kinds and not inc.kinds & set(plan.alarm_kinds):
                continue
            if plan.risks and inc.risk not in plan.risks:
                continue
            return plan
        return None

    def speakers_for(self, inc: Incident, step: Step) -> list[str]:
        if step.speakers is not None:
            return step.speakers
        zones = {a["zone"] for a in inc.alarms.values()} | {inc.zone}
        return [s.id for s in self.config.speakers if zones & set(s.zones)]

    def _run(self, inc: Incident, plan: Plan, step: Step, level: int,
             now: float) -> list[SpeakerCommand | Notification]:
        """The step's effects; a late incident only gets what its plan's ``late`` allows."""
        effects: list[SpeakerCommand | Notification] = []
        speak = not inc.late or plan.late.speak
        notify = not inc.late or plan.late.notify
        if step.speak is not None and speak:
            for spk in self.speakers_for(inc, step):
                last = self._last_spoken.get((inc.site, spk))
                quiet = last is not None and now - last[0] < plan.cooldown_s
                if quiet and last is not None and step.speak.priority <= last[1]:
                    continue
                self._last_spoken[(inc.site, spk)] = (now, step.speak.priority)
                effects.append(SpeakerCommand(spk, inc.id, step.speak, level))
        for n in step.notify if notify else []:
            effects.append(Notification(n, inc.id, governance_payload(inc, level, plan.name)))
        return effects

    def on_incident(self, inc: Incident, now: float) -> list[SpeakerCommand | Notification]:
        plan = self.plan_for(inc)
        return [] if plan is None else self._run(inc, plan, plan.first, 0, now)

    def on_escalation(self, inc: Incident, now: float) -> list[SpeakerCommand | Notification]:
        plan = self.plan_for(inc)
        if plan is None or not plan.escalation:
            return []
        step = plan.escalation[min(inc.escalation_level, len(plan.escalation)) - 1]
        return self._run(inc, plan, step, inc.escalation_level, now)


def governance_payload(inc: Incident, level: int, plan: str) -> dict[str, Any]:
    """What the comprehensive-governance centre receives (webhook body, MQTT payload)."""
    kinds = sorted(inc.kinds)
    return {
        "schema": "perimeter.incident/1", "incident": inc.id, "site": inc.site,
        "zone": inc.zone, "zone_kind": inc.zone_kind, "risk": inc.risk,
        "severity": inc.severity.value, "status": inc.status.value, "kinds": kinds,
        "gb28181_alarm_types": sorted({GB28181_ALARM_TYPE[k] for k in kinds}),
        "cameras": sorted(inc.cameras), "sources": sorted(inc.sources),
        "opened_at": inc.opened_at, "late": inc.late, "escalation_level": level,
        "plan": plan,
        "active_alarms": inc.active_alarms,
    }
