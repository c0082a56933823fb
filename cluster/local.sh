#!/usr/bin/env bash
# A multi-process cluster on one machine: N `emesh worker` processes on loopback, then a
# coordinator that places the model on them and generates through them.
#
#   cluster/local.sh LAYOUT [emesh coordinator flags...]
#   cluster/local.sh ep2 --model models/small --prompt "Hello"
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
[ -x "$emesh" ] || { echo "build first: cargo build --release" >&2; exit 2; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

addrs=()
for i in $(seq 0 $((workers - 1))); do
  out="$(mktemp)"
  budget_flag=()
  [ -n "$memory_budget" ] && budget_flag=(--memory-budget "$memory_budget")
  "$emesh" worker --listen 127.0.0.1:0 --id "w$i" "${budget_flag[@]}" >"$out" &
  pids+=("$!")
  for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
  addrs+=("$(sed -e 's/.*"listening":"\([^"]*\)".*/\1/' "$out")")
  rm -f "$out"
done
list="$(IFS=,; echo "${addrs[*]}")"
echo "workers: $list (tp=$tp)" >&2
"$emesh" coordinator --workers "$list" --tp "$tp" "$@"
