#include "tributary/simulation/federation.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <iomanip>
#include <mutex>
#include <queue>
#include <random>
#include <thread>
#include <unistd.h>

#include "tributary/client/session.h"
#include "tributary/client/torch/module_client.h"
#include "tributary/controller/controller.h"
#include "tributary/node/node_service.h"
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

std::string ClientId(uint32_t c) { return "client-" + std::to_string(c); }
// Unique on the machine: node ids name the data plane's sockets and segments.
std::string NodeId(uint32_t n) { return "sim" + std::to_string(getpid()) + "-" + std::to_string(n); }

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

// What the clients did in a round, for the metrics.
struct ClientTally {
  uint64_t bytes_up = 0, bytes_down = 0, updates = 0;
  double train_loss = 0;
  Clock::time_point last_upload{};
};

// The simulated clients: `workers` threads serving every client in turn.
class ClientPool {
 public:
  ClientPool(const config::SimulationJob& job, const Dataset& data, std::vector<std::vector<int64_t>> partition,
             std::vector<std::string> gateways, uint64_t model_bytes)
      : job_(job), data_(data), partition_(std::move(partition)), gateways_(std::move(gateways)),
        model_bytes_(model_bytes) {
    // Polls are paced so that all idle clients together ask about 500 times a second.
    pace_ = std::chrono::milliseconds(std::max<int64_t>(50, job.clients * 2));
    for (uint32_t c = 0; c < job.clients; ++c) due_.push({Clock::now(), c});
  }

  Result<void> Start() {
    TRIBUTARY_ASSIGN_OR_RETURN(const client::Compression compression, client::ParseCompression(job_.compression));
    for (uint32_t w = 0; w < job_.workers; ++w) {
      Worker worker;
      TRIBUTARY_ASSIGN_OR_RETURN(worker.model, MakeModel(job_.model, job_.seed));
      for (const std::string& g : gateways_) {
        client::SessionOptions o;
        o.endpoint = g;
        o.client_id = ClientId(0);
        o.request_timeout = std::chrono::seconds(60);
        TRIBUTARY_ASSIGN_OR_RETURN(auto s, client::Session::Connect(o, compression));
        worker.sessions.push_back(std::move(s));
      }
      workers_.push_back(std::move(worker));
    }
    for (Worker& w : workers_) threads_.emplace_back([this, &w] { Serve(w); });
    return Ok();
  }

  ~ClientPool() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  ClientTally TakeTally() {
    std::lock_guard lock(mu_);
    return std::exchange(tally_, ClientTally{});
  }

  std::optional<Error> failure() {
    std::lock_guard lock(mu_);
    return failure_;
  }

 private:
  struct Worker {
    torch::nn::Sequential model{nullptr};
    std::vector<std::unique_ptr<client::Session>> sessions;  // one per node
  };
  using Due = std::pair<Clock::time_point, uint32_t>;

  void Serve(Worker& w) {
    torch::set_num_threads(1);  // the workers are the parallelism
    for (;;) {
      uint32_t c;
      {
        std::unique_lock lock(mu_);
        for (;;) {
          if (stop_) return;
          if (!due_.empty() && due_.top().first <= Clock::now()) break;
          if (due_.empty()) {
            wake_.wait(lock);
          } else {
            wake_.wait_until(lock, due_.top().first);
          }
        }
        c = due_.top().second;
        due_.pop();
      }
      const auto next = Visit(w, c);
      {
        std::lock_guard lock(mu_);
        due_.push({Clock::now() + next, c});
      }
      wake_.notify_one();
    }
  }

