// The function supervisor on real processes: cold starts, warm reuse within
// the keep-alive, reaping of idle functions (scale to zero), deaths, liveness
// kills of silent functions, and a teardown that finishes with a stopped one.
#include "tributary/node/supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

namespace tributary::node {
namespace {

using namespace std::chrono_literals;

// Stands in for the data plane and the functions' loops: every 5 ms, a hello
// (which also counts as a heartbeat) for every function the supervisor
// starts, except an exit for those in `exits` and nothing for those
// silenced (a hello for a function it does not know is ignored).
class DataPlaneStandIn {
 public:
  explicit DataPlaneStandIn(Supervisor& s, std::set<uint32_t> exits = {}) : thread_([this, &s, exits] {
      while (!stop_.load()) {
        for (uint32_t fn = 2; fn < 32; ++fn) {
          if (exits.count(fn) != 0) {
            s.OnExit(fn);
          } else if (!Silenced(fn)) {
            s.OnHello(fn, 40 + fn, 0);
          }
        }
        std::this_thread::sleep_for(5ms);
      }
    }) {}
  ~DataPlaneStandIn() {
    stop_ = true;
    thread_.join();
  }
  void Silence(uint32_t fn) {
    std::lock_guard lock(mu_);
    silent_.insert(fn);
  }

