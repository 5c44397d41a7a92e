#include "tributary/config/config.h"

#include <gtest/gtest.h>

#include <fstream>

namespace tributary::config {
namespace {

TEST(Config, ParsesNodeConfigWithSizes) {
  auto c = ParseNodeConfig(
      "node_id: edge-a\nstore:\n  segment_bytes: 512MiB\n  max_blocks: 1024\ngateway_security:\n  mode: none\n"
      "controller_security:\n  mode: none\n",
      "node.yaml");
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_EQ(c.value().node_id, "edge-a");
  EXPECT_EQ(c.value().store.name, "tributary.edge-a");
  EXPECT_EQ(c.value().store.bytes, 512ull << 20);
  EXPECT_EQ(c.value().store.max_blocks, 1024u);
}

constexpr const char* kSecurityNone = "gateway_security: {mode: none}\ncontroller_security: {mode: none}\n";

TEST(Config, NodeIdsAreCheckedAndAnOverrideMovesTheDerivedSegmentName) {
  for (const char* bad : {"''", "-lead", "has space", "slash/y", "pool-*"}) {
    auto c = ParseNodeConfig(std::string("node_id: ") + bad + "\n" + kSecurityNone, "node.yaml");
    ASSERT_FALSE(c) << bad;
    EXPECT_NE(c.error().reason.find("node.yaml:1:"), std::string::npos) << c.error().reason;
  }
  EXPECT_FALSE(ParseNodeConfig("node_id: " + std::string(241, 'a') + "\n" + kSecurityNone, "node.yaml"));
  NodeConfig c = ParseNodeConfig(std::string("node_id: a\n") + kSecurityNone, "node.yaml").value();
  ASSERT_TRUE(SetNodeId(c, "pool-a-ip-10-0-1-7.ec2.internal"));
  EXPECT_EQ(c.node_id, "pool-a-ip-10-0-1-7.ec2.internal");
  EXPECT_EQ(c.store.name, "tributary.pool-a-ip-10-0-1-7.ec2.internal");
  EXPECT_EQ(SetNodeId(c, "no way").error().code, ErrorCode::kConfig);
  EXPECT_EQ(c.node_id, "pool-a-ip-10-0-1-7.ec2.internal");  // a refused id changes nothing
  NodeConfig named =
      ParseNodeConfig(std::string("node_id: a\nstore: {segment_name: mine}\n") + kSecurityNone, "node.yaml").value();
  ASSERT_TRUE(SetNodeId(named, "b"));
  EXPECT_EQ(named.store.name, "mine");  // a name the file set stays
}

TEST(Config, AnAdvertisedGatewayNamesAHostAndAPort) {
  auto c = ParseNodeConfig(std::string("gateway_bind: tcp://*:7600\ngateway_advertise: tcp://10.0.0.5:7600\n") +
                               kSecurityNone, "node.yaml");
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_EQ(c.value().gateway_advertise, "tcp://10.0.0.5:7600");
  EXPECT_TRUE(ValidAdvertisedEndpoint("tcp://gw.example:7600"));
  for (const char* bad : {"tcp://*:7600", "tcp://0.0.0.0:7600", "10.0.0.5:7600", "tcp://10.0.0.5", "tcp://h:0",
                          "tcp://h:99999", "tcp://:7600", "tcp://h:76x", "n", "", "tcp:/", "tcp://"}) {
    EXPECT_EQ(ValidAdvertisedEndpoint(bad).error().code, ErrorCode::kConfig) << bad;
  }
  auto bad = ParseNodeConfig(std::string("gateway_advertise: tcp://*:7600\n") + kSecurityNone, "node.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().reason.find("gateway_advertise"), std::string::npos) << bad.error().reason;
}

TEST(Config, ErrorsNameFileLineAndKey) {
  auto c = ParseNodeConfig("node_id: a\nstore:\n  segment_bytes: lots\n", "node.yaml");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kConfig);
  EXPECT_NE(c.error().reason.find("node.yaml:3:"), std::string::npos) << c.error().reason;
  EXPECT_NE(c.error().reason.find("store.segment_bytes"), std::string::npos) << c.error().reason;
}

TEST(Config, TheAutoscalerSectionSetsItsWindowsAndRefusesNonsense) {
  const std::string secure = "gateway_security: {mode: none}\ncontroller_security: {mode: none}\n";
  auto c = ParseNodeConfig(secure + "autoscale: {stable_window_s: 30, panic_window_s: 3, max_functions: 16}\n", "n.yaml");
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_TRUE(c.value().autoscale);
  EXPECT_EQ(c.value().autoscaling.stable_window_s, 30);
  EXPECT_EQ(c.value().autoscaling.panic_window_s, 3);
  EXPECT_EQ(c.value().autoscaling.max_functions, 16u);
  EXPECT_EQ(c.value().autoscaling.panic_threshold, 2) << "the default";
  auto off = ParseNodeConfig(secure + "autoscale: {enabled: false}\n", "n.yaml");
  ASSERT_TRUE(off);
  EXPECT_FALSE(off.value().autoscale);
  for (const char* bad : {"autoscale: {target_utilization: 1.5}\n", "autoscale: {stable_window_s: 5, panic_window_s: 6}\n",
                          "autoscale: {enabled: maybe}\n", "autoscale: {panic: 2}\n"}) {
    auto r = ParseNodeConfig(secure + bad, "n.yaml");
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kConfig);
    EXPECT_NE(r.error().reason.find("autoscale."), std::string::npos) << r.error().reason;
  }
}

TEST(Config, UnknownKeysAreErrors) {
  auto c = ParseNodeConfig("store:\n  segmnt_bytes: 1GiB\n", "n.yaml");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().reason.find("n.yaml:2:3: key 'store.segmnt_bytes': unknown key"), std::string::npos)
      << c.error().reason;
}

