#include "tributary/client/torch/module_client.h"

#include <cstring>

#include "tributary/semipfl/model.h"

namespace tributary::client::torch_adapter {
namespace {

// Named tensors in wire order: parameters, then floating-point buffers. The
// rule is defined once, beside the SemiPFL model family whose layouts the
// server computes with it.
std::vector<std::pair<std::string, torch::Tensor>> NamedState(const torch::nn::Module& module) {
  return semipfl::ModuleState(module);
}

}  // namespace

Parameters ToParameters(const torch::nn::Module& module) {
  Parameters out;
  for (const auto& [name, t] : NamedState(module)) {
    const torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
    Tensor s{name, c.sizes().vec(), std::vector<float>(static_cast<size_t>(c.numel()))};
    std::memcpy(s.values.data(), c.data_ptr<float>(), s.values.size() * sizeof(float));
    out.push_back(std::move(s));
  }
  return out;
}

Result<void> LoadParameters(torch::nn::Module& module, const Parameters& parameters) {
  auto state = NamedState(module);
  if (state.size() != parameters.size()) {
    return MakeError(ErrorCode::kShapeMismatch, "the module has " + std::to_string(state.size()) +
                                                    " tensors, the parameters " + std::to_string(parameters.size()));
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < state.size(); ++i) {
    auto& [name, t] = state[i];
    const Tensor& p = parameters[i];
    if (p.name != name || p.shape != t.sizes().vec()) {
      return MakeError(ErrorCode::kShapeMismatch, "tensor " + std::to_string(i) + " is '" + p.name +
                                                      "', the module's '" + name + "' (or its shape differs)");
    }
    const torch::Tensor src =
        torch::from_blob(const_cast<float*>(p.values.data()), t.sizes(), torch::kFloat).to(t.options());
    t.copy_(src);
  }
  return Ok();
}

Result<Parameters> Delta(const Parameters& trained, const Parameters& global) {
  if (trained.size() != global.size()) return MakeError(ErrorCode::kShapeMismatch, "different tensor counts");
  Parameters out = trained;
  for (size_t i = 0; i < out.size(); ++i) {
    if (global[i].name != out[i].name || global[i].values.size() != out[i].values.size()) {
      return MakeError(ErrorCode::kShapeMismatch, "tensor '" + out[i].name + "' differs from the global model's");
    }
    for (size_t k = 0; k < out[i].values.size(); ++k) out[i].values[k] -= global[i].values[k];
  }
  return out;
}

TrainOptions WithConfig(TrainOptions o, const Config& config) {
  o.lr = ConfigDouble(config, "lr", o.lr);
  o.local_epochs = ConfigInt(config, "local_epochs", o.local_epochs);
  o.batch_size = std::max<int64_t>(1, ConfigInt(config, "batch_size", o.batch_size));
  o.proximal_mu = ConfigDouble(config, "proximal_mu", o.proximal_mu);
  return o;
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(torch::nn::Module& module, const TrainOptions& o) {
  if (o.optimizer == Optimizer::kAdam) {
    return std::make_unique<torch::optim::Adam>(module.parameters(), torch::optim::AdamOptions(o.lr));
  }
  return std::make_unique<torch::optim::SGD>(module.parameters(), torch::optim::SGDOptions(o.lr).momentum(o.momentum));
}

torch::Tensor ProximalTerm(torch::nn::Module& module, const std::vector<torch::Tensor>& global, double mu) {
  torch::Tensor sum = torch::zeros({}, torch::kFloat);
  const auto params = module.parameters();
  for (size_t i = 0; i < params.size(); ++i) sum = sum + (params[i] - global[i]).pow(2).sum();
  return sum * (mu / 2);
}

}  // namespace tributary::client::torch_adapter
