// The descriptor data plane with real sockets and functions in separate
// processes, run twice: on the eBPF sk_msg router and on the userspace relay.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

#include "support/switch_reports.h"
#include "tributary/dataplane/descriptor_switch.h"

namespace tributary::dataplane {
namespace {

constexpr uint32_t kGateway = 1;
constexpr uint64_t kEnd = ~uint64_t{0};  // round number of the end marker

using Reports = tributary::testing::SwitchReports;

// A function process: receives until the end marker, writes the offsets it
// got (in order) to `out`, exits 0. Exit 2 on any error.
pid_t SpawnFunction(const SwitchAddress& address, uint32_t fn, int out, int ready) {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  auto link = FunctionLink::Connect(address, fn);
  if (!link) _exit(2);
  const char one = 1;
  if (write(ready, &one, 1) != 1) _exit(2);
  for (;;) {
    auto d = link.value().Receive(std::chrono::seconds(20));
    if (!d || !d.value()) _exit(2);
    const Descriptor& got = *d.value();
    if (got.round == kEnd) break;
    if (write(out, &got.offset, sizeof got.offset) != sizeof got.offset) _exit(2);
  }
  _exit(0);
}

class DataPlaneTest : public ::testing::TestWithParam<DataPlaneMode> {
 protected:
  void SetUp() override {
    std::string why;
    auto kernel = OpenKernelRouter(GetParam(), &why);
    if (!kernel) {
      if (std::getenv("TRIBUTARY_REQUIRE_PRIVILEGED") != nullptr) {
        FAIL() << "eBPF is required here (TRIBUTARY_REQUIRE_PRIVILEGED): " << kernel.error().ToString();
      }
      GTEST_SKIP() << "no eBPF on this machine (" << kernel.error().reason << ")";
    }
    SwitchCallbacks cb = reports_.Callbacks();
    const std::string name = std::string(GetParam() == DataPlaneMode::kEbpf ? "ebpf" : "user") + "." +
                             std::to_string(getpid()) + "." + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    auto sw = DescriptorSwitch::Start(name, std::move(kernel).value(), cb);
    ASSERT_TRUE(sw) << sw.error().ToString();
    switch_ = std::move(sw).value();
    auto gw = FunctionLink::Connect(switch_->address(), kGateway);
    ASSERT_TRUE(gw) << gw.error().ToString();
    gateway_.emplace(std::move(gw).value());
    ASSERT_EQ(pipe(out_), 0);
    ASSERT_EQ(pipe(ready_), 0);
  }

  void TearDown() override {
    for (pid_t p : children_) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
    for (int fd : {out_[0], out_[1], ready_[0], ready_[1]}) if (fd > 0) close(fd);
  }

  // One pipe per function so each one's order can be checked.
  struct Child {
    pid_t pid;
    int out;
  };
  Child Spawn(uint32_t fn) {
    int p[2];
    EXPECT_EQ(pipe(p), 0);
    const pid_t pid = SpawnFunction(switch_->address(), fn, p[1], ready_[1]);
    close(p[1]);
    children_.push_back(pid);
    char c;
    EXPECT_EQ(read(ready_[0], &c, 1), 1);
    return Child{pid, p[0]};
  }

  std::vector<uint64_t> Finish(const Child& c, uint32_t fn) {
    EXPECT_TRUE(gateway_->Send(MakeTask({.dest_fn = fn, .round = kEnd})));
    int status = 0;
    waitpid(c.pid, &status, 0);
    children_.erase(std::find(children_.begin(), children_.end(), c.pid));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "function " << fn << " failed";
    std::vector<uint64_t> got;
    uint64_t v;
    while (read(c.out, &v, sizeof v) == sizeof v) got.push_back(v);
    close(c.out);
    return got;
  }

  Descriptor Update(uint32_t dest, uint32_t route_key, uint64_t offset) {
    return MakeUpdate({.dest_fn = dest,
                       .route_key = route_key,
                       .task = 1,
                       .round = 1,
                       .weight = 1.0,
                       .block = {.offset = offset, .length = 1000 + offset % 7, .generation = 1}});
  }

