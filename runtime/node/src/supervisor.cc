#include "tributary/node/supervisor.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstring>
#include <thread>
#include <vector>

#include "tributary/ebpf/abi.h"

extern char** environ;

namespace tributary::node {
namespace {

// The node's environment with OpenMP teams that sleep as soon as a fold is
// done. libgomp's default spins for milliseconds after each parallel region,
// and a node runs many functions beside its gateway on few cores: a spinning
// team takes the core a sibling needs (42% of a simulated round's CPU). An
// OMP_WAIT_POLICY the operator set is kept.
std::vector<std::string> FunctionEnvironment() {
  std::vector<std::string> env;
  bool policy_set = false;
  for (char** e = environ; *e != nullptr; ++e) {
    env.emplace_back(*e);
    policy_set = policy_set || env.back().starts_with("OMP_WAIT_POLICY=");
  }
  if (!policy_set) env.emplace_back("OMP_WAIT_POLICY=PASSIVE");
  return env;
}

}  // namespace

Supervisor::Supervisor(SupervisorOptions options)
    : options_(std::move(options)), environment_(FunctionEnvironment()) {
  for (std::string& e : environment_) envp_.push_back(e.data());
  envp_.push_back(nullptr);
}

Supervisor::~Supervisor() {
  std::vector<pid_t> pids;
  {
    std::lock_guard lock(mu_);
    for (auto& [fn, e] : functions_) {
      if (!e.stopping) kill(e.instance.pid, SIGTERM);
      e.stopping = true;
      pids.push_back(e.instance.pid);
    }
  }
  const auto give_up = std::chrono::steady_clock::now() + options_.stop_grace;
  for (;;) {
    std::erase_if(pids, [](pid_t p) { return waitpid(p, nullptr, WNOHANG) != 0; });
    if (pids.empty() || std::chrono::steady_clock::now() >= give_up) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (pid_t p : pids) {
    kill(p, SIGKILL);
    waitpid(p, nullptr, 0);
  }
  // Reported dead but not reaped: normally exiting already. One still running
  // (a report that ran ahead of its process) is forgotten, so it must not outlive us.
  for (pid_t p : unreaped_) {
    kill(p, SIGKILL);
    waitpid(p, nullptr, 0);
  }
}

void Supervisor::Kill(Entry& e) {
  e.stopping = true;
  kill(e.instance.pid, SIGKILL);
}

Result<FunctionInstance> Supervisor::Acquire() {
  std::unique_lock lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  for (auto& [fn, e] : functions_) {
    if (e.ready && !e.busy && !e.stopping && now - e.last_heard <= options_.suspect_after) {
      e.busy = true;
      stats_.warm_reuses += 1;
      return e.instance;
    }
  }
  // A function that dies or hangs before its hello (killed, stopped, out of
  // memory) is a fault of that process, not of the node: another is started
  // in its place.
  constexpr int kStartAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    auto f = Spawn(lock, /*prewarm=*/false);
    if (f || f.error().code == ErrorCode::kResourceExhausted || attempt == kStartAttempts) return f;
  }
}

Result<FunctionInstance> Supervisor::Spawn(std::unique_lock<std::mutex>& lock, bool prewarm) {
  if (functions_.size() >= options_.max_functions) {
    return MakeError(ErrorCode::kResourceExhausted,
                     "node already runs " + std::to_string(options_.max_functions) + " functions");
  }
  uint32_t fn = next_fn_;
  while (functions_.count(fn) != 0) fn = fn + 1 < TRB_MAX_FUNCTIONS ? fn + 1 : 2;
  next_fn_ = fn + 1 < TRB_MAX_FUNCTIONS ? fn + 1 : 2;
  const std::string fn_s = std::to_string(fn), port = std::to_string(options_.switch_address.tcp_port);
  std::vector<std::string> args = {options_.binary, "function", "--fn", fn_s, "--segment", options_.segment,
                                   "--switch-port", port, "--switch-name", options_.switch_address.registration};
  args.push_back("--transport");
  args.push_back(std::string(dataplane::TransportName(options_.transport)));
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, options_.binary.c_str(), nullptr, nullptr, argv.data(), envp_.data());
  if (rc != 0) return MakeError(ErrorCode::kIo, "cannot start " + options_.binary + ": " + std::strerror(rc));
  Entry& e = functions_[fn];
  e.instance = FunctionInstance{fn, 0, pid};
  e.busy = true;
  (prewarm ? stats_.prewarmed : stats_.cold_starts) += 1;
  // A process that dies before it registers its socket is never reported by
  // the data plane: look at it directly while waiting for its hello.
  const auto give_up = std::chrono::steady_clock::now() + options_.start_timeout;
  bool ok = false;
  for (;;) {
    ok = hello_.wait_for(lock, std::chrono::milliseconds(20), [&] {
      auto it = functions_.find(fn);
      return it == functions_.end() || it->second.ready;
    });
    if (ok || std::chrono::steady_clock::now() >= give_up) break;
    if (waitpid(pid, nullptr, WNOHANG) == pid) {  // reaped here: OnExit finds nothing to do
      if (!functions_.at(fn).stopping) stats_.deaths += 1;
      functions_.erase(fn);
      hello_.notify_all();
      break;
    }
  }
  auto it = functions_.find(fn);
  if (it == functions_.end()) return MakeError(ErrorCode::kIo, "function " + fn_s + " exited at start");
  if (!ok) {  // hung at start: it may never have registered, so no exit will be reported
    Kill(it->second);
    waitpid(pid, nullptr, 0);
    functions_.erase(it);
    stats_.liveness_kills += 1;
    return MakeError(ErrorCode::kIo, "function " + fn_s + " did not start within the timeout");
  }
  return it->second.instance;
}

