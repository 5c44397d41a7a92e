// The client SDK's vocabulary: named f32 tensors, configs, fit and evaluate
// results. Plain value types, no ZeroMQ and no LibTorch.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tributary/core/config_map.h"

namespace tributary::client {

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major, shape's product elements
};

// A model's tensors, in the job's order.
using Parameters = std::vector<Tensor>;
using Config = ConfigMap;
using Metrics = std::map<std::string, double>;

struct FitResult {
  Parameters parameters;     // the trained weights (Tributary's strategies average weights)
  uint64_t num_examples = 0;  // the update's aggregation weight; must be positive
  Metrics metrics;
};

struct EvaluateResult {
  double loss = 0;
  uint64_t num_examples = 0;
  Metrics metrics;
};

// Typed reads of a config value; `fallback` when absent or of another type
// (an int is read as a double too).
double ConfigDouble(const Config& config, const std::string& key, double fallback);
int64_t ConfigInt(const Config& config, const std::string& key, int64_t fallback);
bool ConfigBool(const Config& config, const std::string& key, bool fallback);
std::string ConfigString(const Config& config, const std::string& key, const std::string& fallback);

}  // namespace tributary::client
