#include "tributary/simulation/semipfl_federation.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <fstream>
#include <iomanip>
#include <mutex>
#include <numeric>

#include "harness.h"
#include "tributary/client/torch/semipfl.h"
#include "tributary/semipfl/server.h"
#include "tributary/simulation/dataset.h"
#include "tributary/simulation/personal_data.h"

namespace tributary::simulation {
namespace {

namespace ta = client::torch_adapter;
using Clock = std::chrono::steady_clock;

UserScore Score(const torch::Tensor& probabilities_or_logits, const torch::Tensor& y, int64_t classes) {
  const torch::Tensor predicted = probabilities_or_logits.argmax(1);
  return {predicted.eq(y).to(torch::kDouble).mean().item<double>(), WeightedF1(predicted, y, classes)};
}

void Summarize(MethodScores& m) {
  double acc = 0, f1 = 0;
  for (const UserScore& u : m.users) {
    acc += u.accuracy;
    f1 += u.weighted_f1;
  }
  m.mean_accuracy = m.users.empty() ? 0 : acc / static_cast<double>(m.users.size());
  m.mean_weighted_f1 = m.users.empty() ? 0 : f1 / static_cast<double>(m.users.size());
}

// The baselines' classifier: the autoencoder's encoder widths, then the base
// models' hidden width, then the classes.
torch::nn::Sequential MakeClassifier(const ta::SemiPflArchitecture& arch) {
  torch::nn::Sequential s;
  int64_t width = arch.input;
  for (int64_t w : arch.encoder) {
    s->push_back(torch::nn::Linear(width, w));
    s->push_back(torch::nn::ReLU());
    width = w;
  }
  s->push_back(torch::nn::Linear(width, arch.base_hidden));
  s->push_back(torch::nn::ReLU());
  s->push_back(torch::nn::Linear(arch.base_hidden, arch.classes));
  return s;
}

void TrainClassifier(torch::nn::Sequential& model, const torch::Tensor& x, const torch::Tensor& y, int64_t epochs,
                     const SimulationJob& job, torch::Generator& gen) {
  model->train();
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (job.optimizer == "adam") {
    opt = std::make_unique<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(job.lr));
  } else {
    opt = std::make_unique<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(job.lr).momentum(job.momentum));
  }
  const int64_t n = x.size(0), batch = std::max<int64_t>(1, job.batch_size);
  for (int64_t e = 0; e < epochs; ++e) {
    const torch::Tensor order = torch::randperm(n, gen, torch::kLong);
    for (int64_t at = 0; at < n; at += batch) {
      const torch::Tensor rows = order.slice(0, at, std::min(n, at + batch));
      opt->zero_grad();
      torch::nn::functional::cross_entropy(model->forward(x.index_select(0, rows)), y.index_select(0, rows)).backward();
      opt->step();
    }
  }
  model->eval();
}

MethodScores Evaluate(torch::nn::Sequential& model, const PersonalDataset& d) {
  torch::NoGradGuard no_grad;
  MethodScores m;
  for (const UserData& u : d.users) m.users.push_back(Score(model->forward(u.test_x), u.test_y, d.classes));
  Summarize(m);
  return m;
}

MethodScores LocalOnly(const PersonalDataset& d, const ta::SemiPflArchitecture& arch, const SimulationJob& job) {
  MethodScores m;
  for (size_t u = 0; u < d.users.size(); ++u) {
    torch::manual_seed(job.seed * 31 + u);
    torch::nn::Sequential model = MakeClassifier(arch);
    auto gen = at::detail::createCPUGenerator(job.seed * 131 + u);
    TrainClassifier(model, d.users[u].labelled_x, d.users[u].labelled_y,
                    static_cast<int64_t>(job.local_epochs) * job.rounds, job, gen);
    torch::NoGradGuard no_grad;
    m.users.push_back(Score(model->forward(d.users[u].test_x), d.users[u].test_y, d.classes));
  }
  Summarize(m);
  return m;
}

