// The benchmarks' model: `params` f32 parameters split like ResNet-18's
// layers (about 1 M parameters each, with small bias-like tensors between),
// so that per-layer baselines and per-tensor code see layers.
#pragma once

#include <cstdint>
#include <string>

#include "tributary/aggregator/tensor.h"

namespace tributary::bench {

inline agg::ModelSpec LayeredSpec(uint64_t params) {
  std::vector<agg::TensorSpec> tensors;
  uint64_t left = params;
  for (int i = 0; left > 0; ++i) {
    const uint64_t n = std::min<uint64_t>(left, i % 3 == 2 ? 512 : (uint64_t{1} << 20) + 37 * i);
    tensors.push_back(agg::TensorSpec{"layer" + std::to_string(i), agg::DType::kF32, {static_cast<int64_t>(n)}});
    left -= n;
  }
  return agg::ModelSpec::Create(std::move(tensors)).value();
}

}  // namespace tributary::bench
