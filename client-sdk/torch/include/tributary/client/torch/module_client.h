// The LibTorch adapter: a torch::nn::Module as a federated client.
//
// Parameters: a module's named parameters, then its floating-point buffers
// (e.g. BatchNorm running statistics), by their dotted names, in the module's
// registration order. LoadParameters() copies a global model into the module
// by name and checks every shape; a missing or extra tensor is an error.
//
// ModuleClient<M> implements client::Client for a module holder M (a
// TORCH_MODULE type or torch::nn::Sequential) over an in-memory dataset:
//   Fit       loads the global model, trains `local_epochs` over the data in
//             shuffled mini-batches with SGD (momentum) or Adam (config keys
//             lr, local_epochs, batch_size, proximal_mu override the
//             options), and returns the weights, or the delta from the
//             global model with UpdateKind::kDelta (Tributary's strategies
//             average weights; deltas are for jobs that expect them).
//             proximal_mu > 0 adds FedProx's (mu/2)||w - w_global||^2.
//             A user TrainStep replaces the default step.
//   Evaluate  the mean loss and, for integer targets, the accuracy.
// Training is deterministic for a given seed and the config's `round`, also
// with several clients training on several threads.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <functional>
#include <memory>

#include "tributary/client/client.h"

namespace tributary::client::torch_adapter {

Parameters ToParameters(const torch::nn::Module& module);
Result<void> LoadParameters(torch::nn::Module& module, const Parameters& parameters);
// trained - global, tensor by tensor (kShapeMismatch if they differ in layout).
Result<Parameters> Delta(const Parameters& trained, const Parameters& global);

enum class Optimizer { kSgd, kAdam };
enum class UpdateKind { kWeights, kDelta };

struct TrainOptions {
  Optimizer optimizer = Optimizer::kSgd;
  double lr = 0.05;
  double momentum = 0.9;  // SGD only
  int64_t local_epochs = 1;
  int64_t batch_size = 32;
  double proximal_mu = 0;  // FedProx; 0: plain local training
  UpdateKind update = UpdateKind::kWeights;
  uint64_t seed = 0;
};

// Loss of a batch: output of forward() and the targets.
using LossFn = std::function<torch::Tensor(const torch::Tensor& output, const torch::Tensor& target)>;
// One optimization step on a batch; returns the batch loss. Replaces the
// default step (forward, loss, FedProx term, backward, optimizer step).
template <typename M>
using TrainStep =
    std::function<double(M& model, torch::optim::Optimizer& optimizer, const torch::Tensor& x, const torch::Tensor& y)>;

// The options after the round's config (lr, local_epochs, batch_size, proximal_mu).
TrainOptions WithConfig(TrainOptions options, const Config& config);
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(torch::nn::Module& module, const TrainOptions& options);
// The FedProx term for the module's parameters against the global ones.
torch::Tensor ProximalTerm(torch::nn::Module& module, const std::vector<torch::Tensor>& global, double mu);

template <typename M>
class ModuleClient : public Client {
 public:
  ModuleClient(M model, torch::Tensor inputs, torch::Tensor targets, LossFn loss, TrainOptions options = {})
      : model_(std::move(model)),
        inputs_(std::move(inputs)),
        targets_(std::move(targets)),
        loss_(std::move(loss)),
        options_(options) {}

  void set_train_step(TrainStep<M> step) { step_ = std::move(step); }
  void set_eval_data(torch::Tensor inputs, torch::Tensor targets) {
    eval_inputs_ = std::move(inputs);
    eval_targets_ = std::move(targets);
  }

  Parameters GetParameters() override { return ToParameters(*model_); }

  Result<FitResult> Fit(const Parameters& global, const Config& config) override {
    TRIBUTARY_TRY(LoadParameters(*model_, global));
    const TrainOptions o = WithConfig(options_, config);
    std::vector<torch::Tensor> anchor;  // the global weights, for FedProx's term only
    if (o.proximal_mu > 0) {
      for (const auto& p : model_->parameters()) anchor.push_back(p.detach().clone());
    }
    auto optimizer = MakeOptimizer(*model_, o);
    const int64_t n = inputs_.size(0);
    // A generator of its own: clients may train on several threads at once.
    auto generator = at::detail::createCPUGenerator(o.seed + static_cast<uint64_t>(ConfigInt(config, "round", 0)));
    model_->train();
    double loss_sum = 0;
    int64_t batches = 0;
    for (int64_t epoch = 0; epoch < o.local_epochs; ++epoch) {
      const torch::Tensor order = torch::randperm(n, generator, torch::kLong);
      for (int64_t at = 0; at < n; at += o.batch_size) {
        const torch::Tensor idx = order.slice(0, at, std::min(n, at + o.batch_size));
        const torch::Tensor x = inputs_.index_select(0, idx), y = targets_.index_select(0, idx);
        loss_sum += step_ ? step_(model_, *optimizer, x, y) : DefaultStep(*optimizer, x, y, anchor, o.proximal_mu);
        ++batches;
      }
    }
    FitResult r{ToParameters(*model_), static_cast<uint64_t>(n), {{"train_loss", batches ? loss_sum / batches : 0.0}}};
    if (o.update == UpdateKind::kDelta) {
      TRIBUTARY_ASSIGN_OR_RETURN(r.parameters, Delta(r.parameters, global));
    }
    return r;
  }

  Result<EvaluateResult> Evaluate(const Parameters& global, const Config&) override {
    TRIBUTARY_TRY(LoadParameters(*model_, global));
    const torch::Tensor& x = eval_inputs_.defined() ? eval_inputs_ : inputs_;
    const torch::Tensor& y = eval_targets_.defined() ? eval_targets_ : targets_;
    torch::NoGradGuard no_grad;
    model_->eval();
    const torch::Tensor out = model_->forward(x);
    EvaluateResult r{loss_(out, y).item<double>(), static_cast<uint64_t>(x.size(0)), {}};
    if (y.scalar_type() == torch::kLong && out.dim() == 2) {
      r.metrics["accuracy"] = out.argmax(1).eq(y).to(torch::kDouble).mean().item<double>();
    }
    return r;
  }

 private:
  double DefaultStep(torch::optim::Optimizer& optimizer, const torch::Tensor& x, const torch::Tensor& y,
                     const std::vector<torch::Tensor>& anchor, double mu) {
    optimizer.zero_grad();
    torch::Tensor loss = loss_(model_->forward(x), y);
    const double value = loss.item<double>();
    if (mu > 0) loss = loss + ProximalTerm(*model_, anchor, mu);
    loss.backward();
    optimizer.step();
    return value;
  }

  M model_;
  torch::Tensor inputs_, targets_, eval_inputs_, eval_targets_;
  LossFn loss_;
  TrainOptions options_;
  TrainStep<M> step_;
};

}  // namespace tributary::client::torch_adapter
