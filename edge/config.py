"""The edge worker's YAML config: the schema of a site's cameras, radars and fences.

Loading and line-numbered errors are ``common.yamlconfig``'s (``file:line: field: message``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from common.yamlconfig import ConfigError, Loaded, Strict, load_yaml_model
from wire.client import Broker, Tls, read_secret
from zones.config import CalibrationConfig, ZoneConfig
from zones.profiles import Period
from zones.radar_config import FusionConfig, GroundZoneConfig, RadarConfig, SiteOrigin
from zones.site import DEFAULT_EDGE_ID, DEFAULT_SITE_ID, ID_PATTERN, SiteTopology, build_topology


class SiteConfig(Strict):
    id: str = Field(DEFAULT_SITE_ID, pattern=ID_PATTERN, description="site id (MQTT topics)")
    timezone: str = Field("Asia/Shanghai", description="IANA zone the schedule is written in")
    origin: SiteOrigin | None = Field(None, description="lat/lon of site (0, 0) metres, for "
                                                        "radars and fences given in lat/lon")


class EdgeConfig(Strict):
    id: str = Field(DEFAULT_EDGE_ID, pattern=ID_PATTERN, description="this edge box")
    snapshot_dir: str | None = Field(
        None, description="live worker: write a JPEG of each raised alarm's frame here "
                          "(relative to the config file); its name goes into the evidence")
    snapshot_quality: int = Field(85, ge=30, le=100, description="JPEG quality of snapshots")


class TilingConfig(Strict):
    """Extra detection passes for small, far-away people."""

    mode: str = Field("off", pattern=r"^(off|tiles|motion|fences)$",
                      description="off; fences: magnified slices around each camera's fences "
                                  "(not crowd zones); tiles: a grid of overlapping crops of "
                                  "the whole frame; motion: crops around moving regions")
    grid: tuple[int, int] = Field((2, 2), description="tiles across and down")
    overlap: float = Field(0.2, ge=0, lt=0.5, description="tile overlap share")
    min_area: int = Field(150, ge=1, description="smallest motion blob, px^2")
    zoom: float = Field(1.5, ge=1, le=4, description="fences: magnification of each slice "
                                                     "(a slice is the network input / zoom)")
    margin: int = Field(24, ge=0, le=500, description="fences: px around a fence's bounding "
                                                      "box that are sliced too (twice above)")
    slice_overlap: float = Field(0.25, ge=0.1, lt=0.5, description="fences: share of a slice "
                                                                    "that overlaps the next")


class DetectorConfig(Strict):
    model: str = Field("yolov8n", description="a name in models/manifest.yaml")
    weights: str | None = Field(None, description="a site's own Ultralytics weights file")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="pin for weights")
    input_size: tuple[int, int] | None = Field(None, description="network input w, h "
                                                                 "(default: the model's)")
    conf: float = Field(0.3, gt=0, lt=1, description="minimum detection confidence")
    nms: float = Field(0.45, gt=0, le=1, description="non-maximum suppression IoU")
    device: str = Field("cpu", description="ultralytics device: cpu, cuda:0, ...")
    classes: list[int] | None = Field(None, description="class ids that count as people "
                                                        "(default: the model's person class)")
    tiling: TilingConfig = Field(default_factory=TilingConfig)

    @model_validator(mode="after")
    def _size(self) -> DetectorConfig:
        if self.input_size and any(v < 32 or v % 32 for v in self.input_size):
            raise ValueError("input_size values must be multiples of 32, at least 32")
        return self


class TrackerConfig(Strict):
    lost_seconds: float = Field(1.5, gt=0, le=30, description="keep a lost track this long")
    min_hits: int = Field(2, ge=1, le=10, description="detections before a track gets an id")
    activation: float = Field(0.4, gt=0, lt=1, description="score that starts a track")
    high_conf: float = Field(0.5, gt=0, lt=1, description="ByteTrack first-stage score")
    min_iou: float = Field(0.1, gt=0, lt=1, description="association IoU")


class MqttTlsConfig(Strict):
    """TLS to the broker: its certificate is checked (and its host name); paths are relative
    to the config file (``perimeter pki issue`` writes them for each edge box)."""

    ca_file: str | None = Field(None, description="CA certificate that signed the broker's "
                                                  "(none: the system's trust store)")
    cert_file: str | None = Field(None, description="this edge box's certificate")
    key_file: str | None = Field(None, description="this edge box's private key")


class MqttConfig(Strict):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535, description="1883; 8883 is the usual TLS port")
    username: str | None = Field(None, description="this edge box's MQTT user")
    password: str | None = Field(None, description="prefer password_file or password_env: a "
                                                   "config is often copied around")
    password_file: str | None = Field(None, description="file whose first line is the "
                                                        "password (relative to the config)")
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                     description="environment variable holding the password")
    tls: MqttTlsConfig | None = Field(None, description="TLS to the broker (see README: "
                                                        "Securing a site)")
    outbox: str | None = Field(None, description="SQLite outbox file (relative to the config "
                                                 "file): alarms survive restarts and power loss")
    outbox_max_entries: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        given = [k for k in ("password", "password_file", "password_env") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give one of password, password_file, password_env, not {given}")
        if given and not self.username:
            raise ValueError(f"{given[0]} needs username")
        return self


class ReconnectConfig(Strict):
    """Exponential backoff with jitter between attempts to reopen a live source.

    The longest wait is short on purpose: a camera that returns should be watched again
    within seconds (3 s plus jitter and the open itself is under 5 s), and an attempt on a
    dead camera costs one TCP connect."""

    initial_s: float = Field(0.5, gt=0, le=60, description="first wait after a failure")
    max_s: float = Field(3.0, gt=0, le=600, description="longest wait between attempts")
    jitter: float = Field(0.25, ge=0, le=1, description="random share added to each wait")


class OnvifConfig(Strict):
    """An ONVIF camera: its stream URI is resolved from the device's media profiles."""

    host: str = Field(min_length=1, description="device address (IP or name)")
    port: int = Field(80, ge=1, le=65535, description="ONVIF HTTP port (HTTPS: usually 443)")
    https: bool = Field(False, description="speak HTTPS to the device")
    ca_file: str | None = Field(None, description="HTTPS: PEM file with the device's own "
                                                  "certificate or its CA, to trust it")
    tls_verify: bool = Field(True, description="HTTPS: check the device's certificate and "
                                               "name; false only on a closed camera network")
    username: str | None = Field(None, description="ONVIF user")
    password: str | None = Field(None, description="ONVIF password")
    profile: str | int | None = Field(
        None, description="media profile token or 0-based index; default: the first")
    detect_profile: str | int | None = Field(
        None, description="profile for detection (a sub-stream); the main one keeps evidence")


