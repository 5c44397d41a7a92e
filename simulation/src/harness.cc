#include "harness.h"

#include <dlfcn.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

namespace tributary::simulation {

void UseComputeThreads(int threads) {
  at::set_num_threads(threads);
  using SetThreads = void (*)(int);
  static const auto set_blas_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set_blas_threads != nullptr) set_blas_threads(threads);
}

// Which BLAS LibTorch calls. OpenBLAS's serial build gave wrong numbers
// with two workers training at once (a test job diverged), so it is refused
// for more than one; the reference BLAS is only slow.
Result<void> CheckBlas(uint32_t workers) {
  using GetConfig = char* (*)();
  using GetParallel = int (*)();
  const auto config = reinterpret_cast<GetConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  const auto parallel = reinterpret_cast<GetParallel>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  if (config == nullptr || parallel == nullptr) {
    spdlog::warn("simulation: the BLAS under LibTorch is not OpenBLAS; if it is Debian's reference libblas3, clients "
                 "train about 2x slower (scripts/setup installs libopenblas0-pthread)");
    return Ok();
  }
  if (parallel() == 0 && workers > 1) {
    return MakeError(ErrorCode::kConfig, std::string(config()) +
                                             " is OpenBLAS's serial build, not safe for " + std::to_string(workers) +
                                             " workers training at once: install libopenblas0-pthread, or set "
                                             "federation.workers: 1");
  }
  spdlog::info("simulation: BLAS {}", config());
  return Ok();
}

int AllCores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

std::string ClientId(uint32_t c) { return "client-" + std::to_string(c); }
std::string NodeId(uint32_t n) { return "sim" + std::to_string(getpid()) + "-" + std::to_string(n); }

Result<LocalRuntime> StartLocalRuntime(const SimulationJob& job, const SimulationOptions& options,
                                       uint64_t segment_bytes, controller::ServiceJob service_job) {
  TRIBUTARY_TRY(CheckBlas(job.workers));
  LocalRuntime rt;
  controller::ControllerOptions co;
  co.checkpoint_dir = options.run_dir + "/checkpoints";
  co.client_ttl = std::chrono::hours(24 * 365);
  std::vector<controller::ServiceJob> jobs;
  jobs.push_back(std::move(service_job));
  TRIBUTARY_ASSIGN_OR_RETURN(rt.service, controller::ControllerService::Start(co, std::move(jobs), ""));
  spdlog::info("simulation: {} node agents, gateways on loopback without authentication (simulation only)", job.nodes);
  for (uint32_t n = 0; n < job.nodes; ++n) {
    node::NodeOptions o;
    o.node_id = NodeId(n);
    o.store = {"tributary." + NodeId(n), segment_bytes, 1u << 16};
    o.dataplane = dataplane::ParseDataPlaneMode(job.dataplane).value();
    o.binary = options.tributary_binary;
    o.function_liveness = std::chrono::milliseconds(job.function_liveness_ms);
    o.gateway.task_poll_interval = std::chrono::milliseconds(100);
    TRIBUTARY_ASSIGN_OR_RETURN(auto service, node::NodeService::Start(o, {.endpoint = rt.controller().endpoint()}));
    rt.nodes.push_back(std::move(service));
  }
  TRIBUTARY_TRY(rt.controller().WaitForNodes(job.nodes, std::chrono::seconds(30)));
  spdlog::info("simulation: data plane {}", rt.nodes.front()->agent().dataplane_reason());
  for (auto& n : rt.nodes) rt.gateways.push_back(n->agent().gateway_endpoint());
  // Where an outside client (any language, docs/protocol.md) can join the simulated federation.
  for (uint32_t n = 0; n < job.nodes; ++n) {
    spdlog::info("simulation: node {} gateway {} (plaintext) serves clients {} with id c % {} == {}", NodeId(n),
                 rt.gateways[n], ClientId(0).substr(0, ClientId(0).size() - 1) + "<c>", job.nodes, n);
  }
  spdlog::info("simulation: client ids {} .. {}", ClientId(0), ClientId(job.clients - 1));
  return rt;
}

controller::RoundSchedule ScheduleOf(const SimulationJob& job, uint64_t rounds) {
  controller::RoundSchedule s;
  s.rounds = rounds;
  s.clients_per_round = job.clients_per_round;
  s.min_clients = job.clients_per_round;
  s.start_after = job.clients;
  s.seed = job.seed;
  return s;
}

