// Faults at scale (label `slow`): 200 rounds on the namespace federation of
// cluster_fixture.h, a hundred loadgen clients, faults injected at random
// moments of random rounds: functions SIGKILLed, a node agent SIGKILLed and
// started again, the clients' connections to a node cut (mid-upload for
// some), the controller SIGKILLed and started again twice. Checked:
//   - every round's model is the FedAvg of exactly the clients it reports,
//     from the model before it; every selected client is either folded or
//     listed as missing, and a missing client is always one of a node the
//     round lists as lost, a node this test killed: nothing else is lost;
//   - after each round each node's segment holds what it held before the
//     first plus the current model (no block outlives its round);
//   - no SIGKILLed agent's segment is removed twice, every start loaded the
//     eBPF data plane (in CI), and at the end no process, segment or open
//     socket of the federation is left.
// TRIBUTARY_SOAK_SEED seeds the fault choices (their timing is the run's
// own, so a seed does not replay a run exactly); TRIBUTARY_SOAK_ROUNDS
// shortens it.
#include <algorithm>
#include <random>
#include <set>

#include "cluster_fixture.h"

namespace tributary {
namespace {

constexpr uint16_t kNodeMetricsPort = 7602;

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// The value of the first sample of `name` in a Prometheus text page, or -1.
double Metric(const std::string& page, const std::string& name) {
  std::istringstream in(page);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
        (line[name.size()] == ' ' || line[name.size()] == '{')) {
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return -1;
}

// Processes whose command line mentions `needle`, but this one.
std::vector<std::string> ProcessesMentioning(const std::string& needle) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos || std::stoi(pid) == getpid()) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(needle) != std::string::npos) out.push_back(pid + ": " + cmd);
  }
  return out;
}

// The children of every thread of `pid` (the node agent starts its
// functions from the supervisor's thread).
std::vector<pid_t> Children(pid_t pid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "children");
    for (pid_t c; in >> c;) out.push_back(c);
  }
  return out;
}

size_t CountLines(const fs::path& file, const std::string& needle) {
  std::ifstream in(file);
  size_t n = 0;
  for (std::string l; std::getline(in, l);) n += l.find(needle) != std::string::npos;
  return n;
}

struct Fault {
  uint64_t round;  // the round in progress when it was injected
  std::string what;
  int node = 0;           // the node agent it hit, if any
  size_t connections = 0; // connections reset
};

// Destroys the TCP sockets in namespace `ns` towards `address`:7600 (ss -K);
// how many it destroyed.
size_t ResetConnections(const std::string& ns, const std::string& address) {
  const std::string cmd = "ip netns exec " + ns + " ss -HK dst " + address + " dport = :7600 2>/dev/null";
  FILE* out = ::popen(cmd.c_str(), "r");
  if (out == nullptr) return 0;
  size_t lines = 0;
  for (int c; (c = std::fgetc(out)) != EOF;) lines += c == '\n';
  ::pclose(out);
  return lines;
}

