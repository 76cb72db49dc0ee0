#!/usr/bin/env bash
# tests/support/rgw.sh: a real S3 server (Ceph RADOS Gateway) on 127.0.0.1 for tests, as a one-node
# Ceph cluster (1 mon + 1 OSD + radosgw, no mgr) whose whole state lives in DATADIR.
#
#   rgw.sh DATADIR          start it (or, if it already runs, report it); the last line printed is
#                           "PORT ACCESS_KEY SECRET_KEY PID". PID is a supervisor process: `kill PID`
#                           (SIGTERM) stops radosgw, the OSD and the mon, and it exits when they are gone.
#   rgw.sh stop DATADIR     stop it (SIGTERM to the supervisor, waits; daemons it left behind are
#                           ended by the PIDs recorded in DATADIR/run)
#   rgw.sh status DATADIR   print the line again if it runs (exit 0), else exit 1
#
# The test suite's fixture (tests/support/rgw.py) runs it with RGW_OBJECTSTORE=memstore and RGW_WATCH_PID.
# Adapted from a recipe kept outside the project; this copy is the project's own.
#
# Environment (optional):
#   RGW_ACCESS_KEY / RGW_SECRET_KEY   the S3 credential ensured on every start (defaults below)
#   RGW_OBJECTSTORE                   bluestore (default: a sparse file DATADIR/osd/ceph-0.block, data kept
#                                     across restarts) or memstore (RAM only: the DATADIR is made anew at each
#                                     start); read when DATADIR is first made, then kept in DATADIR/store
#   RGW_BLOCK_SIZE                    size of the sparse bluestore file (default 10G)
#   RGW_START_TIMEOUT                 seconds to wait for readiness (default 180)
#   RGW_WATCH_PID                     a process (the test session) whose end stops everything too, so a
#                                     session killed hard leaves no daemons behind
#
# Needs Debian's radosgw, ceph-mon, ceph-osd, ceph-common, curl and python3 (apt-get installs the missing ones;
# root). About 170 MB of RSS for the three daemons; first start ~15 s, a restart ~5 s.
# Debian 12 ships Ceph 16.2 (Pacific), which has no standalone dbstore backend, hence the mini cluster.
# Binds only 127.0.0.1: the mon and radosgw on free ephemeral ports chosen at each start, the OSD on
# the first free ports of Ceph's 6800-7300 range.
set -euo pipefail

ACCESS_KEY=${RGW_ACCESS_KEY:-RGWTESTACCESSKEY0001}
SECRET_KEY=${RGW_SECRET_KEY:-rgw-test-secret-key-0000000000000000000001}
STORE=${RGW_OBJECTSTORE:-bluestore}
BLOCK_SIZE=${RGW_BLOCK_SIZE:-10G}
TIMEOUT=${RGW_START_TIMEOUT:-180}
WATCH=${RGW_WATCH_PID:-}
SELF=$(readlink -f "$0")

