// How a node's aggregation tree moves payloads between its hops.
//
//   kSharedMemory  the product: every hop is a descriptor that points into the
//                  node's segment; nothing is copied.
//   kTcp           the serverful comparison (LIFL's baseline, for `tributary
//                  bench round`): every hop writes the whole payload over
//                  loopback TCP into the receiver's own memory
//                  (payload_stream.h). It has no re-dispatch.
//
// Chosen once, where the node agent and each function start; the agent's and
// the function's code above their transport is the same for both.
#pragma once

#include <string>
#include <string_view>

#include "tributary/core/error.h"

namespace tributary::dataplane {

enum class AggregationTransport { kSharedMemory, kTcp };

// "shared-memory" or "tcp", as node.yaml and `tributary function --transport` spell them.
inline std::string_view TransportName(AggregationTransport t) {
  return t == AggregationTransport::kTcp ? "tcp" : "shared-memory";
}

inline Result<AggregationTransport> ParseAggregationTransport(std::string_view name) {
  if (name == "shared-memory") return AggregationTransport::kSharedMemory;
  if (name == "tcp") return AggregationTransport::kTcp;
  return MakeError(ErrorCode::kConfig, "aggregation transport '" + std::string(name) + "': expected shared-memory or tcp");
}

}  // namespace tributary::dataplane
