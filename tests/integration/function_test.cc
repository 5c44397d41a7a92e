// A real `tributary function` process, driven the way the node agent drives
// it: a task in a shared-memory block, inputs handed to its lease, the result
// handed back. The sums must equal folding the same inputs in the same order.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include "support/switch_reports.h"
#include "tributary/aggregator/kernels.h"
#include "tributary/dataplane/descriptor_switch.h"
#include "tributary/function/function_host.h"
#include "tributary/protocol/codec.h"
#include "tributary/shm/segment.h"
#include "tributary/v1/node.pb.h"

namespace tributary::function {
namespace {

using dataplane::Descriptor;
using dataplane::MakePartial;
using dataplane::MakeTask;
using dataplane::MakeUpdate;

class FunctionProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string tag = std::to_string(getpid());
    segment_ = shm::Segment::Create({"tributary.fn." + tag, 64ull << 20, 1024}).value();
    auto sw = dataplane::DescriptorSwitch::Start("fn." + tag, nullptr, reports_.Callbacks());
    ASSERT_TRUE(sw) << sw.error().ToString();
    switch_ = std::move(sw).value();
    agent_.emplace(dataplane::FunctionLink::Connect(switch_->address(), kAgentFn).value());
    model_ = agg::ModelSpec::Create({{"w", agg::DType::kF32, {200, 50}}, {"b", agg::DType::kF32, {50}}}).value();
  }

  void TearDown() override {
    for (pid_t p : pids_) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
  }

  // Starts `tributary function` and waits for its hello; returns its lease.
  uint32_t Spawn(uint32_t fn) {
    const pid_t pid = fork();
    if (pid == 0) {
      const std::string fn_s = std::to_string(fn), port = std::to_string(switch_->address().tcp_port);
      execl(TRIBUTARY_BINARY, "tributary", "function", "--fn", fn_s.c_str(), "--segment", segment_->name().c_str(),
            "--switch-port", port.c_str(), "--switch-name", switch_->address().registration.c_str(), nullptr);
      _exit(127);
    }
    pids_.push_back(pid);
    auto hello = agent_->Receive(std::chrono::seconds(10));
    EXPECT_TRUE(hello && hello.value()) << "no hello from function " << fn;
    EXPECT_EQ(hello.value()->kind, TRB_KIND_HELLO);
    EXPECT_EQ(hello.value()->src_fn, fn);
    return hello.value()->lease;
  }

  // A leaf folds the updates of route keys `keys` in that order.
  void SendTask(uint32_t fn, uint32_t lease, uint64_t task_id, v1::FunctionRole role, uint32_t fan_in,
                const std::vector<uint32_t>& keys = {}) {
    v1::FunctionTask t;
    t.set_protocol_version(1);
    t.set_task_id(task_id);
    t.set_job_id("job");
    t.set_round(1);
    t.set_role(role);
    t.set_fan_in(fan_in);
    t.set_parent_fn(kAgentFn);
    t.set_parent_lease(segment_->lease());
    t.set_parent_task(1000 + task_id);
    for (uint32_t k : keys) t.add_input_keys(k);
    protocol::ToProto(model_, t.mutable_model());
    const std::string wire = t.SerializeAsString();
    auto block = segment_->Allocate(wire.size(), {.kind = shm::BlockKind::kTask}).value();
    std::memcpy(block.mutable_bytes().data(), wire.data(), wire.size());
    const auto token = block.HandOff(lease).value();
    ASSERT_TRUE(agent_->Send(MakeTask(
        {.dest_fn = fn, .task = task_id, .round = 1, .block = {token.offset, wire.size(), token.generation}})));
  }

  // An f32 (or f16) update of route key 100 + seed handed to the function;
  // returns its decoded values.
  std::vector<float> SendUpdate(uint32_t fn, uint32_t lease, uint64_t task_id, uint32_t seed, double weight,
                                agg::DType dtype = agg::DType::kF32) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d;
    std::vector<float> v(model_.elements());
    for (float& x : v) x = d(rng);
    const uint64_t bytes = model_.elements() * agg::DTypeSize(dtype);
    auto block = segment_->Allocate(bytes, {.kind = shm::BlockKind::kUpdate, .round = 1, .weight = weight, .updates = 1}).value();
    if (dtype == agg::DType::kF16) {
      auto* h = reinterpret_cast<_Float16*>(block.mutable_bytes().data());
      for (size_t i = 0; i < v.size(); ++i) {
        h[i] = static_cast<_Float16>(v[i]);
        v[i] = static_cast<float>(h[i]);
      }
    } else {
      std::memcpy(block.mutable_bytes().data(), v.data(), bytes);
    }
    const auto token = block.HandOff(lease).value();
    EXPECT_TRUE(agent_->Send(MakeUpdate({.dest_fn = fn,
                                         .route_key = 100 + seed,
                                         .task = task_id,
                                         .round = 1,
                                         .dtype = static_cast<uint8_t>(dtype),
                                         .weight = weight,
                                         .block = {token.offset, bytes, token.generation}})));
    return v;
  }

  shm::BlockRef ReceiveResult(uint64_t parent_task) {
    auto got = agent_->Receive(std::chrono::seconds(10));
    EXPECT_TRUE(got && got.value()) << "no result";
    EXPECT_EQ(got.value()->kind, TRB_KIND_PARTIAL);
    EXPECT_EQ(got.value()->task, parent_task);
    return segment_->Adopt({got.value()->offset, got.value()->generation}).value();
  }

  testing::SwitchReports reports_;
  std::unique_ptr<shm::Segment> segment_;
  std::unique_ptr<dataplane::DescriptorSwitch> switch_;
  std::optional<dataplane::FunctionLink> agent_;
  agg::ModelSpec model_;
  std::vector<pid_t> pids_;
};

