#!/usr/bin/env bash
# A multi-process cluster on one machine: N `emesh worker` processes on loopback, then a
# coordinator that places the model on them and generates through them (or serves, with --http).
#
#   cluster/local.sh LAYOUT [emesh coordinator flags...]
#   cluster/local.sh ep2 --model models/small --prompt "Hello"
#
# With ETCD=1 it runs the failover setup instead: its own etcd (Debian's `etcd-server`), the
# workers registered there under leases (LEASE_TTL, default 2 s), and two coordinators elected
# in etcd, serving HTTP on 127.0.0.1:HTTP_PORT (default 8000; the standby on HTTP_PORT+1):
#
#   ETCD=1 cluster/local.sh ep3 --preset tiny
#
# Every process it starts is announced on stdout as one JSON line ({"role", "id", "pid", ...}),
# so that it can be broken on purpose (`kill -9 PID`, `kill -STOP PID`); all of them stop with
# the script.
#
# LAYOUT is a file in cluster/layouts/ (workers=, tp=, memory_budget=), or "N:TP".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
emesh="${EMESH:-$here/../target/release/emesh}"
layout="${1:?usage: cluster/local.sh LAYOUT [coordinator flags]}"
shift
if [ -f "$here/layouts/$layout.env" ]; then
  # shellcheck disable=SC1090
  source "$here/layouts/$layout.env"
else
  workers="${layout%%:*}"
  tp="${layout##*:}"
fi
memory_budget="${memory_budget:-}"
[ -x "$emesh" ] || { echo "build first: cargo build --release --features etcd" >&2; exit 2; }

pids=()
tmp="$(mktemp -d)"
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

etcd_flags=()
if [ "${ETCD:-0}" = 1 ]; then
  command -v etcd >/dev/null || { echo "ETCD=1 needs etcd on PATH (apt-get install etcd-server)" >&2; exit 2; }
  cport="$(free_port)"
  pport="$(free_port)"
  etcd --name local --data-dir "$tmp/etcd" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "local=http://127.0.0.1:$pport" >"$tmp/etcd.log" 2>&1 &
  pids+=("$!")
  echo "{\"role\":\"etcd\",\"pid\":$!,\"endpoint\":\"http://127.0.0.1:$cport\"}"
  etcd_flags=(--etcd-endpoints "http://127.0.0.1:$cport" --etcd-prefix "/emesh/local-$$/" --lease-ttl "${LEASE_TTL:-2}")
  for _ in $(seq 100); do grep -q "ready to serve client requests" "$tmp/etcd.log" 2>/dev/null && break; sleep 0.1; done
fi

addrs=()
for i in $(seq 0 $((workers - 1))); do
  out="$tmp/w$i.out"
  budget_flag=()
  [ -n "$memory_budget" ] && budget_flag=(--memory-budget "$memory_budget")
  "$emesh" worker --listen 127.0.0.1:0 --id "w$i" "${budget_flag[@]}" "${etcd_flags[@]}" >"$out" &
  pids+=("$!")
  for _ in $(seq 200); do [ -s "$out" ] && break; sleep 0.05; done
  addr="$(sed -e 's/.*"listening":"\([^"]*\)".*/\1/' "$out")"
  addrs+=("$addr")
  echo "{\"role\":\"worker\",\"id\":\"w$i\",\"pid\":$!,\"addr\":\"$addr\"}"
done
list="$(IFS=,; echo "${addrs[*]}")"
echo "workers: $list (tp=$tp)" >&2

if [ "${ETCD:-0}" != 1 ]; then
  "$emesh" coordinator --workers "$list" --tp "$tp" "$@"
  exit $?
fi
port="${HTTP_PORT:-8000}"
for c in 0 1; do
  "$emesh" coordinator --id "c$c" --expect-workers "$workers" --tp "$tp" --http "127.0.0.1:$((port + c))" \
    "${etcd_flags[@]}" "$@" >"$tmp/c$c.out" &
  pids+=("$!")
  echo "{\"role\":\"coordinator\",\"id\":\"c$c\",\"pid\":$!,\"http\":\"127.0.0.1:$((port + c))\"}"
  # The first one leads: let it take the lead before the standby campaigns.
  [ "$c" = 0 ] && for _ in $(seq 300); do [ -s "$tmp/c0.out" ] && break; sleep 0.1; done
done
echo "serving on http://127.0.0.1:$port (standby on $((port + 1))); Ctrl-C stops everything" >&2
wait
