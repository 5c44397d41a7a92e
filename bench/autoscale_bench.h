// `tributary bench autoscale`: what keeping functions live costs, and what it
// saves a round's tail, for four policies on one seeded, bursty trace.
//
// A trace-driven model of one node, with this machine's constants measured
// in the same run: a function's cold start (a node agent here starts real
// `tributary function` processes for a round's tree and the time per
// function is taken) and one function's fold rate
// (agg::MeasureFoldBytesPerSecond). Each round is planned, then its updates
// arrive over an upload window, a share of them in a burst; a tree of the
// job's fan-in (planner/tree_plan.h's shape) folds them, each leaf its
// updates as they come, then the intermediates and the node-root the
// partials.
//
//   always-on:   a pool sized for the largest round's tree, live throughout
//                (the serverful choice).
//   cold start:  no warm pool; each function starts when its first input
//                arrives and exits when its task is done (naive serverless).
//   autoscaler:  the node agent's policy: planner/autoscale.h's decision
//                every second on the arrivals, the round's tree taken at its
//                plan from the warm pool (the missing ones started one after
//                another), the last planned tree kept a stable window; each
//                parent in its first child's process (reuse across levels).
//   ... fan-in auto: the same, with each round's fan-in the controller's
//                choice from throughput (planner::FanInForThroughput).
//
// Every function folds its inputs in the node's fixed order (an input that
// arrives early waits for those before it), as the node's functions do.
// Reported per policy: function-seconds (live functions x seconds), cold
// starts on the critical path (an input that waited for its function to
// start), and each round's tail (its last arrival to the node's partial).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include "tributary/core/error.h"

namespace tributary::bench {

struct AutoscaleBenchOptions {
  uint32_t rounds = 20;
  uint32_t min_updates = 200, max_updates = 1000;
  double min_update_mb = 1, max_update_mb = 50;
  double lead_s = 1;            // from a round's plan to its first possible upload
  double upload_window_s = 20;  // over which its updates arrive
  double burst_share = 0.4;     // of a round's updates, within a tenth of the window
  double gap_s = 10;            // from a round's end to the next plan
  uint32_t fan_in = 8;
  double tail_target_ms = 100;  // fan-in auto's bound on a leaf's fold after its last input
  uint64_t seed = 7;
  std::string binary;  // the `tributary` executable (for the cold-start measurement)
  bool json = false;
};

Result<void> RunAutoscaleBench(const AutoscaleBenchOptions& options, std::ostream& out);

}  // namespace tributary::bench
