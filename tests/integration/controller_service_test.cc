// The controller's service runs a job's rounds by itself: it waits for the
// clients, selects them with the seeded selection, and calls the job's hooks
// (the simulator's evaluation) after each round and on a failed attempt. One
// node agent and loadgen clients on loopback, in plaintext.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "tributary/controller/controller_service.h"
#include "tributary/loadgen/loadgen.h"
#include "tributary/node/node_service.h"

namespace tributary::controller {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint32_t kClients = 6;

struct Seen {
  uint64_t round;
  std::vector<AvailableClient> selected;
  uint64_t updates;
};

class ControllerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("controller-service-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    node_id_ = "svc" + std::to_string(getpid());
  }

  void TearDown() override {
    stop_ = true;
    if (clients_.joinable()) clients_.join();
    node_.reset();
    service_.reset();
    fs::remove_all(dir_);
  }

  ServiceJob Job(uint64_t rounds) {
    ServiceJob j;
    j.source = "test";
    j.spec.id = "svc";
    j.spec.model = agg::ModelSpec::Create({{"w", agg::DType::kF32, {1000}}}).value();
    j.spec.initial_model.assign(1000, 0.0f);
    j.spec.deadline = std::chrono::seconds(30);
    j.schedule = {.rounds = rounds, .clients_per_round = 4, .min_clients = 4, .start_after = kClients, .seed = 7};
    j.after_round = [this](const RoundReport& r, const std::vector<AvailableClient>& selected) -> Result<void> {
      std::lock_guard lock(mu_);
      seen_.push_back({r.round, selected, r.updates});
      return Ok();
    };
    return j;
  }

  // The service with `job`, a node agent, and kClients loadgen clients that
  // upload `train` after each download.
  void Start(ServiceJob job, std::chrono::milliseconds train = std::chrono::milliseconds(0)) {
    ControllerOptions o;
    o.checkpoint_dir = (dir_ / "state").string();
    std::vector<ServiceJob> jobs;
    jobs.push_back(std::move(job));
    auto service = ControllerService::Start(o, std::move(jobs), "");
    ASSERT_TRUE(service) << service.error().ToString();
    service_ = std::move(service).value();
    node::NodeOptions n;
    n.node_id = node_id_;
    n.store = {"tributary." + node_id_, 32ull << 20, 1024};
    n.binary = TRIBUTARY_BINARY;
    n.dataplane = dataplane::DataPlaneMode::kUserspace;
    n.gateway.task_poll_interval = std::chrono::milliseconds(50);
    auto node = node::NodeService::Start(n, {.endpoint = service_->controller().endpoint()});
    ASSERT_TRUE(node) << node.error().ToString();
    node_ = std::move(node).value();
    ASSERT_TRUE(service_->controller().WaitForNodes(1, std::chrono::seconds(20)));
    loadgen::LoadgenOptions l;
    l.gateways = {node_->agent().gateway_endpoint()};
    l.clients = kClients;
    l.concurrency = 2;
    l.train_time = train;
    clients_ = std::thread([this, l] { (void)loadgen::RunLoadgen(l, &stop_); });
  }

  json Status() { return json::parse(service_->StatusJson())["jobs"]["svc"]; }

  fs::path dir_;
  std::string node_id_;
  std::unique_ptr<ControllerService> service_;
  std::unique_ptr<node::NodeService> node_;
  std::atomic<bool> stop_{false};
  std::thread clients_;
  std::mutex mu_;
  std::vector<Seen> seen_;
};

TEST_F(ControllerServiceTest, RunsTheRoundsWithTheSeededSelectionAndCallsTheHookAfterEach) {
  ASSERT_NO_FATAL_FAILURE(Start(Job(3)));
  ASSERT_TRUE(service_->WaitForJob("svc"));
  std::vector<AvailableClient> everyone;
  for (uint32_t c = 0; c < kClients; ++c) everyone.push_back({loadgen::ClientId("load-", c), node_id_});
  std::lock_guard lock(mu_);
  ASSERT_EQ(seen_.size(), 3u);
  for (uint64_t r = 1; r <= 3; ++r) {
    const Seen& s = seen_[r - 1];
    EXPECT_EQ(s.round, r);
    EXPECT_EQ(s.updates, 4u);
    // Every client checked in before round 1 and stays available: the
    // selection is the seeded one over all of them.
    EXPECT_EQ(s.selected, SelectClients(everyone, 4, 7, "svc", r, 0)) << "round " << r;
  }
  EXPECT_NE(seen_[0].selected, seen_[1].selected) << "rounds select anew";
  const json st = Status();
  EXPECT_EQ(st["phase"], "done");
  EXPECT_EQ(st["rounds_done"], 3);
  EXPECT_EQ(st["last_round"]["updates"], 4);
  EXPECT_EQ(service_->controller().ModelVersion("svc").value(), 3u);
  std::ifstream log(dir_ / "state" / "svc" / "rounds.jsonl");
  int lines = 0;
  for (std::string l; std::getline(log, l);) lines += 1;
  EXPECT_EQ(lines, 3);
  EXPECT_EQ(service_->WaitForJob("other").error().code, ErrorCode::kUnknownJob);
}

