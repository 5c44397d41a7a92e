// The edge-client example against a node agent with CURVE, keys made by
// `tributary keys generate`, as an operator and an edge developer would.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "tributary/client/security.h"
#include "tributary/node/node_agent.h"
#include "tributary/protocol/codec.h"

namespace tributary {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int RunProcess(std::vector<std::string> args) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The example's model: Linear(8, 32), ReLU, Linear(32, 3).
agg::ModelSpec EdgeModel() {
  return agg::ModelSpec::Create({{"fc1.weight", agg::DType::kF32, {32, 8}},
                                 {"fc1.bias", agg::DType::kF32, {32}},
                                 {"fc2.weight", agg::DType::kF32, {3, 32}},
                                 {"fc2.bias", agg::DType::kF32, {3}}})
      .value();
}

TEST(EdgeClient, TrainsOneRoundOverCurveWithGeneratedKeys) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("edge-" + std::to_string(getpid()));
  fs::remove_all(dir);
  ASSERT_EQ(RunProcess({TRIBUTARY_BINARY, "keys", "generate", "--name", "gateway", "--out", dir / "gateway"}), 0);
  ASSERT_EQ(RunProcess({TRIBUTARY_BINARY, "keys", "generate", "--name", "edge-1", "--out", dir / "device"}), 0);
  EXPECT_EQ(fs::status(dir / "device" / "edge-1.key").permissions() & fs::perms::others_read, fs::perms::none);
  fs::create_directories(dir / "allow");
  fs::copy_file(dir / "device" / "edge-1.pub", dir / "allow" / "edge-1.pub");

  node::NodeOptions o;
  o.node_id = "edge-" + std::to_string(getpid());
  o.store = {"tributary." + o.node_id, 64ull << 20, 1024};
  o.binary = TRIBUTARY_BINARY;
  o.gateway.security = {client::LoadKeyPair(dir / "gateway" / "gateway.key").value().secret_key, dir / "allow"};
  auto agent = node::NodeAgent::Start(o);
  ASSERT_TRUE(agent) << agent.error().ToString();

  const agg::ModelSpec m = EdgeModel();
  auto block = agent.value()->segment().Allocate(m.payload_bytes(), {shm::BlockKind::kModel});
  ASSERT_TRUE(block);
  std::memset(block.value().mutable_bytes().data(), 0, m.payload_bytes());
  const uint64_t xxh3 = protocol::PayloadHasher::Of(block.value().bytes());
  agent.value()->models().Publish("job", gateway::PublishedModel{0, m, xxh3, std::move(block).value()});
  gateway::RoundSpec spec;
  spec.job = "job";
  spec.round = 1;
  spec.model = m;
  spec.selected["edge-1"] = 7;
  spec.client_config = {{"lr", 0.1}, {"local_epochs", int64_t{2}}};
  ASSERT_TRUE(agent.value()->OpenRound(spec, 4));

  const int exit_code = RunProcess({EDGE_CLIENT_BINARY, "--gateway", agent.value()->gateway_endpoint(), "--client-id",
                                    "edge-1", "--gateway-key", dir / "gateway" / "gateway.pub", "--key",
                                    dir / "device" / "edge-1.key", "--rounds", "1", "--compression", "int8"});
  EXPECT_EQ(exit_code, 0);
  auto result = agent.value()->WaitRound(Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_EQ(result.value().partial.meta().updates, 1u);
  EXPECT_EQ(result.value().partial.meta().weight, 256.0);  // the example's local examples
  // Training moved the weights away from the zero model.
  const float* w = reinterpret_cast<const float*>(result.value().partial.bytes().data());
  float moved = 0;
  for (uint64_t i = 0; i < m.elements(); ++i) moved = std::max(moved, std::fabs(w[i]));
  EXPECT_GT(moved, 0.0f);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tributary