  // Asks for client c's task and, if there is one, does it; returns when to ask again.
  std::chrono::milliseconds Visit(Worker& w, uint32_t c) {
    client::Session& s = *w.sessions[c % w.sessions.size()];
    s.transport().set_client_id(ClientId(c));
    auto poll = s.NextTask();
    if (!poll) return Fail(poll.error());
    if (!poll.value().task) return std::max(pace_, poll.value().retry_after);
    const client::Task& task = *poll.value().task;
    auto global = s.FetchModel(task);
    if (!global) return global.error().code == ErrorCode::kReplay ? pace_ : Fail(global.error());
    const torch::Tensor idx = torch::from_blob(partition_[c].data(), {static_cast<int64_t>(partition_[c].size())},
                                               torch::kLong);
    ta::TrainOptions o;
    o.optimizer = job_.optimizer == "adam" ? ta::Optimizer::kAdam : ta::Optimizer::kSgd;
    o.momentum = job_.momentum;
    o.seed = job_.seed * 1'000'003 + c;
    ta::ModuleClient<torch::nn::Sequential> trainer(w.model, data_.train_x.index_select(0, idx),
                                                    data_.train_y.index_select(0, idx), CrossEntropy, o);
    auto fit = trainer.Fit(global.value(), task.config);
    if (!fit) return Fail(fit.error());
    auto sent = s.Submit(task, fit.value());
    if (!sent && (sent.error().code == ErrorCode::kRoundClosed || sent.error().code == ErrorCode::kReplay)) return pace_;
    if (!sent) return Fail(sent.error());
    std::lock_guard lock(mu_);
    tally_.bytes_up += sent.value().bytes_sent;
    tally_.bytes_down += model_bytes_;
    tally_.updates += 1;
    tally_.train_loss += fit.value().metrics.at("train_loss");
    tally_.last_upload = Clock::now();
    return pace_;
  }

  std::chrono::milliseconds Fail(const Error& e) {
    std::lock_guard lock(mu_);
    if (!failure_) failure_ = e;
    return pace_;
  }

  const config::SimulationJob& job_;
  const Dataset& data_;
  std::vector<std::vector<int64_t>> partition_;
  std::vector<std::string> gateways_;
  uint64_t model_bytes_;
  std::chrono::milliseconds pace_;
  std::vector<Worker> workers_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::priority_queue<Due, std::vector<Due>, std::greater<>> due_;
  bool stop_ = false;
  ClientTally tally_;
  std::optional<Error> failure_;
};

// Runs between rounds, when the client workers are idle: it may use every core.
std::pair<double, double> Evaluate(torch::nn::Sequential& model, const Dataset& d) {
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
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
  at::set_num_threads(1);  // back to what the workers train with
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

}  // namespace

