// The simulator's job file: what `tributary simulate JOB.yaml` runs. The
// runtime never reads it; the simulator turns it into a controller job, node
// agents and clients (federation.h, semipfl_federation.h).
//
// Thread safety: plain functions and value types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tributary/aggregator/strategy.h"
#include "tributary/core/error.h"

namespace tributary::simulation {

// A simulated federation (`tributary simulate job.yaml`):
//   name: fmnist-fedavg
//   seed: 1
//   rounds: 50
//   clients: 100
//   clients_per_round: 10
//   data: {dataset: fashion-mnist, partition: dirichlet, alpha: 0.5}   # or iid, or shards (shards_per_client)
//   model: cnn                                                          # or mlp
//   train: {local_epochs: 1, batch_size: 32, lr: 0.05, momentum: 0.9, optimizer: sgd, proximal_mu: 0}
//   strategy: {name: fedavg}
//   federation: {nodes: 1, fan_in: 8, dataplane: auto, compression: none, workers: 2, deadline_s: 300}
// strategy: {name: semipfl, ...}: SemiPFL's hyperparameters (docs/semipfl.md).
struct SemiPflJob {
  std::vector<int64_t> autoencoder{256, 128, 64};  // encoder widths; the last is the latent size
  int64_t embedding = 0;                           // 0: 1 + clients / 4
  int64_t hidden = 100;                            // hypernetwork MLP width
  uint32_t depth = 3;                              // and hidden layers
  double hypernet_lr = 1e-3;
  double clip = 50;
  uint32_t ae_epochs = 5;  // client: autoencoder training (Adam)
  double ae_lr = 1e-3;
  uint32_t base_models = 4;       // M, one labelled server set each
  uint32_t server_samples = 600;  // per set
  int64_t base_hidden = 16;
  uint32_t base_epochs = 20;
  double base_lr = 1e-2;
  double threshold = 0.05;  // reconstruction MSE below which a server sample trains a client's base models
  uint32_t min_samples = 64;
  uint32_t combine_steps = 100;  // client: combination weights (Adam)
  double combine_lr = 0.1;
  bool adapt_batchnorm = true;   // client: base models' BatchNorm statistics from its own samples (not in the paper)
};

struct SimulationJob {
  std::string name = "simulation";
  uint64_t seed = 1;
  uint32_t rounds = 10;
  uint32_t clients = 100;
  uint32_t clients_per_round = 10;
  std::string dataset = "fashion-mnist";  // fashion-mnist | synthetic | synthetic-har (semipfl only)
  std::string partition = "iid";          // iid | dirichlet | shards
  double alpha = 0.5;                     // dirichlet concentration
  uint32_t shards_per_client = 2;
  uint32_t synthetic_samples = 12'000;    // synthetic: train samples (test: a sixth)
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  double label_ratio = 0.05;              // semipfl: labelled fraction of each user's training samples
  // semipfl: each user's samples (a quarter held out for testing), 400 if
  // unset; other strategies: with partition iid, each client's samples (0: an
  // even split of the training set; more than fit are shared, see Partition).
  uint32_t samples_per_client = 0;
  std::string model = "mlp";              // mlp | cnn
  uint32_t local_epochs = 1;
  uint32_t batch_size = 32;
  double lr = 0.05;
  double momentum = 0.9;
  std::string optimizer = "sgd";          // sgd | adam
  double proximal_mu = 0;                 // FedProx's client term
  agg::StrategyOptions strategy;  // name "semipfl": see `semipfl`
  SemiPflJob semipfl;
  uint32_t nodes = 1;
  uint32_t fan_in = 8;
  std::string dataplane = "auto";
  std::string compression = "none";       // none | f16 | bf16 | int8
  uint32_t workers = 2;                   // client training threads
  uint64_t deadline_s = 300;
  uint64_t function_liveness_ms = 10'000;  // the node agents': a function silent this long is replaced
};
// Errors are kConfig with file, line and key (config/yaml_section.h).
Result<SimulationJob> LoadSimulationJob(const std::string& path);
Result<SimulationJob> ParseSimulationJob(const std::string& yaml_text, const std::string& source_name);

}  // namespace tributary::simulation
