#include "placement_bench.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <thread>
#include <vector>

#include "support/netns.h"  // the cluster tests' namespaces: one harness for both
#include "tributary/keys/curve_keys.h"
#include "tributary/loadgen/loadgen.h"

namespace tributary::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kPolicies[] = {"locality", "round_robin", "random"};
// Client c asks node kAsks[c % 10]: 60/30/10 %.
constexpr int kAsks[] = {1, 1, 1, 1, 1, 1, 2, 2, 2, 3};

struct PolicyRun {
  std::string policy;
  double cross_node_bytes = 0;  // per round
  double steered = 0;           // per round
  double round_s = 0;           // mean over rounds 2..
};

// The last lines of every log in `run`, for a failure's report.
std::string LogTails(const fs::path& run) {
  constexpr size_t kLines = 12;
  std::string report;
  for (const auto& entry : fs::directory_iterator(run)) {
    if (entry.path().extension() != ".log") continue;
    std::vector<std::string> lines;
    std::ifstream in(entry.path());
    for (std::string l; std::getline(in, l);) lines.push_back(std::move(l));
    report += "--- " + entry.path().filename().string() + "\n";
    for (size_t i = lines.size() > kLines ? lines.size() - kLines : 0; i < lines.size(); ++i) report += lines[i] + "\n";
  }
  return report;
}

std::string MiB(uint64_t bytes) { return std::to_string(bytes >> 20) + "MiB"; }

class Federation {
 public:
  Federation(testing::TestNetwork& net, fs::path dir, const PlacementBenchOptions& o)
      : net_(net), dir_(std::move(dir)), o_(o), prefix_(std::to_string(getpid())) {
    prefix_.insert(0, 1, 'p');  // not "p" + ...: GCC 12's -O3 -Wrestrict misfires on it
  }

  Result<void> WriteKeys() {
    for (const char* d : {"keys", "nodes", "clients"}) fs::create_directories(dir_ / d);
    auto write = [&](const std::string& where, const std::string& name) -> Result<void> {
      TRIBUTARY_ASSIGN_OR_RETURN(keys::CurveKeyPair pair, keys::GenerateKeyPair());
      return keys::WriteKeyPair(pair, (dir_ / where).string(), name);
    };
    TRIBUTARY_TRY(write("keys", "controller"));
    TRIBUTARY_TRY(write("keys", "gateway"));
    for (int i = 1; i <= 3; ++i) {
      TRIBUTARY_TRY(write("keys", NodeId(i)));
      fs::copy_file(dir_ / "keys" / (NodeId(i) + ".pub"), dir_ / "nodes" / (NodeId(i) + ".pub"));
    }
    for (uint32_t c = 0; c < o_.clients; ++c) TRIBUTARY_TRY(write("clients", loadgen::ClientId("load-", c)));
    return Ok();
  }

