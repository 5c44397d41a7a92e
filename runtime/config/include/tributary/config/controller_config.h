// YAML configuration of `tributary controller`: the service (controller.yaml)
// and the deployment jobs it runs (one file each). Errors as in config.h:
// kConfig with the file, line, column and dotted key; unknown keys refused.
//
//   # controller.yaml
//   bind: tcp://*:7700            # node agents connect here
//   http_bind: 0.0.0.0:7701       # /healthz /readyz /metrics /v1/status
//   state_dir: /var/lib/tributary # checkpoints and model files, per job
//   node_timeout_ms: 5000         # a node silent this long is lost (at least 1500)
//   client_ttl_ms: 30000          # a client's check-in keeps it available this long
//   security: {mode: curve, secret_key_file: controller.key, node_allow_list: nodes/}
//   jobs: [jobs/fmnist.yaml]      # relative to this file
//
//   # jobs/fmnist.yaml
//   name: fmnist
//   rounds: 50                    # 0: until stopped
//   clients_per_round: 30
//   min_clients: 20               # a round succeeds with at least this many updates
//   over_selection: 1.3           # select 30% more, close at clients_per_round updates
//   deadline_s: 120
//   start_after: 30               # checked-in clients before the first round
//   seed: 1
//   model: {file: init.safetensors}  # or {layout: [{name, shape, dtype: f32}], init: {scheme: normal, scale: 0.01, seed: 1}}
//   strategy: {name: fedavg}
//   train: {lr: 0.05, local_epochs: 1}  # sent to every selected client with its task
//   fan_in: 8                     # or auto: per node from throughput, within
//   fan_in_min: 2                 #   [fan_in_min, fan_in_max] (only with auto)
//   fan_in_max: 64
//   fan_in_tail_ms: 100           #   the longest a leaf folds after its last upload
//   reject_non_finite: true
//   placement: locality           # or round_robin, random: baselines for `tributary bench placement`
//
// Thread safety: plain functions and value types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tributary/aggregator/strategy.h"
#include "tributary/aggregator/tensor.h"
#include "tributary/core/config_map.h"
#include "tributary/core/error.h"

namespace tributary::config {

struct ControllerConfig {
  std::string bind = "tcp://127.0.0.1:7700";
  std::string http_bind = "127.0.0.1:7701";  // "" for none
  std::string state_dir;                     // required
  uint64_t node_timeout_ms = 5'000;
  uint64_t client_ttl_ms = 30'000;
  // Required, so that no control plane is open by omission: "curve" (the
  // controller's secret key file and the node allow-list) or "none".
  std::string security;
  std::string secret_key_file;
  std::string node_allow_list;  // directory of <node-id>.pub files, or a file of "<node-id> <key>" lines
  std::vector<std::string> jobs;  // job files, resolved against the config file's directory
};

struct ModelInit {
  std::string scheme = "zeros";  // zeros, normal, uniform
  double scale = 0.01;           // normal: standard deviation; uniform: half-width
  uint64_t seed = 0;
};

struct DeploymentJob {
  std::string source;  // the file it came from
  std::string name;
  uint64_t rounds = 0;  // 0: until stopped
  uint32_t clients_per_round = 0;
  uint32_t min_clients = 0;      // default: clients_per_round
  double over_selection = 1.0;   // at least 1
  uint64_t deadline_s = 60;
  uint32_t start_after = 0;      // default: min_clients
  uint64_t seed = 0;
  std::string model_file;        // resolved; empty with a layout
  std::vector<agg::TensorSpec> layout;
  ModelInit init;
  agg::StrategyOptions strategy;
  ConfigMap train;
  uint32_t fan_in = 8;  // 0: auto
  uint32_t fan_in_min = 2, fan_in_max = 64;
  uint32_t fan_in_tail_ms = 100;
  bool reject_non_finite = true;
  std::string placement = "locality";  // locality, round_robin, random
};

Result<ControllerConfig> ParseControllerConfig(const std::string& yaml_text, const std::string& source_name);
Result<ControllerConfig> LoadControllerConfig(const std::string& path);
Result<DeploymentJob> ParseDeploymentJob(const std::string& yaml_text, const std::string& source_name);
Result<DeploymentJob> LoadDeploymentJob(const std::string& path);

}  // namespace tributary::config
