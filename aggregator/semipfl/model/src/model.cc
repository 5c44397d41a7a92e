#include "tributary/semipfl/model.h"

namespace tributary::semipfl {
namespace {

std::vector<agg::TensorSpec> LayoutOf(const torch::nn::Module& module, const std::string& prefix) {
  std::vector<agg::TensorSpec> out;
  for (const auto& [name, t] : ModuleState(module)) out.push_back({prefix + name, agg::DType::kF32, t.sizes().vec()});
  return out;
}

}  // namespace

Result<void> SemiPflArchitecture::Validate() const {
  if (input <= 0 || classes < 2 || encoder.empty() || base_hidden <= 0 || base_models == 0) {
    return MakeError(ErrorCode::kConfig, "a SemiPFL architecture needs input > 0, classes >= 2, encoder widths, "
                                         "base_hidden > 0 and base_models > 0");
  }
  for (int64_t w : encoder) {
    if (w <= 0) return MakeError(ErrorCode::kConfig, "autoencoder widths must be positive");
  }
  return Ok();
}

torch::nn::Sequential MakeAutoencoder(const SemiPflArchitecture& arch) {
  torch::nn::Sequential s;
  std::vector<int64_t> widths{arch.input};
  widths.insert(widths.end(), arch.encoder.begin(), arch.encoder.end());
  for (size_t i = 1; i < widths.size(); ++i) {
    if (i > 1) s->push_back(torch::nn::ReLU());
    s->push_back(torch::nn::Linear(widths[i - 1], widths[i]));
  }
  for (size_t i = widths.size() - 1; i > 0; --i) {
    s->push_back(torch::nn::ReLU());
    s->push_back(torch::nn::Linear(widths[i], widths[i - 1]));
  }
  s->push_back(torch::nn::Tanh());
  return s;
}

torch::Tensor Encode(torch::nn::Sequential& autoencoder, const torch::Tensor& x) {
  // Encoder modules: Linear, then (ReLU, Linear) per further width; the
  // decoder has one more module per width, plus the Tanh.
  const size_t encoder_modules = (autoencoder->size() - 2) / 2;
  torch::Tensor h = x;
  auto it = autoencoder->begin();
  for (size_t i = 0; i < encoder_modules; ++i, ++it) h = it->forward(h);
  return h;
}

torch::nn::Sequential MakeBaseModel(const SemiPflArchitecture& arch) {
  return torch::nn::Sequential(torch::nn::BatchNorm1d(arch.latent()), torch::nn::Linear(arch.latent(), arch.base_hidden),
                               torch::nn::ReLU(), torch::nn::BatchNorm1d(arch.base_hidden),
                               torch::nn::Linear(arch.base_hidden, arch.classes));
}

torch::Tensor ReconstructionError(torch::nn::Sequential& autoencoder, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return (autoencoder->forward(x) - x).pow(2).mean(1);
}

std::vector<std::pair<std::string, torch::Tensor>> ModuleState(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : module.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) {
    if (b.value().is_floating_point()) out.emplace_back(b.key(), b.value());
  }
  return out;
}

std::vector<float> FlattenState(const torch::nn::Module& module) {
  std::vector<float> out;
  for (const auto& [name, t] : ModuleState(module)) {
    const torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
    out.insert(out.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  return out;
}

std::vector<agg::TensorSpec> AutoencoderLayout(const SemiPflArchitecture& arch) {
  return LayoutOf(*MakeAutoencoder(arch), "ae.");
}

std::vector<agg::TensorSpec> PersonalModelLayout(const SemiPflArchitecture& arch) {
  std::vector<agg::TensorSpec> out = AutoencoderLayout(arch);
  const torch::nn::Sequential base = MakeBaseModel(arch);
  for (uint32_t m = 0; m < arch.base_models; ++m) {
    const auto b = LayoutOf(*base, "base" + std::to_string(m) + ".");
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

}  // namespace tributary::semipfl