class CameraConfig(Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="camera id")
    source: str | None = Field(None, min_length=1,
                               description="video file, or rtsp:// URL (drones too)")
    onvif: OnvifConfig | None = Field(None, description="an ONVIF device instead of a URL")
    evidence_source: str | None = Field(
        None, description="main stream for evidence snapshots when source is a sub-stream")
    fps: float | None = Field(None, gt=0, le=240, description="override the file's frame rate")
    detect_every: int = Field(1, ge=1, le=30, description="live: run the detector once per k "
                                                          "frames of the stream; tracker and "
                                                          "rules step on every processed frame")
    stall_seconds: float = Field(5.0, gt=0, le=300, description="no frame this long: stalled, "
                                                               "reconnect")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    modality: Literal["visible", "night", "thermal"] = Field(
        "visible", description="visible; night (low light: contrast equalised for the "
                               "detector); thermal (LWIR as grey: palette dropped, contrast "
                               "equalised); see README, Night and thermal cameras")
    thermal_polarity: Literal["white-hot", "black-hot"] = Field(
        "white-hot", description="thermal cameras: whether warm is bright (white-hot) or dark")
    conf: float | None = Field(None, gt=0, lt=1, description="this camera's detection "
                                                             "threshold (default: its modality's)")
    calibration: CalibrationConfig | None = None
    zones: list[ZoneConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CameraConfig:
        if (self.source is None) == (self.onvif is None):
            raise ValueError("give exactly one of source (file or rtsp:// URL) and onvif")
        ids = [z.id for z in self.zones]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"zone ids must be unique in a camera: {sorted(dup)}")
        return self

    @property
    def is_live(self) -> bool:
        """A network stream (rtsp/rtsps/http) or an ONVIF device, not a file."""
        if self.onvif is not None:
            return True
        return (self.source or "").split("://", 1)[0].lower() in {"rtsp", "rtsps", "http",
                                                                   "https", "udp", "tcp"}


class PerimeterConfig(Strict):
    site: SiteConfig = Field(default_factory=SiteConfig)
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    periods: list[Period] = Field(default_factory=list)
    cameras: list[CameraConfig] = Field(default_factory=list,
                                        description="cameras (none: a radar-only site)")
    radars: list[RadarConfig] = Field(default_factory=list, description="radars on the site")
    ground_zones: list[GroundZoneConfig] = Field(
        default_factory=list, description="fences on the ground (site metres or lat/lon)")
    fusion: FusionConfig = Field(default_factory=FusionConfig)

    @model_validator(mode="after")
    def _some_sensor(self) -> PerimeterConfig:
        if not self.cameras and not self.radars:
            raise ValueError("a site needs at least one camera or one radar")
        return self

    def topology(self) -> SiteTopology:
        """What this box may alarm about (site, edge, sensors, zones): what the central's
        registry reads from this same file (``zones.site``)."""
        return build_topology(self.site.id, self.edge.id,
                              [(c.id, c.zones) for c in self.cameras], self.radars,
                              self.ground_zones)


LoadedConfig = Loaded[PerimeterConfig]


def load_config(path: Path) -> LoadedConfig:
    """The edge worker's config; raises ConfigError (``file:line: field: message`` each)."""
    return load_yaml_model(path, PerimeterConfig)


def mqtt_broker(loaded: LoadedConfig) -> Broker:
    """The broker of the config's ``mqtt`` section: address, credentials and TLS, paths
    resolved beside the config; ConfigError naming the field when a file cannot be read."""
    m = loaded.config.mqtt
    try:
        password = m.password or read_secret(
            loaded.resolve_path(m.password_file) if m.password_file else None, m.password_env)
    except ValueError as err:
        raise ConfigError([f"{loaded.where(('mqtt', 'password_file'))}: {err}"]) from None
    tls = None
    if m.tls is not None:
        paths = {k: str(loaded.resolve_path(v)) if v else None
                 for k, v in m.tls.model_dump().items()}
        try:
            tls = Tls(**paths)
        except ValueError as err:
            raise ConfigError([f"{loaded.where(('mqtt', 'tls'))}: {err}"]) from None
    return Broker(m.host, m.port, m.username, password, tls)


def video_path(loaded: LoadedConfig, index: int) -> Path:
    """The video file of camera ``index``; a live camera (RTSP, ONVIF) is a ConfigError here,
    for the commands that replay files."""
    cam = loaded.config.cameras[index]
    if cam.is_live or cam.source is None:
        raise ConfigError([f"{loaded.where(('cameras', index, 'source'))}: camera {cam.id!r} is "
                           f"a live source; replay needs a video file (live: perimeter run)"])
    return loaded.resolve_path(cam.source)
