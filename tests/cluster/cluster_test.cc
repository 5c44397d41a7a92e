// Federations across machines on the namespace federation of
// cluster_fixture.h: exact models, steering under pressure, a node and the
// controller killed mid-round, impostors refused.
#include "cluster_fixture.h"

namespace tributary {
namespace {

TEST_F(ClusterTest, ThreeNodesAHundredClientsCurveOnBothPlanesModelsAreFlatFedAvg) {
  WriteController("rounds: 5\nmin_clients: 30\n");
  StartController();
  for (int i = 1; i <= 3; ++i) StartNode(i);
  const pid_t load = StartLoadgen(0);
  const auto t0 = Clock::now();
  ASSERT_TRUE(WaitFor([](const json& s) { return RoundsDone(s) == 5; }, std::chrono::seconds(120)));
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const json s = Status();
  net_->Stop(load, SIGTERM);

  const std::vector<json> rounds = RoundLog();
  ASSERT_EQ(rounds.size(), 5u);
  double round_s = 0;
  for (const json& r : rounds) {
    EXPECT_EQ(r["clients"].get<std::vector<std::string>>(), Expected(r["round"])) << r.dump();
    EXPECT_TRUE(r["lost_nodes"].empty()) << r.dump();
    uint64_t by_node = 0;
    for (const auto& [node, n] : r["updates_by_node"].items()) by_node += n.get<uint64_t>();
    EXPECT_EQ(by_node, 30u);
    ExpectRoundModel(r);
    round_s += r["seconds"].get<double>();
  }
  std::cout << "cluster: 5 rounds of 30 updates from 100 clients in " << seconds << " s, mean round "
            << round_s / 5 << " s\n";
  // The status API and /metrics agree with what happened.
  EXPECT_EQ(s["jobs"]["cluster"]["phase"], "done");
  EXPECT_EQ(s["jobs"]["cluster"]["model_version"], 5);
  EXPECT_EQ(s["jobs"]["cluster"]["last_round"]["updates"], 30);
  EXPECT_EQ(s["clients_available"], kClients);
  EXPECT_TRUE(s["refused"].empty()) << s.dump();
  ASSERT_EQ(s["nodes"].size(), 3u);
  uint64_t checked_in = 0;
  for (const auto& [id, n] : s["nodes"].items()) {
    EXPECT_TRUE(n["connected"].get<bool>()) << id;
    EXPECT_GT(n["capacity"]["segment_bytes"].get<uint64_t>(), 0u);
    checked_in += n["clients_checked_in"].get<uint64_t>();
  }
  EXPECT_EQ(checked_in, kClients);
  const std::string metrics = Get("/metrics");
  EXPECT_NE(metrics.find("tributary_job_model_version{job=\"cluster\"} 5\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("tributary_controller_rounds_total{outcome=\"completed\"} 5\n"), std::string::npos);
  EXPECT_NE(metrics.find("tributary_controller_clients_available 100\n"), std::string::npos);
  // The clients saw the same: 150 updates accepted, none refused.
  std::ifstream log(dir_ / "loadgen.log");
  json report;
  for (std::string l; std::getline(log, l);) {
    if (!l.empty() && l.front() == '{') report = json::parse(l);
  }
  EXPECT_EQ(report["accepted"], 150) << report.dump();
  EXPECT_TRUE(report["rejected"].empty()) << report.dump();
}

// Locality under pressure: 60 % of the clients ask node 1, whose segment
// holds only a few of the round's updates. The placement steers its excess to
// the other nodes before they upload (their task names the other gateway and
// its key); every selected client is folded, and the model is exact.
TEST_F(ClusterTest, AnOverloadedNodesClientsAreSteeredBeforeTheyUploadAndTheModelIsExact) {
  WriteController("rounds: 3\nmin_clients: 30\n");
  StartController();
  StartNode(1, "1MiB");
  for (int i = 2; i <= 3; ++i) StartNode(i);
  const pid_t load = StartLoadgen(0, {1, 1, 1, 1, 1, 1, 2, 2, 2, 3});
  const bool done = WaitFor([](const json& s) { return RoundsDone(s) == 3; }, std::chrono::seconds(90));
  const json s = Status();
  net_->Stop(load, SIGTERM);
  std::ifstream log(dir_ / "loadgen.log");
  json report;
  for (std::string l; std::getline(log, l);) {
    if (!l.empty() && l.front() == '{') report = json::parse(l);
  }
  ASSERT_TRUE(done) << "the clients saw: " << report.dump();
  const std::vector<json> rounds = RoundLog();
  ASSERT_EQ(rounds.size(), 3u);
  for (const json& r : rounds) {
    EXPECT_EQ(r["clients"].get<std::vector<std::string>>(), Expected(r["round"])) << r.dump();
    ExpectRoundModel(r);
  }
  // The last round's plan, and what each node delivered.
  const json& plan = s["jobs"]["cluster"]["placement"];
  ASSERT_TRUE(plan.is_object()) << s.dump(1);
  EXPECT_EQ(plan["round"], 3);
  const json& small = plan["nodes"][NodeId(1)];
  EXPECT_GT(small["steered_out"].get<uint64_t>(), 0u) << plan.dump(1);
  EXPECT_EQ(small["expected_updates"], small["room"]) << plan.dump(1);
  EXPECT_EQ(small["checked_in"].get<uint64_t>(), small["room"].get<uint64_t>() + small["steered_out"].get<uint64_t>());
  uint64_t steered_in = 0;
  for (const auto& [id, n] : plan["nodes"].items()) {
    EXPECT_EQ(n["actual_updates"], n["expected_updates"]) << id << ": " << plan.dump(1);
    steered_in += n["steered_in"].get<uint64_t>();
  }
  EXPECT_EQ(steered_in, small["steered_out"].get<uint64_t>());
  EXPECT_EQ(plan["steered"].size(), steered_in);
  for (const json& st : plan["steered"]) EXPECT_EQ(st["from"], NodeId(1));
  EXPECT_EQ(plan["unplaced"], 0);
  EXPECT_EQ(plan["partials"], 3);
  const uint64_t update_bytes = (256 * 64 + 64) * 4;
  EXPECT_EQ(plan["cross_node_bytes"], (3 + steered_in) * update_bytes);
  // What an operator sees: `tributary status` prints the plan.
  const std::string status_cmd = "ip netns exec " + net_->Namespace("cli") + " " + TRIBUTARY_BINARY +
                                 " status --controller http://" + net_->Address("ctl") + ":7701 > " + Path("status.txt");
  ASSERT_EQ(std::system(status_cmd.c_str()), 0);
  std::stringstream printed;
  printed << std::ifstream(dir_ / "status.txt").rdbuf();
  EXPECT_NE(printed.str().find("placement of round 3"), std::string::npos) << printed.str();
  EXPECT_NE(printed.str().find("3 partials and " + std::to_string(steered_in) + " steered uploads cross nodes"),
            std::string::npos)
      << printed.str();
  std::cout << printed.str();
  std::cout << "cluster spill: node 1 (1 MiB segment) had " << small["checked_in"] << " of round 3's 30, kept "
            << small["room"] << ", steered " << small["steered_out"] << "\n";
  EXPECT_EQ(report["accepted"], 90) << report.dump();
  EXPECT_TRUE(report["rejected"].empty()) << report.dump();
}

TEST_F(ClusterTest, ANodeKilledMidRoundCostsOnlyItsUpdatesAndRejoins) {
  WriteController("rounds: 6\nmin_clients: 12\n", /*node_timeout_ms=*/1500);
  StartController();
  std::vector<pid_t> nodes;
  for (int i = 1; i <= 3; ++i) nodes.push_back(StartNode(i));
  StartLoadgen(/*train_ms=*/1000);
  // Mid-round 2: its clients are training.
  ASSERT_TRUE(WaitFor([](const json& s) { return RoundsDone(s) >= 1; }, std::chrono::seconds(60)));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  net_->Stop(nodes[1], SIGKILL);
  ASSERT_TRUE(WaitFor([](const json& s) { return RoundsDone(s) >= 2; }, std::chrono::seconds(60)));
  const std::vector<json> before = RoundLog();
  ASSERT_GE(before.size(), 2u);
  const json& lost = before[1];
  EXPECT_EQ(lost["lost_nodes"], json::array({NodeId(2)})) << lost.dump();
  EXPECT_GE(lost["updates"].get<uint64_t>(), 12u);
  EXPECT_FALSE(lost["updates_by_node"].contains(NodeId(2)));
  std::cout << "cluster: round 2 lost node 2 and took " << lost["seconds"] << " s (round 1: " << before[0]["seconds"]
            << " s)\n";
  // Back: it rejoins, and later rounds fold its clients again.
  StartNode(2);
  ASSERT_TRUE(WaitFor([](const json& s) { return RoundsDone(s) == 6; }, std::chrono::seconds(90)));
  const std::vector<json> rounds = RoundLog();
  ASSERT_EQ(rounds.size(), 6u);
  bool rejoined = false;
  for (size_t r = 2; r < rounds.size(); ++r) rejoined |= rounds[r]["updates_by_node"].contains(NodeId(2));
  EXPECT_TRUE(rejoined) << "no round after the restart folded node 2's clients";
  for (const json& r : rounds) ExpectRoundModel(r);
  const json s = Status();
  EXPECT_GE(s["node_losses"].get<uint64_t>(), 1u);
  EXPECT_TRUE(s["nodes"][NodeId(2)]["connected"].get<bool>());
}

TEST_F(ClusterTest, AControllerKilledMidRoundResumesToTheUndisturbedModel) {
  WriteController("rounds: 4\nmin_clients: 30\n");
  pid_t controller = StartController();
  for (int i = 1; i <= 3; ++i) StartNode(i);
  StartLoadgen(/*train_ms=*/800);
  ASSERT_TRUE(WaitFor([](const json& s) { return RoundsDone(s) >= 1; }, std::chrono::seconds(60)));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  net_->Stop(controller, SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  controller = StartController();
  ASSERT_TRUE(WaitFor([](const json& s) { return RoundsDone(s) == 4; }, std::chrono::seconds(120)));
  // The undisturbed run: each round the expected selection, from the start.
  std::vector<float> model = Model(0);
  for (uint64_t r = 1; r <= 4; ++r) model = FedAvg(model, Expected(r), r);
  EXPECT_LT(RelativeL2(Model(4), model), 1e-6);
  const std::vector<json> rounds = RoundLog();
  ASSERT_FALSE(rounds.empty());
  EXPECT_EQ(rounds.back()["round"], 4);
}

// Sends `messages` to the controller as a node with `key`, under `routing_id`.
std::string SendAsNode(const std::string& endpoint, const std::string& server_key, const keys::CurveKeyPair& key,
                       const std::string& routing_id, const std::vector<v1::Envelope>& messages) {
  zmq::context_t context(1);
  zmq::socket_t s(context, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 2000);
  s.set(zmq::sockopt::routing_id, routing_id);
  s.set(zmq::sockopt::curve_serverkey, server_key);
  s.set(zmq::sockopt::curve_publickey, key.public_key);
  s.set(zmq::sockopt::curve_secretkey, key.secret_key);
  s.connect(endpoint);
  for (const v1::Envelope& e : messages) {
    const std::string wire = protocol::EncodeEnvelope(e);
    s.send(zmq::buffer(wire), zmq::send_flags::none);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  return "sent";
}

TEST_F(ClusterTest, UnlistedKeysImpostorsAndUnassignedPartialsAreRefusedAndCounted) {
  WriteController("rounds: 2\nmin_clients: 30\n");
  StartController();
  for (int i = 1; i <= 3; ++i) StartNode(i);
  // A node agent whose key is not on the allow-list never joins.
  WriteNode(3, prefix_ + "-n9", "unlisted", 7601);
  net_->Spawn("n3", {TRIBUTARY_BINARY, "node", "--config", Path(prefix_ + "-n9.yaml")}, Path("unlisted.log"));
  ASSERT_TRUE(WaitFor([](const json& s) { return s["nodes"].size() >= 3; }, std::chrono::seconds(30)));
  // A listed key (node 4's) under another node's name (the connection's and
  // the message's), then a partial for a round it was never given.
  const std::string endpoint = "tcp://" + net_->Address("ctl") + ":7700";
  const std::string server = keys::LoadPublicKey(Path("keys/controller.pub")).value();
  const keys::CurveKeyPair four = keys::LoadKeyPair(Path("keys/" + NodeId(4) + ".key")).value();
  v1::Envelope pose = protocol::NewEnvelope();
  pose.mutable_node_hello()->set_node_id(NodeId(1));
  pose.mutable_node_hello()->set_gateway_endpoint("tcp://169.254.77.99:1");
  v1::Envelope hello = protocol::NewEnvelope();
  hello.mutable_node_hello()->set_node_id(NodeId(4));
  hello.mutable_node_hello()->set_gateway_endpoint("tcp://169.254.77.99:1");
  v1::Envelope partial = protocol::NewEnvelope();
  auto* p = partial.mutable_node_partial();
  p->set_job_id("cluster");
  p->set_round(77);
  p->set_node_id(NodeId(4));
  p->set_updates(1000);
  p->set_plan_id(12345);
  ASSERT_TRUE(net_->InNamespace("n3", [&] { return SendAsNode(endpoint, server, four, NodeId(5), {hello}); }));
  ASSERT_TRUE(net_->InNamespace("n3", [&] { return SendAsNode(endpoint, server, four, NodeId(4), {pose, hello, partial}); }));
  // The federation runs as if nothing happened.
  StartLoadgen(0);
  ASSERT_TRUE(WaitFor([](const json& s) { return RoundsDone(s) == 2; }, std::chrono::seconds(90)));
  const json s = Status();
  EXPECT_GE(s["refused"].value("unknown_key", 0), 1) << s["refused"].dump();
  EXPECT_GE(s["refused"].value("impersonation", 0), 2) << s["refused"].dump();
  EXPECT_GE(s["refused"].value("unassigned_round", 0), 1) << s["refused"].dump();
  EXPECT_FALSE(s["nodes"].contains(prefix_ + "-n9"));
  for (const json& r : RoundLog()) {
    EXPECT_EQ(r["clients"].get<std::vector<std::string>>(), Expected(r["round"]));
    ExpectRoundModel(r);
  }
  const std::string metrics = Get("/metrics");
  EXPECT_NE(metrics.find("tributary_controller_refused_total{reason=\"impersonation\"}"), std::string::npos);
}

}  // namespace
}  // namespace tributary
