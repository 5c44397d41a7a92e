#include "round_bench.h"

#include "layered_model.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <random>
#include <sstream>
#include <thread>

#include "tributary/client/gateway_session.h"
#include "tributary/controller/controller.h"

namespace tributary::bench {
namespace {

using Clock = std::chrono::steady_clock;

// CPU seconds of `pid` and its live children, plus children it already reaped.
double ProcessTreeCpuSeconds(pid_t pid) {
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  double total = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream f(entry.path() / "stat");
    std::string line;
    if (!f || !std::getline(f, line)) continue;
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string state;
    long ppid = 0, skip = 0;
    unsigned long utime = 0, stime = 0;
    long cutime = 0, cstime = 0;
    rest >> state >> ppid;
    for (int i = 0; i < 9; ++i) rest >> skip;  // pgrp .. cmajflt
    rest >> utime >> stime >> cutime >> cstime;
    const long self = std::strtol(entry.path().filename().c_str(), nullptr, 10);
    if (self == pid) total += static_cast<double>(utime + stime + cutime + cstime) / tick;
    if (ppid == pid) total += static_cast<double>(utime + stime) / tick;
  }
  return total;
}

struct Measured {
  double round_s = 0, tail_s = 0, node_cpu_s = 0;
  std::vector<float> model;
};

class BenchNode {
 public:
  static Result<std::unique_ptr<BenchNode>> Start(const RoundBenchOptions& o, const std::string& transport) {
    auto n = std::unique_ptr<BenchNode>(new BenchNode());
    controller::ControllerOptions co;
    TRIBUTARY_ASSIGN_OR_RETURN(n->controller_, controller::Controller::Start(co));
    n->id_ = "bench-" + transport + "-" + std::to_string(getpid());
    n->config_ = std::filesystem::temp_directory_path() / (n->id_ + ".yaml");
    std::ofstream(n->config_) << "node_id: " << n->id_ << "\nstore:\n  segment_bytes: " << o.segment_bytes
                              << "\n  max_blocks: 65536\nkeep_alive_ms: 600000\nmetrics_bind: \"\"\n"
                              << "aggregation_transport: " << transport << "\ngateway_security:\n  mode: none\ncontroller_security:\n  mode: none\n";
    n->pid_ = fork();
    if (n->pid_ == 0) {
      execl(o.binary.c_str(), "tributary", "node", "--config", n->config_.c_str(), "--controller",
            n->controller_->endpoint().c_str(), nullptr);
      _exit(127);
    }
    TRIBUTARY_TRY(n->controller_->WaitForNodes(1, std::chrono::seconds(30)));
    n->gateway_ = n->controller_->Nodes().at(n->id_);
    return n;
  }

  ~BenchNode() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove(config_);
  }

  controller::Controller& controller() { return *controller_; }
  const std::string& id() const { return id_; }
  const std::string& gateway() const { return gateway_; }
  pid_t pid() const { return pid_; }

 private:
  BenchNode() = default;
  std::unique_ptr<controller::Controller> controller_;
  std::string id_, gateway_;
  std::filesystem::path config_;
  pid_t pid_ = 0;
};

