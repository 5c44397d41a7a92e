// One node agent end to end: real gateway, real function processes, the
// data plane of this machine. The node's partial must equal a flat FedAvg of
// the same updates computed here, also when functions are killed mid-round.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <optional>
#include <thread>

#include "support/numeric.h"
#include "support/upload_client.h"
#include "tributary/node/node_agent.h"

namespace tributary::node {
namespace {

using Clock = std::chrono::steady_clock;

agg::ModelSpec Model() {
  return agg::ModelSpec::Create({{"conv", agg::DType::kF32, {64, 3, 3, 3}}, {"fc", agg::DType::kF32, {100, 64}},
                                 {"bias", agg::DType::kF32, {100}}})
      .value();
}

struct Client {
  std::string id;
  std::string payload;
  uint64_t samples;
};

std::vector<Client> MakeClients(int n, uint32_t seed) {
  std::vector<Client> out;
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  const agg::ModelSpec m = Model();
  for (int c = 0; c < n; ++c) {
    std::vector<float> v(m.elements());
    for (float& x : v) x = d(rng);
    out.push_back({"client-" + std::to_string(c), std::string(reinterpret_cast<char*>(v.data()), v.size() * 4),
                   static_cast<uint64_t>(10 + (c * 7) % 50)});
  }
  return out;
}

gateway::RoundSpec Spec(const std::vector<Client>& clients, uint64_t round) {
  gateway::RoundSpec s;
  s.job = "job";
  s.round = round;
  s.model_version = round;
  s.model = Model();
  for (size_t c = 0; c < clients.size(); ++c) s.selected[clients[c].id] = static_cast<uint32_t>(1000 + c);
  return s;
}

v1::UpdateHeader Header(const Client& c, uint64_t round) {
  v1::UpdateHeader h;
  h.set_job_id("job");
  h.set_round(round);
  h.set_client_id(c.id);
  h.set_model_version(round);
  h.set_sample_count(c.samples);
  const agg::ModelSpec m = Model();
  for (const auto& t : m.tensors()) *h.add_tensors() = protocol::ToProto(t);
  h.set_payload_bytes(c.payload.size());
  h.set_payload_xxh3(protocol::PayloadHasher::Of(std::as_bytes(std::span(c.payload.data(), c.payload.size()))));
  return h;
}

// Flat weighted sum in double: the independent reference.
std::vector<double> FlatSum(const std::vector<Client>& clients) {
  std::vector<double> sum(Model().elements(), 0.0);
  for (const Client& c : clients) {
    const float* x = reinterpret_cast<const float*>(c.payload.data());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += static_cast<double>(c.samples) * x[i];
  }
  return sum;
}

// A process that exists and is not a zombie.
[[maybe_unused]] bool Exists(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line) || line.rfind(')') == std::string::npos) return false;
  return line[line.rfind(')') + 2] != 'Z';
}

std::string Bytes(const shm::BlockRef& partial) {
  return std::string(reinterpret_cast<const char*>(partial.bytes().data()), partial.bytes().size());
}

double RelativeError(const shm::BlockRef& partial, const std::vector<double>& want) {
  const std::span<const float> got(reinterpret_cast<const float*>(partial.bytes().data()), want.size());
  return testing::RelativeError(got, std::span<const double>(want));
}

class NodeAgentTest : public ::testing::Test {
 protected:
  void SetUp() override { StartAgent(AggregationTransport::kSharedMemory); }

  // Without `autoscaling`, the autoscaler is off: functions start on demand
  // and go after the keep-alive, so the tests can count them.
  void StartAgent(AggregationTransport transport, std::chrono::milliseconds liveness = std::chrono::seconds(10),
                  std::optional<planner::AutoscaleOptions> autoscaling = std::nullopt) {
    agent_.reset();
    NodeOptions o;
    o.autoscale = autoscaling.has_value();
    if (autoscaling) o.autoscaling = *autoscaling;
    o.function_liveness = liveness;
    o.node_id = "test-" + std::to_string(getpid());
    o.store = {"tributary." + o.node_id, 256ull << 20, 4096};
    o.binary = TRIBUTARY_BINARY;
    o.keep_alive = std::chrono::milliseconds(200);
    o.transport = transport;
    auto agent = NodeAgent::Start(o);
    ASSERT_TRUE(agent) << agent.error().ToString();
    agent_ = std::move(agent).value();
  }

