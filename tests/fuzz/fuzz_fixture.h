// The round, model and constants the gateway target and its seeds share.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "tributary/gateway/round_book.h"

namespace tributary::fuzz {

inline constexpr const char* kGatewayJob = "job";
inline constexpr uint64_t kGatewayRound = 3;
inline constexpr uint64_t kGatewayModelVersion = 7;
inline constexpr uint64_t kGatewayChunkBytes = 128;  // a 272-byte update is three chunks
inline constexpr uint64_t kSentinelRequest = 0xfeedface;

inline agg::ModelSpec GatewayModel() {
  return agg::ModelSpec::Create({{"w", agg::DType::kF32, {16, 4}}, {"b", agg::DType::kF32, {4}}}).value();
}

// Clients "c0".."c3" are selected, with route keys 100..103.
inline gateway::RoundSpec GatewayRound() {
  gateway::RoundSpec spec;
  spec.job = kGatewayJob;
  spec.round = kGatewayRound;
  spec.model_version = kGatewayModelVersion;
  spec.model = GatewayModel();
  for (uint32_t c = 0; c < 4; ++c) spec.selected["c" + std::to_string(c)] = 100 + c;
  spec.client_config["epochs"] = int64_t{1};
  return spec;
}

inline std::string GatewayPayload(float seed) {
  std::vector<float> v(GatewayModel().elements());
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(seed + static_cast<float>(i));
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

}  // namespace tributary::fuzz