// FedAvg over the users' labelled samples, with the SemiPFL run's selections.
MethodScores FedAvgLabelled(const PersonalDataset& d, const ta::SemiPflArchitecture& arch,
                            const SimulationJob& job, const std::vector<std::vector<uint32_t>>& selections) {
  torch::manual_seed(job.seed * 17);
  torch::nn::Sequential global = MakeClassifier(arch), local = MakeClassifier(arch);
  for (size_t r = 0; r < selections.size(); ++r) {
    std::vector<torch::Tensor> sum;
    double weight = 0;
    for (uint32_t u : selections[r]) {
      {
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < global->parameters().size(); ++i) local->parameters()[i].copy_(global->parameters()[i]);
      }
      auto gen = at::detail::createCPUGenerator(job.seed * 1'000'003 + u * 1009 + r);
      TrainClassifier(local, d.users[u].labelled_x, d.users[u].labelled_y, job.local_epochs, job, gen);
      const double w = static_cast<double>(d.users[u].labelled_x.size(0));
      const auto params = local->parameters();
      for (size_t i = 0; i < params.size(); ++i) {
        if (sum.size() <= i) sum.push_back(torch::zeros_like(params[i]));
        sum[i] += params[i].detach() * w;
      }
      weight += w;
    }
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < sum.size(); ++i) global->parameters()[i].copy_(sum[i] / weight);
  }
  global->eval();
  return Evaluate(global, d);
}

uint64_t ParameterBytes(torch::nn::Module& m) {
  uint64_t n = 0;
  for (const auto& p : m.parameters()) n += static_cast<uint64_t>(p.numel()) * 4;
  return n;
}

nlohmann::json ToJson(const MethodScores& m) {
  nlohmann::json users = nlohmann::json::array();
  for (const UserScore& u : m.users) users.push_back({{"accuracy", u.accuracy}, {"weighted_f1", u.weighted_f1}});
  return {{"mean_accuracy", m.mean_accuracy}, {"mean_weighted_f1", m.mean_weighted_f1}, {"users", users}};
}

Result<void> WriteResults(const std::string& dir, const SimulationJob& job, const PersonalDataset& d,
                          const SemiPflResult& r) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  nlohmann::json rounds = nlohmann::json::array();
  for (const SemiPflRound& x : r.rounds) {
    rounds.push_back({{"round", x.round}, {"round_s", x.round_s}, {"updates", x.updates}, {"bytes_up", x.bytes_up},
                      {"bytes_down", x.bytes_down}, {"accuracy", x.accuracy}, {"weighted_f1", x.weighted_f1},
                      {"reconstruction_loss", x.reconstruction_loss}, {"kept", x.kept}});
  }
  const nlohmann::json out = {
      {"job", job.name},
      {"dataset", job.dataset},
      {"label_ratio", job.label_ratio},
      {"seed", job.seed},
      {"rounds", rounds},
      {"semipfl", ToJson(r.semipfl)},
      {"fedavg_labelled", ToJson(r.fedavg_labelled)},
      {"local_only", ToJson(r.local_only)},
      {"semipfl_bytes_per_round", r.semipfl_bytes_per_round},
      {"fedavg_bytes_per_round", r.fedavg_bytes_per_round}};
  std::ofstream json(dir + "/semipfl.json");
  json << out.dump(2) << "\n";
  std::ofstream csv(dir + "/semipfl-users.csv");
  csv << "user,style,labelled,semipfl_accuracy,semipfl_f1,fedavg_accuracy,fedavg_f1,local_accuracy,local_f1\n";
  for (size_t u = 0; u < d.users.size(); ++u) {
    csv << ClientId(static_cast<uint32_t>(u)) << ",\"" << d.users[u].style << "\"," << d.users[u].labelled_x.size(0)
        << "," << r.semipfl.users[u].accuracy << "," << r.semipfl.users[u].weighted_f1 << ","
        << r.fedavg_labelled.users[u].accuracy << "," << r.fedavg_labelled.users[u].weighted_f1 << ","
        << r.local_only.users[u].accuracy << "," << r.local_only.users[u].weighted_f1 << "\n";
  }
  if (!json || !csv) return MakeError(ErrorCode::kIo, "cannot write the results into " + dir);
  return Ok();
}

}  // namespace

