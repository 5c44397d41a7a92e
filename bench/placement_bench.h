// `tributary bench placement`: what the placement saves across nodes, on a
// real federation of network namespaces (root only).
//
// One controller, three node agents and `tributary loadgen`'s clients, each
// host a namespace on a bridge (the cluster tests' TestNetwork), CURVE on
// both planes. The clients check in skewed, 60/30/10 % across the nodes, and
// node 1 has a quarter of the others' segment. The same job runs once per
// policy, in this order and in one sitting:
//
//   locality     this planner (planner/placement.h): clients upload where
//                they asked, excess steered by best fit.
//   round_robin  client i (by id) to node i mod 3, as the public LIFL code
//                pairs aggregators.
//   random       each client to a node drawn from the round's seed.
//
// Reported per policy, from the controller's rounds.jsonl: the bytes that
// crossed nodes per round (each node's partial plus every steered upload, as
// planned), the uploads steered, and the mean round time from the controller
// (plan to merged model; round 1 left out, it starts the functions cold).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include "tributary/core/error.h"

namespace tributary::bench {

struct PlacementBenchOptions {
  uint32_t rounds = 4;
  uint32_t clients = 100;            // loadgen's, all checked in before round 1
  uint32_t clients_per_round = 30;
  uint64_t params = 1 << 20;         // f32 parameters of the model
  uint64_t segment_bytes = 1ull << 30;  // nodes 2 and 3; node 1 has a quarter
  std::string binary;                // the `tributary` executable
  bool json = false;
};

Result<void> RunPlacementBench(const PlacementBenchOptions& options, std::ostream& out);

}  // namespace tributary::bench
