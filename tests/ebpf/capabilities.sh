#!/usr/bin/env bash
# The capabilities the Helm chart grants the node agent (helm/tributary,
# docs/kubernetes.md) are the ones the eBPF data plane needs, and no fewer:
# as root with a bounding set of exactly CAP_BPF + CAP_NET_ADMIN (what a
# container with `drop: [ALL]` and those two added gets) the sk_msg router
# loads; with either one alone it does not; the userspace relay needs none.
# Usage: capabilities.sh TRIBUTARY_BINARY. Exit 77 (skipped) without root,
# unless TRIBUTARY_REQUIRE_PRIVILEGED is set.
set -uo pipefail
binary="$1"
skip() {
  if [[ -n "${TRIBUTARY_REQUIRE_PRIVILEGED:-}" ]]; then echo "FAIL (TRIBUTARY_REQUIRE_PRIVILEGED): $1"; exit 1; fi
  echo "SKIP: $1"; exit 77
}
[[ $(id -u) == 0 ]] || skip "needs root to set a bounding set"
command -v setpriv >/dev/null || skip "needs setpriv (util-linux)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0

# Starts the node agent with the bounding set `caps` (setpriv syntax, "" for
# none) and data plane `mode`; prints the line that says which data plane it
# got, or its error.
run_node() {
  local caps="$1" mode="$2" id="capcheck-$$-$RANDOM"
  cat > "$work/node.yaml" <<YAML
node_id: $id
store: {segment_bytes: 64MiB}
gateway_bind: tcp://127.0.0.1:0
dataplane: $mode
metrics_bind: ""
gateway_security: {mode: none}
controller: tcp://127.0.0.1:1
controller_security: {mode: none}
YAML
  timeout 5 setpriv --bounding-set="-all${caps:+,$caps}" --inh-caps=-all -- \
    "$binary" node --config "$work/node.yaml" > "$work/log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do
    grep -q "data plane:\|tributary:" "$work/log" && break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  grep -m1 -o "data plane: [^(]*\|tributary: .*" "$work/log"
}

expect() {
  local what="$1" caps="$2" mode="$3" pattern="$4" got
  got="$(run_node "$caps" "$mode")"
  if [[ "$got" =~ $pattern ]]; then
    echo "ok: $what: $got"
  else
    echo "FAIL: $what: expected /$pattern/, got: ${got:-nothing}"
    failures=$((failures + 1))
  fi
}

expect "CAP_BPF + CAP_NET_ADMIN load the router" "+bpf,+net_admin" ebpf "eBPF sk_msg router"
expect "CAP_BPF alone does not" "+bpf" ebpf "Operation not permitted"
expect "CAP_NET_ADMIN alone does not" "+net_admin" ebpf "Operation not permitted"
expect "no capability: the userspace relay" "" userspace "userspace relay"
exit $((failures > 0))
