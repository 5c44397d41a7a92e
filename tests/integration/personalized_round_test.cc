// Personalized jobs through the runtime: each selected client downloads its
// own model through its node's gateway, and every client's update reaches
// the controller's stateful function as one event, decoded to f32. Last, the
// real SemiPFL server with SDK clients in Run() loops.
#include <gtest/gtest.h>
#include <unistd.h>

#include <mutex>
#include <optional>
#include <thread>

#include "tributary/client/run.h"
#include "tributary/client/session.h"
#include "tributary/client/torch/semipfl.h"
#include "tributary/controller/controller.h"
#include "tributary/node/node_service.h"
#include "tributary/semipfl/server.h"

namespace tributary {
namespace {

// The controller-side function: personal model = [client number, client
// number + 0.5, round] and [7, 8]; updates are recorded.
class RecordingFunction final : public agg::PersonalizedFunction {
 public:
  RecordingFunction()
      : personal_(agg::ModelSpec::Create({{"w", agg::DType::kF32, {3}}, {"extra", agg::DType::kF32, {2}}}).value()),
        update_(agg::ModelSpec::Create({{"w", agg::DType::kF32, {3}}}).value()) {}

  const agg::ModelSpec& personal_model() const override { return personal_; }
  const agg::ModelSpec& update_model() const override { return update_; }

  Result<std::vector<float>> ModelFor(const std::string& client, uint64_t round) override {
    if (client.rfind("c", 0) != 0) return MakeError(ErrorCode::kUnknownClient, client);
    const float n = static_cast<float>(std::stoi(client.substr(1)));
    return std::vector<float>{n, n + 0.5f, static_cast<float>(round), 7, 8};
  }

  Result<void> OnUpdate(const std::string& client, uint64_t round, double weight,
                        std::span<const float> values) override {
    std::lock_guard lock(mu);
    events.push_back({client, round, weight, std::vector<float>(values.begin(), values.end())});
    return Ok();
  }

  struct Event {
    std::string client;
    uint64_t round;
    double weight;
    std::vector<float> values;
  };
  std::mutex mu;
  std::vector<Event> events;

 private:
  agg::ModelSpec personal_, update_;
};

class PersonalizedRoundTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = controller::Controller::Start({});
    ASSERT_TRUE(c) << c.error().ToString();
    controller_ = std::move(c).value();
    for (int n = 0; n < 2; ++n) {
      node::NodeOptions o;
      o.node_id = "pers" + std::to_string(n) + "-" + std::to_string(getpid());
      o.store = {"tributary." + o.node_id, 32ull << 20, 1024};
      o.binary = TRIBUTARY_BINARY;
      o.dataplane = dataplane::DataPlaneMode::kUserspace;
      o.gateway.task_poll_interval = std::chrono::milliseconds(20);
      auto s = node::NodeService::Start(o, {.endpoint = controller_->endpoint()});
      ASSERT_TRUE(s) << s.error().ToString();
      ids_.push_back(o.node_id);
      nodes_.push_back(std::move(s).value());
    }
    ASSERT_TRUE(controller_->WaitForNodes(2, std::chrono::seconds(10)));
    function_ = std::make_shared<RecordingFunction>();
    controller::JobSpec j;
    j.id = "semi";
    j.model = function_->update_model();
    j.personalized = function_;
    j.deadline = std::chrono::seconds(20);
    ASSERT_TRUE(controller_->AddJob(j));
  }

  // Client `n` on node n % 2: fetch, check its own model, send w + 1.
  void Client(int n, client::Compression compression, std::vector<std::string>& problems) {
    client::SessionOptions o;
    o.endpoint = nodes_[n % 2]->agent().gateway_endpoint();
    o.client_id = "c" + std::to_string(n);
    auto s = client::Session::Connect(o, compression);
    if (!s) return problems.push_back(s.error().ToString());
    std::optional<client::Task> task;
    for (int i = 0; i < 500 && !task; ++i) {
      auto poll = s.value()->NextTask();
      if (!poll) return problems.push_back(poll.error().ToString());
      task = poll.value().task;
      if (!task) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!task) return problems.push_back(o.client_id + " got no task");
    auto model = s.value()->FetchModel(*task);
    if (!model) return problems.push_back(model.error().ToString());
    const client::Parameters& p = model.value();
    const float expected[] = {static_cast<float>(n), n + 0.5f, static_cast<float>(task->round)};
    if (p.size() != 2 || p[0].name != "w" || p[1].name != "extra" ||
        !std::equal(p[0].values.begin(), p[0].values.end(), expected)) {
      return problems.push_back(o.client_id + " got another model");
    }
    client::FitResult fit{{{"w", {3}, p[0].values}}, static_cast<uint64_t>(10 + n), {}};
    for (float& v : fit.parameters[0].values) v += 1;
    auto sent = s.value()->Submit(*task, fit);
    if (!sent) problems.push_back(sent.error().ToString());
  }