Result<std::vector<RoundMetrics>> RunSimulation(const config::SimulationJob& job, const SimulationOptions& options,
                                                std::ostream& out) {
  // Data and partition.
  Dataset data;
  if (job.dataset == "fashion-mnist") {
    TRIBUTARY_ASSIGN_OR_RETURN(data, LoadFashionMnist(job.data_dir, options.cache_dir));
  } else {
    data = MakeSynthetic(job.synthetic_samples, job.seed);
  }
  TRIBUTARY_ASSIGN_OR_RETURN(auto partition, Partition(data.train_y, data.classes, job.clients,
                                                       {job.partition, job.alpha, job.shards_per_client}, job.seed));

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

  // Controller and node agents.
  controller::ControllerOptions co;
  co.checkpoint_dir = options.run_dir + "/checkpoints";
  TRIBUTARY_ASSIGN_OR_RETURN(auto controller, controller::Controller::Start(co));
  std::vector<std::unique_ptr<node::NodeService>> nodes;
  const uint64_t per_node = (job.clients_per_round + job.nodes - 1) / job.nodes;
  const uint64_t segment = std::max<uint64_t>(256ull << 20, spec.payload_bytes() * (2 * per_node + 16) + (64ull << 20));
  spdlog::info("simulation: {} node agents, gateways on loopback without authentication (simulation only)", job.nodes);
  for (uint32_t n = 0; n < job.nodes; ++n) {
    node::NodeOptions o;
    o.node_id = NodeId(n);
    o.store = {"tributary." + NodeId(n), segment, 1u << 16};
    o.dataplane = dataplane::ParseDataPlaneMode(job.dataplane).value();
    o.binary = options.tributary_binary;
    o.gateway.task_poll_interval = std::chrono::milliseconds(100);
    TRIBUTARY_ASSIGN_OR_RETURN(auto service, node::NodeService::Start(o, controller->endpoint()));
    nodes.push_back(std::move(service));
  }
  TRIBUTARY_TRY(controller->WaitForNodes(job.nodes, std::chrono::seconds(30)));
  spdlog::info("simulation: data plane {}", nodes.front()->agent().dataplane_reason());
  std::vector<std::string> gateways;
  for (auto& n : nodes) gateways.push_back(n->agent().gateway_endpoint());

  controller::JobSpec js;
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
  TRIBUTARY_TRY(controller->AddJob(js));

  ClientPool pool(job, data, std::move(partition), gateways, spec.payload_bytes());
  TRIBUTARY_TRY(pool.Start());
  TRIBUTARY_ASSIGN_OR_RETURN(torch::nn::Sequential evaluator, MakeModel(job.model, job.seed));

  std::mt19937_64 rng(job.seed ^ 0x5e1ec7ull);
  std::vector<uint32_t> everyone(job.clients);
  std::iota(everyone.begin(), everyone.end(), 0u);
  std::vector<RoundMetrics> rounds;
  for (uint32_t r = 1; r <= job.rounds; ++r) {
    // Selection: a seeded partial shuffle, then clients spread over the nodes.
    for (uint32_t i = 0; i < job.clients_per_round; ++i) {
      std::swap(everyone[i], everyone[i + std::uniform_int_distribution<uint32_t>(0, job.clients - 1 - i)(rng)]);
    }
    std::map<std::string, std::vector<std::string>> by_node;
    for (uint32_t i = 0; i < job.clients_per_round; ++i) {
      by_node[NodeId(everyone[i] % job.nodes)].push_back(ClientId(everyone[i]));
    }
    const auto t0 = Clock::now();
    auto report = controller->RunRound(job.name, by_node);
    const auto t1 = Clock::now();
    if (!report) {
      if (auto f = pool.failure()) return MakeError(f->code, "a simulated client failed: " + f->reason);
      return std::move(report).error();
    }
    const ClientTally tally = pool.TakeTally();
    TRIBUTARY_ASSIGN_OR_RETURN(std::vector<float> model, controller->Model(job.name));
    TRIBUTARY_TRY(ta::LoadParameters(*evaluator, Unflatten(spec, model)));
    const auto [accuracy, loss] = Evaluate(evaluator, data);
    const auto t2 = Clock::now();
    RoundMetrics m;
    m.round = report.value().round;
    m.accuracy = accuracy;
    m.loss = loss;
    m.train_loss = tally.updates ? tally.train_loss / static_cast<double>(tally.updates) : 0;
    m.round_s = std::chrono::duration<double>(t1 - t0).count();
    m.clients_s = tally.updates ? std::chrono::duration<double>(std::max(t0, tally.last_upload) - t0).count() : m.round_s;
    m.aggregation_s = std::max(0.0, m.round_s - m.clients_s);
    m.evaluation_s = std::chrono::duration<double>(t2 - t1).count();
    m.updates = report.value().updates;
    m.updates_per_s = static_cast<double>(m.updates) / m.round_s;
    m.bytes_up = tally.bytes_up;
    m.bytes_down = tally.bytes_down;
    for (auto& n : nodes) {
      const node::NodeStats s = n->agent().Stats();
      m.functions_live += s.functions.live;
      m.cold_starts += s.functions.cold_starts;
      m.warm_reuses += s.functions.warm_reuses;
    }
    rounds.push_back(m);
    Print(out, m, job.rounds, options.progress_bar);
  }
  TRIBUTARY_ASSIGN_OR_RETURN(std::vector<float> final_values, controller->Model(job.name));
  TRIBUTARY_ASSIGN_OR_RETURN(uint64_t version, controller->ModelVersion(job.name));
  FinalModel final_model{version, {}, std::move(final_values)};
  for (const auto& t : spec.tensors()) final_model.tensors.emplace_back(t.name, t.shape);
  TRIBUTARY_TRY(WriteReport(options.run_dir, job, rounds, final_model));
  return rounds;
}

}  // namespace tributary::simulation