// Updates arrive out of order; the leaf still folds them in its keys' order,
// so the bits do not depend on arrival.
TEST_F(FunctionProcessTest, ALeafFoldsItsUpdatesInKeyOrderAndHandsThePartialBack) {
  const uint32_t lease = Spawn(7);
  SendTask(7, lease, 1, v1::ROLE_LEAF, 5, {100, 101, 102, 103, 104});
  std::vector<std::vector<float>> values(5);
  double weight = 0;
  for (uint32_t k : {3u, 0u, 4u, 1u, 2u}) {
    values[k] = SendUpdate(7, lease, 1, k, 10.0 + k, k == 2 ? agg::DType::kF16 : agg::DType::kF32);
    weight += 10.0 + k;
  }
  std::vector<float> want(model_.elements(), 0.0f);
  for (uint32_t k = 0; k < 5; ++k) {
    for (size_t i = 0; i < want.size(); ++i) want[i] = want[i] + static_cast<float>(10.0 + k) * values[k][i];
  }
  shm::BlockRef result = ReceiveResult(1001);
  EXPECT_EQ(result.meta().updates, 5u);
  EXPECT_DOUBLE_EQ(result.meta().weight, weight);
  ASSERT_EQ(result.bytes().size(), want.size() * 4);
  EXPECT_EQ(std::memcmp(result.bytes().data(), want.data(), want.size() * 4), 0) << "not the in-order fold";
}

TEST_F(FunctionProcessTest, AWarmFunctionIsReusedForTheNextTaskAndMergesPartials) {
  const uint32_t lease = Spawn(8);
  SendTask(8, lease, 1, v1::ROLE_LEAF, 2, {101, 102});
  SendUpdate(8, lease, 1, 1, 3.0);
  SendUpdate(8, lease, 1, 2, 4.0);
  shm::BlockRef leaf = ReceiveResult(1001);
  // The same process, next task: merge the leaf's partial with another one.
  SendTask(8, lease, 2, v1::ROLE_NODE_ROOT, 2);
  std::vector<float> other(model_.elements(), 1.5f);
  auto block = segment_->Allocate(other.size() * 4, {.kind = shm::BlockKind::kPartial, .round = 1, .weight = 2.0, .updates = 1}).value();
  std::memcpy(block.mutable_bytes().data(), other.data(), other.size() * 4);
  std::vector<float> want(other.size());
  std::memcpy(want.data(), leaf.bytes().data(), want.size() * 4);
  for (float& x : want) x = (0.0f + x) + 1.5f;
  // The second child's partial first: the merge order is the children's index.
  for (auto [b, index] : {std::pair{&block, 1u}, std::pair{&leaf, 0u}}) {
    const uint64_t bytes = b->bytes().size();
    const double w = b->meta().weight;
    const auto token = b->HandOff(lease).value();
    ASSERT_TRUE(agent_->Send(MakePartial({.dest_fn = 8,
                                          .src_fn = kAgentFn,
                                          .slot = index,
                                          .task = 2,
                                          .round = 1,
                                          .weight = w,
                                          .block = {token.offset, bytes, token.generation}})));
  }
  shm::BlockRef root = ReceiveResult(1002);
  EXPECT_EQ(root.meta().updates, 3u);
  EXPECT_DOUBLE_EQ(root.meta().weight, 9.0);
  EXPECT_EQ(std::memcmp(root.bytes().data(), want.data(), want.size() * 4), 0);
}

TEST_F(FunctionProcessTest, InputsOfAnAbandonedTaskAreReleasedNotFolded) {
  const uint32_t lease = Spawn(9);
  SendTask(9, lease, 1, v1::ROLE_LEAF, 3, {101, 102, 104});
  SendUpdate(9, lease, 1, 1, 1.0);
  // The agent re-runs the round: a new task replaces the old one.
  SendTask(9, lease, 2, v1::ROLE_LEAF, 1, {103});
  SendUpdate(9, lease, 1, 2, 1.0);  // late input of task 1
  const auto v = SendUpdate(9, lease, 2, 3, 2.0);
  shm::BlockRef result = ReceiveResult(1002);
  EXPECT_EQ(result.meta().updates, 1u);
  std::vector<float> want(v.size());
  for (size_t i = 0; i < v.size(); ++i) want[i] = 0.0f + 2.0f * v[i];
  EXPECT_EQ(std::memcmp(result.bytes().data(), want.data(), want.size() * 4), 0);
  result.Release();
  // Nothing of task 1 stays behind in the segment.
  for (int i = 0; i < 100 && segment_->Stats().live_blocks > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(segment_->Stats().live_blocks, 0u);
}

}  // namespace
}  // namespace tributary::function
