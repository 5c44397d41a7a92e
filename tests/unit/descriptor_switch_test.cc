// The switch's control logic against a recording KernelRouter: no kernel,
// no privileges (the BPF layer is injectable, as in Katran).
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "support/switch_reports.h"
#include "tributary/dataplane/descriptor_switch.h"

namespace tributary::dataplane {
namespace {

class RecordingRouter final : public KernelRouter {
 public:
  struct Log {
    std::mutex mu;
    std::set<uint32_t> sockets;
    std::map<uint32_t, uint32_t> routes;
    int adds = 0, removes = 0;
  };
  explicit RecordingRouter(std::shared_ptr<Log> log) : log_(std::move(log)) {}
  Result<void> AddSocket(uint32_t fn, int fd) override {
    std::lock_guard lock(log_->mu);
    if (fd < 0) return MakeError(ErrorCode::kInvalidArgument, "bad fd");
    log_->sockets.insert(fn);
    ++log_->adds;
    return Ok();
  }
  Result<void> RemoveSocket(uint32_t fn) override {
    std::lock_guard lock(log_->mu);
    ++log_->removes;
    if (log_->sockets.erase(fn) == 0) return MakeError(ErrorCode::kNotFound, "absent");
    return Ok();
  }
  Result<void> SetRoute(uint32_t key, uint32_t fn) override {
    std::lock_guard lock(log_->mu);
    log_->routes[key] = fn;
    return Ok();
  }
  Result<void> RemoveRoute(uint32_t key) override {
    std::lock_guard lock(log_->mu);
    log_->routes.erase(key);
    return Ok();
  }
  Result<std::vector<trb_counters>> ReadCounters() const override {
    return std::vector<trb_counters>(TRB_MAX_FUNCTIONS);
  }
  std::string Describe() const override { return "recording"; }

 private:
  std::shared_ptr<Log> log_;
};

using Reports = tributary::testing::SwitchReports;

std::unique_ptr<DescriptorSwitch> Start(std::shared_ptr<RecordingRouter::Log> log, Reports& r, const char* name) {
  SwitchCallbacks cb = r.Callbacks();
  auto sw = DescriptorSwitch::Start(std::string(name) + "." + std::to_string(getpid()),
                                    std::make_unique<RecordingRouter>(log), cb);
  EXPECT_TRUE(sw) << sw.error().ToString();
  return std::move(sw).value();
}

TEST(DescriptorSwitch, RegistrationProgramsTheKernelAndExitUnprograms) {
  auto log = std::make_shared<RecordingRouter::Log>();
  Reports reports;
  auto sw = Start(log, reports, "reg");
  EXPECT_STREQ(sw->dataplane(), "ebpf");
  {
    auto link = FunctionLink::Connect(sw->address(), 42);
    ASSERT_TRUE(link) << link.error().ToString();
    {
      std::lock_guard lock(log->mu);
      EXPECT_EQ(log->sockets, std::set<uint32_t>{42});
    }
    // The same id twice is refused; so is an id out of range.
    auto dup = FunctionLink::Connect(sw->address(), 42);
    ASSERT_FALSE(dup);
    EXPECT_EQ(dup.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(FunctionLink::Connect(sw->address(), 0).error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(FunctionLink::Connect(sw->address(), TRB_MAX_FUNCTIONS).error().code, ErrorCode::kInvalidArgument);
  }
  ASSERT_TRUE(reports.WaitFor([&] { return reports.exits.size() == 1; }));
  EXPECT_EQ(reports.exits[0], 42u);
  std::lock_guard lock(log->mu);
  EXPECT_TRUE(log->sockets.empty());
  EXPECT_EQ(log->removes, 1);
}

TEST(DescriptorSwitch, RoutesReachTheKernel) {
  auto log = std::make_shared<RecordingRouter::Log>();
  Reports reports;
  auto sw = Start(log, reports, "routes");
  ASSERT_TRUE(sw->SetRoute(5, 9));
  ASSERT_TRUE(sw->SetRoute(6, 9));
  ASSERT_TRUE(sw->RemoveRoute(5));
  EXPECT_EQ(sw->SetRoute(7, 0).error().code, ErrorCode::kInvalidArgument);
  std::lock_guard lock(log->mu);
  EXPECT_EQ(log->routes, (std::map<uint32_t, uint32_t>{{6, 9}}));
}

TEST(DescriptorSwitch, WhatTheKernelPassesOnIsReportedNotLost) {
  auto log = std::make_shared<RecordingRouter::Log>();
  Reports reports;
  auto sw = Start(log, reports, "pass");
  auto link = FunctionLink::Connect(sw->address(), 3).value();
  // The recording router routes nothing: every descriptor reaches the switch.
  for (uint64_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(link.Send(MakeUpdate({.dest_fn = 8, .task = 1, .round = 1, .weight = 1.0, .block = {.offset = i * 64, .length = 10, .generation = 1}})));
  }
  ASSERT_TRUE(reports.WaitFor([&] { return reports.undeliverable.size() == 10; }));
  for (uint64_t i = 0; i < 10; ++i) EXPECT_EQ(reports.undeliverable[i].offset, i * 64);
  EXPECT_EQ(sw->Counters().value().functions[8].undelivered, 10u);
}

}  // namespace
}  // namespace tributary::dataplane
