// SemiPFL's model family (Tashakori et al., arXiv 2203.08176), the one
// definition the server (hypernetwork, base-model training) and the client
// (the SDK's SemiPflLearner) both build from.
//
// Architecture (the paper's): encoder input -> h1 -> ... -> latent with ReLU
// between and a linear latent; decoder mirrored with ReLU between and Tanh at
// the end, so samples must lie in [-1, 1]; base model BatchNorm(latent),
// latent -> base_hidden, ReLU, BatchNorm, base_hidden -> classes.
//
// Wire order of a module's tensors (ModuleState): its parameters, then its
// floating-point buffers (BatchNorm statistics), as LibTorch names them. The
// SDK's LibTorch adapter (client/torch/module_client.h) reads and writes
// modules through ModuleState too, so both sides share one order. A personal model is the autoencoder's tensors
// named "ae.<name>" followed by base model m's as "base<m>.<name>".
//
// Thread safety: plain functions; a module is used by one thread at a time.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tributary/aggregator/tensor.h"
#include "tributary/core/error.h"

namespace tributary::semipfl {

struct SemiPflArchitecture {
  int64_t input = 0;                           // a flattened sample's size
  std::vector<int64_t> encoder{256, 128, 64};  // widths; the last is the latent size
  int64_t classes = 0;
  int64_t base_hidden = 16;
  uint32_t base_models = 1;

  int64_t latent() const { return encoder.back(); }
  // kConfig unless every size is positive and classes >= 2.
  Result<void> Validate() const;
};

torch::nn::Sequential MakeAutoencoder(const SemiPflArchitecture& arch);
// The encoder half of an autoencoder from MakeAutoencoder.
torch::Tensor Encode(torch::nn::Sequential& autoencoder, const torch::Tensor& x);
torch::nn::Sequential MakeBaseModel(const SemiPflArchitecture& arch);
// Per-sample reconstruction mean squared error, [N].
torch::Tensor ReconstructionError(torch::nn::Sequential& autoencoder, const torch::Tensor& x);

// A module's tensors in wire order (see above).
std::vector<std::pair<std::string, torch::Tensor>> ModuleState(const torch::nn::Module& module);
// Their values, as f32, concatenated in wire order.
std::vector<float> FlattenState(const torch::nn::Module& module);

// The names and shapes (f32) of the update (the autoencoder, "ae." names) and
// of the personal model (the autoencoder, then the base models), in wire order.
std::vector<agg::TensorSpec> AutoencoderLayout(const SemiPflArchitecture& arch);
std::vector<agg::TensorSpec> PersonalModelLayout(const SemiPflArchitecture& arch);

}  // namespace tributary::semipfl
