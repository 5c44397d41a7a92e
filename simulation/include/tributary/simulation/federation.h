// A simulated federation: `tributary simulate job.yaml`.
//
// One process runs the controller, `nodes` node agents (each with its own
// shared-memory segment, gateway and aggregator function processes, started
// from `tributary_binary`) and the job's clients. Clients use the client SDK
// over the gateways, exactly as edge clients do: they ask for tasks,
// download the global model, train (LibTorch), and upload; nothing is short-
// circuited. They are multiplexed: `workers` threads, each with one model
// and one connection per node, serve every simulated client in turn, so an
// idle client costs only its list of sample indices. Gateways run without
// authentication on loopback, and say so in the log.
//
// Each round the controller selects `clients_per_round` clients (seeded) and
// spreads them over the nodes; after the round the new global model is
// evaluated on the test set. Results go to `run_dir` (report.h).
//
// Reproducibility: data, partitions, selection, initial weights and every
// client's training are functions of the seed. Aggregation sums in arrival
// order, so two runs agree to f32 rounding of the sums (about 1e-7 relative),
// which training can amplify in later digits of the metrics.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "tributary/simulation/job.h"
#include "tributary/core/error.h"

namespace tributary::simulation {

struct SimulationOptions {
  std::string run_dir;
  std::string tributary_binary;  // node agents start functions from it
  std::string cache_dir;         // decompressed datasets
  bool progress_bar = false;     // redraw one line (a terminal); else a line per round
};

struct RoundMetrics {
  uint64_t round = 0;
  double accuracy = 0, loss = 0;  // of the new global model on the test set
  double train_loss = 0;          // clients' mean training loss
  double round_s = 0;             // open to new model
  double clients_s = 0;           // open to the last update accepted
  double aggregation_s = 0;       // the rest: the tree's tail and the server optimizer
  double evaluation_s = 0;
  uint64_t updates = 0;
  double updates_per_s = 0;
  uint64_t bytes_up = 0, bytes_down = 0;
  uint64_t functions_live = 0, cold_starts = 0, warm_reuses = 0;  // over all nodes, cumulative counts
  uint64_t function_deaths = 0, rebuilds = 0;  // faults so far, over all nodes: exits nobody asked for, tree rebuilds
};

Result<std::vector<RoundMetrics>> RunSimulation(const SimulationJob& job, const SimulationOptions& options,
                                                std::ostream& out);

}  // namespace tributary::simulation