void Supervisor::Release(uint32_t fn) {
  std::lock_guard lock(mu_);
  auto it = functions_.find(fn);
  if (it == functions_.end()) return;
  it->second.busy = false;
  it->second.idle_since = std::chrono::steady_clock::now();
}

uint32_t Supervisor::Reap() {
  std::lock_guard lock(mu_);
  std::erase_if(unreaped_, [](pid_t p) { return waitpid(p, nullptr, WNOHANG) != 0; });
  const auto now = std::chrono::steady_clock::now();
  uint32_t live = LiveLocked();
  uint32_t n = 0;
  for (auto& [fn, e] : functions_) {
    if (live <= target_) break;
    if (e.ready && !e.busy && !e.stopping && now - e.idle_since >= options_.keep_alive) {
      Kill(e);
      ++n;
      --live;
    }
  }
  stats_.reaped += n;
  return n;
}

uint32_t Supervisor::LiveLocked() const {
  uint32_t live = 0;
  for (const auto& [fn, e] : functions_) live += e.stopping ? 0 : 1;
  return live;
}

uint32_t Supervisor::ScaleTo(uint32_t n) {
  std::unique_lock lock(mu_);
  target_ = std::min<uint32_t>(n, options_.max_functions);
  uint32_t started = 0;
  // At most the target's worth of starts per call: functions that die as they
  // start (a crash loop) cannot keep it here.
  for (uint32_t tries = 0; tries < target_; ++tries) {
    if (LiveLocked() >= target_) return started;
    auto f = Spawn(lock, /*prewarm=*/true);
    if (!f) return started;  // a full node or a failed start: the next decision tries again
    auto it = functions_.find(f.value().fn);
    if (it != functions_.end()) {
      it->second.busy = false;
      it->second.idle_since = std::chrono::steady_clock::now();
    }
    ++started;
  }
  return started;
}

std::vector<uint32_t> Supervisor::KillSilent() {
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  std::vector<uint32_t> killed;
  for (auto& [fn, e] : functions_) {
    if (e.ready && !e.stopping && now - e.last_heard > options_.liveness_timeout) {
      Kill(e);
      killed.push_back(fn);
    }
  }
  stats_.liveness_kills += killed.size();
  return killed;
}

void Supervisor::OnHello(uint32_t fn, uint32_t lease, uint16_t payload_port) {
  std::lock_guard lock(mu_);
  auto it = functions_.find(fn);
  if (it == functions_.end()) return;
  it->second.instance.lease = lease;
  it->second.instance.payload_port = payload_port;
  it->second.ready = true;
  it->second.last_heard = std::chrono::steady_clock::now();
  hello_.notify_all();
}

void Supervisor::OnHeartbeat(uint32_t fn) {
  std::lock_guard lock(mu_);
  auto it = functions_.find(fn);
  if (it != functions_.end()) it->second.last_heard = std::chrono::steady_clock::now();
}

void Supervisor::OnExit(uint32_t fn) {
  std::lock_guard lock(mu_);
  auto it = functions_.find(fn);
  if (it == functions_.end()) return;
  if (!it->second.stopping) stats_.deaths += 1;
  if (waitpid(it->second.instance.pid, nullptr, WNOHANG) == 0) unreaped_.push_back(it->second.instance.pid);
  functions_.erase(it);
  hello_.notify_all();
}

void Supervisor::OnLeaseLost(uint32_t fn) {
  std::lock_guard lock(mu_);
  auto it = functions_.find(fn);
  if (it == functions_.end() || it->second.stopping) return;
  stats_.deaths += 1;
  Kill(it->second);  // already gone; OnExit then forgets it without counting it again
}

SupervisorStats Supervisor::Stats() const {
  std::lock_guard lock(mu_);
  SupervisorStats s = stats_;
  for (const auto& [fn, e] : functions_) {
    if (e.stopping) continue;
    s.live += 1;
    s.idle += (e.ready && !e.busy) ? 1 : 0;
  }
  return s;
}

}  // namespace tributary::node
