// controller.yaml and deployment job files: defaults, resolution, and errors
// that name the file, the line and the key.
#include "tributary/config/controller_config.h"

#include <gtest/gtest.h>

namespace tributary::config {
namespace {

constexpr const char* kJob =
    "name: mnist\nrounds: 5\nclients_per_round: 30\nmin_clients: 20\nover_selection: 1.3\ndeadline_s: 90\n"
    "seed: 4\nmodel: {layout: [{name: w, shape: [784, 10]}, {name: b, shape: [10]}], init: {scheme: normal, "
    "scale: 0.02, seed: 9}}\nstrategy: {name: fedadam, server_lr: 0.01}\ntrain: {lr: 0.05, local_epochs: 2, "
    "optimizer: sgd, evaluate: true}\nfan_in: 6\n";

TEST(ControllerConfig, ParsesAndResolvesPathsAgainstTheFile) {
  auto c = ParseControllerConfig(
      "bind: tcp://*:7700\nhttp_bind: 0.0.0.0:7701\nstate_dir: state\nsecurity: {mode: curve, secret_key_file: "
      "keys/c.key, node_allow_list: /etc/nodes}\njobs: [jobs/a.yaml, /abs/b.yaml]\n",
      "/etc/tributary/controller.yaml");
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_EQ(c.value().state_dir, "/etc/tributary/state");
  EXPECT_EQ(c.value().secret_key_file, "/etc/tributary/keys/c.key");
  EXPECT_EQ(c.value().node_allow_list, "/etc/nodes");
  EXPECT_EQ(c.value().jobs, (std::vector<std::string>{"/etc/tributary/jobs/a.yaml", "/abs/b.yaml"}));
  EXPECT_EQ(c.value().node_timeout_ms, 5000u);
}

TEST(ControllerConfig, SecurityAndStateAreExplicit) {
  auto no_security = ParseControllerConfig("state_dir: s\n", "c.yaml");
  ASSERT_FALSE(no_security);
  EXPECT_NE(no_security.error().reason.find("security"), std::string::npos);
  auto half = ParseControllerConfig("state_dir: s\nsecurity: {mode: curve, secret_key_file: k}\n", "c.yaml");
  ASSERT_FALSE(half);
  EXPECT_NE(half.error().reason.find("c.yaml:2:"), std::string::npos) << half.error().reason;
  auto no_state = ParseControllerConfig("security: {mode: none}\n", "c.yaml");
  ASSERT_FALSE(no_state);
  EXPECT_NE(no_state.error().reason.find("state_dir"), std::string::npos);
  auto typo = ParseControllerConfig("state_dir: s\nsecurity: {mode: none}\nnode_timout_ms: 3\n", "c.yaml");
  ASSERT_FALSE(typo);
  EXPECT_NE(typo.error().reason.find("c.yaml:3:1: key 'node_timout_ms': unknown key"), std::string::npos)
      << typo.error().reason;
}

TEST(DeploymentJob, ParsesEveryField) {
  auto j = ParseDeploymentJob(kJob, "/jobs/mnist.yaml");
  ASSERT_TRUE(j) << j.error().ToString();
  const DeploymentJob& d = j.value();
  EXPECT_EQ(d.name, "mnist");
  EXPECT_EQ(d.rounds, 5u);
  EXPECT_EQ(d.clients_per_round, 30u);
  EXPECT_EQ(d.min_clients, 20u);
  EXPECT_DOUBLE_EQ(d.over_selection, 1.3);
  EXPECT_EQ(d.start_after, 20u);  // defaults to min_clients
  ASSERT_EQ(d.layout.size(), 2u);
  EXPECT_EQ(d.layout[0].shape, (std::vector<int64_t>{784, 10}));
  EXPECT_EQ(d.init.scheme, "normal");
  EXPECT_EQ(d.init.seed, 9u);
  EXPECT_EQ(d.strategy.name, "fedadam");
  EXPECT_EQ(std::get<double>(d.train.at("lr")), 0.05);
  EXPECT_EQ(std::get<int64_t>(d.train.at("local_epochs")), 2);
  EXPECT_EQ(std::get<std::string>(d.train.at("optimizer")), "sgd");
  EXPECT_EQ(std::get<bool>(d.train.at("evaluate")), true);
  EXPECT_EQ(d.fan_in, 6u);
  auto file = ParseDeploymentJob("name: a\nclients_per_round: 3\nmodel: {file: init.safetensors}\n", "/jobs/a.yaml");
  ASSERT_TRUE(file) << file.error().ToString();
  EXPECT_EQ(file.value().model_file, "/jobs/init.safetensors");
  EXPECT_EQ(file.value().min_clients, 3u);
}

TEST(DeploymentJob, BadFieldsNameTheirLineAndKey) {
  auto bad = [](const std::string& yaml, const std::string& where) {
    auto j = ParseDeploymentJob(yaml, "job.yaml");
    ASSERT_FALSE(j) << yaml;
    EXPECT_EQ(j.error().code, ErrorCode::kConfig);
    EXPECT_NE(j.error().reason.find(where), std::string::npos) << j.error().reason;
  };
  const std::string model = "model: {layout: [{name: w, shape: [2]}]}\n";
  bad("name: a\nclients_per_round: 3\nmin_clients: 4\n" + model, "job.yaml:3:14: key 'min_clients'");
  bad("name: a\nclients_per_round: 3\nover_selection: 0.5\n" + model, "key 'over_selection'");
  bad("name: a/b\nclients_per_round: 3\n" + model, "key 'name'");
  bad("name: a\nclients_per_round: 3\n", "key 'model'");
  bad("name: a\nclients_per_round: 3\nmodel: {file: x, layout: []}\n", "either file or layout");
  bad("name: a\nclients_per_round: 3\nmodel: {layout: [{name: w, shape: [2], dtype: f7}]}\n", "model.layout.0.dtype");
  // Found by fuzz_config: a tensor without a shape made yaml-cpp throw out of the parser.
  bad("name: a\nclients_per_round: 3\nmodel: {layout: [{name: w}]}\n", "model.layout.0.shape");
  bad("name: a\nclients_per_round: 3\nmodel: {layout: [{shape: [2]}]}\n", "model.layout.0.name");
  bad("name: a\nclients_per_round: 3\n" + model + "strategy: {name: fedmagic}\n", "key 'strategy'");
  bad("name: a\nclients_per_round: 3\n" + model + "train: {round: 3}\n", "train.round");
  bad("name: a\nclients_per_round: 3\n" + model + "train: {lr: [1]}\n", "key 'train.lr'");
  bad("name: a\nclients_per_round: 3\n" + model + "roundz: 3\n", "job.yaml:4:1: key 'roundz': unknown key");
  bad("name: a\nclients_per_round: 3\n" + model + "fan_in: 8\nfan_in_max: 9\n", "only with fan_in: auto");
  bad("name: a\nclients_per_round: 3\n" + model + "fan_in: auto\nfan_in_min: 9\nfan_in_max: 8\n", "key 'fan_in_max'");
  bad("name: a\nclients_per_round: 3\n" + model + "fan_in: wide\n", "key 'fan_in'");
  bad("name: a\nclients_per_round: 3\n" + model + "placement: nearest\n", "expected locality, round_robin or random");
}

TEST(DeploymentJob, FanInAutoTakesBounds) {
  const std::string job = "name: a\nclients_per_round: 3\nmodel: {layout: [{name: w, shape: [2]}]}\nfan_in: auto\n";
  auto d = ParseDeploymentJob(job, "job.yaml");
  ASSERT_TRUE(d) << d.error().ToString();
  EXPECT_EQ(d.value().fan_in, 0u);
  EXPECT_EQ(d.value().fan_in_min, 2u);
  EXPECT_EQ(d.value().fan_in_max, 64u);
  EXPECT_EQ(d.value().fan_in_tail_ms, 100u);
  auto bounded = ParseDeploymentJob(job + "fan_in_min: 4\nfan_in_max: 16\nfan_in_tail_ms: 30\n", "job.yaml");
  ASSERT_TRUE(bounded) << bounded.error().ToString();
  EXPECT_EQ(bounded.value().fan_in_min, 4u);
  EXPECT_EQ(bounded.value().fan_in_max, 16u);
  EXPECT_EQ(bounded.value().fan_in_tail_ms, 30u);
}

}  // namespace
}  // namespace tributary::config
