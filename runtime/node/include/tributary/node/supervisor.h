// The function supervisor: aggregator functions on demand.
//
// Acquire() hands out an idle warm function (a warm reuse) or starts a new
// `tributary function` process (a cold start) and waits for its hello; one
// that dies before its hello, or sends none within `start_timeout` (then it
// is killed, a liveness kill), is replaced (3 attempts, then kIo).
// Release() puts a function back in the warm pool; Reap() stops those idle
// longer than the keep-alive beyond the autoscaler's target, so an idle node
// scales to zero. ScaleTo(n) sets that target and starts idle functions
// until n are live (pre-warmed: no cold start on a round's critical path).
// A function that exits or dies is forgotten (OnExit) and never handed out
// again.
//
// Liveness: a function says hello, then a heartbeat every 250 ms from its
// loop (OnHeartbeat). KillSilent() kills (SIGKILL) every function, busy or
// idle, silent for longer than `liveness_timeout`: stopped, wedged or stuck
// in one fold. Acquire() never hands out a function silent for more than
// `suspect_after`, so a stalled function is not reused while its bound runs.
// The data plane then reports its exit like any other.
//
// The destructor stops every function: SIGTERM, then SIGKILL for those still
// there after `stop_grace` (a stopped process ignores all but SIGKILL), and
// waits for each, so it always returns.
//
// Thread safety: all methods lock; OnHello/OnExit come from the agent's
// data-plane threads.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "tributary/core/error.h"
#include "tributary/dataplane/aggregation_transport.h"
#include "tributary/dataplane/function_link.h"

namespace tributary::node {

struct SupervisorOptions {
  std::string binary;   // the `tributary` executable
  std::string segment;  // the node's segment name
  dataplane::SwitchAddress switch_address;
  std::chrono::milliseconds keep_alive{60'000};
  std::chrono::milliseconds start_timeout{10'000};
  std::chrono::milliseconds liveness_timeout{10'000};
  std::chrono::milliseconds suspect_after{1'000};  // 4 heartbeats missed
  std::chrono::milliseconds stop_grace{2'000};
  uint32_t max_functions = 120;  // each maps the segment: at most its leases less the agent's
  dataplane::AggregationTransport transport = dataplane::AggregationTransport::kSharedMemory;
};

struct FunctionInstance {
  uint32_t fn = 0;
  uint32_t lease = 0;
  pid_t pid = 0;
  uint16_t payload_port = 0;  // its hello's: the kTcp transport only
};

struct SupervisorStats {
  uint64_t cold_starts = 0;  // started by Acquire: on a round's critical path
  uint64_t prewarmed = 0;    // started by ScaleTo, ahead of the demand
  uint64_t warm_reuses = 0;
  uint64_t reaped = 0;
  uint64_t deaths = 0;  // exits the supervisor did not ask for
  uint64_t liveness_kills = 0;  // silent past the liveness bound or the start timeout: killed (not deaths)
  uint32_t live = 0;
  uint32_t idle = 0;
};

class Supervisor {
 public:
  explicit Supervisor(SupervisorOptions options);
  ~Supervisor();  // stops every function
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  Result<FunctionInstance> Acquire();
  void Release(uint32_t fn);
  uint32_t Reap();  // returns how many were stopped
  // Keeps at least `n` functions live from now on (Reap spares them) and
  // starts idle ones until n are; returns how many it started.
  uint32_t ScaleTo(uint32_t n);
  // Kills the functions silent past the liveness bound; returns their ids.
  std::vector<uint32_t> KillSilent();

  void OnHello(uint32_t fn, uint32_t lease, uint16_t payload_port);
  void OnHeartbeat(uint32_t fn);
  void OnExit(uint32_t fn);
  // A function found dead before its exit is reported (its lease was already
  // reclaimed): counted as a death and never handed out again.
  void OnLeaseLost(uint32_t fn);

  SupervisorStats Stats() const;

 private:
  struct Entry {
    FunctionInstance instance;
    bool ready = false;
    bool busy = false;
    bool stopping = false;
    std::chrono::steady_clock::time_point idle_since;
    std::chrono::steady_clock::time_point last_heard;  // its hello or last heartbeat
  };
  uint32_t LiveLocked() const;  // functions not being stopped, under mu_
  // Starts one and waits for its hello; `prewarm`: for ScaleTo, not a cold start.
  Result<FunctionInstance> Spawn(std::unique_lock<std::mutex>& lock, bool prewarm);
  void Kill(Entry& e);

  SupervisorOptions options_;
  std::vector<std::string> environment_;  // the functions', NAME=value
  std::vector<char*> envp_;               // into environment_, null-terminated
  mutable std::mutex mu_;
  std::condition_variable hello_;
  std::map<uint32_t, Entry> functions_;
  std::vector<pid_t> unreaped_;  // exited before waitpid could collect them
  uint32_t target_ = 0;           // ScaleTo's: Reap keeps this many
  uint32_t next_fn_ = 2;  // 1 is the agent's own link
  SupervisorStats stats_;
};

}  // namespace tributary::node