TEST(Config, SyntaxErrorsHaveAPosition) {
  auto c = ParseNodeConfig("store: [1, 2\n", "bad.yaml");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().reason.rfind("bad.yaml:", 0), 0u) << c.error().reason;
}

TEST(Config, MissingFileIsAConfigError) {
  auto c = LoadNodeConfig("/nonexistent/node.yaml");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kConfig);
}

TEST(Config, LoadsFromFile) {
  const std::string path = ::testing::TempDir() + "/node-config-test.yaml";
  std::ofstream(path) << "node_id: b\ngateway_security: {mode: none}\ncontroller_security: {mode: none}\n";
  auto c = LoadNodeConfig(path);
  ASSERT_TRUE(c);
  EXPECT_EQ(c.value().node_id, "b");
}

// No gateway is insecure by omission; CURVE needs its key and allow-list.
TEST(Config, GatewaySecurityIsExplicit) {
  auto missing = ParseNodeConfig("node_id: a\n", "n.yaml");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().reason.find("gateway_security"), std::string::npos) << missing.error().reason;
  auto half = ParseNodeConfig("gateway_security: {mode: curve, secret_key_file: g.key}\n", "n.yaml");
  ASSERT_FALSE(half);
  EXPECT_NE(half.error().reason.find("allow_list"), std::string::npos) << half.error().reason;
  auto unknown = ParseNodeConfig("gateway_security: {mode: tls}\n", "n.yaml");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().reason.find("n.yaml:1:"), std::string::npos) << unknown.error().reason;
  auto curve = ParseNodeConfig(
      "gateway_security: {mode: curve, secret_key_file: g.key, allow_list: clients/}\ncontroller_security: {mode: none}\n",
      "n.yaml");
  ASSERT_TRUE(curve) << curve.error().ToString();
  EXPECT_EQ(curve.value().gateway_secret_key_file, "g.key");
  EXPECT_EQ(curve.value().gateway_allow_list, "clients/");
}

// Nor is the control plane: its mode is required, CURVE needs both key files.
TEST(Config, ControllerSecurityIsExplicit) {
  const std::string gw = "gateway_security: {mode: none}\n";
  auto missing = ParseNodeConfig(gw, "n.yaml");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().reason.find("controller_security"), std::string::npos) << missing.error().reason;
  auto half = ParseNodeConfig(gw + "controller_security: {mode: curve, secret_key_file: n.key}\n", "n.yaml");
  ASSERT_FALSE(half);
  EXPECT_NE(half.error().reason.find("n.yaml:2:"), std::string::npos) << half.error().reason;
  EXPECT_NE(half.error().reason.find("controller_public_key_file"), std::string::npos) << half.error().reason;
  auto curve = ParseNodeConfig(gw + "controller: tcp://10.1.2.3:7700\ncontroller_security: {mode: curve, "
                                    "controller_public_key_file: c.pub, secret_key_file: n.key}\n",
                               "n.yaml");
  ASSERT_TRUE(curve) << curve.error().ToString();
  EXPECT_EQ(curve.value().controller_endpoint, "tcp://10.1.2.3:7700");
  EXPECT_EQ(curve.value().controller_public_key_file, "c.pub");
  EXPECT_EQ(curve.value().controller_secret_key_file, "n.key");
}

TEST(Config, StrategySectionIsValidated) {
  auto ok = ParseStrategyConfig("strategy:\n  name: fedadam\n  server_lr: 0.02\n  tau: 1e-4\n", "job.yaml");
  ASSERT_TRUE(ok) << ok.error().ToString();
  EXPECT_EQ(ok.value().name, "fedadam");
  EXPECT_DOUBLE_EQ(*ok.value().server_lr, 0.02);
  auto bad = ParseStrategyConfig("strategy:\n  name: fedadam\n  beta1: 1.5\n", "job.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().reason.find("job.yaml:2:"), std::string::npos) << bad.error().reason;
  EXPECT_NE(bad.error().reason.find("beta1"), std::string::npos) << bad.error().reason;
  auto typo = ParseStrategyConfig("strategy:\n  name: fedavg\n  lr: 1\n", "job.yaml");
  ASSERT_FALSE(typo);
  EXPECT_NE(typo.error().reason.find("job.yaml:3:3: key 'strategy.lr'"), std::string::npos)
      << typo.error().reason;
}

TEST(Config, ByteSizes) {
  EXPECT_EQ(ParseByteSize("4096").value(), 4096u);
  EXPECT_EQ(ParseByteSize("2GiB").value(), 2ull << 30);
  EXPECT_FALSE(ParseByteSize("2GB"));
  EXPECT_FALSE(ParseByteSize("99999999999TiB"));
  EXPECT_FALSE(ParseByteSize("-1"));
}

}  // namespace
}  // namespace tributary::config