  // The node's partial of an undisturbed round over `clients`: the bits a
  // round that loses nothing must reproduce.
  std::string Undisturbed(const std::vector<Client>& clients, uint64_t round, uint32_t fan_in) {
    EXPECT_TRUE(agent_->OpenRound(Spec(clients, round), fan_in));
    UploadAll(clients, round);
    auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
    EXPECT_TRUE(result) << result.error().ToString();
    return result ? Bytes(result.value().partial) : std::string();
  }

  void UploadAll(const std::vector<Client>& clients, uint64_t round) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        testing::UploadClient up(agent_->gateway_endpoint());
        for (size_t c = t; c < clients.size(); c += 4) {
          auto r = up.Upload(Header(clients[c], round), clients[c].payload);
          EXPECT_TRUE(r && r.value().has_update_accepted()) << clients[c].id << ": " << (r ? "" : r.error().ToString());
        }
      });
    }
    for (auto& t : threads) t.join();
  }

  std::unique_ptr<NodeAgent> agent_;
};

#if !TRIBUTARY_SLOW_TESTS
TEST_F(NodeAgentTest, TheNodesPartialEqualsFlatFedAvgAndFunctionsAreReused) {
  for (uint64_t round = 1; round <= 2; ++round) {
    const auto clients = MakeClients(30, static_cast<uint32_t>(round));
    ASSERT_TRUE(agent_->OpenRound(Spec(clients, round), 4));
    UploadAll(clients, round);
    auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
    ASSERT_TRUE(result) << result.error().ToString();
    EXPECT_EQ(result.value().partial.meta().updates, 30u);
    double weight = 0;
    for (const Client& c : clients) weight += c.samples;
    EXPECT_DOUBLE_EQ(result.value().partial.meta().weight, weight);
    EXPECT_LT(RelativeError(result.value().partial, FlatSum(clients)), 1e-6);
    EXPECT_EQ(result.value().rebuilds, 0u);
  }
  const NodeStats s = agent_->Stats();
  // 8 leaves, 2 intermediates (8 > fan-in 4) and the node-root run in the
  // 8 leaves' processes (reuse across levels), started in round 1.
  EXPECT_EQ(s.functions.cold_starts, 8u);
  EXPECT_EQ(s.functions.warm_reuses, 8u);  // all reused in round 2
  EXPECT_EQ(s.rounds_completed, 2u);
  // Idle past the keep-alive: scale to zero.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(agent_->ReapIdleFunctions(), 8u);
  for (int i = 0; i < 100 && agent_->Stats().functions.live > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(agent_->Stats().functions.live, 0u);
  EXPECT_EQ(agent_->Stats().store.live_blocks, 0u);
}

// The autoscaler keeps the last round's tree warm for a stable window (FL
// rounds recur), so the next round starts no function; then, with nothing
// arriving, it lets them go after the grace.
TEST_F(NodeAgentTest, TheAutoscalerKeepsTheLastRoundsTreeWarmThenScalesToZero) {
  planner::AutoscaleOptions a;
  a.stable_window_s = 4;
  a.panic_window_s = 1;
  a.scale_to_zero_grace_s = 1;
  ASSERT_NO_FATAL_FAILURE(StartAgent(AggregationTransport::kSharedMemory, std::chrono::seconds(10), a));
  EXPECT_GT(agent_->Stats().function_fold_bytes_per_s, 0) << "measured at start";
  EXPECT_GT(agent_->Stats().fold_bytes_per_s, 0);
  const auto clients = MakeClients(30, 1);
  (void)Undisturbed(clients, 1, 4);
  // Within a decision or two it wants the round's 8 processes.
  for (int i = 0; i < 40 && agent_->Stats().autoscale_desired != 8; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(agent_->Stats().autoscale_desired, 8u);
  EXPECT_EQ(agent_->Stats().autoscale_why, "planned round");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // past the keep-alive
  EXPECT_EQ(agent_->ReapIdleFunctions(), 0u);
  // Round 1 may already reuse a function whose leaf finished before another
  // leaf's task was due (it depends on the machine's pace): what is asserted
  // is that round 2 starts no process: its places go to warm functions.
  const NodeStats after_first = agent_->Stats();
  EXPECT_GE(after_first.functions.cold_starts, 1u);
  EXPECT_LE(after_first.functions.cold_starts, 8u);
  const auto second = MakeClients(30, 2);
  (void)Undisturbed(second, 2, 4);
  NodeStats s = agent_->Stats();
  EXPECT_EQ(s.functions.cold_starts, after_first.functions.cold_starts) << "round 2 found every function warm";
  EXPECT_GE(s.functions.warm_reuses, after_first.functions.warm_reuses + 1u);
  // Past the stable window, nothing planned and nothing arriving: zero
  // (halving once a second at most, then the grace).
  for (int i = 0; i < 300 && agent_->Stats().functions.live > 0; ++i) {
    agent_->ReapIdleFunctions();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  s = agent_->Stats();
  EXPECT_EQ(s.functions.live, 0u);
  EXPECT_EQ(s.autoscale_desired, 0u);
  EXPECT_EQ(s.autoscale_why, "idle");
}

TEST_F(NodeAgentTest, AKilledFunctionIsReplacedAndNoUpdateIsLost) {
  const auto clients = MakeClients(24, 7);
  const std::string undisturbed = Undisturbed(clients, 1, 4);
  const uint32_t deaths_before = static_cast<uint32_t>(agent_->Stats().functions.deaths);
  ASSERT_TRUE(agent_->OpenRound(Spec(clients, 2), 4));
  // Half the clients upload, then a function dies, then the rest upload.
  std::vector<Client> first(clients.begin(), clients.begin() + 12), rest(clients.begin() + 12, clients.end());
  UploadAll(first, 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto functions = agent_->RoundFunctions();
  // 6 leaves; leaf 0's process runs intermediate 0 and the node-root after
  // it, leaf 4's intermediate 1.
  ASSERT_EQ(functions.size(), 6u);
  // The one holding the partials of the leaves done so far (intermediate 0)
  // with the node-root queued; one whose leaf has not had its clients yet and
  // hosts intermediate 1; and one more such leaf.
  ASSERT_EQ(kill(functions[0].pid, SIGKILL), 0);
  ASSERT_EQ(kill(functions[4].pid, SIGKILL), 0);
  ASSERT_EQ(kill(functions[5].pid, SIGKILL), 0);
  UploadAll(rest, 2);
  auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_GE(result.value().rebuilds, 1u);
  EXPECT_EQ(result.value().partial.meta().updates, 24u);
  // Replacements took the same places and committed results their slots: the same bits.
  EXPECT_TRUE(Bytes(result.value().partial) == undisturbed) << "a failure that lost nothing changed the sum";
  EXPECT_LT(RelativeError(result.value().partial, FlatSum(clients)), 1e-6);
  // A death the rebuilt tree did not wait for is counted when its exit is
  // reported, which may come after the round's result.
  for (int i = 0; i < 100 && agent_->Stats().functions.deaths < deaths_before + 3u; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(agent_->Stats().functions.deaths, deaths_before + 3u);
}

// A function stopped (SIGSTOP) while it holds a task falls silent: it is
// killed at the liveness bound and replaced in its place, so the round ends
// with the same bits; teardown then finishes.
TEST_F(NodeAgentTest, AHungFunctionIsKilledAndReplacedAndNoBitChanges) {
  StartAgent(AggregationTransport::kSharedMemory, std::chrono::seconds(3));
  const auto clients = MakeClients(24, 8);
  const std::string undisturbed = Undisturbed(clients, 1, 4);
  ASSERT_TRUE(agent_->OpenRound(Spec(clients, 2), 4));
  std::vector<Client> first(clients.begin(), clients.begin() + 12), rest(clients.begin() + 12, clients.end());
  UploadAll(first, 2);
  const auto functions = agent_->RoundFunctions();
  ASSERT_EQ(functions.size(), 6u);  // 6 leaves; leaf 0's process runs intermediate 0 and the node-root
  // A leaf whose clients have not uploaded yet, and the node-root's process.
  ASSERT_EQ(kill(functions[4].pid, SIGSTOP), 0);
  ASSERT_EQ(kill(functions.front().pid, SIGSTOP), 0);
  UploadAll(rest, 2);
  auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_GE(result.value().rebuilds, 1u);
  EXPECT_EQ(result.value().partial.meta().updates, 24u);
  EXPECT_TRUE(Bytes(result.value().partial) == undisturbed) << "a hung function changed the sum";
  // The first one killed may end the round before the other's bound (their
  // last heartbeats differ): that one goes right after.
  for (int i = 0; i < 100 && (Exists(functions[4].pid) || Exists(functions.front().pid)); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_FALSE(Exists(functions[4].pid));
  EXPECT_FALSE(Exists(functions.front().pid));
  EXPECT_GE(agent_->Stats().functions.liveness_kills, 2u);
  EXPECT_EQ(agent_->Stats().functions.deaths, 0u);
}

// At the deadline the tree is rebuilt for what arrived without the function
// that stalled: the round ends right after the deadline, not at the liveness
// bound (30 s here), and not never.
TEST_F(NodeAgentTest, TheDeadlineRebuildDoesNotReuseAStalledFunction) {
  StartAgent(AggregationTransport::kSharedMemory, std::chrono::seconds(30));
  const auto clients = MakeClients(10, 10);
  ASSERT_TRUE(agent_->OpenRound(Spec(clients, 1), 3));
  const std::vector<Client> arrived(clients.begin(), clients.begin() + 9);
  UploadAll(arrived, 1);
  const auto functions = agent_->RoundFunctions();
  ASSERT_EQ(kill(functions.front().pid, SIGSTOP), 0);  // leaf 0's, now the node-root's
  const auto deadline = Clock::now() + std::chrono::milliseconds(2500);
  auto result = agent_->WaitRound(deadline);
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_LT(Clock::now() - deadline, std::chrono::seconds(10)) << "the stalled node-root was handed out again";
  EXPECT_EQ(result.value().partial.meta().updates, 9u);
  EXPECT_LT(RelativeError(result.value().partial, FlatSum(arrived)), 1e-6);
  EXPECT_EQ(agent_->Stats().functions.liveness_kills, 0u);
}  // teardown: the stopped node-root is killed, the agent's destructor returns

// Teardown while a round waits on a stopped function: Shutdown() from another
// thread ends the round at once (what ~NodeService does), and the agent's
// destructor then stops the function.
TEST_F(NodeAgentTest, ShutdownEndsARoundHeldByAStoppedFunction) {
  const auto clients = MakeClients(8, 11);
  ASSERT_TRUE(agent_->OpenRound(Spec(clients, 1), 4));
  // The first leaf's clients, then the node-root's process (the first leaf's,
  // idle, its task long started: not inside the segment's allocator) stops,
  // then the others.
  UploadAll(std::vector<Client>(clients.begin(), clients.begin() + 4), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto functions = agent_->RoundFunctions();
  ASSERT_EQ(kill(functions.front().pid, SIGSTOP), 0);  // the round cannot end by itself now
  UploadAll(std::vector<Client>(clients.begin() + 4, clients.end()), 1);
  std::thread teardown([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    agent_->Shutdown();
  });
  const auto t0 = Clock::now();
  auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(60));
  teardown.join();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kRoundClosed);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(30)) << "the round outlived Shutdown()";
  EXPECT_EQ(agent_->OpenRound(Spec(clients, 2), 4).error().code, ErrorCode::kRoundClosed);
  agent_.reset();
  EXPECT_FALSE(Exists(functions.front().pid));
}

TEST_F(NodeAgentTest, ACommittedLeafFreesItsUpdates) {
  const auto clients = MakeClients(24, 5);
  ASSERT_TRUE(agent_->OpenRound(Spec(clients, 1), 4));
  // The first 12 clients are exactly the first 3 leaves (route keys in order).
  UploadAll(std::vector<Client>(clients.begin(), clients.begin() + 12), 1);
  // Left in the segment: the 3 committed results the agent holds, the 3
  // running leaves' accumulators and intermediate 0's, which runs in leaf 0's
  // process now (intermediate 1 and the node-root wait in theirs, with no
  // accumulator yet); none of the 12 updates.
  uint64_t live = 0;
  for (int i = 0; i < 200 && (live = agent_->Stats().store.live_blocks) != 7; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(live, 7u);
  UploadAll(std::vector<Client>(clients.begin() + 12, clients.end()), 1);
  auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_EQ(result.value().partial.meta().updates, 24u);
  EXPECT_LT(RelativeError(result.value().partial, FlatSum(clients)), 1e-6);
}

// The serverful comparison transport folds the same tree from whole payloads
// over TCP, holds no update once forwarded, and fails a round on a death.
TEST_F(NodeAgentTest, TheServerfulTransportGivesTheSameResult) {
  StartAgent(AggregationTransport::kTcp);
  const auto clients = MakeClients(30, 21);
  ASSERT_TRUE(agent_->OpenRound(Spec(clients, 1), 4));
  UploadAll(clients, 1);
  auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_EQ(result.value().partial.meta().updates, 30u);
  EXPECT_LT(RelativeError(result.value().partial, FlatSum(clients)), 1e-6);
  EXPECT_EQ(agent_->Stats().store.live_blocks, 1u);  // the result only: functions worked in their own memory

  ASSERT_TRUE(agent_->OpenRound(Spec(clients, 2), 4));
  ASSERT_EQ(kill(agent_->RoundFunctions().front().pid, SIGKILL), 0);
  auto failed = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, ErrorCode::kInternal);
}

TEST_F(NodeAgentTest, BadClientsGetTypedErrorsAndTheRoundStillCompletes) {
  const auto clients = MakeClients(12, 11);
  ASSERT_TRUE(agent_->OpenRound(Spec(clients, 1), 4));
  testing::UploadClient bad(agent_->gateway_endpoint());
  const Client& c3 = clients[3];
  std::string nan_payload = c3.payload;
  const float nan = std::nanf("");
  std::memcpy(nan_payload.data() + 40, &nan, 4);
  auto code = [](const Result<v1::Envelope>& r) { return r ? ErrorCode::kOk : r.error().code; };
  EXPECT_EQ(code(bad.RequestRaw("not an envelope")), ErrorCode::kMalformedFrame);
  auto nan_header = Header(c3, 1);
  nan_header.set_payload_xxh3(protocol::PayloadHasher::Of(std::as_bytes(std::span(nan_payload.data(), nan_payload.size()))));
  EXPECT_EQ(code(bad.Upload(nan_header, nan_payload)), ErrorCode::kNonFinite);
  auto wrong_shape = Header(c3, 1);
  wrong_shape.mutable_tensors(1)->set_shape(0, 99);
  EXPECT_EQ(code(bad.Header(wrong_shape)), ErrorCode::kShapeMismatch);
  auto stranger = Header(c3, 1);
  stranger.set_client_id("stranger");
  EXPECT_EQ(code(bad.Header(stranger)), ErrorCode::kNotSelected);
  auto lying = Header(c3, 1);
  lying.set_payload_xxh3(lying.payload_xxh3() + 1);
  EXPECT_EQ(code(bad.Upload(lying, c3.payload)), ErrorCode::kChecksumMismatch);
  UploadAll(clients, 1);  // client-3 included: its rejected attempts do not count against it
  EXPECT_EQ(code(bad.Upload(Header(c3, 1), c3.payload)), ErrorCode::kDuplicateUpdate);
  auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_EQ(result.value().partial.meta().updates, 12u);
  EXPECT_LT(RelativeError(result.value().partial, FlatSum(clients)), 1e-6);
  EXPECT_EQ(agent_->Stats().gateway.rejected.size(), 6u);
}

TEST_F(NodeAgentTest, AtTheDeadlineTheNodeFoldsWhatArrived) {
  const auto clients = MakeClients(10, 9);
  ASSERT_TRUE(agent_->OpenRound(Spec(clients, 1), 3));
  std::vector<Client> arrived(clients.begin(), clients.begin() + 7);
  UploadAll(arrived, 1);
  auto result = agent_->WaitRound(Clock::now() + std::chrono::milliseconds(500));
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_EQ(result.value().partial.meta().updates, 7u);
  EXPECT_LT(RelativeError(result.value().partial, FlatSum(arrived)), 1e-6);
  // A late client is told the round is closed.
  testing::UploadClient late(agent_->gateway_endpoint());
  auto r = late.Header(Header(clients[9], 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kRoundClosed);
}

#else
// Slow: SIGKILL a random function of the round at a random moment, 20 times;
// every round must still fold exactly its 16 updates.
TEST_F(NodeAgentTest, SlowRandomKillsNeverChangeTheResult) {
  std::mt19937 rng(2026);
  std::set<pid_t> victims;  // a process killed late in a round may be handed out, dead, in the next
  for (uint64_t round = 1; round <= 20; ++round) {
    const auto clients = MakeClients(16, static_cast<uint32_t>(100 + round));
    // Odd rounds run undisturbed; the next round, the same updates with a kill.
    const std::string undisturbed = Undisturbed(clients, 2 * round - 1, 4);
    const uint64_t r = 2 * round;
    ASSERT_TRUE(agent_->OpenRound(Spec(clients, r), 4));
    std::thread uploads([&] { UploadAll(clients, r); });
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 40)(rng)));
    const auto functions = agent_->RoundFunctions();
    if (!functions.empty()) {
      const auto& victim = functions[std::uniform_int_distribution<size_t>(0, functions.size() - 1)(rng)];
      kill(victim.pid, SIGKILL);
      victims.insert(victim.pid);
    }
    uploads.join();
    auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
    ASSERT_TRUE(result) << "round " << round << ": " << result.error().ToString();
    EXPECT_EQ(result.value().partial.meta().updates, 16u) << "round " << round;
    EXPECT_TRUE(Bytes(result.value().partial) == undisturbed) << "round " << round << ": the kill changed the bits";
    EXPECT_LT(RelativeError(result.value().partial, FlatSum(clients)), 1e-6) << "round " << round;
  }
  // Exits are noticed asynchronously: the last one may still be on its way.
  for (int i = 0; i < 100 && agent_->Stats().functions.deaths < victims.size(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(victims.size(), 15u);
  EXPECT_EQ(agent_->Stats().functions.deaths, victims.size());
  EXPECT_EQ(agent_->Stats().rounds_completed, 40u);
  // What the dead held in shared memory is reclaimed: no block outlives its round.
  for (int i = 0; i < 100; ++i) {
    agent_->ReapIdleFunctions();
    const NodeStats s = agent_->Stats();
    if (s.store.live_blocks == 0 && s.store.live_leases == 1 + s.functions.live) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const NodeStats s = agent_->Stats();
  EXPECT_EQ(s.store.live_blocks, 0u);
  EXPECT_EQ(s.store.live_leases, 1 + s.functions.live);
}

#endif

}  // namespace
}  // namespace tributary::node
