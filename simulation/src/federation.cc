#include "tributary/simulation/federation.h"

#include <iomanip>
#include <tuple>
#include <thread>

#include "harness.h"
#include "tributary/client/torch/module_client.h"
#include "tributary/simulation/dataset.h"
#include "tributary/simulation/models.h"
#include "tributary/simulation/report.h"

namespace tributary::simulation {
namespace {

namespace ta = client::torch_adapter;
using Clock = std::chrono::steady_clock;

torch::Tensor CrossEntropy(const torch::Tensor& out, const torch::Tensor& y) {
  return torch::nn::functional::cross_entropy(out, y);
}

// Flat f32 values in the model's layout -> SDK parameters.
client::Parameters Unflatten(const agg::ModelSpec& spec, const std::vector<float>& flat) {
  client::Parameters p;
  size_t at = 0;
  for (const auto& t : spec.tensors()) {
    p.push_back({t.name, t.shape, std::vector<float>(flat.begin() + static_cast<int64_t>(at),
                                                     flat.begin() + static_cast<int64_t>(at + t.elements()))});
    at += t.elements();
  }
  return p;
}

// Runs between rounds, when the client workers are idle: it may use every core.
std::pair<double, double> Evaluate(torch::nn::Sequential& model, const Dataset& d) {
  UseComputeThreads(AllCores());
  torch::InferenceMode inference;
  model->eval();
  double loss = 0;
  int64_t correct = 0;
  const int64_t n = d.test_x.size(0);
  for (int64_t at = 0; at < n; at += 1000) {
    const torch::Tensor x = d.test_x.slice(0, at, std::min(n, at + 1000)), y = d.test_y.slice(0, at, std::min(n, at + 1000));
    const torch::Tensor out = model->forward(x);
    loss += torch::nn::functional::cross_entropy(out, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)).item<double>();
    correct += out.argmax(1).eq(y).sum().item<int64_t>();
  }
  UseComputeThreads(1);  // back to what the workers train with
  return {static_cast<double>(correct) / static_cast<double>(n), loss / static_cast<double>(n)};
}

void Print(std::ostream& out, const RoundMetrics& m, uint32_t rounds, bool bar) {
  std::ostringstream line;
  line << std::fixed << "round " << std::setw(3) << m.round << "/" << rounds << "  accuracy " << std::setprecision(4)
       << m.accuracy << "  loss " << std::setprecision(4) << m.loss << "  round " << std::setprecision(2) << m.round_s
       << " s  " << std::setprecision(1) << m.updates_per_s << " updates/s";
  if (bar) {
    const int width = 24, done = static_cast<int>(width * m.round / rounds);
    out << "\r[" << std::string(static_cast<size_t>(done), '#') << std::string(static_cast<size_t>(width - done), '-')
        << "] " << line.str() << std::flush;
    if (m.round == rounds) out << "\n";
  } else {
    out << line.str() << std::endl;  // a line per round, also into a pipe
  }
}

// The counters that are cumulative over a run, across resumes, as the last
// logged round left them; every other field 0.
RoundMetrics CountersOf(const std::vector<RoundMetrics>& rounds) {
  RoundMetrics m;
  if (rounds.empty()) return m;
  m.cold_starts = rounds.back().cold_starts;
  m.warm_reuses = rounds.back().warm_reuses;
  m.function_deaths = rounds.back().function_deaths;
  m.liveness_kills = rounds.back().liveness_kills;
  m.rebuilds = rounds.back().rebuilds;
  return m;
}

}  // namespace

