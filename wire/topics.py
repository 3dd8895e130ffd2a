"""Every MQTT topic of the system, built and parsed here and nowhere else.

``PREFIX`` versions the whole tree (``perimeter/v1``); a change that breaks subscribers gets
a new prefix, and both are accepted while devices are upgraded. The alarm topic is at
``perimeter/v2`` (``PREFIX_V2``): it names the edge box that raised the alarm, so the broker's
ACL can let each edge publish only under its own site and edge id (``grants``); the central
subscribes to both versions (``alarm_filter``) while edges are upgraded. MQTT 3.1.1 topic rules: a
segment must be non-empty and free of ``+``, ``#``, ``/`` and NUL. Ids that come from a
config checked by a pattern (site, edge, speaker, radar) are refused with ``ValueError`` when
they break that rule; ids read at run time from alarms (camera, zone) are made safe instead
(``sanitize``), the payload keeping the original.

The tree (``{s}`` site, QoS 1 everywhere; see ``wire.messages`` for the payloads):

==========================================================  =========  ====================
topic                                                       retained   from -> to
==========================================================  =========  ====================
``perimeter/v2/{s}/alarm/{edge}/{camera}/{zone}/{kind}``    no         edge -> central
``{prefix}/{s}/alarm/{camera}/{zone}/{kind}`` (old edges)   no         edge -> central
``{prefix}/{s}/edge/{edge}/status``                         yes, will  edge -> anyone
``{prefix}/{s}/edge/{edge}/camera/{camera}/status``         yes        edge -> anyone
``{prefix}/{s}/radar/{radar}/tracks``                       no         radar -> edge
``{prefix}/{s}/speaker/{speaker}/command``                  no         central -> speaker
``{prefix}/{s}/speaker/{speaker}/status``                   no         speaker -> central
``{prefix}/{s}/speaker/{speaker}/availability``             yes, will  speaker -> anyone
``{prefix}/{s}/central/clock``                              yes        central -> edges
==========================================================  =========  ====================
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "perimeter/v1"
PREFIX_V2 = "perimeter/v2"
_VERSIONS = "perimeter/+"  # matches both prefixes in a subscription
_FORBIDDEN = ("+", "#", "/", "\x00")


def segment(name: str, value: str) -> str:
    """``value`` if it can be one topic segment; ``ValueError`` naming ``name`` if not."""
    if not value or any(c in value for c in _FORBIDDEN):
        raise ValueError(f"{name} {value!r} is not a valid MQTT topic segment: it must be "
                         "non-empty and contain none of '+', '#', '/', NUL")
    return value


def sanitize(value: str) -> str:
    """A run-time id (camera, zone) made safe as one topic segment."""
    for c in _FORBIDDEN:
        value = value.replace(c, "_")
    return value or "_"


def _site(site: str | None) -> str:
    return "+" if site is None else segment("site", site)


# -- alarms ------------------------------------------------------------------------------------


def alarm(site: str, camera: str, zone: str, kind: str, *, edge: str | None = None) -> str:
    """Where an edge publishes one alarm event: with ``edge`` (every edge of this version)
    ``perimeter/v2/{site}/alarm/{edge}/...``, which the broker's ACL ties to the edge's own
    identity; without, the v1 topic of edges not yet upgraded."""
    tail = f"{sanitize(camera)}/{sanitize(zone)}/{kind}"
    if edge is None:
        return f"{PREFIX}/{segment('site', site)}/alarm/{tail}"
    return f"{PREFIX_V2}/{segment('site', site)}/alarm/{segment('edge_id', edge)}/{tail}"


def alarm_filter(site: str | None = None, share_group: str | None = None) -> str:
    """Subscription to every alarm, v1 and v2 (of one site or all), optionally as a shared
    subscription (``$share/{group}/...``: each message reaches one member of the group)."""
    flt = f"{_VERSIONS}/{_site(site)}/alarm/#"
    return f"$share/{segment('share group', share_group)}/{flt}" if share_group else flt


@dataclass(frozen=True)
class AlarmTopic:
    """The parts of an alarm topic; ``edge`` is None on a v1 topic (it has none)."""

    site: str
    camera: str
    zone: str
    kind: str
    edge: str | None = None


def parse_alarm(topic: str) -> AlarmTopic | None:
    """The parts of ``perimeter/v2/{site}/alarm/{edge}/{camera}/{zone}/{kind}`` or of
    ``perimeter/v1/{site}/alarm/{camera}/{zone}/{kind}``; None if neither shape."""
    for prefix, n in ((PREFIX_V2, 6), (PREFIX, 5)):
        if topic.startswith(prefix + "/"):
            parts = topic[len(prefix) + 1:].split("/")
            if len(parts) != n or parts[1] != "alarm" or not all(parts):
                return None
            if n == 6:
                return AlarmTopic(parts[0], parts[3], parts[4], parts[5], edge=parts[2])
            return AlarmTopic(parts[0], parts[2], parts[3], parts[4])
    return None


# -- edge boxes and their cameras --------------------------------------------------------------


def edge_status(site: str, edge_id: str) -> str:
    """An edge worker's availability (retained; ``offline`` is its last will)."""
    return f"{PREFIX}/{segment('site', site)}/edge/{segment('edge_id', edge_id)}/status"


