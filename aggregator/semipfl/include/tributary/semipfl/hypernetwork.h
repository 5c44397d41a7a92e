// SemiPFL's hypernetwork (the pFedHN construction): a per-client embedding,
// an MLP, and one linear head per generated tensor, whose outputs are that
// client's autoencoder.
//
// Step() is the server's reaction to one client's trained autoencoder:
// delta = generated - trained; the hypernetwork's gradient is the
// vector-Jacobian product of the generated tensors with respect to its
// parameters, with delta as the output gradient
// (torch::autograd::grad(generated, parameters, delta)); the gradient's
// global norm is clipped, then Adam takes a step. Steps do not commute, so
// the hypernetwork after a round depends on the order its updates arrived in.
//
// Each head's output is scaled by a constant fixed at construction so that
// the first generated tensors have PyTorch's default Linear spread
// (std 1/sqrt(3 fan_in)); the scale is part of the generator, not trained.
//
// Thread safety: one thread at a time; the constructor seeds LibTorch's
// global generator, so build it before other threads draw from that.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "tributary/aggregator/tensor.h"

namespace tributary::semipfl {

struct HyperNetworkOptions {
  uint32_t clients = 0;
  int64_t embedding = 0;  // 0: 1 + clients / 4, the paper's
  int64_t hidden = 100;
  uint32_t depth = 3;     // hidden layers of the MLP
  double lr = 1e-3;       // Adam
  double clip = 50;       // gradient norm
  uint64_t seed = 0;
};

struct StepReport {
  double delta_norm = 0;  // ||generated - trained||
  double grad_norm = 0;   // before clipping
};

class HyperNetwork {
 public:
  // `targets`: names and shapes of the generated tensors.
  HyperNetwork(const HyperNetworkOptions& options, const std::vector<agg::TensorSpec>& targets);
  ~HyperNetwork();
  HyperNetwork(const HyperNetwork&) = delete;
  HyperNetwork& operator=(const HyperNetwork&) = delete;

  // `client` in [0, clients): its tensors, shaped like the targets.
  std::vector<torch::Tensor> Generate(int64_t client);
  // One event: learn from `client`'s trained tensors (shaped like the targets).
  StepReport Step(int64_t client, const std::vector<torch::Tensor>& trained);

  int64_t parameter_count() const;

 private:
  struct Net;
  std::shared_ptr<Net> net_;
  std::unique_ptr<torch::optim::Adam> optimizer_;
  double clip_;
};

}  // namespace tributary::semipfl
