// `tributary bench round`: a whole round through a real node, Tributary's way
// against the serverful way, in the same run.
//
// For each N: a `tributary node` process under an embedded controller, N
// updates of `params` f32 parameters uploaded through the node's gateway by
// the client SDK (`uploaders` concurrent sessions), aggregated by the node's
// tree of function processes (leaves of fan-in k, one node-root), finalized by
// the controller. Run twice, identically except for the node's
// aggregation_transport: shared-memory (descriptors over the data plane) and
// tcp (the serverful baseline: every hop carries the whole payload over
// loopback TCP into the receiver's memory, LIFL's comparison).
//
// Reported per N and mode, for a measured round after a warm-up round (warm
// functions, as in steady state):
//   round_s       RunRound wall time: uploads and aggregation
//   tail_s        from the last update accepted to the new model: the
//                 aggregation the clients wait for
//   node_cpu_s    CPU seconds of the node process and its functions
// and the ratios serverful / shared-memory. The two modes' models must agree
// (relative L2 error < 1e-6), or the bench fails.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "tributary/core/error.h"

namespace tributary::bench {

struct RoundBenchOptions {
  uint64_t params = 11'689'512;  // ResNet-18
  std::vector<uint32_t> updates = {100, 1000};
  uint32_t fan_in = 16;
  uint32_t uploaders = 4;        // concurrent client sessions
  uint64_t segment_bytes = 8ull << 30;
  std::string binary;            // the `tributary` executable for the node
  bool json = false;
};

Result<void> RunRoundBench(const RoundBenchOptions& options, std::ostream& out);

}  // namespace tributary::bench
