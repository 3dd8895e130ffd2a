"""The sites, edge boxes, cameras, radars and zones this central serves, read from the sites'
own edge configs.

An alarm names its site (topic), camera and zone (payload); before this registry the central
took any name on trust, so a made-up site opened incidents, made loudspeakers talk and filled
the webhook outbox without bound. The central config lists the edge config files
(``central.sites``); each is read with ``zones.site.EdgeConfigView`` (the zones validated by
the edge's own models, everything else ignored), so there is one list of what exists, the one
the edge boxes themselves run on. The gate (``central.intake.validate``) asks ``check`` for
every alarm: an unknown site, camera or zone is refused, counted and dead-lettered.

The files are re-read when they change (``refresh``, from the central's ticker): a fence added
at a site is accepted once its edge config reaches the central, without a restart. A file that
became unreadable or invalid is logged and the registry keeps what it had: refusing every
alarm of a site because of a typo would be worse than a stale list.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from common.yamlconfig import ConfigError, load_yaml_model
from zones.site import EdgeConfigView, SiteTopology

log = logging.getLogger(__name__)

# site -> sensor (camera or radar id) -> edge id -> the zones it may alarm in
_Table = dict[str, dict[str, dict[str, frozenset[str]]]]


def _table(topologies: Iterable[SiteTopology]) -> _Table:
    out: _Table = {}
    for topo in topologies:
        sensors = out.setdefault(topo.site, {})
        for s in topo.sensors:
            edges = sensors.setdefault(s.id, {})
            edges[topo.edge] = edges.get(topo.edge, frozenset()) | frozenset(s.zones)
    return out


def read_topologies(paths: Sequence[Path]) -> list[SiteTopology]:
    """Every edge config's topology; ``ConfigError`` with one ``file:line: field: message``
    per problem (all files are read, so every problem is reported at once)."""
    errors: list[str] = []
    out: list[SiteTopology] = []
    seen: dict[tuple[str, str], Path] = {}
    for path in paths:
        try:
            topo = load_yaml_model(path, EdgeConfigView).config.topology()
        except ConfigError as exc:
            errors.extend(exc.lines)
            continue
        key = (topo.site, topo.edge)
        if key in seen:
            errors.append(f"{path}: edge {topo.edge!r} of site {topo.site!r} is also "
                          f"configured in {seen[key]}: one edge box, one config")
            continue
        seen[key] = path
        out.append(topo)
    if errors:
        raise ConfigError(errors)
    return out


class Registry:
    """What exists, and whether an alarm's site, camera, zone (and edge) are among it."""

    def __init__(self, topologies: Iterable[SiteTopology], paths: Sequence[Path] = ()):
        self.paths = [Path(p) for p in paths]
        self._mtimes = self._stat()
        self._set(list(topologies))

    @classmethod
    def load(cls, paths: Sequence[str | Path]) -> Registry:
        """Read the edge config files (``ConfigError`` naming file, line and field)."""
        files = [Path(p) for p in paths]
        return cls(read_topologies(files), files)

    def _set(self, topologies: list[SiteTopology]) -> None:
        # one assignment each, so a reader on another thread sees the old or the new table
        self.topologies = topologies
        self._by_site = _table(topologies)

    def _stat(self) -> list[float | None]:
        out: list[float | None] = []
        for p in self.paths:
            try:
                out.append(os.stat(p).st_mtime)
            except OSError:
                out.append(None)
        return out

    @property
    def sites(self) -> list[str]:
        return sorted(self._by_site)

    def check(self, site: str, sensor: str, zone: str, edge: str | None = None) -> str | None:
        """None when the alarm's names are configured, else the refusal reason (its code,
        then what was wrong): ``unknown_site``, ``unknown_camera``, ``wrong_edge`` (the topic
        names an edge that has no such camera), ``unknown_zone``."""
        sensors = self._by_site.get(site)
        if sensors is None:
            return f"unknown_site: {site[:100]}"
        edges = sensors.get(sensor)
        if edges is None:
            return f"unknown_camera: {site}/{sensor[:100]}"
        if edge is not None:
            if edge not in edges:
                return f"wrong_edge: {site}/{sensor} is not on edge {edge[:100]}"
            zones = edges[edge]
        else:
            zones = frozenset().union(*edges.values())
        if zone not in zones:
            return f"unknown_zone: {site}/{sensor}/{zone[:100]}"
        return None

    def refresh(self) -> bool:
        """Re-read the files if any changed since the last read; True when the registry
        changed. A file that fails to load is logged and the previous registry kept."""
        mtimes = self._stat()
        if mtimes == self._mtimes:
            return False
        self._mtimes = mtimes
        try:
            topologies = read_topologies(self.paths)
        except ConfigError as exc:
            log.error("site registry not reloaded: an edge config is invalid; keeping the "
                      "previous one", extra={"problems": exc.lines[:10]})
            return False
        if topologies == self.topologies:
            return False
        self._set(topologies)
        log.warning("site registry reloaded", extra={
            "sites": self.sites, "edges": len(topologies),
            "files": [str(p) for p in self.paths]})
        return True
