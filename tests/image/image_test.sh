#!/usr/bin/env bash
# The container image runs a federation: scripts/image builds it around the
# binary under test, then the controller, a node agent and loadgen run from
# it under podman (host network, loopback ports), CURVE on both planes, the
# node agent with the chart's privileges only (root, every capability dropped
# but CAP_BPF and CAP_NET_ADMIN, no new privileges, read-only root), the
# others as the image's non-root user; the node agent's seccomp profile is the
# runtime's default with bpf(2) allowed for CAP_BPF (scripts/seccomp-allow-bpf). Passes when loadgen sees the job
# complete a round and the node reports the eBPF data plane.
# Usage: image_test.sh TRIBUTARY_BINARY. Exit 77 (skipped) without root or
# podman, unless TRIBUTARY_REQUIRE_PRIVILEGED is set.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
binary="$(realpath "$1")"
skip() {
  if [[ -n "${TRIBUTARY_REQUIRE_PRIVILEGED:-}" ]]; then echo "FAIL (TRIBUTARY_REQUIRE_PRIVILEGED): $1"; exit 1; fi
  echo "SKIP: $1"; exit 77
}
[[ $(id -u) == 0 ]] || skip "needs root (podman, BPF)"
command -v podman >/dev/null && command -v mmdebstrap >/dev/null || skip "needs podman and mmdebstrap (scripts/setup)"

tag="localhost/tributary:image-test"
bash "$here/scripts/image" --binary "$binary" --tag "$tag" || { echo "FAIL: scripts/image"; exit 1; }
export CONTAINERS_CONF="${XDG_CACHE_HOME:-$HOME/.cache}/tributary-image/containers.conf"

work="$(mktemp -d)"
name="tributary-image-test-$$"
cleanup() {
  podman rm -f "$name-ctl" "$name-node" >/dev/null 2>&1
  podman rmi -f "$tag" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/etc/keys" "$work/etc/nodes" "$work/etc/clients" "$work/state"
for k in controller gateway pool loadgen; do "$binary" keys generate --name "$k" --out "$work/etc/keys" >/dev/null; done
cp "$work/etc/keys/pool.pub" "$work/etc/nodes/img.*.pub"      # the pool's key speaks for img.<anything>
cp "$work/etc/keys/loadgen.pub" "$work/etc/clients/load-*.pub"
chmod -R a+rX "$work/etc" && chown 65532:65532 "$work/state"
chmod 0644 "$work/etc/keys/"*.key   # read by the image's user; a Secret's mode in the chart
cat > "$work/etc/controller.yaml" <<YAML
bind: tcp://127.0.0.1:17700
http_bind: 127.0.0.1:17701
state_dir: /var/lib/tributary
security: {mode: curve, secret_key_file: /etc/tributary/keys/controller.key, node_allow_list: /etc/tributary/nodes}
jobs: [job.yaml]
YAML
cat > "$work/etc/job.yaml" <<YAML
name: example
rounds: 1
clients_per_round: 3
model: {layout: [{name: w, shape: [4096]}], init: {scheme: normal, scale: 0.1, seed: 3}}
YAML
cat > "$work/etc/node.yaml" <<YAML
store: {segment_bytes: 256MiB}
gateway_bind: tcp://127.0.0.1:17600
dataplane: ebpf
metrics_bind: 127.0.0.1:19400
controller: tcp://127.0.0.1:17700
gateway_security: {mode: curve, secret_key_file: /etc/tributary/keys/gateway.key, allow_list: /etc/tributary/clients}
controller_security: {mode: curve, controller_public_key_file: /etc/tributary/keys/controller.pub,
                      secret_key_file: /etc/tributary/keys/pool.key}
YAML
common=(--network host --read-only --tmpfs /tmp --security-opt no-new-privileges -v "$work/etc:/etc/tributary:ro")
# This podman's default seccomp profile allows bpf(2) only with CAP_SYS_ADMIN:
# the node agent gets the same profile with bpf(2) allowed for CAP_BPF, as the
# chart's docs tell operators of such runtimes to install.
python3 "$here/scripts/seccomp-allow-bpf" "$work/seccomp.json" || { echo "FAIL: scripts/seccomp-allow-bpf"; exit 1; }
podman run -d --name "$name-ctl" "${common[@]}" -v "$work/state:/var/lib/tributary" "$tag" \
  controller --config /etc/tributary/controller.yaml >/dev/null || { echo "FAIL: the controller did not start"; exit 1; }
podman run -d --name "$name-node" "${common[@]}" --user 0 --cap-drop ALL --cap-add BPF --cap-add NET_ADMIN \
  --security-opt seccomp="$work/seccomp.json" \
  --shm-size 300m "$tag" node --config /etc/tributary/node.yaml --node-id img.host \
  --gateway-advertise tcp://127.0.0.1:17600 >/dev/null || { echo "FAIL: the node agent did not start"; exit 1; }

joined=""
for _ in $(seq 60); do
  if "$binary" status --json --controller http://127.0.0.1:17701 2>/dev/null | grep -q '"img.host"'; then joined=1; break; fi
  sleep 0.5
done
[[ -n "$joined" ]] || { echo "FAIL: the node agent never joined"; podman logs "$name-ctl" | tail; podman logs "$name-node" | tail; exit 1; }

podman run --rm "${common[@]}" "$tag" loadgen --gateway tcp://127.0.0.1:17600 \
  --gateway-key /etc/tributary/keys/gateway.pub --client-key /etc/tributary/keys/loadgen.key \
  --clients 3 --rounds 1 --duration 120 --wait-job example --controller http://127.0.0.1:17701 > "$work/loadgen.log" 2>&1
rc=$?
cat "$work/loadgen.log"
dataplane="$(podman logs "$name-node" 2>&1 | grep -o 'data plane: [^(]*' | head -n1)"
echo "node agent: $dataplane"
if [[ $rc != 0 ]]; then echo "FAIL: loadgen ($rc)"; podman logs "$name-node" 2>&1 | tail; exit 1; fi
[[ "$dataplane" == *"eBPF sk_msg router"* ]] || { echo "FAIL: the node agent in the image did not load the eBPF router"; exit 1; }
echo "PASS: a round through the image (its size: $(podman image inspect --format '{{.Size}}' "$tag") bytes)"
