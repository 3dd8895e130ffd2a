"""The sites' topology, one source of truth: the central's registry reads the edge configs the
boxes run on, agrees with the edge's own reading, and refuses what they do not name."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from central.config import load_central_config
from central.registry import Registry
from common.yamlconfig import ConfigError, load_yaml_model
from edge.config import load_config
from tests.support.services import REPO_ROOT
from zones.site import EdgeConfigView

SHIPPED = sorted((REPO_ROOT / "config").glob("*.yaml"))
EDGE_CONFIGS = [p for p in SHIPPED if p.name != "central.yaml"]

EDGE = """\
site: {id: river-park}
edge: {id: box-1}
cameras:
  - id: cam-bank
    source: rtsp://user:secret@10.0.0.5/live
    zones:
      - {id: bank, kind: water, risk: high, polygon: [[0, 0], [1, 0], [1, 1]]}
      - {id: pier, kind: water, polygon: [[0, 0], [1, 0], [1, 1]]}
radars:
  - {id: radar-1, position: [0, 0], heading_deg: 0}
ground_zones:
  - {id: bank, kind: water, polygon: [[0, 0], [5, 0], [5, 5]]}
  - {id: meadow, kind: restricted, polygon: [[0, 0], [5, 0], [5, 5]], radars: []}
"""


@pytest.mark.parametrize("path", EDGE_CONFIGS, ids=[p.name for p in EDGE_CONFIGS])
def test_central_and_edge_read_the_same_topology(path: Path) -> None:
    """The edge derives its topology from its validated config; the central reads the same
    file through ``EdgeConfigView``: for every shipped config they are equal."""
    assert load_yaml_model(path, EdgeConfigView).config.topology() == \
        load_config(path).config.topology()


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry.load([write(tmp_path, "box-1.yaml", EDGE)])


@pytest.mark.parametrize(("site", "sensor", "zone", "edge", "code"), [
    ("river-park", "cam-bank", "bank", None, None),
    ("river-park", "cam-bank", "pier", "box-1", None),
    ("river-park", "radar-1", "bank", None, None),  # a ground zone the radar watches
    ("river-park", "radar-1", "meadow", None, "unknown_zone"),  # watched by no radar
    ("river-park", "radar-1", "pier", None, "unknown_zone"),  # a camera zone only
    ("river-park", "cam-bank", "meadow", None, "unknown_zone"),
    ("river-park", "cam-gate", "bank", None, "unknown_camera"),
    ("elsewhere", "cam-bank", "bank", None, "unknown_site"),
    ("river-park", "cam-bank", "bank", "box-2", "wrong_edge"),
])
def test_registry_checks_site_camera_zone_and_edge(
        reg: Registry, site: str, sensor: str, zone: str, edge: str | None,
        code: str | None) -> None:
    got = reg.check(site, sensor, zone, edge)
    assert (got.split(":")[0] if got else None) == code
    assert reg.sites == ["river-park"]


def test_the_central_keeps_no_camera_secrets(reg: Registry) -> None:
    assert "secret" not in repr(reg.topologies)


def test_a_broken_edge_config_is_a_config_error_naming_its_own_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", EDGE.replace("kind: water, risk: high", "kind: lava"))
    central = write(tmp_path, "central.yaml", "central: {sites: [bad.yaml]}\n")
    with pytest.raises(ConfigError) as err:
        load_central_config(central)
    assert len(err.value.lines) == 1
    assert err.value.lines[0].startswith(f"{bad.resolve()}:7: cameras[0].zones[0].kind:")


def test_one_edge_in_two_files_is_refused(tmp_path: Path) -> None:
    a, b = write(tmp_path, "a.yaml", EDGE), write(tmp_path, "b.yaml", EDGE)
    with pytest.raises(ConfigError, match=r"box-1.*also configured in .*a\.yaml"):
        Registry.load([a, b])


def test_sites_resolve_beside_the_central_config(tmp_path: Path) -> None:
    write(tmp_path, "box-1.yaml", EDGE)
    central = write(tmp_path, "central.yaml", "central: {sites: [box-1.yaml]}\n")
    loaded = load_central_config(central)
    assert loaded.config.central.sites == [str((tmp_path / "box-1.yaml").resolve())]


def test_a_central_without_sites_is_refused_unless_a_lab_says_so(tmp_path: Path) -> None:
    central = write(tmp_path, "central.yaml", "central:\n  merge_window_s: 60\n")
    with pytest.raises(ConfigError) as err:
        load_central_config(central)
    assert err.value.lines[0].startswith(f"{central}:2: central.sites: name the edge config")
    lab = write(tmp_path, "lab.yaml", "central: {accept_any_site: true}\n")
    assert load_central_config(lab).config.central.sites == []


def test_the_shipped_central_config_names_its_sites() -> None:
    loaded = load_central_config(REPO_ROOT / "config" / "central.yaml")
    reg = Registry.load(loaded.config.central.sites)
    assert {"pets-campus", "tud-campus", "live-site"} <= set(reg.sites)
    assert reg.check("pets-campus", "pets09", "river-bank") is None


def test_an_edited_edge_config_is_picked_up_and_a_broken_one_ignored(
        tmp_path: Path, reg: Registry) -> None:
    path = reg.paths[0]
    assert reg.refresh() is False  # nothing changed
    path.write_text(EDGE.replace("id: pier", "id: jetty"), encoding="utf-8")
    os.utime(path, (1, 1))  # a different mtime, whatever the file system's resolution
    assert reg.refresh() is True
    assert reg.check("river-park", "cam-bank", "jetty") is None
    assert reg.check("river-park", "cam-bank", "pier") is not None
    path.write_text("cameras: [{id: x", encoding="utf-8")  # broken mid-edit
    os.utime(path, (2, 2))
    assert reg.refresh() is False
    assert reg.check("river-park", "cam-bank", "jetty") is None  # the last good registry


def test_a_missing_edge_config_is_reported_where_it_was_expected(tmp_path: Path) -> None:
    central = write(tmp_path, "central.yaml", "central: {sites: [gone.yaml]}\n")
    with pytest.raises(ConfigError) as err:
        load_central_config(central)
    assert err.value.lines == [f"{(tmp_path / 'gone.yaml').resolve()}: cannot read config: "
                               "No such file or directory"]
