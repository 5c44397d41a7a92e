// The function supervisor on real processes: cold starts, warm reuse within
// the keep-alive, reaping of idle functions (scale to zero), deaths.
#include "tributary/node/supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

namespace tributary::node {
namespace {

using namespace std::chrono_literals;

// Says the hello of every function the supervisor starts, as `tributary
// function` would (a hello for a function it does not know is ignored).
class HelloSayer {
 public:
  explicit HelloSayer(Supervisor& s) : thread_([this, &s] {
      while (!stop_.load()) {
        for (uint32_t fn = 2; fn < 32; ++fn) s.OnHello(fn, 40 + fn, 0);
        std::this_thread::sleep_for(5ms);
      }
    }) {}
  ~HelloSayer() {
    stop_ = true;
    thread_.join();
  }

 private:
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
  HelloSayer hello(s);
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

TEST(Supervisor, IdleFunctionsPastTheKeepAliveAreReapedBusyOnesAreNot) {
  Supervisor s(Options(100ms));
  HelloSayer hello(s);
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

TEST(Supervisor, AFunctionThatDiesIsForgottenAndCounted) {
  Supervisor s(Options(60s));
  HelloSayer hello(s);
  const FunctionInstance a = s.Acquire().value();
  ASSERT_EQ(kill(a.pid, SIGKILL), 0);
  s.OnExit(a.fn);
  EXPECT_EQ(s.Stats().deaths, 1u);
  EXPECT_EQ(s.Stats().live, 0u);
  const FunctionInstance b = s.Acquire().value();
  EXPECT_NE(b.fn, a.fn);
}

// What the data plane reports when a starting function's process is gone:
// an exit for `first` and a hello for every later function.
class StartReporter {
 public:
  StartReporter(Supervisor& s, uint32_t dies) : thread_([this, &s, dies] {
      while (!stop_.load()) {
        s.OnExit(dies);
        for (uint32_t fn = dies + 1; fn < 32; ++fn) s.OnHello(fn, 40 + fn, 0);
        std::this_thread::sleep_for(5ms);
      }
    }) {}
  ~StartReporter() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(Supervisor, AFunctionThatDiesBeforeItsHelloIsReplaced) {
  const std::string marker = ::testing::TempDir() + "/tributary-flaky-" + std::to_string(getpid());
  std::remove(marker.c_str());
  setenv("TRIBUTARY_TEST_MARKER", marker.c_str(), 1);
  SupervisorOptions o = Options(60s);
  o.binary = TRIBUTARY_FLAKY_FUNCTION;
  {
    Supervisor s(o);
    StartReporter report(s, 2);
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
  HelloSayer hello(s);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(s.Acquire());
  EXPECT_EQ(s.Acquire().error().code, ErrorCode::kResourceExhausted);
}

}  // namespace
}  // namespace tributary::node