double WeightedF1(const at::Tensor& predicted, const at::Tensor& truth, int64_t classes) {
  const double n = static_cast<double>(truth.size(0));
  if (n == 0) return 0;
  double f1 = 0;
  for (int64_t c = 0; c < classes; ++c) {
    const torch::Tensor p = predicted.eq(c), t = truth.eq(c);
    const double support = t.sum().item<double>();
    if (support == 0) continue;
    const double tp = (p & t).sum().item<double>(), fp = (p & ~t).sum().item<double>(), fn = support - tp;
    f1 += support / n * (2 * tp / (2 * tp + fp + fn));
  }
  return f1;
}

Result<SemiPflResult> RunSemiPflSimulation(const SimulationJob& job, const SimulationOptions& options,
                                           std::ostream& out) {
  if (job.rounds < 2) {
    return MakeError(ErrorCode::kConfig, "a semipfl job needs at least 2 rounds (its last round scores every user)");
  }
  // Users, their labels and the server's labelled sets.
  const SemiPflJob& sp = job.semipfl;
  PersonalDataSpec ds{job.clients, job.samples_per_client, job.label_ratio, sp.base_models, sp.server_samples, job.seed};
  PersonalDataset data;
  if (job.dataset == "synthetic-har") {
    data = MakeSyntheticHar(ds);
  } else if (job.dataset == "fashion-mnist") {
    TRIBUTARY_ASSIGN_OR_RETURN(const Dataset fm, LoadFashionMnist(job.data_dir, options.cache_dir));
    TRIBUTARY_ASSIGN_OR_RETURN(data, MakeRotatedFashionMnist(fm, ds));
  } else {
    return MakeError(ErrorCode::kConfig, "semipfl runs on data.dataset synthetic-har or fashion-mnist");
  }

  // The server: the controller's stateful function for this job.
  ta::SemiPflArchitecture arch;
  arch.input = data.input;
  arch.encoder = sp.autoencoder;
  arch.classes = data.classes;
  arch.base_hidden = sp.base_hidden;
  arch.base_models = sp.base_models;
  semipfl::ServerOptions so;
  so.architecture = arch;
  so.hypernetwork = {job.clients, sp.embedding, sp.hidden, sp.depth, sp.hypernet_lr, sp.clip, job.seed};
  so.threshold = sp.threshold;
  so.min_samples = sp.min_samples;
  so.base_epochs = sp.base_epochs;
  so.base_lr = sp.base_lr;
  so.seed = job.seed;
  std::vector<std::string> ids;
  for (uint32_t c = 0; c < job.clients; ++c) ids.push_back(ClientId(c));
  TRIBUTARY_ASSIGN_OR_RETURN(std::unique_ptr<semipfl::Server> owned, semipfl::Server::Create(so, ids, data.server_sets));
  std::shared_ptr<semipfl::Server> server = std::move(owned);
  const uint64_t personal_bytes = server->personal_model().payload_bytes();

  const uint64_t segment = std::max<uint64_t>(
      256ull << 20, (personal_bytes + server->update_model().payload_bytes()) * (job.clients + 16) + (64ull << 20));
  controller::ServiceJob sj;
  sj.source = options.run_dir;
  // The last round is not a selection: it scores every user (below).
  sj.schedule = ScheduleOf(job, job.rounds - 1);
  sj.log_rounds = false;
  controller::JobSpec& js = sj.spec;
  js.id = job.name;
  js.model = server->update_model();
  js.personalized = server;
  js.fan_in = job.fan_in;
  js.deadline = std::chrono::seconds(job.deadline_s);
  js.client_config = {{"ae_epochs", static_cast<int64_t>(sp.ae_epochs)},
                      {"ae_lr", sp.ae_lr},
                      {"batch_size", static_cast<int64_t>(job.batch_size)},
                      {"combine_steps", static_cast<int64_t>(sp.combine_steps)},
                      {"combine_lr", sp.combine_lr},
                      {"adapt_batchnorm", sp.adapt_batchnorm}};

  // The clients: each worker keeps one learner; scores go to `scores`.
  std::mutex mu;
  std::map<uint32_t, UserScore> scores;  // this round's
  double reconstruction = 0;
  std::vector<std::unique_ptr<ta::SemiPflLearner>> learners;
  for (uint32_t w = 0; w < job.workers; ++w) learners.push_back(std::make_unique<ta::SemiPflLearner>(arch));
  ClientWork work = [&](uint32_t c, size_t w, const client::Task& task,
                        const client::Parameters& model) -> Result<client::FitResult> {
    ta::SemiPflLearner& learner = *learners[w];
    const UserData& u = data.users[c];
    ta::SemiPflTrainOptions defaults;
    defaults.seed = job.seed * 7919 + c;
    const ta::SemiPflTrainOptions o = ta::WithConfig(defaults, task.config);
    TRIBUTARY_TRY(learner.Personalize(model, u.train_x, u.labelled_x, u.labelled_y, o));
    const UserScore s = Score(learner.Predict(u.test_x), u.test_y, data.classes);
    TRIBUTARY_ASSIGN_OR_RETURN(client::FitResult fit, learner.TrainAutoencoder(u.train_x, o));
    fit.metrics["accuracy"] = s.accuracy;
    fit.metrics["weighted_f1"] = s.weighted_f1;
    std::lock_guard lock(mu);
    scores[c] = s;
    reconstruction += fit.metrics.at("reconstruction_loss");
    return fit;
  };
  std::unique_ptr<ClientPool> pool;

  // A round's metrics, from its report and the clients' scores.
  SemiPflResult result;
  std::vector<UserScore> final_scores(job.clients);
  semipfl::ServerStats before = server->stats();
  auto record = [&](const controller::RoundReport& report) -> Result<void> {
    const bool last = report.round == job.rounds;
    const ClientTally tally = pool->TakeTally();
    const semipfl::ServerStats now = server->stats();
    SemiPflRound m;
    m.kept = (now.kept_sum - before.kept_sum) / static_cast<double>(std::max<uint64_t>(1, now.models - before.models));
    before = now;
    m.round = report.round;
    m.round_s = report.seconds.count();
    m.updates = report.updates;
    m.bytes_up = tally.bytes_up;
    m.bytes_down = tally.bytes_down;
    {
      std::lock_guard lock(mu);
      for (const auto& [c, s] : scores) {
        m.accuracy += s.accuracy / static_cast<double>(scores.size());
        m.weighted_f1 += s.weighted_f1 / static_cast<double>(scores.size());
        if (last) final_scores[c] = s;
      }
      m.reconstruction_loss = scores.empty() ? 0 : reconstruction / static_cast<double>(scores.size());
      if (last && scores.size() != job.clients) {
        return MakeError(ErrorCode::kRoundClosed, "the final round scored " + std::to_string(scores.size()) + " of " +
                                                      std::to_string(job.clients) + " users");
      }
      scores.clear();
      reconstruction = 0;
    }
    result.rounds.push_back(m);
    out << std::fixed << "round " << std::setw(3) << m.round << "/" << job.rounds << "  users " << std::setw(3)
        << m.updates << "  accuracy " << std::setprecision(4) << m.accuracy << "  weighted F1 " << m.weighted_f1
        << "  reconstruction " << m.reconstruction_loss << "  kept " << m.kept << "  round " << std::setprecision(2) << m.round_s << " s"
        << std::endl;
    return Ok();
  };
  // The training rounds' selections, for the FedAvg baseline.
  std::map<std::string, uint32_t> index;
  for (uint32_t c = 0; c < job.clients; ++c) index[ClientId(c)] = c;
  std::vector<std::vector<uint32_t>> selections;
  sj.after_round = [&](const controller::RoundReport& report,
                       const std::vector<controller::AvailableClient>& selected) -> Result<void> {
    std::vector<uint32_t>& users = selections.emplace_back();
    for (const controller::AvailableClient& c : selected) users.push_back(index.at(c.client));
    return record(report);
  };
  auto failed = [&](const Error& e) -> Result<void> {
    if (auto f = pool->failure()) return MakeError(f->code, "a simulated client failed: " + f->reason);
    return e;
  };
  sj.on_failure = failed;

  // The rounds but the last: selected by the controller's service.
  TRIBUTARY_ASSIGN_OR_RETURN(LocalRuntime rt, StartLocalRuntime(job, options, segment, std::move(sj)));
  pool = std::make_unique<ClientPool>(job, rt.gateways, personal_bytes, work);
  TRIBUTARY_TRY(pool->Start());
  Result<void> ran = WaitForCheckIns(rt.controller(), job.clients);
  if (ran) ran = rt.service->WaitForJob(job.name);
  // The last round: every user, each scored with its personal model.
  if (ran) {
    std::vector<uint32_t> everyone(job.clients);
    std::iota(everyone.begin(), everyone.end(), 0u);
    auto report = rt.controller().RunRound(job.name, ByNode(everyone, job.nodes));
    ran = report ? record(report.value()) : failed(report.error());
  }
  // The service stops first (no hook runs after this), then the clients,
  // then the node agents (when `rt` goes).
  rt.service.reset();
  pool.reset();
  TRIBUTARY_TRY(ran);
  result.semipfl.users = final_scores;
  Summarize(result.semipfl);
  double bytes = 0;
  for (size_t i = 0; i + 1 < result.rounds.size(); ++i) {
    bytes += static_cast<double>(result.rounds[i].bytes_up + result.rounds[i].bytes_down);
  }
  result.semipfl_bytes_per_round = result.rounds.size() > 1 ? bytes / static_cast<double>(result.rounds.size() - 1) : 0;

  // Baselines on the same users and selections.
  UseComputeThreads(AllCores());
  result.local_only = LocalOnly(data, arch, job);
  result.fedavg_labelled = FedAvgLabelled(data, arch, job, selections);
  torch::nn::Sequential classifier = MakeClassifier(arch);
  result.fedavg_bytes_per_round = 2.0 * static_cast<double>(ParameterBytes(*classifier)) * job.clients_per_round;

  out << std::fixed << std::setprecision(4) << "mean per-user weighted F1 (accuracy) over " << job.clients
      << " users, " << job.label_ratio * 100 << "% labels:\n"
      << "  SemiPFL          " << result.semipfl.mean_weighted_f1 << " (" << result.semipfl.mean_accuracy << ")\n"
      << "  FedAvg labelled  " << result.fedavg_labelled.mean_weighted_f1 << " (" << result.fedavg_labelled.mean_accuracy
      << ")\n"
      << "  local only       " << result.local_only.mean_weighted_f1 << " (" << result.local_only.mean_accuracy << ")\n"
      << std::setprecision(0) << "bytes per round: SemiPFL " << result.semipfl_bytes_per_round << ", FedAvg "
      << result.fedavg_bytes_per_round << "\n"
      << std::setprecision(4) << "summary semipfl_f1=" << result.semipfl.mean_weighted_f1
      << " fedavg_f1=" << result.fedavg_labelled.mean_weighted_f1 << " local_f1=" << result.local_only.mean_weighted_f1
      << " semipfl_acc=" << result.semipfl.mean_accuracy << " fedavg_acc=" << result.fedavg_labelled.mean_accuracy
      << " local_acc=" << result.local_only.mean_accuracy << std::setprecision(0)
      << " semipfl_bytes=" << result.semipfl_bytes_per_round << " fedavg_bytes=" << result.fedavg_bytes_per_round << "\n";
  TRIBUTARY_TRY(WriteResults(options.run_dir, job, data, result));
  return result;
}

}  // namespace tributary::simulation