// One round of N uploads through the node's gateway, measured.
Result<Measured> RunOneRound(BenchNode& node, const std::string& job, const agg::ModelSpec& model, uint32_t n,
                             uint32_t uploaders, const std::vector<std::vector<float>>& payloads) {
  auto& c = node.controller();
  TRIBUTARY_ASSIGN_OR_RETURN(const uint64_t version, c.ModelVersion(job));
  std::map<std::string, std::vector<std::string>> clients;
  for (uint32_t i = 0; i < n; ++i) clients[node.id()].push_back("client-" + std::to_string(i));
  const double cpu0 = ProcessTreeCpuSeconds(node.pid());
  std::atomic<int64_t> last_accept{0};
  std::atomic<bool> failed{false};
  std::string failure;
  std::mutex failure_mu;
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < uploaders; ++t) {
    threads.emplace_back([&, t] {
      auto fail = [&](const Error& e) {
        std::lock_guard lock(failure_mu);
        failure = e.ToString();
        failed = true;
      };
      for (uint32_t i = t; i < n && !failed; i += uploaders) {
        client::SessionOptions so;
        so.endpoint = node.gateway();
        so.client_id = "client-" + std::to_string(i);
        so.retry.attempts = 1000;  // a full segment is backpressure: wait for the leaves to fold
        so.retry.max_backoff = std::chrono::milliseconds(50);
        auto session = client::GatewaySession::Connect(so);
        if (!session) return fail(session.error());
        const std::vector<float>& p = payloads[i % payloads.size()];
        client::UpdateFrame u{job, version + 1, version, 1 + i % 7, model.tensors(),
                              std::as_bytes(std::span<const float>(p)), {}};
        for (;;) {
          auto r = session.value()->Upload(u);
          if (r) break;
          // The plan reaches the node a moment after RunRound starts.
          if (r.error().code != ErrorCode::kUnknownJob && r.error().code != ErrorCode::kRoundClosed) {
            return fail(r.error());
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        int64_t now = Clock::now().time_since_epoch().count(), prev = last_accept.load();
        while (now > prev && !last_accept.compare_exchange_weak(prev, now)) {
        }
      }
    });
  }
  const auto t0 = Clock::now();
  auto report = c.RunRound(job, clients);
  const auto t1 = Clock::now();
  failed = failed || !report;
  for (auto& t : threads) t.join();
  if (!failure.empty()) return MakeError(ErrorCode::kInternal, "upload failed: " + failure);
  if (!report) return std::move(report).error();
  if (report.value().updates != n) return MakeError(ErrorCode::kInternal, "the round folded a wrong number of updates");
  Measured m;
  m.round_s = std::chrono::duration<double>(t1 - t0).count();
  m.tail_s = std::chrono::duration<double>(t1 - Clock::time_point(Clock::duration(last_accept.load()))).count();
  m.node_cpu_s = ProcessTreeCpuSeconds(node.pid()) - cpu0;
  TRIBUTARY_ASSIGN_OR_RETURN(m.model, c.Model(job));
  return m;
}

Result<Measured> RunMode(const RoundBenchOptions& o, const std::string& transport, uint32_t n,
                         const agg::ModelSpec& model, const std::vector<std::vector<float>>& payloads) {
  TRIBUTARY_ASSIGN_OR_RETURN(auto node, BenchNode::Start(o, transport));
  controller::JobSpec job;
  job.id = "bench";
  job.model = model;
  job.initial_model.assign(model.elements(), 0.0f);
  job.fan_in = o.fan_in;
  job.deadline = std::chrono::minutes(30);
  TRIBUTARY_TRY(node->controller().AddJob(job));
  TRIBUTARY_TRY(RunOneRound(*node, job.id, model, n, o.uploaders, payloads));  // warm-up: cold starts
  return RunOneRound(*node, job.id, model, n, o.uploaders, payloads);
}

double RelativeL2(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

}  // namespace

Result<void> RunRoundBench(const RoundBenchOptions& o, std::ostream& out) {
  if (o.binary.empty()) return MakeError(ErrorCode::kInvalidArgument, "the bench needs the tributary binary");
  const agg::ModelSpec model = LayeredSpec(o.params);
  std::vector<std::vector<float>> payloads(8, std::vector<float>(model.elements()));
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 0.01f);
  for (auto& p : payloads) {
    for (float& x : p) x = d(rng);
  }
  nlohmann::json results = nlohmann::json::array();
  if (!o.json) {
    out << "round through a node: " << o.params << " params (" << std::fixed << std::setprecision(1)
        << model.payload_bytes() / 1e6 << " MB/update), fan-in " << o.fan_in << ", " << o.uploaders
        << " uploaders; measured round after a warm-up round\n";
  }
  for (uint32_t n : o.updates) {
    TRIBUTARY_ASSIGN_OR_RETURN(Measured shm, RunMode(o, "shared-memory", n, model, payloads));
    TRIBUTARY_ASSIGN_OR_RETURN(Measured tcp, RunMode(o, "tcp", n, model, payloads));
    const double agree = RelativeL2(tcp.model, shm.model);
    if (agree > 1e-6) {
      return MakeError(ErrorCode::kInternal, "the two modes disagree: relative error " + std::to_string(agree));
    }
    results.push_back({{"updates", n},
                       {"shared_memory", {{"round_s", shm.round_s}, {"tail_s", shm.tail_s}, {"node_cpu_s", shm.node_cpu_s}}},
                       {"serverful_tcp", {{"round_s", tcp.round_s}, {"tail_s", tcp.tail_s}, {"node_cpu_s", tcp.node_cpu_s}}},
                       {"ratio_round", tcp.round_s / shm.round_s},
                       {"ratio_tail", tcp.tail_s / shm.tail_s},
                       {"ratio_node_cpu", tcp.node_cpu_s / shm.node_cpu_s},
                       {"models_relative_error", agree}});
    if (!o.json) {
      out << std::setprecision(2) << "N = " << n << "\n"
          << "  shared memory: round " << shm.round_s << " s, tail " << std::setprecision(3) << shm.tail_s
          << " s, node CPU " << std::setprecision(2) << shm.node_cpu_s << " s\n"
          << "  serverful tcp: round " << tcp.round_s << " s, tail " << std::setprecision(3) << tcp.tail_s
          << " s, node CPU " << std::setprecision(2) << tcp.node_cpu_s << " s\n"
          << "  serverful / shared memory: round " << tcp.round_s / shm.round_s << "x, tail "
          << tcp.tail_s / shm.tail_s << "x, node CPU " << tcp.node_cpu_s / shm.node_cpu_s
          << "x (models agree to " << std::scientific << std::setprecision(1) << agree << std::fixed << ")\n";
    }
  }
  if (o.json) out << nlohmann::json{{"bench", "round"}, {"params", o.params}, {"fan_in", o.fan_in}, {"results", results}}.dump(2) << "\n";
  return Ok();
}

}  // namespace tributary::bench
