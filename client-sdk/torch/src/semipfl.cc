#include "tributary/client/torch/semipfl.h"

#include <ATen/CPUGeneratorImpl.h>

#include "tributary/client/torch/module_client.h"

namespace tributary::client::torch_adapter {
namespace {

Parameters Prefixed(const std::string& prefix, Parameters p) {
  for (Tensor& t : p) t.name = prefix + t.name;
  return p;
}

// The tensors of `from` [begin, begin + n) with `prefix` stripped from their names.
Result<Parameters> Slice(const Parameters& from, size_t begin, size_t n, const std::string& prefix) {
  if (from.size() < begin + n) return MakeError(ErrorCode::kShapeMismatch, "the personal model has too few tensors");
  Parameters out(from.begin() + static_cast<int64_t>(begin), from.begin() + static_cast<int64_t>(begin + n));
  for (Tensor& t : out) {
    if (t.name.rfind(prefix, 0) != 0) {
      return MakeError(ErrorCode::kShapeMismatch, "tensor '" + t.name + "' should start with '" + prefix + "'");
    }
    t.name.erase(0, prefix.size());
  }
  return out;
}

}  // namespace

Parameters PersonalModelParameters(const SemiPflArchitecture& arch) {
  Parameters out;
  for (const agg::TensorSpec& t : semipfl::PersonalModelLayout(arch)) {
    out.push_back({t.name, t.shape, std::vector<float>(t.elements(), 0.0f)});
  }
  return out;
}

SemiPflLearner::SemiPflLearner(SemiPflArchitecture arch)
    : arch_(std::move(arch)), autoencoder_(MakeAutoencoder(arch_)),
      weights_(torch::zeros({static_cast<int64_t>(arch_.base_models)})) {
  for (uint32_t m = 0; m < arch_.base_models; ++m) bases_.push_back(MakeBaseModel(arch_));
}

Result<void> SemiPflLearner::Load(const Parameters& personal) {
  const size_t ae = semipfl::AutoencoderLayout(arch_).size();
  const size_t per_base = ToParameters(*bases_.front()).size();
  if (personal.size() != ae + per_base * bases_.size()) {
    return MakeError(ErrorCode::kShapeMismatch, "a personal model of " + std::to_string(personal.size()) +
                                                    " tensors, the architecture has " +
                                                    std::to_string(ae + per_base * bases_.size()));
  }
  TRIBUTARY_ASSIGN_OR_RETURN(Parameters a, Slice(personal, 0, ae, "ae."));
  TRIBUTARY_TRY(LoadParameters(*autoencoder_, a));
  for (size_t m = 0; m < bases_.size(); ++m) {
    TRIBUTARY_ASSIGN_OR_RETURN(Parameters b, Slice(personal, ae + m * per_base, per_base, "base" + std::to_string(m) + "."));
    TRIBUTARY_TRY(LoadParameters(*bases_[m], b));
    bases_[m]->eval();
  }
  weights_ = torch::zeros({static_cast<int64_t>(bases_.size())});
  return Ok();
}

namespace {

// [M, N, classes] log-probabilities of each base model.
torch::Tensor BaseLogProbabilities(torch::nn::Sequential& autoencoder, std::vector<torch::nn::Sequential>& bases,
                                   const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  const torch::Tensor z = Encode(autoencoder, x);
  std::vector<torch::Tensor> out;
  for (auto& b : bases) out.push_back(torch::log_softmax(b->forward(z), 1));
  return torch::stack(out);
}

// log sum_m softmax(w)_m p_m, [N, classes].
torch::Tensor Mix(const torch::Tensor& weights, const torch::Tensor& log_p) {
  return torch::logsumexp(torch::log_softmax(weights, 0).view({-1, 1, 1}) + log_p, 0);
}

}  // namespace

Result<void> SemiPflLearner::Personalize(const Parameters& personal, const torch::Tensor& samples,
                                         const torch::Tensor& labelled_x, const torch::Tensor& labelled_y,
                                         const SemiPflTrainOptions& options) {
  TRIBUTARY_TRY(Load(personal));
  if (options.adapt_batchnorm) AdaptBatchNorm(samples);
  Combine(labelled_x, labelled_y, options);
  return Ok();
}

void SemiPflLearner::AdaptBatchNorm(const torch::Tensor& x) {
  if (x.size(0) < 2) return;
  torch::NoGradGuard no_grad;
  const torch::Tensor z = Encode(autoencoder_, x);
  for (auto& base : bases_) {
    // One full batch with a cumulative average: the running statistics become this batch's.
    for (auto& m : base->modules(/*include_self=*/false)) {
      if (auto* bn = m->as<torch::nn::BatchNorm1d>()) {
        bn->reset_running_stats();
        bn->options.momentum(c10::nullopt);
      }
    }
    base->train();
    base->forward(z);
    base->eval();
  }
}

void SemiPflLearner::Combine(const torch::Tensor& x, const torch::Tensor& y, const SemiPflTrainOptions& options) {
  weights_ = torch::zeros({static_cast<int64_t>(bases_.size())});
  if (x.size(0) == 0 || bases_.size() == 1) return;
  const torch::Tensor log_p = BaseLogProbabilities(autoencoder_, bases_, x);
  torch::Tensor w = weights_.clone().requires_grad_(true);
  torch::optim::Adam opt({w}, torch::optim::AdamOptions(options.combine_lr));
  for (int64_t step = 0; step < options.combine_steps; ++step) {
    opt.zero_grad();
    torch::nll_loss(Mix(w, log_p), y).backward();
    opt.step();
  }
  weights_ = w.detach();
}

torch::Tensor SemiPflLearner::Predict(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return Mix(weights_, BaseLogProbabilities(autoencoder_, bases_, x)).exp();
}

std::vector<float> SemiPflLearner::combination() const {
  const torch::Tensor a = torch::softmax(weights_, 0).contiguous();
  return std::vector<float>(a.data_ptr<float>(), a.data_ptr<float>() + a.numel());
}

Result<FitResult> SemiPflLearner::TrainAutoencoder(const torch::Tensor& x, const SemiPflTrainOptions& options) {
  if (x.dim() != 2 || x.size(1) != arch_.input || x.size(0) == 0) {
    return MakeError(ErrorCode::kShapeMismatch, "autoencoder training needs samples of shape [N, " +
                                                    std::to_string(arch_.input) + "]");
  }
  auto copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(autoencoder_->clone());
  torch::nn::Sequential ae(copy);
  ae->train();
  torch::optim::Adam opt(ae->parameters(), torch::optim::AdamOptions(options.lr));
  torch::Generator gen = at::detail::createCPUGenerator(options.seed);
  const int64_t n = x.size(0), batch = std::max<int64_t>(1, options.batch_size);
  double last = 0;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    const torch::Tensor order = torch::randperm(n, gen, torch::kLong);
    double sum = 0;
    for (int64_t at = 0; at < n; at += batch) {
      const torch::Tensor xb = x.index_select(0, order.slice(0, at, std::min(n, at + batch)));
      opt.zero_grad();  // per batch: gradients do not carry over
      const torch::Tensor loss = torch::mse_loss(ae->forward(xb), xb);
      loss.backward();
      opt.step();
      sum += loss.item<double>() * static_cast<double>(xb.size(0));
    }
    last = sum / static_cast<double>(n);
  }
  FitResult fit;
  fit.parameters = Prefixed("ae.", ToParameters(*ae));
  fit.num_examples = static_cast<uint64_t>(n);
  fit.metrics["reconstruction_loss"] = last;
  fit.metrics["samples"] = static_cast<double>(n);
  return fit;
}

