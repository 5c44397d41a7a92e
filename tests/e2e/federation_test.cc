// Three `tributary node` processes, a controller, 100 clients: the global
// model after two FedAvg rounds must equal a flat FedAvg computed here, and a
// restarted controller must resume from its checkpoint.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "support/numeric.h"
#include "support/upload_client.h"
#include "tributary/controller/controller.h"

namespace tributary::controller {
namespace {

agg::ModelSpec Model() {
  return agg::ModelSpec::Create({{"conv", agg::DType::kF32, {32, 3, 5, 5}}, {"fc", agg::DType::kF32, {10, 512}},
                                 {"bias", agg::DType::kF32, {10}}})
      .value();
}

class FederationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/federation-" + std::to_string(getpid());
    std::filesystem::create_directories(dir_);
    StartController();
    for (int n = 0; n < 3; ++n) {
      const std::string id = "n" + std::to_string(n) + "-" + std::to_string(getpid());
      const std::string cfg = dir_ + "/" + id + ".yaml";
      std::ofstream(cfg) << "node_id: " << id << "\nstore:\n  segment_bytes: 128MiB\nkeep_alive_ms: 5000\nmetrics_bind: 127.0.0.1:0\n"
                             << "gateway_security:\n  mode: none\ncontroller_security:\n  mode: none\n";
      const pid_t pid = fork();
      if (pid == 0) {
        execl(TRIBUTARY_BINARY, "tributary", "node", "--config", cfg.c_str(), "--controller",
              controller_->endpoint().c_str(), nullptr);
        _exit(127);
      }
      nodes_.push_back(pid);
      ids_.push_back(id);
    }
    ASSERT_TRUE(controller_->WaitForNodes(3, std::chrono::seconds(20)));
  }

  void StartController() {
    ControllerOptions o;
    o.bind = endpoint_.empty() ? "tcp://127.0.0.1:0" : endpoint_;
    o.checkpoint_dir = dir_ + "/checkpoints";
    auto c = Controller::Start(o);
    ASSERT_TRUE(c) << c.error().ToString();
    controller_ = std::move(c).value();
    endpoint_ = controller_->endpoint();
  }

  void TearDown() override {
    for (pid_t p : nodes_) kill(p, SIGTERM);
    for (pid_t p : nodes_) waitpid(p, nullptr, 0);
    std::filesystem::remove_all(dir_);
  }

  JobSpec Job() {
    JobSpec j;
    j.id = "fedavg";
    j.model = Model();
    j.initial_model.assign(j.model.elements(), 0.0f);
    j.fan_in = 8;
    j.deadline = std::chrono::seconds(60);
    return j;
  }

  std::string dir_, endpoint_;
  std::unique_ptr<Controller> controller_;
  std::vector<pid_t> nodes_;
  std::vector<std::string> ids_;
};

struct Update {
  std::string client;
  std::vector<float> values;
  uint64_t samples;
};