TEST_F(ControllerServiceTest, AHookErrorEndsTheJobWithThatError) {
  ServiceJob job = Job(0);  // until stopped, but the hook stops it
  job.after_round = [this](const RoundReport& r, const std::vector<AvailableClient>& selected) -> Result<void> {
    std::lock_guard lock(mu_);
    seen_.push_back({r.round, selected, r.updates});
    if (r.round == 2) return MakeError(ErrorCode::kIo, "the evaluation could not write its metrics");
    return Ok();
  };
  ASSERT_NO_FATAL_FAILURE(Start(std::move(job)));
  auto ended = service_->WaitForJob("svc");
  ASSERT_FALSE(ended);
  EXPECT_EQ(ended.error().code, ErrorCode::kIo);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // no round 3 starts
  EXPECT_EQ(service_->controller().ModelVersion("svc").value(), 2u);
  const json st = Status();
  EXPECT_EQ(st["phase"], "failed");
  EXPECT_NE(st["last_error"].get<std::string>().find("could not write its metrics"), std::string::npos) << st.dump();
  std::lock_guard lock(mu_);
  EXPECT_EQ(seen_.size(), 2u);
}

// Clients slower than the deadline: each attempt fails. By default the round
// runs again with a new selection; an on_failure that says no ends the job.
TEST_F(ControllerServiceTest, AFailedAttemptRunsAgainUnlessOnFailureEndsTheJob) {
  ServiceJob job = Job(1);
  job.spec.deadline = std::chrono::milliseconds(600);
  std::atomic<int> failures{0};
  job.on_failure = [&](const Error& e) -> Result<void> {
    if (failures.fetch_add(1) == 0) return Ok();  // the first: run it again
    return MakeError(e.code, "giving up: " + e.reason);
  };
  ASSERT_NO_FATAL_FAILURE(Start(std::move(job), std::chrono::milliseconds(3000)));
  auto ended = service_->WaitForJob("svc");
  ASSERT_FALSE(ended);
  EXPECT_EQ(ended.error().code, ErrorCode::kRoundClosed) << ended.error().ToString();
  EXPECT_NE(ended.error().reason.find("giving up"), std::string::npos);
  EXPECT_EQ(failures.load(), 2);
  const json st = Status();
  EXPECT_EQ(st["phase"], "failed");
  EXPECT_EQ(st["reruns"], 1) << "one re-run before the job ended";
  EXPECT_EQ(st["attempt"], 1);
  EXPECT_EQ(service_->controller().ModelVersion("svc").value(), 0u);
  std::lock_guard lock(mu_);
  EXPECT_TRUE(seen_.empty());
}

