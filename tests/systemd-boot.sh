#!/usr/bin/env bash
# The amd64 .deb under a real systemd: a Debian 12 root made with debootstrap, the package
# installed with dpkg in a chroot, then systemd booted as PID 1 of a new PID and mount
# namespace (no VM, no container engine; needs root). Checks, from the host through
# nsenter:
#   - Type=notify: the unit is active only after READY=1, with its STATUS line;
#   - the hardened unit really runs (sandbox, syscall filter, device policy) and serves;
#   - the watchdog restarts a daemon that stops sending WATCHDOG=1;
#   - bad config: exit status 2 and no restart;
#   - systemctl stop: exit status 0.
# Usage: tests/systemd-boot.sh PATH/TO/focusd_VERSION_amd64.deb
#        tests/systemd-boot.sh --prepare DIR          only debootstrap a root into DIR
#        tests/systemd-boot.sh --root DIR DEB         the test, in a root made by --prepare
#                                                     (used once: the package goes into it)
set -euo pipefail

debootstrap_root() {
  # The GStreamer libraries: an amd64 package built with the `gstreamer` feature links
  # them.
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,curl,libgstreamer1.0-0,libgstreamer-plugins-base1.0-0 \
    bookworm "$1" http://deb.debian.org/debian >"$1.debootstrap.log" 2>&1 ||
    { tail -20 "$1.debootstrap.log"; return 1; }
  # And GStreamer's RTSP server, whose dependencies (the good plugins and theirs) only
  # apt configures in order.
  chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libgstrtspserver-1.0-0 >>"$1.debootstrap.log" 2>&1 ||
    { tail -20 "$1.debootstrap.log"; return 1; }
}

case "${1:-}" in
  --prepare)
    debootstrap_root "$2/root"
    exit 0 ;;
  --root)
    prepared="$2/root"
    shift 2 ;;
  *) prepared="" ;;
esac
deb=$(realpath "$1")
work=$(mktemp -d /tmp/focusd-boot.XXXXXX)
root=${prepared:-$work/root}
init_pid=""

