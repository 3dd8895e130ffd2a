#!/usr/bin/env bash
# Installs perimeter as a service on one machine of a site (Debian, as root):
#   deploy/install.sh --role edge    --identity pki/devices/edge-1
#   deploy/install.sh --role speaker --identity pki/devices/spk-1
#   deploy/install.sh --role central --identity pki/devices/central --signing-key pki/command-signing.key
#   deploy/install.sh --role broker  --identity pki/devices/broker --broker-files pki/mosquitto
# The identity folders come from `perimeter pki issue` (README: Securing a site). It lays out:
#   user and group `perimeter` (system, no login, no home)
#   /opt/perimeter            the code and its .venv (deploy/setup.sh)
#   /etc/perimeter            configs (root:perimeter 0750), identity/ (keys 0640)
#   /var/lib/perimeter        state: the edge's outbox, snapshots, speaker clips (0750)
#   /etc/systemd/system       perimeter-edge.service, perimeter-central@.service,
#                             perimeter-speaker@.service
#   /etc/mosquitto            conf.d/perimeter.conf, perimeter/ (broker role)
#   /etc/redis                perimeter.conf (central role)
# DESTDIR=/some/root lays everything out under that folder instead and skips users, apt and
# systemctl (what the tests check). Idempotent: a second run only refreshes files.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
role="" identity="" signing_key="" broker_files=""
while (( $# )); do
  case "$1" in
    --role) role="$2"; shift 2 ;;
    --identity) identity="$2"; shift 2 ;;
    --signing-key) signing_key="$2"; shift 2 ;;
    --broker-files) broker_files="$2"; shift 2 ;;
    *) echo "install: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$role" in edge|central|speaker|broker) ;; *)
  echo "install: give --role edge|central|speaker|broker" >&2; exit 2 ;; esac
[[ -n "$identity" && -d "$identity" ]] || {
  echo "install: give --identity DIR (from: perimeter pki issue NAME --role $role)" >&2; exit 2; }
root="${DESTDIR:-}"
real=1; [[ -n "$root" ]] && real=0
owner() { (( real )) && chown "$@" || true; }

if (( real )); then
  getent group perimeter >/dev/null || groupadd --system perimeter
  getent passwd perimeter >/dev/null || useradd --system --gid perimeter --no-create-home \
    --home-dir /var/lib/perimeter --shell /usr/sbin/nologin perimeter
fi
install -d -m 0755 "$root/opt/perimeter" "$root/etc/systemd/system"
install -d -m 0750 "$root/etc/perimeter" "$root/etc/perimeter/identity" "$root/var/lib/perimeter"
owner root:perimeter "$root/etc/perimeter" "$root/etc/perimeter/identity"
owner perimeter:perimeter "$root/var/lib/perimeter"

# the code, then its environment (only on the real machine: pip and apt)
if [[ "$repo" != "$root/opt/perimeter" ]]; then
  (cd "$repo" && git ls-files -z 2>/dev/null || find . -type f -not -path './.*' -print0) |
    (cd "$repo" && xargs -0 cp --parents -t "$root/opt/perimeter")
fi
if (( real )); then
  case "$role" in
    central) (cd /opt/perimeter && deploy/setup.sh --demo) ;;
    broker) command -v mosquitto >/dev/null || apt-get install -y -qq mosquitto ;;
    *) (cd /opt/perimeter && deploy/setup.sh) ;;
  esac
fi

# this device's identity: readable by the service's group, never by others
name="$(basename "$identity")"
for f in "$identity"/*; do
  install -m 0640 "$f" "$root/etc/perimeter/identity/$(basename "$f")"
done
owner root:perimeter "$root"/etc/perimeter/identity/*
[[ -n "$signing_key" ]] && install -m 0640 "$signing_key" \
  "$root/etc/perimeter/identity/command-signing.key"
[[ -f "$identity/../../command-signing.pub" ]] && install -m 0644 \
  "$identity/../../command-signing.pub" "$root/etc/perimeter/identity/command-signing.pub"

case "$role" in
  edge) install -m 0644 "$here/systemd/perimeter-edge.service" "$root/etc/systemd/system/" ;;
  central)
    install -m 0644 "$here/systemd/perimeter-central@.service" "$root/etc/systemd/system/"
    install -d -m 0755 "$root/etc/redis"
    install -m 0644 "$here/redis.conf" "$root/etc/redis/perimeter.conf" ;;
  speaker)
    install -m 0644 "$here/systemd/perimeter-speaker@.service" "$root/etc/systemd/system/" ;;
  broker)
    install -d -m 0750 "$root/etc/mosquitto/perimeter" "$root/etc/mosquitto/conf.d"
    install -m 0644 "$here/mosquitto.conf" "$root/etc/mosquitto/conf.d/perimeter.conf"
    install -m 0644 "$identity/ca.crt" "$root/etc/mosquitto/perimeter/ca.crt"
    install -m 0644 "$identity/$name.crt" "$root/etc/mosquitto/perimeter/broker.crt"
    install -m 0640 "$identity/$name.key" "$root/etc/mosquitto/perimeter/broker.key"
    [[ -n "$broker_files" ]] && for f in passwords acl; do
      install -m 0640 "$broker_files/$f" "$root/etc/mosquitto/perimeter/$f"
    done
    owner -R root:mosquitto "$root/etc/mosquitto/perimeter" ;;
esac
if (( real )); then
  systemctl daemon-reload
  echo "install: $role installed; next: write /etc/perimeter/*.yaml and *.env (README: Securing a site), then"
  case "$role" in
    edge) echo "  systemctl enable --now perimeter-edge" ;;
    central) echo "  systemctl enable --now perimeter-central@w1" ;;
    speaker) echo "  systemctl enable --now perimeter-speaker@$name" ;;
    broker) echo "  systemctl restart mosquitto" ;;
  esac
fi
echo "install: done ($role, identity $name${root:+, under $root})"