 private:
  bool Silenced(uint32_t fn) {
    std::lock_guard lock(mu_);
    return silent_.count(fn) != 0;
  }
  std::mutex mu_;
  std::set<uint32_t> silent_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

SupervisorOptions Options(std::chrono::milliseconds keep_alive) {
  SupervisorOptions o;
  o.binary = TRIBUTARY_IDLE_FUNCTION;
  o.segment = "unused";
  o.keep_alive = keep_alive;
  o.start_timeout = 5s;
  o.max_functions = 4;
  return o;
}

bool Alive(pid_t pid) { return kill(pid, 0) == 0 && waitpid(pid, nullptr, WNOHANG) == 0; }

TEST(Supervisor, AReleasedFunctionIsReusedWarm) {
  Supervisor s(Options(60s));
  DataPlaneStandIn plane(s);
  const FunctionInstance a = s.Acquire().value();
  EXPECT_EQ(a.fn, 2u);
  EXPECT_EQ(a.lease, 42u);
  s.Release(a.fn);
  const FunctionInstance again = s.Acquire().value();
  EXPECT_EQ(again.fn, a.fn);
  EXPECT_EQ(again.pid, a.pid);
  const SupervisorStats st = s.Stats();
  EXPECT_EQ(st.cold_starts, 1u);
  EXPECT_EQ(st.warm_reuses, 1u);
  EXPECT_EQ(st.live, 1u);
  EXPECT_EQ(st.idle, 0u);
}

// "\nNAME=value\n..." of a running process. The stand-in function execs
// once more after its start, and /proc shows an empty environment meanwhile.
std::string EnvironmentOf(pid_t pid) {
  const auto give_up = std::chrono::steady_clock::now() + 5s;
  std::string env;
  while (env.empty() && std::chrono::steady_clock::now() < give_up) {
    std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/environ").c_str(), "rb");
    if (f == nullptr) return {};
    for (int c = std::fgetc(f); c != EOF; c = std::fgetc(f)) env.push_back(c == '\0' ? '\n' : static_cast<char>(c));
    std::fclose(f);
    if (env.empty()) std::this_thread::sleep_for(5ms);
  }
  return "\n" + env;
}

TEST(Supervisor, FunctionsRunWithOpenMpTeamsThatSleepUnlessTheOperatorSaidOtherwise) {
  const char* outer = std::getenv("OMP_WAIT_POLICY");
  const std::optional<std::string> saved = outer ? std::optional<std::string>(outer) : std::nullopt;
  ASSERT_EQ(unsetenv("OMP_WAIT_POLICY"), 0);
  {
    Supervisor s(Options(60s));
    DataPlaneStandIn plane(s);
    const FunctionInstance f = s.Acquire().value();
    EXPECT_NE(EnvironmentOf(f.pid).find("\nOMP_WAIT_POLICY=PASSIVE\n"), std::string::npos);
  }
  ASSERT_EQ(setenv("OMP_WAIT_POLICY", "ACTIVE", 1), 0);
  {
    Supervisor s(Options(60s));
    DataPlaneStandIn plane(s);
    const FunctionInstance f = s.Acquire().value();
    const std::string env = EnvironmentOf(f.pid);
    EXPECT_NE(env.find("\nOMP_WAIT_POLICY=ACTIVE\n"), std::string::npos);
    EXPECT_EQ(env.find("PASSIVE"), std::string::npos);
  }
  if (saved) {
    setenv("OMP_WAIT_POLICY", saved->c_str(), 1);
  } else {
    unsetenv("OMP_WAIT_POLICY");
  }
}

TEST(Supervisor, IdleFunctionsPastTheKeepAliveAreReapedBusyOnesAreNot) {
  Supervisor s(Options(100ms));
  DataPlaneStandIn plane(s);
  const FunctionInstance idle = s.Acquire().value();
  const FunctionInstance busy = s.Acquire().value();
  s.Release(idle.fn);
  EXPECT_EQ(s.Reap(), 0u);  // not idle for long enough yet
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(s.Reap(), 1u);
  EXPECT_EQ(s.Stats().reaped, 1u);
  EXPECT_EQ(s.Stats().live, 1u);  // the busy one
  for (int i = 0; i < 100 && kill(idle.pid, 0) == 0 && waitpid(idle.pid, nullptr, WNOHANG) == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  s.OnExit(idle.fn);  // what the data plane reports once its socket closes
  EXPECT_FALSE(Alive(idle.pid));
  EXPECT_TRUE(Alive(busy.pid));
  EXPECT_EQ(s.Stats().deaths, 0u);  // asked to stop: not a death
  // The reaped function is never handed out again; the released busy one is, warm.
  s.Release(busy.fn);
  const FunctionInstance next = s.Acquire().value();
  EXPECT_EQ(next.fn, busy.fn);
  EXPECT_EQ(s.Stats().cold_starts, 2u);
}

TEST(Supervisor, ScaleToStartsIdleFunctionsAheadOfDemandAndReapSparesThem) {
  Supervisor s(Options(100ms));
  DataPlaneStandIn plane(s);
  EXPECT_EQ(s.ScaleTo(3), 3u);
  SupervisorStats st = s.Stats();
  EXPECT_EQ(st.prewarmed, 3u);
  EXPECT_EQ(st.cold_starts, 0u);
  EXPECT_EQ(st.live, 3u);
  EXPECT_EQ(st.idle, 3u);
  EXPECT_EQ(s.ScaleTo(3), 0u) << "already there";
  const FunctionInstance a = s.Acquire().value();
  EXPECT_EQ(s.Stats().warm_reuses, 1u);
  EXPECT_EQ(s.Stats().cold_starts, 0u) << "the demand found it warm";
  s.Release(a.fn);
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(s.Reap(), 0u) << "the target spares idle functions past the keep-alive";
  EXPECT_EQ(s.ScaleTo(1), 0u);
  EXPECT_EQ(s.Reap(), 2u) << "beyond the target they go";
  EXPECT_EQ(s.Stats().live, 1u);
  // The limit is 4 processes, and the 2 reaped ones have not exited yet.
  EXPECT_EQ(s.ScaleTo(10), 1u);
  EXPECT_EQ(s.Stats().live, 2u);
}

TEST(Supervisor, AFunctionThatDiesIsForgottenAndCounted) {
  Supervisor s(Options(60s));
  DataPlaneStandIn plane(s);
  const FunctionInstance a = s.Acquire().value();
  ASSERT_EQ(kill(a.pid, SIGKILL), 0);
  s.OnExit(a.fn);
  EXPECT_EQ(s.Stats().deaths, 1u);
  EXPECT_EQ(s.Stats().live, 0u);
  const FunctionInstance b = s.Acquire().value();
  EXPECT_NE(b.fn, a.fn);
}

TEST(Supervisor, AFunctionThatDiesBeforeItsHelloIsReplaced) {
  const std::string marker = ::testing::TempDir() + "/tributary-flaky-" + std::to_string(getpid());
  std::remove(marker.c_str());
  setenv("TRIBUTARY_TEST_MARKER", marker.c_str(), 1);
  SupervisorOptions o = Options(60s);
  o.binary = TRIBUTARY_FLAKY_FUNCTION;
  {
    Supervisor s(o);
    DataPlaneStandIn plane(s, {2});  // the first one's process is gone
    const auto f = s.Acquire();
    ASSERT_TRUE(f) << f.error().ToString();
    EXPECT_EQ(f.value().fn, 3u);
    EXPECT_EQ(s.Stats().cold_starts, 2u);
    EXPECT_EQ(s.Stats().deaths, 1u);
  }
  std::remove(marker.c_str());
}

TEST(Supervisor, AFunctionThatNeverStartsIsAnErrorAfterThreeAttempts) {
  SupervisorOptions o = Options(60s);
  o.binary = "/bin/false";
  Supervisor s(o);
  std::atomic<bool> stop{false};
  std::thread report([&] {
    while (!stop.load()) {
      for (uint32_t fn = 2; fn < 32; ++fn) s.OnExit(fn);
      std::this_thread::sleep_for(5ms);
    }
  });
  const auto f = s.Acquire();
  stop = true;
  report.join();
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code, ErrorCode::kIo);
  EXPECT_NE(f.error().reason.find("exited at start"), std::string::npos) << f.error().reason;
  EXPECT_EQ(s.Stats().cold_starts, 3u);
}

TEST(Supervisor, TheLimitIsResourceExhausted) {
  Supervisor s(Options(60s));
  DataPlaneStandIn plane(s);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(s.Acquire());
  EXPECT_EQ(s.Acquire().error().code, ErrorCode::kResourceExhausted);
}

TEST(Supervisor, ASilentFunctionIsNotReusedThenKilledAndNeverHandedOutAgain) {
  SupervisorOptions o = Options(60s);
  o.liveness_timeout = 1500ms;
  o.suspect_after = 200ms;
  Supervisor s(o);
  DataPlaneStandIn plane(s);
  const FunctionInstance idle = s.Acquire().value();
  const FunctionInstance busy = s.Acquire().value();
  s.Release(idle.fn);
  plane.Silence(idle.fn);  // stopped while idle in the warm pool
  plane.Silence(busy.fn);  // stopped while it holds a task
  std::this_thread::sleep_for(400ms);
  EXPECT_TRUE(s.KillSilent().empty()) << "killed before the liveness bound";
  // Suspect already: a new function is started rather than the silent one reused.
  const FunctionInstance fresh = s.Acquire().value();
  EXPECT_NE(fresh.fn, idle.fn);
  EXPECT_EQ(s.Stats().cold_starts, 3u);
  EXPECT_EQ(s.Stats().warm_reuses, 0u);
  std::this_thread::sleep_for(1300ms);
  const std::vector<uint32_t> killed = s.KillSilent();
  EXPECT_EQ(std::set<uint32_t>(killed.begin(), killed.end()), (std::set<uint32_t>{idle.fn, busy.fn}));
  EXPECT_EQ(s.Stats().liveness_kills, 2u);
  for (int i = 0; i < 200 && (Alive(idle.pid) || Alive(busy.pid)); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(Alive(idle.pid));
  EXPECT_FALSE(Alive(busy.pid));
  EXPECT_TRUE(Alive(fresh.pid));
  s.OnExit(idle.fn);
  s.OnExit(busy.fn);
  EXPECT_EQ(s.Stats().deaths, 0u) << "a liveness kill is not a death";
  EXPECT_EQ(s.Stats().live, 1u);
  s.Release(fresh.fn);
  EXPECT_EQ(s.Acquire().value().fn, fresh.fn);
}

TEST(Supervisor, TeardownFinishesWithAStoppedFunction) {
  SupervisorOptions o = Options(60s);
  o.stop_grace = 200ms;
  pid_t stopped = 0, running = 0;
  const auto t0 = std::chrono::steady_clock::now();
  {
    Supervisor s(o);
    DataPlaneStandIn plane(s);
    stopped = s.Acquire().value().pid;
    running = s.Acquire().value().pid;
    ASSERT_EQ(kill(stopped, SIGSTOP), 0);  // ignores SIGTERM until it is killed
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  // Both were waited for: neither process exists any more.
  EXPECT_NE(kill(stopped, 0), 0);
  EXPECT_NE(kill(running, 0), 0);
}

}  // namespace
}  // namespace tributary::node