SemiPflTrainOptions WithConfig(SemiPflTrainOptions o, const Config& config) {
  o.epochs = ConfigInt(config, "ae_epochs", o.epochs);
  o.lr = ConfigDouble(config, "ae_lr", o.lr);
  o.batch_size = std::max<int64_t>(1, ConfigInt(config, "batch_size", o.batch_size));
  o.combine_steps = ConfigInt(config, "combine_steps", o.combine_steps);
  o.combine_lr = ConfigDouble(config, "combine_lr", o.combine_lr);
  o.adapt_batchnorm = ConfigBool(config, "adapt_batchnorm", o.adapt_batchnorm);
  o.seed = o.seed * 1'000'003 + static_cast<uint64_t>(ConfigInt(config, "round", 0));
  return o;
}

SemiPflClient::SemiPflClient(SemiPflArchitecture arch, torch::Tensor samples, torch::Tensor labelled_x,
                             torch::Tensor labelled_y, SemiPflTrainOptions options)
    : arch_(std::move(arch)), samples_(std::move(samples)), labelled_x_(std::move(labelled_x)),
      labelled_y_(std::move(labelled_y)), options_(options), learner_(arch_) {}

Parameters SemiPflClient::GetParameters() { return PersonalModelParameters(arch_); }

Result<SemiPflTrainOptions> SemiPflClient::Prepare(const Parameters& personal, const Config& config) {
  const SemiPflTrainOptions o = WithConfig(options_, config);
  TRIBUTARY_TRY(learner_.Personalize(personal, samples_, labelled_x_, labelled_y_, o));
  return o;
}

Result<FitResult> SemiPflClient::Fit(const Parameters& personal, const Config& config) {
  TRIBUTARY_ASSIGN_OR_RETURN(const SemiPflTrainOptions o, Prepare(personal, config));
  return learner_.TrainAutoencoder(samples_, o);
}

Result<EvaluateResult> SemiPflClient::Evaluate(const Parameters& personal, const Config& config) {
  TRIBUTARY_TRY(Prepare(personal, config));
  EvaluateResult r;
  r.num_examples = static_cast<uint64_t>(labelled_x_.size(0));
  if (r.num_examples == 0) return r;
  const torch::Tensor p = learner_.Predict(labelled_x_);
  r.loss = torch::nll_loss(p.clamp_min(1e-12).log(), labelled_y_).item<double>();
  r.metrics["accuracy"] = p.argmax(1).eq(labelled_y_).to(torch::kDouble).mean().item<double>();
  return r;
}

}  // namespace tributary::client::torch_adapter