  std::unique_ptr<controller::Controller> controller_;
  std::vector<std::unique_ptr<node::NodeService>> nodes_;
  std::vector<std::string> ids_;
  std::shared_ptr<RecordingFunction> function_;
};

TEST_F(PersonalizedRoundTest, EachClientGetsItsModelAndEachUpdateIsAnEvent) {
  for (uint64_t round = 1; round <= 2; ++round) {
    std::vector<std::string> problems[4];
    std::vector<std::thread> clients;
    for (int n = 0; n < 4; ++n) {
      // Client 3 sends f16: the event still carries f32 values.
      clients.emplace_back([&, n] { Client(n, n == 3 ? client::Compression::kF16 : client::Compression::kNone, problems[n]); });
    }
    auto report = controller_->RunRound("semi", {{ids_[0], {"c0", "c2"}}, {ids_[1], {"c1", "c3"}}});
    for (auto& t : clients) t.join();
    for (const auto& p : problems) EXPECT_TRUE(p.empty()) << p.front();
    ASSERT_TRUE(report) << report.error().ToString();
    EXPECT_EQ(report.value().round, round);
    EXPECT_EQ(report.value().updates, 4u);
    EXPECT_EQ(report.value().weight, 10 + 11 + 12 + 13);
    EXPECT_EQ(report.value().updates_by_node.at(ids_[0]), 2u);
    std::lock_guard lock(function_->mu);
    ASSERT_EQ(function_->events.size(), 4 * round);
    for (size_t i = 4 * (round - 1); i < function_->events.size(); ++i) {
      const auto& e = function_->events[i];
      const int n = std::stoi(e.client.substr(1));
      EXPECT_EQ(e.round, round);
      EXPECT_EQ(e.weight, 10 + n);
      ASSERT_EQ(e.values.size(), 3u);
      EXPECT_EQ(e.values[0], n + 1.0f);
      EXPECT_EQ(e.values[1], n + 1.5f);
      EXPECT_EQ(e.values[2], round + 1.0f);
    }
  }
  EXPECT_EQ(controller_->ModelVersion("semi").value(), 2u);
}

TEST_F(PersonalizedRoundTest, AClientWithoutAPersonalModelGetsNotFoundAndTheRoundEndsAtItsDeadline) {
  controller::JobSpec j;
  j.id = "short";
  j.model = function_->update_model();
  j.personalized = function_;
  j.deadline = std::chrono::milliseconds(1500);
  ASSERT_TRUE(controller_->AddJob(j));
  std::vector<std::string> problems;
  std::thread c0([&] { Client(0, client::Compression::kNone, problems); });
  // c2 is selected but never shows up; c1 is not selected and asks for a model anyway.
  std::thread outsider([&] {
    client::SessionOptions o;
    o.endpoint = nodes_[1]->agent().gateway_endpoint();
    o.client_id = "c1";
    auto s = client::Session::Connect(o, client::Compression::kNone);
    ASSERT_TRUE(s);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto m = s.value()->transport().DownloadModel("short");
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().code, ErrorCode::kNotFound) << m.error().ToString();
  });
  auto report = controller_->RunRound("short", {{ids_[0], {"c0", "c2"}}});
  c0.join();
  outsider.join();
  EXPECT_TRUE(problems.empty()) << problems.front();
  ASSERT_TRUE(report) << report.error().ToString();
  EXPECT_EQ(report.value().updates, 1u);
  // Unknown clients are the function's to refuse: the round does not open.
  auto refused = controller_->RunRound("short", {{ids_[0], {"mallory"}}});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kUnknownClient);
}

