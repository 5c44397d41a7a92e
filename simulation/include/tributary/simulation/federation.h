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
// The rounds are the controller's, as in a deployment: its service's round
// loop (controller_service.h) selects `clients_per_round` of the clients
// checked in (seeded; the first round waits for all of them, and simulated
// clients never leave), and a hook evaluates each new global model on the
// test set before the next round. A failed round ends the run with its
// error instead of being run again. Results go to `run_dir` (report.h).
//
// Reproducibility: data, partitions, initial weights are functions of the
// seed; each round's selection of (seed, round) and each client's training of
// (seed, client, round); the tree folds in a fixed order whatever the arrival
// order and whatever functions die or hang on the way (node_agent.h). So two
// runs with the same seed end with the same model, bit for bit.
//
// Resume: metrics are appended to the run directory as each round ends and
// the controller checkpoints every round there, so running the same job on an
// existing run directory continues it: the rounds after its checkpoint only,
// ending with the model an uninterrupted run ends with. A run directory of a
// different job or seed is refused (run.json). SemiPFL runs start over.
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
  // Faults so far, over all nodes: exits nobody asked for, functions killed
  // for silence (hung), tree rebuilds.
  uint64_t function_deaths = 0, liveness_kills = 0, rebuilds = 0;
};

Result<std::vector<RoundMetrics>> RunSimulation(const SimulationJob& job, const SimulationOptions& options,
                                                std::ostream& out);

}  // namespace tributary::simulation
