// The models of simulated federations, for [N, 1, 28, 28] inputs and 10 classes.
//   mlp  784 -> 200 -> ReLU -> 10
//   cnn  conv 5x5 16 -> ReLU -> pool 2 -> conv 5x5 32 -> ReLU -> pool 2 -> 1568 -> 128 -> ReLU -> 10
// Initial weights are LibTorch's defaults drawn from `seed`.
#pragma once

#include <torch/torch.h>

#include <string>

#include "tributary/core/error.h"

namespace tributary::simulation {

Result<torch::nn::Sequential> MakeModel(const std::string& name, uint64_t seed);

}  // namespace tributary::simulation