die() { echo "rgw.sh: $*" >&2; exit 1; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# alive and not a zombie (a daemon that exited stays "alive" for kill -0 until the supervisor reaps it)
running() { alive "$1" && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
# true when PID is alive and its command line mentions DATADIR (so we only ever end our own processes)
ours() { alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$D"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

ensure_packages() {
  local missing=()
  for b in radosgw:radosgw radosgw-admin:ceph-common ceph:ceph-common ceph-mon:ceph-mon ceph-osd:ceph-osd curl:curl \
           python3:python3; do
    command -v "${b%%:*}" >/dev/null 2>&1 || missing+=("${b##*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing packages: ${missing[*]} (run as root to install them)"
  echo "rgw.sh: installing ${missing[*]} ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
}

write_conf() { # $1 = fsid, $2 = mon port
  local fsid=$1 port=$2
  cat >"$D/ceph.conf.tmp" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $D/keyring
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
pid file = $D/run/\$name.pid
crash dir = $D/crash
mon data = $D/mon/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
osd objectstore = $STORE

[mon]
keyring = $D/mon/\$cluster-\$id/keyring

[osd]
keyring = $D/osd/\$cluster-\$id/keyring
osd op num shards = 1
osd op num threads per shard = 2
osd memory target = 939524096
bluestore block path = $D/osd/\$cluster-\$id.block
bluestore block create = true
bluestore block size = $(numfmt --from=iec "$BLOCK_SIZE")
bluestore block db create = false
bluestore block wal create = false
bluestore cache autotune = false
bluestore cache size = 134217728
bluestore fsck on mount = false
memstore device bytes = 4294967296

[client.rgw.gw]
rgw thread pool size = 64
rgw frontends = beast endpoint=127.0.0.1:0
EOF
  mv "$D/ceph.conf.tmp" "$D/ceph.conf"
}

C() { ceph -c "$D/ceph.conf" --connect-timeout 10 "$@"; }

wait_for() { # $1 seconds, $2.. command; polls every 0.5 s
  local t=$1; shift
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.5
  done
}

osd_up() { C osd stat -f json | grep -q '"num_up_osds":1'; }
rgw_ready() { curl -sf -o /dev/null "http://127.0.0.1:$1/"; }

# ---------------------------------------------------------------------------------------------- #
# The supervisor: runs in the background, owns the three daemons, ends them on SIGTERM/SIGINT.
supervise() {
  [ -f "$D/log/supervisor.log" ] && mv -f "$D/log/supervisor.log" "$D/log/supervisor.log.1"
  exec </dev/null >"$D/log/supervisor.log" 2>&1
  echo "$(date -Is) supervisor $$ starting (store $STORE)"
  echo $$ >"$D/run/supervisor.pid"
  rm -f "$D/endpoint"
  MON= OSD= RGW= stopping=0
  shutdown() {
    stopping=1
    trap - TERM INT
    local p
    for p in $RGW $OSD $MON; do
      alive "$p" || continue
      kill -TERM "$p" 2>/dev/null || true
      for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
      alive "$p" && kill -KILL "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    done
    rm -f "$D/endpoint" "$D/run/supervisor.pid" "$D/run/daemons.pids"
    echo "$(date -Is) supervisor $$ stopped"
  }
  trap 'shutdown; exit 0' TERM INT
  trap '[ $stopping = 1 ] || shutdown' EXIT

  local monport fsid first=0
  monport=$(free_port)
  # a memstore OSD keeps nothing across a stop: such a DATADIR is made anew on each start
  if [ -f "$D/initialized" ] && [ "$(cat "$D/store" 2>/dev/null)" = memstore ]; then rm -f "$D/initialized"; fi
  if [ -f "$D/initialized" ]; then STORE=$(cat "$D/store" 2>/dev/null || echo bluestore); fi
  if [ ! -f "$D/initialized" ]; then
    first=1
    rm -rf "$D/mon" "$D/osd" "$D/keyring" "$D/ceph.conf" "$D/fsid" "$D/store"
    echo "$STORE" >"$D/store"
    mkdir -p "$D/mon/ceph-a" "$D/osd/ceph-0"
    fsid=$(cat /proc/sys/kernel/random/uuid); echo "$fsid" >"$D/fsid"
    write_conf "$fsid" "$monport"
    monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$monport]" "$D/run/monmap" >/dev/null
    ceph-authtool --create-keyring "$D/run/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$D/keyring" --gen-key -n client.admin \
      --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$D/run/mon.keyring" --import-keyring "$D/keyring" >/dev/null
    ceph-mon -c "$D/ceph.conf" --mkfs -i a --monmap "$D/run/monmap" --keyring "$D/run/mon.keyring"
    rm -f "$D/run/mon.keyring"
  else
    fsid=$(cat "$D/fsid")
    write_conf "$fsid" "$monport"
    # the mon's address is in its monmap: move it to this start's port
    ceph-mon -c "$D/ceph.conf" -i a --extract-monmap "$D/run/monmap"
    monmaptool --rm a "$D/run/monmap" >/dev/null
    monmaptool --addv a "[v2:127.0.0.1:$monport]" "$D/run/monmap" >/dev/null
    ceph-mon -c "$D/ceph.conf" -i a --inject-monmap "$D/run/monmap"
  fi

  ceph-mon -c "$D/ceph.conf" -i a -f >>"$D/log/mon.a.out" 2>&1 &
  MON=$!
  echo "mon $MON" >"$D/run/daemons.pids"
  wait_for 60 C mon stat || { echo "mon did not come up"; exit 1; }

  if [ $first = 1 ]; then
    local uuid key
    uuid=$(cat /proc/sys/kernel/random/uuid)
    key=$(ceph-authtool --gen-print-key)
    printf '{"cephx_secret": "%s"}\n' "$key" >"$D/run/osd-new.json"
    [ "$(C osd new "$uuid" -i "$D/run/osd-new.json")" = 0 ] || { echo "osd new did not give id 0"; exit 1; }
    rm -f "$D/run/osd-new.json"
    printf '[osd.0]\n\tkey = %s\n' "$key" >"$D/osd/ceph-0/keyring"
    ceph-osd -c "$D/ceph.conf" -i 0 --mkfs --key "$key" --osd-uuid "$uuid"
    C auth get-or-create client.rgw.gw mon 'allow rw' osd 'allow rwx' mgr 'allow rw' >>"$D/keyring"
  fi

  ceph-osd -c "$D/ceph.conf" -i 0 -f >>"$D/log/osd.0.out" 2>&1 &
  OSD=$!
  echo "osd $OSD" >>"$D/run/daemons.pids"
  wait_for 120 osd_up || { echo "osd did not come up"; exit 1; }
  [ $first = 1 ] && touch "$D/initialized"

  local port; port=$(free_port)
  radosgw -c "$D/ceph.conf" -n client.rgw.gw -f --rgw-frontends "beast endpoint=127.0.0.1:$port" \
    >>"$D/log/rgw.out" 2>&1 &
  RGW=$!
  echo "rgw $RGW" >>"$D/run/daemons.pids"
  wait_for "$TIMEOUT" rgw_ready "$port" || { echo "radosgw did not answer on $port"; exit 1; }

  local A=(radosgw-admin -c "$D/ceph.conf" -n client.admin)
  if ! "${A[@]}" user info --uid tester >"$D/run/user.json" 2>/dev/null; then
    "${A[@]}" user create --uid tester --display-name tester \
      --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >"$D/run/user.json"
  elif ! grep -qF "\"secret_key\": \"$SECRET_KEY\"" "$D/run/user.json" \
       || ! grep -qF "\"access_key\": \"$ACCESS_KEY\"" "$D/run/user.json"; then
    "${A[@]}" key create --uid tester --key-type s3 \
      --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >"$D/run/user.json"
  fi
  rm -f "$D/run/user.json"

  echo "$port $ACCESS_KEY $SECRET_KEY $$" >"$D/endpoint.tmp"
  mv "$D/endpoint.tmp" "$D/endpoint"
  echo "$(date -Is) ready: $(cat "$D/endpoint")"

  # any daemon exiting on its own ends the whole set
  # (and so does the end of RGW_WATCH_PID)
  while running "$MON" && running "$OSD" && running "$RGW"; do
    if [ -n "$WATCH" ] && ! alive "$WATCH"; then
      echo "$(date -Is) watched process $WATCH is gone; stopping"
      exit 0
    fi
    sleep 1 & wait $! || true
  done
  echo "$(date -Is) a daemon exited; stopping the others"
  exit 1
}

# ---------------------------------------------------------------------------------------------- #
stop_all() {
  local sup; sup=$(cat "$D/run/supervisor.pid" 2>/dev/null || true)
  if ours "$sup"; then
    kill -TERM "$sup"
    for _ in $(seq 300); do alive "$sup" || break; sleep 0.1; done
  fi
  # daemons left behind by a supervisor that was killed hard
  if [ -f "$D/run/daemons.pids" ]; then
    local name pid
    while read -r name pid; do
      if ours "$pid"; then
        kill -TERM "$pid"
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
        ours "$pid" && kill -KILL "$pid" || true
      fi
    done < <(tac "$D/run/daemons.pids")
    rm -f "$D/run/daemons.pids"
  fi
  rm -f "$D/endpoint" "$D/run/supervisor.pid"
}

status() {
  local sup line
  sup=$(cat "$D/run/supervisor.pid" 2>/dev/null || true)
  line=$(cat "$D/endpoint" 2>/dev/null || true)
  ours "$sup" && [ -n "$line" ] && rgw_ready "${line%% *}" && { echo "$line"; return 0; }
  return 1
}

cmd=start
case "${1:-}" in
  stop|status|__supervise) cmd=$1; shift ;;
  -h|--help|"") awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"; exit 2 ;;
esac
[ $# -eq 1 ] || die "usage: rgw.sh [stop|status] DATADIR"
mkdir -p "$1"
D=$(cd "$1" && pwd -P)

case $cmd in
  __supervise) supervise ;;
  stop) stop_all ;;
  status) status ;;
  start)
    if status; then exit 0; fi
    ensure_packages
    stop_all # leftovers of an earlier run in this DATADIR, by their recorded PIDs
    mkdir -p "$D/run" "$D/log" "$D/crash"
    t0=$(date +%s.%N)
    setsid "$SELF" __supervise "$D" </dev/null >/dev/null 2>&1 &
    sup=$!
    end=$(( $(date +%s) + TIMEOUT + 60 ))
    while [ ! -f "$D/endpoint" ]; do
      if ! alive "$sup" || [ "$(date +%s)" -ge "$end" ]; then
        alive "$sup" && kill -TERM "$sup"
        echo "rgw.sh: failed to start; tail of $D/log/supervisor.log:" >&2
        tail -n 20 "$D/log/supervisor.log" >&2 || true
        exit 1
      fi
      sleep 0.2
    done
    echo "rgw.sh: ready in $(python3 -c "import time; print(round(time.time() - $t0, 1))") s; logs in $D/log" >&2
    cat "$D/endpoint"
    ;;
esac