cleanup() {
  if [ -n "$init_pid" ]; then
    kill -9 "$init_pid" 2>/dev/null || true
    wait "$init_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

ok() { echo "ok   $*"; }
fail() {
  echo "FAIL $*"
  in_root journalctl -u focusd --no-pager -n 30 2>/dev/null || true
  exit 1
}

if [ -z "$prepared" ]; then
  echo "debootstrap a minimal Debian 12 with systemd"
  debootstrap_root "$root"
fi

cp "$deb" "$root/root/focusd.deb"
chroot "$root" dpkg -i /root/focusd.deb >/dev/null 2>&1 || fail "dpkg -i in the chroot"
[ -L "$root/etc/systemd/system/multi-user.target.wants/focusd.service" ] ||
  fail "the package did not enable the service"
ok "installed and enabled in a chroot"

# A free port for the daemon (the namespaces share the host's network).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s/^listen = .*/listen = \"127.0.0.1:$port\"/" "$root/etc/focusd/focusd.toml"
# A short watchdog so that the restart is seen quickly.
mkdir -p "$root/etc/systemd/system/focusd.service.d"
printf '[Service]\nWatchdogSec=2s\n' >"$root/etc/systemd/system/focusd.service.d/test.conf"

echo "boot systemd"
unshare --fork --pid --mount --uts --mount-proc sh -c "
  mount --make-rprivate /
  mount --bind '$root' '$root'
  mount -t proc proc '$root/proc'
  mount --rbind /dev '$root/dev'
  mount -t sysfs sys '$root/sys'
  mount -t cgroup2 none '$root/sys/fs/cgroup'
  mount -t tmpfs tmpfs '$root/run'
  cd '$root' && mkdir -p oldroot && pivot_root . oldroot
  exec chroot . sh -c 'umount -l /oldroot; exec /lib/systemd/systemd --system --log-target=null'
" >"$work/boot.log" 2>&1 &
unshare_pid=$!
# systemd is the child of unshare's fork.
for _ in $(seq 100); do
  init_pid=$(pgrep -P "$unshare_pid" || true)
  [ -n "$init_pid" ] && break
  sleep 0.1
done
[ -n "$init_pid" ] || fail "systemd did not start"
in_root() { nsenter -t "$init_pid" -m -p -u "$@"; }

state() { in_root systemctl show focusd -P "$1" 2>/dev/null; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2
  shift 2
  for _ in $(seq $((secs * 10))); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  fail "$what within ${secs}s"
}
is_active() { [ "$(state ActiveState)" = active ]; }
healthy() { curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; }

wait_for 60 "focusd active" is_active
status=$(state StatusText)
[[ "$status" == "serving http://127.0.0.1:$port/" ]] || fail "status line: '$status'"
ok "active after READY=1, status: $status"
wait_for 5 "/healthz 200" healthy
ok "hardened unit serves /healthz"
[ "$(state User)" = focusd ] || fail "runs as $(state User)"
ok "runs as user focusd"

# The access token: generated in the state directory, private to the service's user,
# printed by `focusd token`, required by the API.
token_file=/var/lib/focusd/token
in_root test -f "$token_file" || fail "no generated token in /var/lib/focusd"
# Read inside the booted system: its user names, not the host's.
owner=$(in_root stat -c '%a %U' "$token_file")
[ "$owner" = "600 focusd" ] || fail "token file: $owner"
# Read whole, then its first line: a reader that leaves early (`| head -1`) is a race
# with the command's second line (the command survives it, but this test need not rely on it).
printed=$(in_root focusd token)
token=${printed%%$'\n'*}
[ "$token" = "$(in_root cat "$token_file")" ] || fail "focusd token printed '$token'"
api() { curl -s -o /dev/null -w '%{http_code}' "$@" "http://127.0.0.1:$port/api/state"; }
[ "$(api)" = 401 ] || fail "/api/state without the token: $(api)"
[ "$(api -H "Authorization: Bearer $token")" = 200 ] || fail "/api/state with the token"
ok "token generated in /var/lib/focusd (600 focusd), printed by focusd token, required by the API"

# The watchdog: a stopped process sends no WATCHDOG=1 and is restarted.
pid=$(state MainPID) # a PID of the booted system's namespace
in_root systemctl kill --kill-whom=main --signal=SIGSTOP focusd
restarted() { [ "$(state NRestarts)" -ge 1 ] && is_active; }
wait_for 20 "watchdog restart" restarted
[ "$(state MainPID)" != "$pid" ] || fail "same main PID after the watchdog"
ok "watchdog restarted a hung daemon (NRestarts=$(state NRestarts))"

# Bad config: exit 2, and systemd does not restart it.
cp "$root/etc/focusd/focusd.toml" "$work/good.toml"
sed -i 's/^context_kbps = .*/context_kbps = -5/' "$root/etc/focusd/focusd.toml"
in_root systemctl restart focusd >/dev/null 2>&1 || true
failed() { [ "$(state ActiveState)" = failed ]; }
wait_for 10 "failed state on bad config" failed
[ "$(state ExecMainStatus)" = 2 ] || fail "exit status $(state ExecMainStatus) on bad config"
restarts=$(state NRestarts)
sleep 3
[ "$(state ActiveState)" = failed ] && [ "$(state NRestarts)" = "$restarts" ] ||
  fail "restarted after a bad config"
in_root journalctl -u focusd --no-pager | grep -q 'video.context_kbps' ||
  fail "the journal does not name the key"
ok "bad config: exit status 2, not restarted, key named in the journal"

# Stop: clean exit.
cp "$work/good.toml" "$root/etc/focusd/focusd.toml"
in_root systemctl reset-failed focusd
in_root systemctl start focusd || fail "start after fixing the config"
wait_for 30 "active again" is_active
in_root systemctl stop focusd
[ "$(state Result)" = success ] && [ "$(state ExecMainStatus)" = 0 ] ||
  fail "stop: result $(state Result), status $(state ExecMainStatus)"
ok "systemctl stop: exit status 0"
echo "systemd boot test: all checks passed"