  Reports reports_;  // outlives the switch, whose thread reports into it
  std::unique_ptr<DescriptorSwitch> switch_;
  std::optional<FunctionLink> gateway_;
  std::vector<pid_t> children_;
  int out_[2] = {-1, -1};
  int ready_[2] = {-1, -1};
};

TEST_P(DataPlaneTest, EachFunctionReceivesExactlyItsDescriptorsInOrder) {
  std::map<uint32_t, Child> fns;
  for (uint32_t fn : {10u, 11u, 12u}) fns.emplace(fn, Spawn(fn));
  for (uint32_t key = 100; key < 130; ++key) ASSERT_TRUE(switch_->SetRoute(key, 10 + key % 3));
  std::map<uint32_t, std::vector<uint64_t>> want;
  std::map<uint32_t, uint64_t> bytes;
  for (uint64_t i = 0; i < 600; ++i) {
    const bool by_route = i % 2 == 0;
    const uint32_t key = 100 + static_cast<uint32_t>(i % 30);
    const uint32_t fn = by_route ? 10 + key % 3 : 10 + static_cast<uint32_t>(i % 3);
    const Descriptor d = Update(by_route ? 0 : fn, by_route ? key : 0, i);
    ASSERT_TRUE(gateway_->Send(d));
    want[fn].push_back(i);
    bytes[fn] += d.length;
  }
  for (auto& [fn, child] : fns) EXPECT_EQ(Finish(child, fn), want[fn]) << "function " << fn;
  const SwitchCounters c = switch_->Counters().value();
  for (uint32_t fn : {10u, 11u, 12u}) {
    EXPECT_EQ(c.functions.at(fn).messages, want[fn].size() + 1) << fn;  // + end marker
    EXPECT_EQ(c.functions.at(fn).bytes, bytes[fn]) << fn;
  }
  EXPECT_EQ(c.malformed, 0u);
  std::lock_guard lock(reports_.mu);
  EXPECT_TRUE(reports_.undeliverable.empty());
}

TEST_P(DataPlaneTest, RouteUpdatesTakeEffectAndUnroutedKeysAreReported) {
  Child a = Spawn(20), b = Spawn(21);
  ASSERT_TRUE(switch_->SetRoute(7, 20));
  for (uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(gateway_->Send(Update(0, 7, i)));
  ASSERT_TRUE(switch_->SetRoute(7, 21));
  for (uint64_t i = 5; i < 10; ++i) ASSERT_TRUE(gateway_->Send(Update(0, 7, i)));
  ASSERT_TRUE(switch_->RemoveRoute(7));
  for (uint64_t i = 10; i < 13; ++i) ASSERT_TRUE(gateway_->Send(Update(0, 7, i)));
  EXPECT_EQ(Finish(a, 20), (std::vector<uint64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(Finish(b, 21), (std::vector<uint64_t>{5, 6, 7, 8, 9}));
  ASSERT_TRUE(reports_.WaitFor([&] { return reports_.undeliverable.size() == 3; }));
  for (int k = 0; k < 3; ++k) EXPECT_EQ(reports_.undeliverable[k].offset, 10u + k);
}

TEST_P(DataPlaneTest, ADeadFunctionIsRemovedAndItsDescriptorsAreReported) {
  Child victim = Spawn(30);
  ASSERT_TRUE(switch_->SetRoute(1, 30));
  kill(victim.pid, SIGKILL);
  waitpid(victim.pid, nullptr, 0);
  children_.clear();
  close(victim.out);
  ASSERT_TRUE(reports_.WaitFor([&] { return !reports_.exits.empty(); }));
  EXPECT_EQ(reports_.exits[0], 30u);
  for (uint64_t i = 0; i < 20; ++i) ASSERT_TRUE(gateway_->Send(Update(i % 2 ? 30 : 0, 1, i)));
  ASSERT_TRUE(reports_.WaitFor([&] { return reports_.undeliverable.size() == 20; }));
  for (uint64_t i = 0; i < 20; ++i) EXPECT_EQ(reports_.undeliverable[i].offset, i);
  EXPECT_EQ(switch_->Counters().value().functions[30].undelivered, 20u);
}

TEST_P(DataPlaneTest, MalformedDescriptorsAreDroppedAndCounted) {
  Child c = Spawn(40);
  const int fd = gateway_->data_fd();
  std::vector<Descriptor> bad(4, Update(40, 0, 999));
  bad[0].magic ^= 0xff;
  bad[1].version = 9;
  bad[2].kind = 77;
  bad[3].dest_fn = TRB_MAX_FUNCTIONS + 1;
  for (const Descriptor& d : bad) (void)!send(fd, &d, sizeof d, MSG_NOSIGNAL);
  const char junk[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  (void)!send(fd, junk, sizeof junk, MSG_NOSIGNAL);
  auto sent = gateway_->Send(Update(40, 0, 1));
  ASSERT_TRUE(sent) << sent.error().ToString();
  EXPECT_EQ(Finish(c, 40), std::vector<uint64_t>{1});
  // Malformed input reaches the switch on its own path (the kernel passes it
  // there); wait for it to be counted.
  SwitchCounters counters;
  for (int i = 0; i < 500 && counters.malformed < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    counters = switch_->Counters().value();
  }
  EXPECT_EQ(counters.malformed, 5u);
  EXPECT_EQ(counters.functions.at(40).messages, 2u);  // the good one and the end marker
  std::lock_guard lock(reports_.mu);
  EXPECT_TRUE(reports_.undeliverable.empty());
}

INSTANTIATE_TEST_SUITE_P(Modes, DataPlaneTest, ::testing::Values(DataPlaneMode::kEbpf, DataPlaneMode::kUserspace),
                         [](const auto& p) { return p.param == DataPlaneMode::kEbpf ? "Ebpf" : "Userspace"; });

}  // namespace
}  // namespace tributary::dataplane