// The placement on loopback: node "a" holds only a few of a round's updates,
// and 8 of the 10 clients ask it. Its excess is steered to "b" before upload;
// every selected client's update is folded each round.
TEST(ControllerServicePlacement, AnOverloadedNodesExcessIsSteeredAndEveryUpdateFolded) {
  const std::string tag = std::to_string(getpid());
  ServiceJob j;
  j.source = "test";
  j.spec.id = "spill";
  // Below the kernels' parallel threshold: OpenMP teams are invisible to ThreadSanitizer.
  j.spec.model = agg::ModelSpec::Create({{"w", agg::DType::kF32, {60000}}}).value();
  j.spec.initial_model.assign(60000, 0.0f);
  j.spec.fan_in = 2;
  j.spec.deadline = std::chrono::seconds(20);
  j.schedule = {.rounds = 3, .clients_per_round = 10, .min_clients = 10, .start_after = 10, .seed = 5};
  std::mutex mu;
  std::vector<RoundReport> reports;
  j.after_round = [&](const RoundReport& r, const std::vector<AvailableClient>&) -> Result<void> {
    std::lock_guard lock(mu);
    reports.push_back(r);
    return Ok();
  };
  j.on_failure = [](const Error& e) -> Result<void> { return e; };
  std::vector<ServiceJob> jobs;
  jobs.push_back(std::move(j));
  // Ten function processes and two nodes on two cores are slow under the
  // sanitizers: this test is about placement, not about losing nodes.
  ControllerOptions options;
  options.node_timeout = std::chrono::seconds(30);
  auto service = ControllerService::Start(options, std::move(jobs), "");
  ASSERT_TRUE(service) << service.error().ToString();
  std::vector<std::unique_ptr<node::NodeService>> nodes;
  for (const auto& [id, bytes] : {std::pair{"a", 2ull << 20}, std::pair{"b", 64ull << 20}}) {
    node::NodeOptions n;
    n.node_id = std::string(id) + tag;
    n.store = {"tributary.spill-" + n.node_id, bytes, 1024};
    n.binary = TRIBUTARY_BINARY;
    n.dataplane = dataplane::DataPlaneMode::kUserspace;
    n.gateway.task_poll_interval = std::chrono::milliseconds(50);
    auto node = node::NodeService::Start(n, {.endpoint = service.value()->controller().endpoint()});
    ASSERT_TRUE(node) << node.error().ToString();
    nodes.push_back(std::move(node).value());
  }
  ASSERT_TRUE(service.value()->controller().WaitForNodes(2, std::chrono::seconds(20)));
  std::atomic<bool> stop{false};
  loadgen::LoadgenOptions l;
  const std::string a = nodes[0]->agent().gateway_endpoint(), b = nodes[1]->agent().gateway_endpoint();
  l.gateways = {a, a, a, a, b};  // client c asks gateways[c % 5]
  l.clients = 10;
  l.concurrency = 5;
  Result<loadgen::LoadgenReport> seen = loadgen::LoadgenReport{};
  std::thread clients([&] { seen = loadgen::RunLoadgen(l, &stop); });
  auto done = service.value()->WaitForJob("spill");
  const json st = json::parse(service.value()->StatusJson())["jobs"]["spill"];
  stop = true;
  clients.join();
  ASSERT_TRUE(seen);
  ASSERT_TRUE(done) << done.error().ToString() << "\n" << st.dump(1) << "\nclients: " << seen.value().accepted
                    << " accepted, " << seen.value().tasks << " tasks; refused: " << json(seen.value().rejected).dump();
  EXPECT_EQ(seen.value().accepted, 30u);
  EXPECT_TRUE(seen.value().rejected.empty());
  std::lock_guard lock(mu);
  ASSERT_EQ(reports.size(), 3u);
  for (const RoundReport& r : reports) {
    EXPECT_EQ(r.updates, 10u) << "round " << r.round;
    EXPECT_TRUE(r.missing.empty()) << "round " << r.round;
  }
  const json& plan = st["placement"];
  const json& small = plan["nodes"]["a" + tag];
  EXPECT_EQ(small["checked_in"], 8) << plan.dump(1);
  EXPECT_GT(small["steered_out"].get<uint64_t>(), 0u) << plan.dump(1);
  EXPECT_EQ(small["actual_updates"], small["expected_updates"]);
  EXPECT_EQ(plan["nodes"]["b" + tag]["actual_updates"].get<uint64_t>(), 2 + small["steered_out"].get<uint64_t>());
  // Steering that does not add up is refused before any plan goes out.
  Controller& c = service.value()->controller();
  const std::string na = "a" + tag, nb = "b" + tag;
  auto bad = c.RunRound("spill", {{nb, {"x"}}}, {}, {{"y", na, nb}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.error().reason.find("not among its clients"), std::string::npos) << bad.error().reason;
  bad = c.RunRound("spill", {{nb, {"x"}}}, {}, {{"x", na, nb}, {"x", na, nb}});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().reason.find("steered twice"), std::string::npos) << bad.error().reason;
  bad = c.RunRound("spill", {{na, {"x"}}, {nb, {"x"}}}, {}, {{"x", na, nb}});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().reason.find("also among its clients"), std::string::npos) << bad.error().reason;
  bad = c.RunRound("spill", {{nb, {"x"}}}, {}, {{"x", "nowhere", nb}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(c.ModelVersion("spill").value(), 3u) << "no round ran";
}

}  // namespace
}  // namespace tributary::controller
