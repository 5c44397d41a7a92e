// YAML configuration of what the runtime itself reads (node agents; next the
// controller and deployment jobs). The simulator's job file is its own
// (simulation/job.h), read with the same section reader (yaml_section.h).
//
// Every error names the file, the line and column, and the dotted key path:
//   node.yaml:7:3: key 'store.segment_bytes': expected a size like 512MiB
// Unknown keys are errors (a typo must not silently fall back to a default).
// Sizes accept plain byte counts or KiB/MiB/GiB suffixes.
//
// Thread safety: plain functions and value types.
#pragma once

#include <cstdint>
#include <string>

#include "tributary/aggregator/strategy.h"
#include "tributary/core/error.h"
#include "tributary/planner/autoscale.h"
#include "tributary/shm/segment.h"

namespace tributary::config {

struct NodeConfig {
  std::string node_id = "node-0";  // see ValidNodeId
  shm::SegmentOptions store;  // name defaults to "tributary.<node_id>"
  bool segment_name_given = false;  // false: the name follows the node id
  std::string gateway_bind = "tcp://127.0.0.1:0";
  // The endpoint the controller steers other nodes' clients to (a wildcard
  // bind such as tcp://*:7600 names no address); empty: the bound endpoint.
  std::string gateway_advertise;
  std::string dataplane = "auto";  // auto, ebpf, userspace
  uint64_t keep_alive_ms = 60'000;  // idle functions are stopped after this
  // A function silent this long (stopped, wedged, or in one fold for that long) is killed and replaced.
  uint64_t function_liveness_ms = 10'000;
  // The function autoscaler (planner/autoscale.h); off: on demand, keep-alive only.
  bool autoscale = true;
  planner::AutoscaleOptions autoscaling;
  std::string metrics_bind = "127.0.0.1:9400";  // /healthz and /metrics; "" for none
  // shared-memory, or tcp: the serverful comparison mode of `tributary bench round`.
  std::string aggregation_transport = "shared-memory";
  // Required, so that no gateway is insecure by omission: "curve" (with the
  // gateway's secret key file and the client allow-list) or "none".
  std::string gateway_security;
  std::string gateway_secret_key_file;
  std::string gateway_allow_list;  // directory of <client-id>.pub files, or a file of "<client-id> <key>" lines
  // The control plane, required likewise: "curve" (the controller's public
  // key file and the node's own secret key file, whose public key is on the
  // controller's node allow-list under this node id) or "none".
  std::string controller_endpoint;  // `--controller` overrides it
  std::string controller_security;
  std::string controller_public_key_file;
  std::string controller_secret_key_file;
};

// Parses a node configuration file:
//   node_id: node-a
//   store: {segment_name: tributary.node-a, segment_bytes: 1GiB, max_blocks: 65536}
//   gateway_bind: tcp://*:7600
//   gateway_advertise: tcp://10.0.0.5:7600
//   dataplane: auto
//   keep_alive_ms: 60000
//   function_liveness_ms: 10000
//   autoscale: {enabled: true, stable_window_s: 60, panic_window_s: 6, panic_threshold: 2,
//               max_scale_up_rate: 1000, max_scale_down_rate: 2, target_utilization: 0.7,
//               scale_to_zero_grace_s: 30, max_functions: 120}
//   metrics_bind: 0.0.0.0:9400
//   aggregation_transport: shared-memory
//   gateway_security: {mode: curve, secret_key_file: /etc/tributary/gateway.key, allow_list: /etc/tributary/clients}
//   controller: tcp://10.0.0.1:7700
//   controller_security: {mode: curve, controller_public_key_file: /etc/tributary/controller.pub,
//                         secret_key_file: /etc/tributary/node-a.key}
Result<NodeConfig> LoadNodeConfig(const std::string& path);
// A node id is 1 to 240 characters of letters, digits, '.', '_' and '-',
// starting with a letter or digit: it names the node's ZeroMQ identity (at
// most 255 bytes) and its shared-memory segment. kConfig otherwise.
Result<void> ValidNodeId(const std::string& id);
// Replaces the file's node id (`tributary node --node-id`, e.g. one per
// Kubernetes node from the downward API); the segment name follows unless
// the file set it.
Result<void> SetNodeId(NodeConfig& config, const std::string& id);
// A gateway_advertise endpoint: tcp://HOST:PORT with a concrete host and port.
Result<void> ValidAdvertisedEndpoint(const std::string& endpoint);
Result<NodeConfig> ParseNodeConfig(const std::string& yaml_text, const std::string& source_name);

// Parses a strategy section:
//   strategy: {name: fedadam, server_lr: 0.01, beta1: 0.9, beta2: 0.99, tau: 0.001, threads: 0}
Result<agg::StrategyOptions> ParseStrategyConfig(const std::string& yaml_text, const std::string& source_name);

// "512MiB" -> 536870912.
Result<uint64_t> ParseByteSize(const std::string& text);

}  // namespace tributary::config
