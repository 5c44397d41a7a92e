// The LibTorch adapter: module <-> parameters by name, training that learns,
// FedProx and delta updates.
#include "tributary/client/torch/module_client.h"

#include <gtest/gtest.h>

namespace tributary::client::torch_adapter {
namespace {

struct TinyImpl : torch::nn::Module {
  TinyImpl() : fc(register_module("fc", torch::nn::Linear(4, 3))), bn(register_module("bn", torch::nn::BatchNorm1d(3))) {}
  torch::Tensor forward(const torch::Tensor& x) { return bn->forward(fc->forward(x)); }
  torch::nn::Linear fc;
  torch::nn::BatchNorm1d bn;
};
TORCH_MODULE(Tiny);

std::pair<torch::Tensor, torch::Tensor> Blobs(int64_t n) {
  torch::manual_seed(5);
  const torch::Tensor y = torch::randint(0, 3, {n}, torch::kLong);
  return {torch::eye(3, 4).index_select(0, y) * 4 + torch::randn({n, 4}) * 0.5, y};
}

LossFn CrossEntropy() {
  return [](const torch::Tensor& out, const torch::Tensor& y) { return torch::nn::functional::cross_entropy(out, y); };
}

TEST(TorchAdapter, ParametersAndFloatBuffersByName) {
  Tiny m;
  const Parameters p = ToParameters(*m);
  std::vector<std::string> names;
  for (const Tensor& t : p) names.push_back(t.name);
  // Parameters, then floating buffers; BatchNorm's integer step counter is not a model tensor.
  EXPECT_EQ(names, (std::vector<std::string>{"fc.weight", "fc.bias", "bn.weight", "bn.bias", "bn.running_mean",
                                             "bn.running_var"}));
  Parameters changed = p;
  for (Tensor& t : changed) std::fill(t.values.begin(), t.values.end(), 0.25f);
  ASSERT_TRUE(LoadParameters(*m, changed));
  EXPECT_EQ(ToParameters(*m)[0].values, changed[0].values);
  EXPECT_EQ(ToParameters(*m)[5].values, changed[5].values);
  changed[0].shape = {3, 5};
  EXPECT_EQ(LoadParameters(*m, changed).error().code, ErrorCode::kShapeMismatch);
}

TEST(TorchAdapter, FitLearnsAndIsDeterministic) {
  auto [x, y] = Blobs(300);
  auto fit_once = [&, x = x, y = y] {
    torch::manual_seed(1);
    ModuleClient<Tiny> c(Tiny(), x, y, CrossEntropy(), {Optimizer::kSgd, 0.1, 0.9, 3, 32});
    const Parameters start = c.GetParameters();
    const double before = c.Evaluate(start, {}).value().loss;
    auto fit = c.Fit(start, {{"round", int64_t{1}}});
    EXPECT_TRUE(fit);
    auto after = c.Evaluate(fit.value().parameters, {}).value();
    EXPECT_LT(after.loss, before * 0.5);
    EXPECT_GT(after.metrics.at("accuracy"), 0.9);
    EXPECT_EQ(fit.value().num_examples, 300u);
    return fit.value().parameters;
  };
  const Parameters a = fit_once(), b = fit_once();
  for (size_t t = 0; t < a.size(); ++t) EXPECT_EQ(a[t].values, b[t].values) << a[t].name;
}

TEST(TorchAdapter, ConfigOverridesAndDeltaUpdates) {
  auto [x, y] = Blobs(64);
  ModuleClient<Tiny> c(Tiny(), x, y, CrossEntropy(), {Optimizer::kAdam, 0.01, 0, 1, 16, 0, UpdateKind::kDelta});
  const Parameters start = c.GetParameters();
  // lr 0: nothing moves, so the delta of every trained parameter is zero.
  auto fit = c.Fit(start, {{"lr", 0.0}, {"local_epochs", int64_t{2}}});
  ASSERT_TRUE(fit);
  for (size_t t = 0; t < 4; ++t) {
    for (float v : fit.value().parameters[t].values) EXPECT_EQ(v, 0.0f) << fit.value().parameters[t].name;
  }
}

TEST(TorchAdapter, ProximalTermPullsTowardsTheGlobalModel) {
  Tiny m;
  std::vector<torch::Tensor> anchor;
  for (const auto& p : m->parameters()) anchor.push_back(p.detach().clone());
  EXPECT_EQ(ProximalTerm(*m, anchor, 0.1).item<float>(), 0.0f);
  {
    torch::NoGradGuard g;
    m->fc->weight.add_(1.0);
  }
  // (mu / 2) * ||w - w0||^2 = 0.05 * 12
  EXPECT_NEAR(ProximalTerm(*m, anchor, 0.1).item<float>(), 0.6f, 1e-5);
}

}  // namespace
}  // namespace tributary::client::torch_adapter