Result<std::vector<RoundMetrics>> RunSimulation(const SimulationJob& job, const SimulationOptions& options,
                                                std::ostream& out) {
  // Data and partition.
  Dataset data;
  if (job.dataset == "fashion-mnist") {
    TRIBUTARY_ASSIGN_OR_RETURN(data, LoadFashionMnist(job.data_dir, options.cache_dir));
  } else {
    data = MakeSynthetic(job.synthetic_samples, job.seed);
  }
  TRIBUTARY_ASSIGN_OR_RETURN(auto partition, Partition(data.train_y, data.classes, job.clients,
                                                       {job.partition, job.alpha, job.shards_per_client, job.samples_per_client}, job.seed));

  // The model and its layout.
  TRIBUTARY_ASSIGN_OR_RETURN(torch::nn::Sequential global, MakeModel(job.model, job.seed));
  const client::Parameters initial = ta::ToParameters(*global);
  std::vector<agg::TensorSpec> tensors;
  std::vector<float> flat;
  for (const auto& t : initial) {
    tensors.push_back({t.name, agg::DType::kF32, t.shape});
    flat.insert(flat.end(), t.values.begin(), t.values.end());
  }
  TRIBUTARY_ASSIGN_OR_RETURN(agg::ModelSpec spec, agg::ModelSpec::Create(tensors));

  TRIBUTARY_TRY(ClaimRunDir(options.run_dir, job));

  // Each worker trains with its own model; a client is its index list.
  std::vector<torch::nn::Sequential> models;
  for (uint32_t w = 0; w < job.workers; ++w) {
    TRIBUTARY_ASSIGN_OR_RETURN(torch::nn::Sequential m, MakeModel(job.model, job.seed));
    models.push_back(m);
  }
  ClientWork train = [&](uint32_t c, size_t w, const client::Task& task,
                         const client::Parameters& model) -> Result<client::FitResult> {
    const torch::Tensor idx = torch::from_blob(partition[c].data(), {static_cast<int64_t>(partition[c].size())},
                                               torch::kLong);
    ta::TrainOptions o;
    o.optimizer = job.optimizer == "adam" ? ta::Optimizer::kAdam : ta::Optimizer::kSgd;
    o.momentum = job.momentum;
    o.seed = (job.seed * 1'000'003 + c) * 1'000'033 + task.round;  // (seed, client, round): resumable
    ta::ModuleClient<torch::nn::Sequential> trainer(models[w], data.train_x.index_select(0, idx),
                                                    data.train_y.index_select(0, idx), CrossEntropy, o);
    return trainer.Fit(model, task.config);
  };
  TRIBUTARY_ASSIGN_OR_RETURN(torch::nn::Sequential evaluator, MakeModel(job.model, job.seed));
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensor_layout;
  for (const auto& t : spec.tensors()) tensor_layout.emplace_back(t.name, t.shape);

  // The controller's service runs the rounds; after each one, the hook
  // evaluates the new model and writes the metrics and the report. The
  // clients (`pool`, started below) exist before the first round can run
  // (it waits for their check-ins) and outlive the last hook (the job is
  // waited for).
  std::unique_ptr<ClientPool> pool;
  std::vector<RoundMetrics> rounds;
  RoundMetrics before;
  std::vector<std::unique_ptr<node::NodeService>>* nodes = nullptr;
  controller::Controller* controller = nullptr;
  controller::ServiceJob sj;
  sj.source = options.run_dir;
  sj.schedule = ScheduleOf(job, job.rounds);
  sj.log_rounds = false;
  controller::JobSpec& js = sj.spec;
  js.id = job.name;
  js.model = spec;
  js.strategy = job.strategy;
  js.initial_model = flat;
  js.fan_in = job.fan_in;
  js.deadline = std::chrono::seconds(job.deadline_s);
  js.client_config = {{"lr", job.lr},
                      {"local_epochs", static_cast<int64_t>(job.local_epochs)},
                      {"batch_size", static_cast<int64_t>(job.batch_size)},
                      {"proximal_mu", job.proximal_mu}};
  sj.after_round = [&](const controller::RoundReport& report,
                       const std::vector<controller::AvailableClient>&) -> Result<void> {
    const auto t1 = Clock::now();
    const auto t0 = t1 - std::chrono::duration_cast<Clock::duration>(report.seconds);
    const ClientTally tally = pool->TakeTally();
    TRIBUTARY_ASSIGN_OR_RETURN(std::vector<float> model, controller->Model(job.name));
    TRIBUTARY_TRY(ta::LoadParameters(*evaluator, Unflatten(spec, model)));
    const auto [accuracy, loss] = Evaluate(evaluator, data);
    RoundMetrics m = before;
    m.round = report.round;
    m.accuracy = accuracy;
    m.loss = loss;
    m.train_loss = tally.updates ? tally.train_loss / static_cast<double>(tally.updates) : 0;
    m.round_s = report.seconds.count();
    m.clients_s = tally.updates ? std::chrono::duration<double>(std::max(t0, tally.last_upload) - t0).count() : m.round_s;
    m.aggregation_s = std::max(0.0, m.round_s - m.clients_s);
    m.evaluation_s = std::chrono::duration<double>(Clock::now() - t1).count();
    m.updates = report.updates;
    m.updates_per_s = static_cast<double>(m.updates) / m.round_s;
    m.bytes_up = tally.bytes_up;
    m.bytes_down = tally.bytes_down;
    for (auto& n : *nodes) {
      const node::NodeStats s = n->agent().Stats();
      m.functions_live += s.functions.live;
      m.cold_starts += s.functions.cold_starts;
      m.warm_reuses += s.functions.warm_reuses;
      m.function_deaths += s.functions.deaths;
      m.liveness_kills += s.functions.liveness_kills;
      m.rebuilds += s.rebuilds;
    }
    TRIBUTARY_TRY(AppendRound(options.run_dir, m));
    rounds.push_back(m);
    Print(out, m, job.rounds, options.progress_bar);
    return WriteReport(options.run_dir, job, rounds, {report.model_version, tensor_layout, std::move(model)});
  };
  // A simulated round that fails is a fault to report, not to retry.
  sj.on_failure = [&](const Error& e) -> Result<void> {
    if (auto f = pool->failure()) return MakeError(f->code, "a simulated client failed: " + f->reason);
    return e;
  };

  // Controller and node agents; the job resumes from the run directory's checkpoint, if it has one.
  const uint64_t per_node = (job.clients_per_round + job.nodes - 1) / job.nodes;
  const uint64_t segment = std::max<uint64_t>(256ull << 20, spec.payload_bytes() * (2 * per_node + 16) + (64ull << 20));
  TRIBUTARY_ASSIGN_OR_RETURN(LocalRuntime rt, StartLocalRuntime(job, options, segment, std::move(sj)));
  controller = &rt.controller();
  nodes = &rt.nodes;
  TRIBUTARY_ASSIGN_OR_RETURN(const uint64_t done, controller->ModelVersion(job.name));
  if (done > job.rounds) {
    return MakeError(ErrorCode::kConfig, options.run_dir + " already holds " + std::to_string(done) +
                                             " rounds, more than the job's " + std::to_string(job.rounds));
  }
  TRIBUTARY_ASSIGN_OR_RETURN(rounds, LoggedRounds(options.run_dir, done));
  if (rounds.size() + 1 < done) {
    return MakeError(ErrorCode::kConfig, options.run_dir + "/metrics.jsonl logs " + std::to_string(rounds.size()) +
                                             " rounds but its checkpoint holds " + std::to_string(done));
  }
  if (done > 0) out << "resuming " << options.run_dir << " after round " << done << "\n";
  if (rounds.size() < done) {
    // Killed between the checkpoint of its last round and that round's log
    // line: the model is known, so is its score; times and counts are not (0).
    TRIBUTARY_ASSIGN_OR_RETURN(std::vector<float> model, controller->Model(job.name));
    TRIBUTARY_TRY(ta::LoadParameters(*evaluator, Unflatten(spec, model)));
    RoundMetrics m = CountersOf(rounds);
    m.round = done;
    std::tie(m.accuracy, m.loss) = Evaluate(evaluator, data);
    TRIBUTARY_TRY(AppendRound(options.run_dir, m));
    rounds.push_back(m);
  }
  before = CountersOf(rounds);
  if (done == job.rounds) {  // nothing to run: the report of the run as it stands
    TRIBUTARY_ASSIGN_OR_RETURN(std::vector<float> values, controller->Model(job.name));
    TRIBUTARY_TRY(WriteReport(options.run_dir, job, rounds, {done, tensor_layout, std::move(values)}));
    return rounds;
  }

  // The clients check in, and the rounds run.
  pool = std::make_unique<ClientPool>(job, rt.gateways, spec.payload_bytes(), train);
  TRIBUTARY_TRY(pool->Start());
  Result<void> checked_in = WaitForCheckIns(*controller, job.clients);
  Result<void> finished = checked_in ? rt.service->WaitForJob(job.name) : checked_in;
  // The round loop stops first (no hook runs after this), then the clients,
  // then the node agents (when `rt` goes).
  rt.service.reset();
  pool.reset();
  TRIBUTARY_TRY(finished);
  return rounds;
}

}  // namespace tributary::simulation