// Rounds run one at a time across jobs: a second RunRound while one is open
// is refused at once and leaves the open one untouched.
TEST_F(PersonalizedRoundTest, ASecondRoundWhileOneIsOpenIsRefused) {
  controller::JobSpec other;
  other.id = "other";
  other.model = function_->update_model();
  other.initial_model = {0, 0, 0};
  ASSERT_TRUE(controller_->AddJob(other));
  Result<controller::RoundReport> first = MakeError(ErrorCode::kInternal, "not run");
  std::thread round([&] { first = controller_->RunRound("semi", {{ids_[0], {"c0"}}}); });
  // Once c0 has its task, the first round is open.
  client::SessionOptions o;
  o.endpoint = nodes_[0]->agent().gateway_endpoint();
  o.client_id = "c0";
  auto session = client::Session::Connect(o, client::Compression::kNone);
  ASSERT_TRUE(session) << session.error().ToString();
  std::optional<client::Task> task;
  for (int i = 0; i < 500 && !task; ++i) {
    task = session.value()->NextTask().value().task;
    if (!task) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(task.has_value());
  auto refused = controller_->RunRound("other", {{ids_[1], {"c1"}}});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().reason.find("semi"), std::string::npos) << refused.error().reason;
  auto model = session.value()->FetchModel(*task).value();
  client::FitResult fit{{{"w", {3}, model[0].values}}, 10, {}};
  ASSERT_TRUE(session.value()->Submit(*task, fit));
  round.join();
  ASSERT_TRUE(first) << first.error().ToString();
  EXPECT_EQ(first.value().updates, 1u);
  EXPECT_EQ(controller_->ModelVersion("other").value(), 0u);
}

TEST_F(PersonalizedRoundTest, SemiPflClientsInRunLoopsFeedTheHypernetwork) {
  namespace ta = client::torch_adapter;
  ta::SemiPflArchitecture arch;
  arch.input = 8;
  arch.encoder = {6, 3};
  arch.classes = 2;
  arch.base_models = 2;
  torch::manual_seed(1);
  auto labelled = [](int64_t n) {
    const torch::Tensor y = torch::randint(0, 2, {n}, torch::kLong);
    return std::pair{(y.to(torch::kFloat).view({-1, 1}) * 1.2 - 0.6 + torch::randn({n, 8}) * 0.1).clamp(-1, 1), y};
  };
  semipfl::ServerOptions so;
  so.architecture = arch;
  so.hypernetwork.hidden = 8;
  so.hypernetwork.depth = 1;
  so.min_samples = 8;
  so.base_epochs = 3;
  auto [x0, y0] = labelled(40);
  auto [x1, y1] = labelled(40);
  auto made = semipfl::Server::Create(so, {"c0", "c1", "c2"}, {{x0, y0}, {x1, y1}});
  ASSERT_TRUE(made) << made.error().ToString();
  std::shared_ptr<semipfl::Server> server = std::move(made).value();
  controller::JobSpec j;
  j.id = "semipfl";
  j.model = server->update_model();
  j.personalized = server;
  j.deadline = std::chrono::seconds(30);
  j.client_config = {{"ae_epochs", int64_t{2}}};
  ASSERT_TRUE(controller_->AddJob(j));

  std::vector<Result<client::RunSummary>> summaries(3, client::RunSummary{});
  std::vector<std::thread> clients;
  for (int n = 0; n < 3; ++n) {
    clients.emplace_back([&, n] {
      auto [x, y] = labelled(30);
      ta::SemiPflClient c(arch, x, x.slice(0, 0, 4), y.slice(0, 0, 4));
      client::RunOptions o;
      o.session.endpoint = nodes_[n % 2]->agent().gateway_endpoint();
      o.session.client_id = "c" + std::to_string(n);
      o.max_rounds = 2;
      o.max_idle = std::chrono::seconds(20);
      summaries[n] = client::Run(c, o);
    });
  }
  for (int round = 0; round < 2; ++round) {
    auto report = controller_->RunRound("semipfl", {{ids_[0], {"c0", "c2"}}, {ids_[1], {"c1"}}});
    ASSERT_TRUE(report) << report.error().ToString();
    EXPECT_EQ(report.value().updates, 3u);
  }
  for (auto& t : clients) t.join();
  for (const auto& s : summaries) {
    ASSERT_TRUE(s) << s.error().ToString();
    EXPECT_EQ(s.value().rounds, 2u);
  }
  EXPECT_EQ(server->stats().events, 6u);
  EXPECT_EQ(server->stats().models, 6u);
  EXPECT_GT(server->stats().last_delta_norm, 0);
}

}  // namespace
}  // namespace tributary
