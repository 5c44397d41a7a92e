// The models of simulated federations, for [N, 1, 28, 28] inputs and 10 classes.
//   mlp  784 -> 200 -> ReLU -> 10
//   cnn  conv 5x5 8 -> ReLU -> pool 2 -> conv 5x5 16 -> ReLU -> pool 2 -> 784 -> 64 -> ReLU -> 10
//        (54 k parameters, 0.9 M multiply-adds per image: small enough for 2 cores)
// Initial weights are LibTorch's defaults drawn from `seed`.
#pragma once

#include <torch/torch.h>

#include <string>

#include "tributary/core/error.h"

namespace tributary::simulation {

Result<torch::nn::Sequential> MakeModel(const std::string& name, uint64_t seed);

}  // namespace tributary::simulation
