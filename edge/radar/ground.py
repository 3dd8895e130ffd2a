"""The config's radars and ground fences, resolved, with errors that name file:line:field.

``zones.radar_config.resolve_ground`` does the work (pure); this wraps its errors the way the
config loader does, for the commands and the radar intake that start from a config file.
"""

from __future__ import annotations

import functools

from common.yamlconfig import ConfigError
from edge.config import LoadedConfig
from wire import topics
from zones.radar_config import GroundConfigError, GroundSite, resolve_ground


def load_ground(loaded: LoadedConfig) -> GroundSite:
    """The config's radars and ground fences in site metres; ConfigError names file:line."""
    cfg = loaded.config
    try:
        return resolve_ground(cfg.site.origin, cfg.radars, cfg.ground_zones,
                              functools.partial(topics.radar_tracks, cfg.site.id))
    except GroundConfigError as exc:
        raise ConfigError([f"{loaded.where(exc.where)}: {exc}"]) from exc


def describe_ground(loaded: LoadedConfig) -> list[str]:
    """``perimeter config check``'s lines for the radars and ground fences (resolving them,
    so a lat/lon without an origin or an unknown radar is reported with its line)."""
    ground = load_ground(loaded)
    lines = []
    for rid, r in ground.radars.items():
        zones = ground.zones_of(rid)
        lines.append(
            f"radar {rid}: at ({r.pose.x:.2f}, {r.pose.y:.2f}) m, heading {r.pose.heading_deg:g} "
            f"deg, on {r.topic}; {len(zones)} ground zone(s): "
            + ", ".join(f"{z.config.id} ({z.config.kind.value}, {z.config.risk.value})"
                        for z in zones))
    lines += [f"warning: ground zone {z.config.id} is watched by no radar"
              for z in ground.zones if not z.radars]
    return lines
