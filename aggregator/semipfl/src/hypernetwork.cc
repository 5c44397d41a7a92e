#include "tributary/semipfl/hypernetwork.h"

#include <cmath>

namespace tributary::semipfl {

struct HyperNetwork::Net : torch::nn::Module {
  torch::nn::Embedding embedding{nullptr};
  torch::nn::Sequential mlp;
  std::vector<torch::nn::Linear> heads;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<double> scales;

  std::vector<torch::Tensor> Forward(int64_t client) {
    const torch::Tensor h = mlp->forward(embedding->forward(torch::tensor({client}, torch::kLong)));
    std::vector<torch::Tensor> out;
    for (size_t i = 0; i < heads.size(); ++i) out.push_back((heads[i]->forward(h) * scales[i]).view(shapes[i]));
    return out;
  }
};

HyperNetwork::HyperNetwork(const HyperNetworkOptions& o, const std::vector<agg::TensorSpec>& targets)
    : net_(std::make_shared<Net>()), clip_(o.clip) {
  // Modules draw their initial values from the global generator: seeded
  // here, so construct before other threads use it.
  torch::manual_seed(o.seed);
  const int64_t e = o.embedding > 0 ? o.embedding : 1 + static_cast<int64_t>(o.clients) / 4;
  net_->embedding = net_->register_module("embedding", torch::nn::Embedding(o.clients, e));
  int64_t width = e;
  for (uint32_t d = 0; d < o.depth; ++d) {
    net_->mlp->push_back(torch::nn::Linear(width, o.hidden));
    net_->mlp->push_back(torch::nn::ReLU());
    width = o.hidden;
  }
  net_->register_module("mlp", net_->mlp);
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    net_->heads.push_back(net_->register_module("head" + std::to_string(i), torch::nn::Linear(width, n)));
    net_->shapes.push_back(t.shape);
    net_->scales.push_back(1.0);
  }
  // Scale each head so that generated tensors start with a Linear layer's
  // default spread, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); a bias takes its weight's fan-in.
  {
    torch::NoGradGuard no_grad;
    const auto first = net_->Forward(0);
    double fan_in = 1;
    for (size_t i = 0; i < first.size(); ++i) {
      if (net_->shapes[i].size() >= 2) fan_in = static_cast<double>(net_->shapes[i][1]);
      const double spread = first[i].numel() > 1 ? first[i].std().item<double>() : std::abs(first[i].item<double>());
      net_->scales[i] = spread > 0 ? 1.0 / std::sqrt(3.0 * fan_in) / spread : 1.0;
    }
  }
  optimizer_ = std::make_unique<torch::optim::Adam>(net_->parameters(), torch::optim::AdamOptions(o.lr));
}

HyperNetwork::~HyperNetwork() = default;

std::vector<torch::Tensor> HyperNetwork::Generate(int64_t client) {
  torch::NoGradGuard no_grad;
  return net_->Forward(client);
}

StepReport HyperNetwork::Step(int64_t client, const std::vector<torch::Tensor>& trained) {
  StepReport report;
  const std::vector<torch::Tensor> generated = net_->Forward(client);
  std::vector<torch::Tensor> delta;
  double sq = 0;
  for (size_t i = 0; i < generated.size(); ++i) {
    delta.push_back(generated[i].detach() - trained[i]);
    sq += delta.back().pow(2).sum().item<double>();
  }
  report.delta_norm = std::sqrt(sq);
  std::vector<torch::Tensor> params = net_->parameters();
  const auto grads = torch::autograd::grad(generated, params, delta, /*retain_graph=*/false, /*create_graph=*/false,
                                           /*allow_unused=*/true);
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].mutable_grad() = grads[i].defined() ? grads[i] : torch::zeros_like(params[i]);
  }
  report.grad_norm = torch::nn::utils::clip_grad_norm_(params, clip_);
  optimizer_->step();
  return report;
}

int64_t HyperNetwork::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : net_->parameters()) n += p.numel();
  return n;
}

}  // namespace tributary::semipfl