def camera_status(site: str, edge_id: str, camera: str) -> str:
    """One live camera's state as its edge worker sees it (retained)."""
    return f"{edge_status(site, edge_id).removesuffix('/status')}/camera/{sanitize(camera)}/status"


def central_clock(site: str) -> str:
    """The central's clock, published for the site's edges (retained; QoS 0)."""
    return f"{PREFIX}/{segment('site', site)}/central/clock"


# -- radars ------------------------------------------------------------------------------------


def radar_tracks(site: str, radar_id: str) -> str:
    """The default topic of a radar's track messages (a radar config may name its own)."""
    return f"{PREFIX}/{segment('site', site)}/radar/{segment('radar', radar_id)}/tracks"


# -- loudspeakers ------------------------------------------------------------------------------


def _speaker(site: str, speaker: str, leaf: str) -> str:
    return f"{PREFIX}/{segment('site', site)}/speaker/{segment('speaker', speaker)}/{leaf}"


def speaker_command(site: str, speaker: str) -> str:
    """Commands from the central to one speaker."""
    return _speaker(site, speaker, "command")


def speaker_status(site: str, speaker: str) -> str:
    """One speaker's playback reports."""
    return _speaker(site, speaker, "status")


def speaker_availability(site: str, speaker: str) -> str:
    """One speaker's ``online``/``offline`` (retained; ``offline`` is its last will)."""
    return _speaker(site, speaker, "availability")


def speaker_status_filter(site: str | None = None) -> str:
    """Subscription to every speaker's playback reports (of one site, or of all sites)."""
    return f"{PREFIX}/{_site(site)}/speaker/+/status"


# -- who may do what: the broker's ACL ---------------------------------------------------------

ROLES = ("edge", "speaker", "central", "radar", "broker")
Grant = tuple[str, str]  # (``read`` | ``write`` | ``readwrite``, topic filter)


def grants(role: str, site: str | None, name: str) -> list[Grant]:
    """The topics a device of ``role`` called ``name`` may use, as Mosquitto ACL entries.

    An edge publishes alarms only under its own site and edge id (v2 topic) and its own
    status, and reads its site's radars and the central's clock; a speaker reads only its own
    commands and writes its own reports; a radar writes its own tracks; only the central
    reads every alarm, commands speakers and publishes the clock. The broker's own
    certificate gets no grants. ``site`` is required for every role but the central's.
    An MQTT bridge notifier publishes on a topic of the site's choosing: add a ``write``
    line for it under the central's user.
    """
    if role == "central":
        return [("read", alarm_filter()),
                ("write", f"{PREFIX}/+/speaker/+/command"),
                ("read", speaker_status_filter()),
                ("read", f"{PREFIX}/+/speaker/+/availability"),
                ("read", f"{PREFIX}/+/edge/#"),
                ("write", f"{PREFIX}/+/central/clock")]
    if role == "broker":
        return []
    if site is None:
        raise ValueError(f"a {role} belongs to one site: give its site id")
    if role == "edge":
        return [("write", alarm(site, "c", "z", "k", edge=name).rsplit("/", 3)[0] + "/#"),
                ("write", edge_status(site, name).removesuffix("/status") + "/#"),
                ("read", f"{PREFIX}/{segment('site', site)}/radar/+/tracks"),
                ("read", central_clock(site))]
    if role == "speaker":
        return [("read", speaker_command(site, name)),
                ("write", speaker_status(site, name)),
                ("readwrite", speaker_availability(site, name))]
    if role == "radar":
        return [("write", radar_tracks(site, name))]
    raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")

