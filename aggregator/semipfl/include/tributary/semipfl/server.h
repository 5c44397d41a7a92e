// SemiPFL's server: the stateful personalized function behind a SemiPFL job.
//
// ModelFor(client) generates the client's autoencoder with the hypernetwork
// and trains the M base models on it: base model m learns from the server's
// labelled set m, encoded by that autoencoder's encoder, using only the
// samples the autoencoder reconstructs with a mean squared error below
// `threshold` (the samples that look like the client's data); if fewer than
// `min_samples` pass, the `min_samples` reconstructed best are used. The
// personal model is the autoencoder followed by the base models
// (client/torch/semipfl.h).
//
// OnUpdate(client) is one event: the client's trained autoencoder drives one
// hypernetwork step (hypernetwork.h). Events are applied in arrival order.
//
// Clients are known up front (the hypernetwork has one embedding per
// client); an unknown client id is kUnknownClient.
//
// Thread safety: one call at a time (the controller's contract).
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tributary/aggregator/personalized.h"
#include "tributary/semipfl/model.h"
#include "tributary/semipfl/hypernetwork.h"

namespace tributary::semipfl {

struct LabelledSet {
  torch::Tensor x;  // [N, input], in [-1, 1]
  torch::Tensor y;  // [N], int64 classes
};

struct ServerOptions {
  SemiPflArchitecture architecture;
  HyperNetworkOptions hypernetwork;  // `clients` is taken from the client list
  double threshold = 0.05;
  int64_t min_samples = 32;
  int64_t base_epochs = 20;
  double base_lr = 1e-2;
  int64_t base_batch_size = 128;
  uint64_t seed = 0;
};

struct ServerStats {
  uint64_t events = 0;
  double last_delta_norm = 0;
  uint64_t models = 0;  // ModelFor calls
  double kept_sum = 0;  // sum over them of the fraction of server samples that trained base models
};

class Server final : public agg::PersonalizedFunction {
 public:
  // `server_sets`: one labelled set per base model (architecture.base_models of them).
  static Result<std::unique_ptr<Server>> Create(ServerOptions options, const std::vector<std::string>& clients,
                                                std::vector<LabelledSet> server_sets);

  const agg::ModelSpec& personal_model() const override { return personal_; }
  const agg::ModelSpec& update_model() const override { return update_; }
  Result<std::vector<float>> ModelFor(const std::string& client, uint64_t round) override;
  Result<void> OnUpdate(const std::string& client, uint64_t round, double weight,
                        std::span<const float> values) override;

  ServerStats stats() const { return stats_; }

 private:
  Server(ServerOptions options, std::map<std::string, int64_t> index, std::vector<LabelledSet> sets);
  Result<int64_t> IndexOf(const std::string& client) const;
  // Base model m for `client` on autoencoder `ae` (read-only here); `kept`:
  // the fraction of set m that passed the threshold.
  std::vector<float> TrainBase(torch::nn::Sequential& ae, size_t m, int64_t client, uint64_t round, double& kept) const;

  ServerOptions options_;
  std::map<std::string, int64_t> index_;
  std::vector<LabelledSet> sets_;
  std::vector<agg::TensorSpec> update_layout_;
  agg::ModelSpec personal_, update_;
  HyperNetwork hypernetwork_;
  ServerStats stats_;
};

}  // namespace tributary::semipfl