// 100 clients, spread over the 3 nodes; each uploads to its node's gateway.
std::vector<Update> RunClients(Controller& c, const std::vector<std::string>& ids, uint64_t round,
                               uint64_t version, const std::vector<float>& global,
                               std::map<std::string, std::vector<std::string>>& by_node, std::thread& uploads) {
  std::vector<Update> updates;
  std::mt19937 rng(static_cast<uint32_t>(round));
  std::normal_distribution<float> d;
  for (int k = 0; k < 100; ++k) {
    Update u{"client-" + std::to_string(k), std::vector<float>(Model().elements()), 20 + static_cast<uint64_t>(k % 13)};
    for (float& x : u.values) x = d(rng);
    updates.push_back(std::move(u));
    by_node[ids[k % 3]].push_back("client-" + std::to_string(k));
  }
  const auto gateways = c.Nodes();
  const std::string global_bytes(reinterpret_cast<const char*>(global.data()), global.size() * 4);
  uploads = std::thread([updates, gateways, ids, round, version, global_bytes] {
    std::vector<std::thread> per_node;
    for (int n = 0; n < 3; ++n) {
      per_node.emplace_back([&, n] {
        testing::UploadClient up(gateways.at(ids[n]));
        const agg::ModelSpec m = Model();
        // First, as a client would: download the round's global model.
        Result<std::pair<v1::ModelChunk, std::string>> model = MakeError(ErrorCode::kNotFound, "");
        for (int attempt = 0; attempt < 500; ++attempt) {
          model = up.DownloadModel("fedavg");
          if (model && model.value().first.model_version() == version) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ASSERT_TRUE(model) << model.error().ToString();
        ASSERT_EQ(model.value().first.model_version(), version);
        ASSERT_EQ(model.value().second, global_bytes) << "the gateway serves another model than the controller's";
        for (size_t k = n; k < updates.size(); k += 3) {
          const Update& u = updates[k];
          const std::string payload(reinterpret_cast<const char*>(u.values.data()), u.values.size() * 4);
          v1::UpdateHeader h;
          h.set_job_id("fedavg");
          h.set_round(round);
          h.set_client_id(u.client);
          h.set_model_version(version);
          h.set_sample_count(u.samples);
          for (const auto& t : m.tensors()) *h.add_tensors() = protocol::ToProto(t);
          h.set_payload_bytes(payload.size());
          h.set_payload_xxh3(protocol::PayloadHasher::Of(std::as_bytes(std::span(payload.data(), payload.size()))));
          // The plan reaches the node just before the clients do: retry until the round is open.
          for (int attempt = 0; attempt < 200; ++attempt) {
            auto r = up.Upload(h, payload);
            if (r) break;
            ASSERT_TRUE(r.error().code == ErrorCode::kUnknownJob || r.error().code == ErrorCode::kRoundClosed)
                << u.client << ": " << r.error().ToString();
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
        }
      });
    }
    for (auto& t : per_node) t.join();
  });
  return updates;
}

std::vector<double> FlatFedAvg(const std::vector<Update>& updates) {
  std::vector<double> avg(Model().elements(), 0.0);
  double w = 0;
  for (const Update& u : updates) {
    for (size_t i = 0; i < avg.size(); ++i) avg[i] += static_cast<double>(u.samples) * u.values[i];
    w += u.samples;
  }
  for (double& x : avg) x /= w;
  return avg;
}

double RelativeError(const std::vector<float>& got, const std::vector<double>& want) {
  return testing::RelativeError(std::span<const float>(got), std::span<const double>(want));
}

TEST_F(FederationTest, ThreeNodesAndAHundredClientsGiveFlatFedAvgAndResumeAfterRestart) {
  ASSERT_TRUE(controller_->AddJob(Job()));
  for (uint64_t round = 1; round <= 2; ++round) {
    std::map<std::string, std::vector<std::string>> by_node;
    std::thread uploads;
    const auto updates =
        RunClients(*controller_, ids_, round, round - 1, controller_->Model("fedavg").value(), by_node, uploads);
    auto report = controller_->RunRound("fedavg", by_node);
    uploads.join();
    ASSERT_TRUE(report) << report.error().ToString();
    EXPECT_EQ(report.value().updates, 100u);
    EXPECT_EQ(report.value().model_version, round);
    EXPECT_EQ(report.value().updates_by_node.size(), 3u);
    EXPECT_LT(RelativeError(controller_->Model("fedavg").value(), FlatFedAvg(updates)), 1e-6) << "round " << round;
  }
  const std::vector<float> before = controller_->Model("fedavg").value();
  // A restarted controller resumes from the checkpoint.
  controller_.reset();
  StartController();
  ASSERT_TRUE(controller_->AddJob(Job()));
  EXPECT_EQ(controller_->ModelVersion("fedavg").value(), 2u);
  EXPECT_EQ(controller_->Model("fedavg").value(), before);
}

}  // namespace
}  // namespace tributary::controller
