// SemiPFL on the device (Tashakori et al., arXiv 2203.08176): the model
// family the server generates, and the client's two jobs in a round.
//
// A SemiPFL client's personal model holds its autoencoder (tensors named
// "ae.<i>.weight|bias") followed by M base classifiers ("base<m>.<...>",
// BatchNorm buffers included) that the server trained on the latent space of
// that autoencoder's encoder. Each round the client
//  1. combines the base models with its few labels (Combine): combination
//     weights a = softmax(w) over the M models, p(y|x) = sum_m a_m
//     softmax(base_m(enc(x))), w fitted by minimizing the negative
//     log-likelihood of the labelled samples (Adam, full batch); without
//     labels the weights stay uniform. Predict classifies with them.
//  2. trains a copy of the autoencoder on all its samples, labels unused
//     (reconstruction MSE, Adam), and sends that copy back (TrainAutoencoder:
//     the "ae." tensors only, the update the server's hypernetwork learns from).
// Predict keeps using the encoder as received, the one the base models fit.
//
// The architecture and the personal model's layout: semipfl/model.h.
//
// Thread safety: a SemiPflLearner is used by one thread at a time.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tributary/client/client.h"
#include "tributary/client/types.h"
#include "tributary/core/error.h"
#include "tributary/semipfl/model.h"

namespace tributary::client::torch_adapter {

// The model family is SemiPFL's own (semipfl/model.h), shared with the server.
using semipfl::Encode;
using semipfl::MakeAutoencoder;
using semipfl::MakeBaseModel;
using semipfl::ReconstructionError;
using semipfl::SemiPflArchitecture;

// The personal model's tensors (zeros), named and shaped as the server sends them.
Parameters PersonalModelParameters(const SemiPflArchitecture& arch);

struct SemiPflTrainOptions {
  int64_t epochs = 5;
  double lr = 1e-3;
  int64_t batch_size = 32;
  int64_t combine_steps = 100;
  double combine_lr = 0.1;
  bool adapt_batchnorm = true;
  uint64_t seed = 0;
};
// `options` with the task's config applied: ae_epochs, ae_lr, batch_size,
// combine_steps, combine_lr, adapt_batchnorm; the seed moves with `round`.
SemiPflTrainOptions WithConfig(SemiPflTrainOptions options, const Config& config);

class SemiPflLearner {
 public:
  explicit SemiPflLearner(SemiPflArchitecture arch);
  // Not copyable: LibTorch modules are shared handles, and copies would
  // share (and race on) one set of weights.
  SemiPflLearner(const SemiPflLearner&) = delete;
  SemiPflLearner& operator=(const SemiPflLearner&) = delete;

  // Takes a personal model (names and shapes checked against the layout).
  Result<void> Load(const Parameters& personal);
  // Re-estimates the base models' BatchNorm statistics on the client's own
  // samples x [N, input] (unlabelled), so that the server-trained
  // classifiers see the client's latent distribution normalized (AdaBN).
  void AdaptBatchNorm(const torch::Tensor& x);
  // A round's preparation: Load(personal), AdaptBatchNorm(samples) if the
  // options say so, Combine(labelled_x, labelled_y).
  Result<void> Personalize(const Parameters& personal, const torch::Tensor& samples, const torch::Tensor& labelled_x,
                           const torch::Tensor& labelled_y, const SemiPflTrainOptions& options);
  // Fits the combination weights on labelled samples x [N, input], y [N].
  void Combine(const torch::Tensor& x, const torch::Tensor& y, const SemiPflTrainOptions& options);
  // Class probabilities [N, classes] of the combined base models.
  torch::Tensor Predict(const torch::Tensor& x);
  std::vector<float> combination() const;  // softmax(w)

  // Trains a copy of the received autoencoder on x; the update to send back,
  // with metrics "reconstruction_loss" (mean of the last epoch) and "samples".
  Result<FitResult> TrainAutoencoder(const torch::Tensor& x, const SemiPflTrainOptions& options);

 private:
  SemiPflArchitecture arch_;
  torch::nn::Sequential autoencoder_;
  std::vector<torch::nn::Sequential> bases_;
  torch::Tensor weights_;  // combination logits, [M]
};

// SemiPFL behind the SDK's Client interface, for Run(): the device's data
// stays here; GetParameters() is the personal model's layout (what Run
// checks a download against); Fit() adapts, combines, trains the
// autoencoder and returns it (the update); Evaluate() scores the combined
// model on the labelled samples. Predict() classifies with the last
// combination, for the application.
class SemiPflClient final : public Client {
 public:
  SemiPflClient(SemiPflArchitecture arch, torch::Tensor samples, torch::Tensor labelled_x, torch::Tensor labelled_y,
                SemiPflTrainOptions options = {});

  Parameters GetParameters() override;
  Result<FitResult> Fit(const Parameters& personal, const Config& config) override;
  Result<EvaluateResult> Evaluate(const Parameters& personal, const Config& config) override;
  torch::Tensor Predict(const torch::Tensor& x) { return learner_.Predict(x); }

 private:
  Result<SemiPflTrainOptions> Prepare(const Parameters& personal, const Config& config);

  SemiPflArchitecture arch_;
  torch::Tensor samples_, labelled_x_, labelled_y_;
  SemiPflTrainOptions options_;
  SemiPflLearner learner_;
};

}  // namespace tributary::client::torch_adapter
