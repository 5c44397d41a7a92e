#include "tributary/semipfl/server.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstring>
#include <thread>

namespace tributary::semipfl {
namespace {

void Append(std::vector<float>& out, const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat).contiguous();
  out.insert(out.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Linear layers drawn like PyTorch's default, but from `gen`: base models
// are a function of (seed, client, round, m), whatever other threads draw.
void Initialize(torch::nn::Sequential& model, torch::Generator& gen) {
  torch::NoGradGuard no_grad;
  for (auto& m : model->modules(/*include_self=*/false)) {
    if (auto* linear = m->as<torch::nn::Linear>()) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(linear->weight.size(1)));
      linear->weight.uniform_(-bound, bound, gen);
      linear->bias.uniform_(-bound, bound, gen);
    }
  }
}

}  // namespace

Server::Server(ServerOptions options, std::map<std::string, int64_t> index, std::vector<LabelledSet> sets)
    : options_(std::move(options)), index_(std::move(index)), sets_(std::move(sets)),
      update_layout_(AutoencoderLayout(options_.architecture)),
      hypernetwork_(options_.hypernetwork, update_layout_) {}

Result<std::unique_ptr<Server>> Server::Create(ServerOptions options, const std::vector<std::string>& clients,
                                               std::vector<LabelledSet> server_sets) {
  TRIBUTARY_TRY(options.architecture.Validate());
  if (clients.empty()) return MakeError(ErrorCode::kConfig, "SemiPFL needs at least one client");
  if (server_sets.size() != options.architecture.base_models) {
    return MakeError(ErrorCode::kConfig, std::to_string(server_sets.size()) + " labelled server sets for " +
                                             std::to_string(options.architecture.base_models) + " base models");
  }
  for (const LabelledSet& s : server_sets) {
    if (s.x.dim() != 2 || s.x.size(1) != options.architecture.input || s.y.dim() != 1 || s.y.size(0) != s.x.size(0) ||
        s.x.size(0) < 2) {
      return MakeError(ErrorCode::kShapeMismatch, "a server set needs x [N >= 2, input] and y [N]");
    }
  }
  if (options.min_samples < 2) return MakeError(ErrorCode::kConfig, "min_samples must be at least 2 (BatchNorm)");
  std::map<std::string, int64_t> index;
  for (const std::string& c : clients) index.emplace(c, static_cast<int64_t>(index.size()));
  options.hypernetwork.clients = static_cast<uint32_t>(index.size());
  auto server = std::unique_ptr<Server>(new Server(std::move(options), std::move(index), std::move(server_sets)));
  TRIBUTARY_ASSIGN_OR_RETURN(server->update_, agg::ModelSpec::Create(server->update_layout_));
  TRIBUTARY_ASSIGN_OR_RETURN(server->personal_, agg::ModelSpec::Create(PersonalModelLayout(server->options_.architecture)));
  return server;
}

Result<int64_t> Server::IndexOf(const std::string& client) const {
  auto it = index_.find(client);
  if (it == index_.end()) return MakeError(ErrorCode::kUnknownClient, "client '" + client + "' is not in this SemiPFL job");
  return it->second;
}

Result<std::vector<float>> Server::ModelFor(const std::string& client, uint64_t round) {
  TRIBUTARY_ASSIGN_OR_RETURN(const int64_t idx, IndexOf(client));
  const SemiPflArchitecture& arch = options_.architecture;
  const std::vector<torch::Tensor> generated = hypernetwork_.Generate(idx);
  torch::nn::Sequential ae = MakeAutoencoder(arch);
  {
    torch::NoGradGuard no_grad;
    auto params = ae->parameters();
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(generated[i]);
  }
  ae->eval();
  std::vector<float> out;
  out.reserve(personal_.elements());
  for (const torch::Tensor& t : generated) Append(out, t);

  // The M base models train independently: in parallel, each from its own
  // generator, so the result does not depend on the thread count.
  std::vector<std::vector<float>> bases(sets_.size());
  std::vector<double> kept(sets_.size());
  const size_t threads = std::max<size_t>(1, std::min<size_t>(sets_.size(), std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (size_t m = t; m < sets_.size(); m += threads) bases[m] = TrainBase(ae, m, idx, round, kept[m]);
    });
  }
  for (auto& t : pool) t.join();
  for (const auto& b : bases) out.insert(out.end(), b.begin(), b.end());
  double kept_mean = 0;
  for (double k : kept) kept_mean += k / static_cast<double>(sets_.size());
  stats_.models += 1;
  stats_.kept_sum += kept_mean;
  return out;
}

std::vector<float> Server::TrainBase(torch::nn::Sequential& ae, size_t m, int64_t client, uint64_t round,
                                     double& kept) const {
  const LabelledSet& set = sets_[m];
  auto gen = at::detail::createCPUGenerator(options_.seed * 1'000'003 + static_cast<uint64_t>(client) * 7919 +
                                            round * 131 + m);
  // The samples this client's autoencoder reconstructs well.
  torch::Tensor z, keep;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor error = ReconstructionError(ae, set.x);
    keep = (error < options_.threshold).nonzero().view({-1});
    if (keep.size(0) < options_.min_samples) {
      keep = std::get<1>(error.topk(std::min<int64_t>(options_.min_samples, set.x.size(0)), 0, /*largest=*/false));
    }
    z = Encode(ae, set.x.index_select(0, keep));
  }
  kept = static_cast<double>(keep.size(0)) / static_cast<double>(set.x.size(0));
  const torch::Tensor y = set.y.index_select(0, keep);
  torch::nn::Sequential base = MakeBaseModel(options_.architecture);
  Initialize(base, gen);
  base->train();
  torch::optim::Adam opt(base->parameters(), torch::optim::AdamOptions(options_.base_lr));
  const int64_t n = z.size(0), batch = std::max<int64_t>(2, options_.base_batch_size);
  for (int64_t epoch = 0; epoch < options_.base_epochs; ++epoch) {
    const torch::Tensor order = torch::randperm(n, gen, torch::kLong);
    for (int64_t at = 0; at < n; at += batch) {
      const int64_t end = std::min(n, at + batch);
      if (end - at < 2) break;  // BatchNorm needs two samples
      const torch::Tensor rows = order.slice(0, at, end);
      opt.zero_grad();
      torch::nn::functional::cross_entropy(base->forward(z.index_select(0, rows)), y.index_select(0, rows)).backward();
      opt.step();
    }
  }
  base->eval();
  return FlattenState(*base);
}

Result<void> Server::OnUpdate(const std::string& client, uint64_t /*round*/, double /*weight*/,
                              std::span<const float> values) {
  TRIBUTARY_ASSIGN_OR_RETURN(const int64_t idx, IndexOf(client));
  if (values.size() != update_.elements()) {
    return MakeError(ErrorCode::kShapeMismatch, "client '" + client + "' sent " + std::to_string(values.size()) +
                                                    " values, the autoencoder has " + std::to_string(update_.elements()));
  }
  std::vector<torch::Tensor> trained;
  size_t at = 0;
  for (const auto& t : update_layout_) {
    trained.push_back(torch::from_blob(const_cast<float*>(values.data() + at), t.shape, torch::kFloat).clone());
    at += t.elements();
  }
  const StepReport r = hypernetwork_.Step(idx, trained);
  stats_.events += 1;
  stats_.last_delta_norm = r.delta_norm;
  return Ok();
}

}  // namespace tributary::semipfl