  // One run of the job under `policy`, from a clean state directory.
  Result<PolicyRun> Run(const std::string& policy) {
    const fs::path run = dir_ / policy;
    fs::create_directories(run);
    const std::string ctl = net_.Address("ctl");
    // A short deadline: an upload lost to a loaded machine's timeout then
    // costs its round 20 s, not the run (the round folds what it has).
    std::ofstream(run / "job.yaml") << "name: bench\nrounds: " << o_.rounds << "\nclients_per_round: "
                                    << o_.clients_per_round << "\ndeadline_s: 20\nstart_after: " << o_.clients
                                    << "\nseed: 11\nmodel: {layout: [{name: w, shape: [" << o_.params
                                    << "]}], init: {scheme: normal, scale: 0.01, seed: 3}}\nstrategy: {name: fedavg}\n"
                                       "train: {lr: 0.1}\nfan_in: 4\nplacement: "
                                    << policy << "\n";
    std::ofstream(run / "controller.yaml") << "bind: tcp://" << ctl << ":7700\nhttp_bind: " << ctl
                                           << ":7701\nstate_dir: state\nsecurity: {mode: curve, secret_key_file: "
                                           << Path("keys/controller.key") << ", node_allow_list: " << Path("nodes")
                                           << "}\njobs: [job.yaml]\n";
    std::vector<pid_t> pids;
    pids.push_back(net_.Spawn("ctl", {o_.binary, "controller", "--config", (run / "controller.yaml").string()},
                              (run / "controller.log").string()));
    for (int i = 1; i <= 3; ++i) {
      const uint64_t segment = i == 1 ? o_.segment_bytes / 4 : o_.segment_bytes;
      const fs::path yaml = run / (NodeId(i) + ".yaml");
      std::ofstream(yaml) << "node_id: " << NodeId(i) << "\nstore: {segment_bytes: " << MiB(segment)
                          << "}\ngateway_bind: tcp://" << net_.Address(Host(i))
                          << ":7600\ndataplane: auto\nmetrics_bind: \"\"\ngateway_security: {mode: curve, "
                             "secret_key_file: "
                          << Path("keys/gateway.key") << ", allow_list: " << Path("clients") << "}\ncontroller: tcp://"
                          << ctl << ":7700\ncontroller_security: {mode: curve, controller_public_key_file: "
                          << Path("keys/controller.pub") << ", secret_key_file: " << Path("keys/" + NodeId(i) + ".key")
                          << "}\n";
      pids.push_back(net_.Spawn(Host(i), {o_.binary, "node", "--config", yaml.string()}, (run / (NodeId(i) + ".log")).string()));
    }
    std::vector<std::string> load = {o_.binary,     "loadgen",   "--clients",     std::to_string(o_.clients),
                                     "--concurrency", "6",       "--gateway-key", Path("keys/gateway.pub"),
                                     "--client-keys", Path("clients"), "--train-ms", "0"};
    for (int i : kAsks) load.insert(load.end(), {"--gateway", "tcp://" + net_.Address(Host(i)) + ":7600"});
    pids.push_back(net_.Spawn("cli", load, (run / "loadgen.log").string()));

    const fs::path log = run / "state" / "bench" / "rounds.jsonl";
    // Well inside the test's 180 s for the small run, so a stall reports its logs.
    const auto give_up = Clock::now() + std::chrono::seconds(30 + 30 * o_.rounds);
    std::vector<json> rounds;
    while (Clock::now() < give_up) {
      rounds.clear();
      std::ifstream in(log);
      for (std::string l; std::getline(in, l);) rounds.push_back(json::parse(l, nullptr, false));
      if (rounds.size() >= o_.rounds) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    for (auto it = pids.rbegin(); it != pids.rend(); ++it) net_.Stop(*it, SIGTERM);
    if (rounds.size() < o_.rounds) {
      return MakeError(ErrorCode::kInternal, "bench placement: " + policy + " finished " + std::to_string(rounds.size()) +
                                                 " of " + std::to_string(o_.rounds) + " rounds in time (logs in " +
                                                 run.string() + ")\n" + LogTails(run));
    }
    PolicyRun r{policy};
    for (size_t k = 0; k < rounds.size(); ++k) {
      const json& line = rounds[k];
      if (!line.is_object()) return MakeError(ErrorCode::kInternal, "bench placement: unreadable " + log.string());
      r.cross_node_bytes += line.value("cross_node_bytes", 0.0) / static_cast<double>(rounds.size());
      r.steered += line.value("steered", 0.0) / static_cast<double>(rounds.size());
      if (k > 0) r.round_s += line.value("seconds", 0.0) / static_cast<double>(rounds.size() - 1);
    }
    return r;
  }

 private:
  std::string NodeId(int i) const { return prefix_ + "-n" + std::to_string(i); }
  static std::string Host(int i) { return "n" + std::to_string(i); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  testing::TestNetwork& net_;
  fs::path dir_;
  const PlacementBenchOptions& o_;
  std::string prefix_;
};

}  // namespace

Result<void> RunPlacementBench(const PlacementBenchOptions& o, std::ostream& out) {
  if (o.rounds < 2 || o.clients_per_round == 0 || o.clients < o.clients_per_round || o.params == 0) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "bench placement: at least 2 rounds, and at least clients_per_round clients");
  }
  if (const std::string why = testing::NetnsUnavailable(); !why.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "bench placement runs on network namespaces: " + why);
  }
  std::string error;
  auto net = testing::TestNetwork::Create({"ctl", "n1", "n2", "n3", "cli"}, &error);
  if (!net) return MakeError(ErrorCode::kIo, "bench placement: " + error);
  char tmpl[] = "/tmp/trb-bench-placement-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return MakeError(ErrorCode::kIo, "bench placement: mkdtemp");
  const fs::path dir = tmpl;
  Federation federation(*net, dir, o);
  std::vector<PolicyRun> runs;
  Result<void> status = federation.WriteKeys();
  for (const char* policy : kPolicies) {
    if (!status) break;
    auto run = federation.Run(policy);
    if (run) {
      runs.push_back(run.value());
    } else {
      status = std::move(run).error();
    }
  }
  net.reset();
  if (!status) return status;  // the failed run's logs stay in `dir`
  fs::remove_all(dir);

  const PolicyRun& base = runs.front();
  if (o.json) {
    json j = {{"rounds", o.rounds}, {"update_bytes", o.params * 4}, {"policies", json::array()}};
    for (const PolicyRun& r : runs) {
      j["policies"].push_back({{"policy", r.policy},
                               {"cross_node_bytes_per_round", r.cross_node_bytes},
                               {"steered_per_round", r.steered},
                               {"mean_round_s", r.round_s}});
    }
    out << j.dump() << "\n";
    return Ok();
  }
  char line[256];
  std::snprintf(line, sizeof line,
                "bench placement: 3 nodes (namespaces), %u clients asking 60/30/10 %%, %u per round, updates of %.1f "
                "MiB; node 1's segment %llu MiB, the others' %llu MiB; %u rounds per policy\n\n",
                o.clients, o.clients_per_round, static_cast<double>(o.params * 4) / (1 << 20),
                static_cast<unsigned long long>((o.segment_bytes / 4) >> 20),
                static_cast<unsigned long long>(o.segment_bytes >> 20), o.rounds);
  out << line;
  std::snprintf(line, sizeof line, "%-12s %18s %8s %14s %16s %8s\n", "policy", "cross-node/round", "x loc",
                "steered/round", "round (r2+)", "x loc");
  out << line;
  for (const PolicyRun& r : runs) {
    std::snprintf(line, sizeof line, "%-12s %14.1f MiB %8.2f %14.1f %15.3fs %8.2f\n", r.policy.c_str(),
                  r.cross_node_bytes / (1 << 20), r.cross_node_bytes / base.cross_node_bytes, r.steered, r.round_s,
                  r.round_s / base.round_s);
    out << line;
  }
  return Ok();
}

}  // namespace tributary::bench