TEST_F(ClusterTest, TwoHundredRoundsUnderRandomFaultsLoseOnlyWhatTheyReport) {
  const uint64_t rounds = EnvOr("TRIBUTARY_SOAK_ROUNDS", 200);
  const uint64_t seed = EnvOr("TRIBUTARY_SOAK_SEED", std::random_device{}());
  std::cout << "soak: " << rounds << " rounds, seed " << seed << " (TRIBUTARY_SOAK_SEED)\n";
  std::mt19937_64 rng(seed);
  node_metrics_port_ = kNodeMetricsPort;
  // min_clients 15: a round that loses a node (about 10 of its 30) completes
  // without it and reports what was lost, rather than running again.
  WriteController("rounds: " + std::to_string(rounds) + "\nmin_clients: 15\n", /*node_timeout_ms=*/1500,
                  /*deadline_s=*/10);
  pid_t controller = StartController();
  std::vector<pid_t> nodes = {0};
  for (int i = 1; i <= 3; ++i) nodes.push_back(StartNode(i));
  auto node_metrics = [&](int i) {
    return GetFrom("http://" + net_->Address(Host(i)) + ":" + std::to_string(kNodeMetricsPort), "/metrics");
  };
  // What a node's segment holds between rounds: what it held before the
  // first, and the job's current model (published to it for downloads).
  std::vector<double> baseline_blocks(4, -1);
  ASSERT_TRUE(WaitFor([](const json& s) { return s["nodes"].size() == 3; }, std::chrono::seconds(30)));
  for (int i = 1; i <= 3; ++i) {
    const std::string page = node_metrics(i);
    baseline_blocks[i] = Metric(page, "tributary_store_live_blocks");
    ASSERT_GE(baseline_blocks[i], 0) << page;
    baseline_blocks[i] += 1;
  }
  const pid_t load = StartLoadgen(/*train_ms=*/150);

  std::vector<Fault> faults;
  std::set<uint64_t> controller_restarts = {std::max<uint64_t>(1, rounds / 3), std::max<uint64_t>(2, 2 * rounds / 3)};
  int down_node = 0;                          // a node killed and not yet started again
  Clock::time_point restart_node_at{}, next_fault = Clock::now() + std::chrono::seconds(1);
  // Per node agent (node * 1000 + incarnation) and rounds the federation
  // had completed: the fewest live blocks seen in the node's segment then.
  std::map<std::pair<int, uint64_t>, double> fewest_blocks;
  std::vector<int> incarnation(4, 0);
  // Whether the node agent's current incarnation has served /metrics (so it
  // made its segment): only such an agent is killed, so that every kill
  // leaves a segment for the next start to remove.
  std::vector<bool> serving(4, true);
  std::set<int> killed_incarnations;  // node * 1000 + incarnation
  std::map<std::pair<int, uint64_t>, std::vector<std::pair<double, double>>> trace;  // (blocks, node's rounds)
  uint64_t done = 0, samples = 0;
  const auto give_up = Clock::now() + std::chrono::seconds(60 + rounds * 5);
  while (done < rounds && Clock::now() < give_up) {
    const json s = Status();
    if (s.is_object() && s.contains(json::json_pointer("/jobs/cluster/rounds_done"))) done = RoundsDone(s);
    for (int i = 1; i <= 3; ++i) {
      if (i == down_node) continue;
      const std::string page = node_metrics(i);
      const double completed = Metric(page, "tributary_rounds_completed_total"),
                   blocks = Metric(page, "tributary_store_live_blocks");
      if (completed < 0 || blocks < 0) continue;
      serving[i] = true;
      const auto key = std::make_pair(i * 1000 + incarnation[i], done);
      auto [it, fresh] = fewest_blocks.emplace(key, blocks);
      if (!fresh) it->second = std::min(it->second, blocks);
      auto& tr = trace[key];
      if (tr.empty() || tr.back().first != blocks) tr.push_back({blocks, completed});
      samples += 1;
    }
    const auto now = Clock::now();
    if (down_node != 0 && now >= restart_node_at) {
      nodes[down_node] = StartNode(down_node);
      incarnation[down_node] += 1;
      serving[down_node] = false;
      down_node = 0;
    }
    if (!controller_restarts.empty() && done >= *controller_restarts.begin()) {
      controller_restarts.erase(controller_restarts.begin());
      std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 400)(rng)));
      net_->Stop(controller, SIGKILL);
      faults.push_back({done + 1, "controller SIGKILLed and started again"});
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      controller = StartController();
      continue;
    }
    if (now < next_fault || done == 0) continue;
    next_fault = now + std::chrono::milliseconds(std::uniform_int_distribution<int>(300, 2500)(rng));
    const int node = std::uniform_int_distribution<int>(1, 3)(rng);
    if (node == down_node) continue;
    const int kind = std::uniform_int_distribution<int>(0, 99)(rng);
    if (kind < 50) {
      const std::vector<pid_t> functions = Children(nodes[node]);
      if (functions.empty()) continue;
      const pid_t victim = functions[std::uniform_int_distribution<size_t>(0, functions.size() - 1)(rng)];
      if (::kill(victim, SIGKILL) == 0) faults.push_back({done + 1, "function SIGKILLed", node});
    } else if (kind < 80) {
      // Every connection of the clients' host to the node's gateway, reset
      // (ss prints each socket it destroyed).
      const size_t reset = ResetConnections(net_->Namespace("cli"), net_->Address(Host(node)));
      if (reset > 0) faults.push_back({done + 1, "client connections cut", node, reset});
    } else if (down_node == 0 && serving[node]) {
      net_->Stop(nodes[node], SIGKILL);
      killed_incarnations.insert(node * 1000 + incarnation[node]);
      faults.push_back({done + 1, "node agent SIGKILLed", node});
      down_node = node;
      restart_node_at = now + std::chrono::milliseconds(std::uniform_int_distribution<int>(500, 3000)(rng));
    }
  }
  if (down_node != 0) nodes[down_node] = StartNode(down_node);
  ASSERT_EQ(done, rounds) << "the federation did not finish its rounds in time";
  for (int i = 1; i <= 3; ++i) {
    const auto wait_until = Clock::now() + std::chrono::seconds(20);
    while (Metric(node_metrics(i), "tributary_store_live_blocks") < 0 && Clock::now() < wait_until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  // Idle now: every node's segment back at its baseline (the model, unless
  // the node started again after the last round's model was published).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const double model_bytes = static_cast<double>(Model(0).size() * sizeof(float));
  for (int i = 1; i <= 3; ++i) {
    const std::string page = node_metrics(i);
    const double payload = Metric(page, "tributary_store_payload_bytes");
    EXPECT_TRUE(payload == model_bytes || payload == 0) << "node " << i << ":\n" << page;
    EXPECT_EQ(Metric(page, "tributary_store_live_blocks"), baseline_blocks[i] - (payload == 0 ? 1 : 0))
        << "node " << i << ":\n" << page;
  }
  net_->Stop(load, SIGTERM);

  // The rounds: exact, or precisely what a killed node cost.
  std::map<std::string, int> node_of;  // loadgen's client c asks node c % 3 + 1
  for (uint32_t c = 0; c < kClients; ++c) node_of[loadgen::ClientId("load-", c)] = static_cast<int>(c % 3) + 1;
  std::map<std::string, int> node_number;
  for (int i = 1; i <= 3; ++i) node_number[NodeId(i)] = i;
  std::set<std::pair<uint64_t, int>> node_kills;  // (round, node)
  std::map<int, size_t> kills_of;                // node -> how often it was killed
  for (const Fault& f : faults) {
    if (f.what != "node agent SIGKILLed") continue;
    node_kills.insert({f.round, f.node});
    kills_of[f.node] += 1;
  }
  const std::vector<json> log = RoundLog();
  std::set<uint64_t> logged;
  uint64_t exact = 0, with_losses = 0, updates_lost = 0;
  for (const json& r : log) {
    const uint64_t round = r["round"];
    EXPECT_TRUE(logged.insert(round).second) << "round " << round << " logged twice";
    const std::vector<std::string> clients = r["clients"], missing = r["missing_clients"];
    EXPECT_EQ(clients.size() + missing.size(), r["selected"].get<size_t>()) << r.dump();
    EXPECT_EQ(std::set<std::string>(clients.begin(), clients.end()).size(), clients.size()) << "folded twice: " << r.dump();
    for (const std::string& m : missing) {
      EXPECT_EQ(std::count(clients.begin(), clients.end(), m), 0) << m << " both folded and missing: " << r.dump();
      const std::string lost_node = NodeId(node_of[m]);
      EXPECT_NE(std::find(r["lost_nodes"].begin(), r["lost_nodes"].end(), lost_node), r["lost_nodes"].end())
          << m << " (of " << lost_node << ") is missing but its node is not reported lost: " << r.dump();
    }
    for (const json& lost_node : r["lost_nodes"]) {
      const std::string lost = lost_node;
      const int i = node_number[lost];
      // Lost in the round it was killed in, or (killed after its partial,
      // or seen again only when it restarted) in one of the next two: the
      // loss is noticed within the 1.5 s node timeout or at the restart
      // (at most 3 s), and a round waiting for a dead node lasts that long.
      bool killed = false;
      for (uint64_t back = 0; back <= 2 && back < round; ++back) killed |= node_kills.count({round - back, i}) > 0;
      EXPECT_TRUE(killed) << "round " << round << " lost " << lost << ", which was not killed then: " << r.dump();
    }
    ExpectRoundModel(r);
    if (missing.empty()) exact += 1;
    else with_losses += 1;
    updates_lost += missing.size();
  }
  // A controller killed between a round's checkpoint and its log line loses
  // the line (not the round: its model is there, and the next round's check
  // starts from it). Only rounds next to a restart may lack a line.
  std::set<uint64_t> restart_rounds;
  for (const Fault& f : faults) {
    if (f.what.rfind("controller", 0) == 0) restart_rounds.insert({f.round - 1, f.round});
  }
  for (uint64_t r = 1; r <= rounds; ++r) {
    EXPECT_TRUE(logged.count(r) || restart_rounds.count(r)) << "round " << r << " has no line in rounds.jsonl";
    EXPECT_EQ(Model(r).size(), Model(0).size()) << "round " << r << "'s model";
  }
  // After each round (the fewest blocks seen while the federation had
  // completed k rounds: the quiet before the next round's uploads), every
  // node's segment held its baseline: nothing outlived its round. A node
  // killed before that quiet had no "after" to sample.
  std::map<int, uint64_t> last_interval;
  for (const auto& [key, fewest] : fewest_blocks) last_interval[key.first] = std::max(last_interval[key.first], key.second);
  uint64_t intervals = 0, above = 0;
  for (const auto& [key, fewest] : fewest_blocks) {
    if (killed_incarnations.count(key.first) && last_interval[key.first] == key.second) continue;
    intervals += 1;
    if (fewest > baseline_blocks[key.first / 1000]) {
      above += 1;
      std::cerr << "node " << key.first / 1000 << " (start " << key.first % 1000 << ") after " << key.second
                << " rounds of the federation: never fewer than " << fewest << " live blocks (baseline " << baseline_blocks[key.first / 1000]
                << ")\n";
      for (auto [b, d] : trace[key]) std::cerr << "  " << b << "@" << d;
      std::cerr << "\n";
    }
  }
  std::map<int, uint64_t> intervals_of;
  for (const auto& [key, fewest] : fewest_blocks) intervals_of[key.first / 1000] += 1;
  for (int i = 1; i <= 3; ++i) EXPECT_GT(intervals_of[i], rounds / 2) << "node " << i << ": too few samples to tell";
  EXPECT_EQ(above, 0u);

  std::map<std::string, int> kinds;
  for (const Fault& f : faults) kinds[f.what] += 1;
  std::cout << "soak: " << rounds << " rounds, " << exact << " exact, " << with_losses << " with a killed node's "
            << updates_lost << " updates reported missing; " << samples << " segment samples over " << intervals
            << " between-round intervals; faults:";
  size_t connections_reset = 0;
  for (const Fault& f : faults) connections_reset += f.connections;
  for (const auto& [what, n] : kinds) std::cout << " " << n << " " << what << ";";
  std::cout << " " << connections_reset << " connections reset in all\n";
  EXPECT_GE(kinds["function SIGKILLed"], 1);
  EXPECT_GE(kinds["client connections cut"], 1);
  EXPECT_EQ(kinds["controller SIGKILLed and started again"], 2);

  // A SIGKILLed agent's segment is removed by the next agent to start on the
  // machine (logged: its successor, or another node's agent starting while
  // it was dead), or replaced unlogged by its successor's Segment::Create
  // when the owner file was still locked at the sweep (seen in CI: 4 logged
  // of 6; why the lock outlived the kill there is not known yet). Never
  // removed twice; that none is left shows at the end.
  for (const auto& [i, n] : kills_of) {
    const std::string removed = "removed shared-memory segment tributary." + NodeId(i) + ", abandoned";
    size_t lines = 0;
    for (int by = 1; by <= 3; ++by) lines += CountLines(dir_ / (NodeId(by) + ".log"), removed);
    EXPECT_LE(lines, n) << "node " << i;
  }
  // Everything stopped: nothing of the federation is left.
  net_->Stop(controller, SIGTERM);
  for (int i = 1; i <= 3; ++i) net_->Stop(nodes[i], SIGTERM);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_EQ(ProcessesMentioning(prefix_ + "-n"), std::vector<std::string>{});  // agents and their functions
  EXPECT_EQ(ProcessesMentioning(dir_.string()), std::vector<std::string>{});   // the controller, loadgen
  for (const auto& e : fs::directory_iterator("/dev/shm")) {
    EXPECT_EQ(e.path().filename().string().find(prefix_ + "-n"), std::string::npos) << "left: " << e.path();
  }
  for (const char* host : {"ctl", "n1", "n2", "n3", "cli"}) {
    const std::string open = "ip netns exec " + net_->Namespace(host) + " ss -Htuan exclude time-wait | grep -q .";
    EXPECT_NE(std::system(open.c_str()), 0) << host << " still has an open socket";
  }
  // The eBPF data plane was the one in use (it is where it loads: CI).
  if (std::getenv("TRIBUTARY_REQUIRE_PRIVILEGED")) {
    for (int i = 1; i <= 3; ++i) {
      EXPECT_EQ(CountLines(dir_ / (NodeId(i) + ".log"), "data plane: eBPF sk_msg router"), kills_of[i] + 1)
          << "node " << i;
    }
  }
}

}  // namespace
}  // namespace tributary
