// A simulated SemiPFL federation: `tributary simulate` with strategy semipfl.
//
// The deployment is the same as for the FedAvg family (federation.h): a
// controller, node agents and SDK clients in one process. The job is a
// personalized one: the controller's stateful function is SemiPFL's server
// (semipfl/server.h), so each selected client downloads its own autoencoder
// and base models through its node's gateway, evaluates the combined base
// models on its test set (per-user accuracy and weighted F1), trains the
// autoencoder on its unlabelled samples and uploads it; every upload reaches
// the hypernetwork as one event. The rounds but the last are the
// controller's (its service's round loop, registry and seeded selection, as
// in federation.h); the last round takes every user, so every user is scored
// (a job needs at least 2 rounds).
//
// Baselines, in the same run, on the same users, labels and selection
// sequence (computed in this process, not through the runtime): FedAvg of a
// classifier (the encoder's widths, then base_hidden, then the classes)
// trained on the users' labelled samples only, and local-only training of
// the same classifier on each user's labels for local_epochs x rounds epochs.
//
// Writes `run_dir`/semipfl.json (per round, per user, per method) and
// semipfl-users.csv.
#pragma once

#include <ostream>
#include <vector>

#include "tributary/simulation/job.h"
#include "tributary/core/error.h"
#include "tributary/simulation/federation.h"

namespace at {
class Tensor;
}

namespace tributary::simulation {

struct UserScore {
  double accuracy = 0;
  double weighted_f1 = 0;
};

struct MethodScores {
  std::vector<UserScore> users;  // by user index
  double mean_accuracy = 0, mean_weighted_f1 = 0;
};

struct SemiPflRound {
  uint64_t round = 0;
  double round_s = 0;
  uint64_t updates = 0;
  uint64_t bytes_up = 0, bytes_down = 0;
  double accuracy = 0, weighted_f1 = 0;  // mean over this round's clients (personal models before their training)
  double reconstruction_loss = 0;        // mean over this round's clients
  double kept = 0;  // mean fraction of the server's samples under the threshold for this round's clients
};

struct SemiPflResult {
  std::vector<SemiPflRound> rounds;
  MethodScores semipfl, fedavg_labelled, local_only;
  double semipfl_bytes_per_round = 0;  // measured: up + down over the runtime, mean of rounds 1..R-1
  double fedavg_bytes_per_round = 0;   // the baseline's model down and up for the same number of clients
};

Result<SemiPflResult> RunSemiPflSimulation(const SimulationJob& job, const SimulationOptions& options,
                                           std::ostream& out);

// Weighted F1: the per-class F1 scores averaged with weights = the classes'
// shares of `truth` (scikit-learn's average="weighted").
double WeightedF1(const at::Tensor& predicted, const at::Tensor& truth, int64_t classes);

}  // namespace tributary::simulation