Result<void> WaitForCheckIns(const controller::Controller& c, uint32_t clients) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (size_t n = c.AvailableClients().size(); n < clients; n = c.AvailableClients().size()) {
    if (std::chrono::steady_clock::now() > give_up) {
      return MakeError(ErrorCode::kIo, std::to_string(n) + " of " + std::to_string(clients) +
                                           " simulated clients checked in within 60 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Ok();
}

std::map<std::string, std::vector<std::string>> ByNode(const std::vector<uint32_t>& clients, uint32_t nodes) {
  std::map<std::string, std::vector<std::string>> out;
  for (uint32_t c : clients) out[NodeId(c % nodes)].push_back(ClientId(c));
  return out;
}

ClientPool::ClientPool(const SimulationJob& job, std::vector<std::string> gateways, uint64_t model_bytes,
                       ClientWork work)
    : job_(job), gateways_(std::move(gateways)), model_bytes_(model_bytes), work_(std::move(work)),
      newest_round_(gateways_.size(), 0), next_turn_(gateways_.size(), Clock::now()) {
  pace_ = std::chrono::milliseconds(std::max<int64_t>(50, job.clients * 2));
  const uint64_t per_node = (job.clients + gateways_.size() - 1) / gateways_.size();
  turn_spacing_ = pace_ / std::max<uint64_t>(1, per_node);
  for (uint32_t c = 0; c < job.clients; ++c) due_.push({Clock::now(), c});
}

Result<void> ClientPool::Start() {
  TRIBUTARY_ASSIGN_OR_RETURN(const client::Compression compression, client::ParseCompression(job_.compression));
  for (uint32_t w = 0; w < job_.workers; ++w) {
    Worker worker;
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
  UseComputeThreads(1);
  for (size_t w = 0; w < workers_.size(); ++w) threads_.emplace_back([this, w] { Serve(w); });
  return Ok();
}

ClientPool::~ClientPool() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

ClientTally ClientPool::TakeTally() {
  std::lock_guard lock(mu_);
  return std::exchange(tally_, ClientTally{});
}

std::optional<Error> ClientPool::failure() {
  std::lock_guard lock(mu_);
  return failure_;
}

void ClientPool::Serve(size_t w) {
  at::set_num_threads(1);  // the workers are the parallelism (LibTorch's count is per thread)
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
    const Clock::time_point next = Visit(w, c);
    {
      std::lock_guard lock(mu_);
      due_.push({next, c});
    }
    wake_.notify_one();
  }
}

ClientPool::Clock::time_point ClientPool::Visit(size_t w, uint32_t c) {
  // Not at once after an answer that leaves the client idle.
  constexpr std::chrono::milliseconds kMinIdle{50};
  const size_t node = c % workers_[w].sessions.size();
  client::Session& s = *workers_[w].sessions[node];
  s.transport().set_client_id(ClientId(c));
  uint64_t known;
  {
    std::lock_guard lock(mu_);
    known = newest_round_[node];
  }
  auto poll = s.NextTask();
  if (!poll) return Fail(poll.error());
  if (!poll.value().task) {
    std::lock_guard lock(mu_);
    // The node's round opened while this client asked, out of the queue the
    // wake-up went through: it asks again at once.
    if (newest_round_[node] > known) return Clock::now();
    return NextTurnLocked(node, Clock::now() + std::max(kMinIdle, poll.value().retry_after));
  }
  const client::Task& task = *poll.value().task;
  bool woke = false;
  {
    std::lock_guard lock(mu_);
    if (task.round > newest_round_[node]) {
      newest_round_[node] = task.round;
      WakeNodeLocked(node);
      woke = true;
    }
  }
  if (woke) wake_.notify_all();
  auto model = s.FetchModel(task);
  auto idle = [&] {
    std::lock_guard lock(mu_);
    return NextTurnLocked(node, Clock::now() + kMinIdle);
  };
  if (!model) return model.error().code == ErrorCode::kReplay ? idle() : Fail(model.error());
  auto fit = work_(c, w, task, model.value());
  if (!fit) return Fail(fit.error());
  auto sent = s.Submit(task, fit.value());
  if (!sent && (sent.error().code == ErrorCode::kRoundClosed || sent.error().code == ErrorCode::kReplay)) return idle();
  if (!sent) return Fail(sent.error());
  std::lock_guard lock(mu_);
  tally_.bytes_up += sent.value().bytes_sent;
  tally_.bytes_down += model_bytes_;
  tally_.updates += 1;
  auto loss = fit.value().metrics.find("train_loss");
  if (loss != fit.value().metrics.end()) tally_.train_loss += loss->second;
  tally_.last_upload = Clock::now();
  return NextTurnLocked(node, Clock::now() + kMinIdle);
}

ClientPool::Clock::time_point ClientPool::NextTurnLocked(size_t node, Clock::time_point not_before) {
  next_turn_[node] = std::max(not_before, next_turn_[node] + turn_spacing_);
  return next_turn_[node];
}

void ClientPool::WakeNodeLocked(size_t node) {
  std::vector<Due> queued;
  queued.reserve(due_.size());
  for (; !due_.empty(); due_.pop()) queued.push_back(due_.top());
  const Clock::time_point now = Clock::now();
  // Same time for all woken: ties go to the lower client index.
  for (const Due& d : queued) {
    const bool woken = d.second % gateways_.size() == node;
    due_.push({woken ? std::min(d.first, now) : d.first, d.second});
  }
}

ClientPool::Clock::time_point ClientPool::Fail(const Error& e) {
  std::lock_guard lock(mu_);
  if (!failure_) failure_ = e;
  return Clock::now() + pace_;
}

}  // namespace tributary::simulation
