// The namespace federation the cluster tests share: a controller, three node
// agents and a hundred clients (`tributary loadgen`), each host a network
// namespace on a bridge (tests/support/netns.h), CURVE on both planes, the
// eBPF data plane where it loads. Root only: SetUp skips with the reason
// elsewhere and fails under TRIBUTARY_REQUIRE_PRIVILEGED (CI).
//
// The models are checked against the reference computed here: each round's
// global model is the flat FedAvg of the fake updates (loadgen::FakeUpdate)
// of exactly the clients the round reports (rounds.jsonl), from the model
// before it; with every selected client delivering, those are the clients
// SelectClients picks, so an undisturbed run's models are known in advance.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "support/netns.h"
#include "tributary/config/controller_config.h"
#include "tributary/controller/client_registry.h"
#include "tributary/controller/controller_service.h"
#include "tributary/controller/safetensors.h"
#include "tributary/keys/curve_keys.h"
#include "tributary/loadgen/loadgen.h"
#include "tributary/protocol/codec.h"

namespace tributary {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using testing::TestNetwork;

constexpr uint32_t kClients = 100;

std::string JobYaml(const std::string& extra, uint32_t deadline_s = 30) {
  return "name: cluster\nclients_per_round: 30\ndeadline_s: " + std::to_string(deadline_s) +
         "\nstart_after: 100\nseed: 11\n"
         "model: {layout: [{name: w, shape: [256, 64]}, {name: b, shape: [64]}], init: {scheme: normal, scale: 0.05, "
         "seed: 3}}\nstrategy: {name: fedavg}\ntrain: {lr: 0.1}\nfan_in: 4\n" +
         extra;
}

std::vector<float> FedAvg(const std::vector<float>& model, const std::vector<std::string>& clients, uint64_t round) {
  std::vector<double> sum(model.size(), 0.0);
  double weight = 0;
  for (const std::string& c : clients) {
    const std::vector<float> u = loadgen::FakeUpdate(c, round, model);
    const auto n = static_cast<double>(loadgen::FakeSampleCount(c));
    for (size_t i = 0; i < u.size(); ++i) sum[i] += n * u[i];
    weight += n;
  }
  std::vector<float> out(model.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(sum[i] / weight);
  return out;
}

double RelativeL2(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += double(b[i]) * b[i];
  }
  return std::sqrt(d / n);
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = testing::NetnsUnavailable(); !why.empty()) {
      if (std::getenv("TRIBUTARY_REQUIRE_PRIVILEGED")) FAIL() << "required here (TRIBUTARY_REQUIRE_PRIVILEGED): " << why;
      GTEST_SKIP() << why;
    }
    std::string error;
    net_ = TestNetwork::Create({"ctl", "n1", "n2", "n3", "cli"}, &error);
    ASSERT_TRUE(net_) << error;
    char tmpl[] = "/tmp/trb-cluster-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    prefix_ = "c" + std::to_string(getpid());
    for (const char* d : {"keys", "nodes", "clients"}) fs::create_directories(dir_ / d);
    auto write = [&](const std::string& where, const std::string& name) {
      auto pair = keys::GenerateKeyPair();
      ASSERT_TRUE(pair);
      ASSERT_TRUE(keys::WriteKeyPair(pair.value(), (dir_ / where).string(), name));
    };
    write("keys", "controller");
    write("keys", "gateway");
    write("keys", "unlisted");
    for (int i = 1; i <= 4; ++i) {
      write("keys", NodeId(i));
      fs::copy_file(dir_ / "keys" / (NodeId(i) + ".pub"), dir_ / "nodes" / (NodeId(i) + ".pub"));
    }
    for (uint32_t c = 0; c < kClients; ++c) write("clients", loadgen::ClientId("load-", c));
  }

  void TearDown() override {
    if (HasFailure() && !dir_.empty()) {
      for (const auto& e : fs::directory_iterator(dir_)) {
        if (e.path().extension() != ".log") continue;
        std::ifstream in(e.path());
        std::vector<std::string> lines;
        for (std::string l; std::getline(in, l);) lines.push_back(l);
        std::cerr << "---- " << e.path().filename().string() << " (last 30 lines)\n";
        for (size_t i = lines.size() > 30 ? lines.size() - 30 : 0; i < lines.size(); ++i) std::cerr << lines[i] << "\n";
      }
    }
    net_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string NodeId(int i) const { return prefix_ + "-n" + std::to_string(i); }
  std::string Host(int i) const { return "n" + std::to_string(i); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  void WriteController(const std::string& job_extra, uint64_t node_timeout_ms = 3000, uint32_t deadline_s = 30) {
    std::ofstream(dir_ / "job.yaml") << JobYaml(job_extra, deadline_s);
    const std::string ctl = net_->Address("ctl");
    std::ofstream(dir_ / "controller.yaml") << "bind: tcp://" << ctl << ":7700\nhttp_bind: " << ctl
                                            << ":7701\nstate_dir: state\nnode_timeout_ms: " << node_timeout_ms
                                            << "\nsecurity: {mode: curve, secret_key_file: keys/controller.key, "
                                               "node_allow_list: nodes}\njobs: [job.yaml]\n";
  }

  // Node `i` on host n<i>; `id` and `key` replace its own (the impostor cases).
  void WriteNode(int i, const std::string& id, const std::string& key, int gateway_port = 7600,
                 const std::string& segment = "256MiB") {
    const std::string host = net_->Address(Host(i));
    std::ofstream(dir_ / (id + ".yaml"))
        << "node_id: " << id << "\nstore: {segment_bytes: " << segment << "}\ngateway_bind: tcp://" << host << ":"
        << gateway_port
        << "\ndataplane: auto\nmetrics_bind: \""
        << (node_metrics_port_ ? host + ":" + std::to_string(node_metrics_port_) : "") << "\"\ngateway_security: {mode: curve, secret_key_file: "
        << Path("keys/gateway.key") << ", allow_list: " << Path("clients") << "}\ncontroller: tcp://"
        << net_->Address("ctl") << ":7700\ncontroller_security: {mode: curve, controller_public_key_file: "
        << Path("keys/controller.pub") << ", secret_key_file: " << Path("keys/" + key + ".key") << "}\n";
  }

  pid_t StartController() {
    return net_->Spawn("ctl", {TRIBUTARY_BINARY, "controller", "--config", Path("controller.yaml")}, Path("controller.log"));
  }
  pid_t StartNode(int i, const std::string& segment = "256MiB") {
    WriteNode(i, NodeId(i), NodeId(i), 7600, segment);
    return net_->Spawn(Host(i), {TRIBUTARY_BINARY, "node", "--config", Path(NodeId(i) + ".yaml")},
                       Path(NodeId(i) + ".log"));
  }
  // Client c asks node hosts[c % hosts.size()] (an even spread by default).
  pid_t StartLoadgen(int train_ms, const std::vector<int>& hosts = {1, 2, 3}) {
    std::vector<std::string> argv = {TRIBUTARY_BINARY, "loadgen", "--clients", std::to_string(kClients),
                                     "--concurrency", "6", "--gateway-key", Path("keys/gateway.pub"),
                                     "--client-keys", Path("clients"), "--train-ms", std::to_string(train_ms), "--json"};
    for (int i : hosts) argv.insert(argv.end(), {"--gateway", "tcp://" + net_->Address(Host(i)) + ":7600"});
    return net_->Spawn("cli", argv, Path("loadgen.log"));
  }

  // GET `path` on the controller's HTTP side, from the clients' host.
  std::string Get(const std::string& path) { return GetFrom("http://" + net_->Address("ctl") + ":7701", path); }
  // GET `url` + `path`, from the clients' host.
  std::string GetFrom(const std::string& url, const std::string& path) {
    return net_->InNamespace("cli", [&] {
             httplib::Client http(url);
             http.set_connection_timeout(std::chrono::seconds(2));
             auto r = http.Get(path);
             return r && r->status == 200 ? r->body : std::string();
           })
        .value_or("");
  }
  json Status() {
    const std::string body = Get("/v1/status");
    return body.empty() ? json() : json::parse(body, nullptr, false);
  }

  // Polls the status until `done` holds for it or `timeout` passes.
  bool WaitFor(const std::function<bool(const json&)>& done, std::chrono::seconds timeout) {
    const auto give_up = Clock::now() + timeout;
    json s;
    while (Clock::now() < give_up) {
      s = Status();
      if (s.is_object() && done(s)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    std::cerr << "status at the timeout: " << s.dump(1) << "\n";
    return false;
  }
  // 0 also while a restarted controller has not loaded the job yet.
  static uint64_t RoundsDone(const json& s) { return s.value(json::json_pointer("/jobs/cluster/rounds_done"), 0ull); }

  std::vector<json> RoundLog() {
    std::vector<json> out;
    std::ifstream in(dir_ / "state" / "cluster" / "rounds.jsonl");
    for (std::string l; std::getline(in, l);) out.push_back(json::parse(l));
    return out;
  }
  std::vector<float> Model(uint64_t version) {
    if (version == 0) {
      auto job = config::ParseDeploymentJob(JobYaml(""), Path("job.yaml"));
      return controller::ServiceJobFor(job.value()).value().spec.initial_model;
    }
    char name[64];
    std::snprintf(name, sizeof(name), "state/cluster/model-%06llu.safetensors", static_cast<unsigned long long>(version));
    auto m = controller::ReadSafetensors(Path(name));
    EXPECT_TRUE(m) << m.error().ToString();
    return m ? m.value().values : std::vector<float>();
  }

  // Round `r`'s model is the FedAvg of its reported clients' updates.
  void ExpectRoundModel(const json& round) {
    const uint64_t r = round["round"];
    const std::vector<std::string> clients = round["clients"];
    EXPECT_EQ(clients.size(), round["updates"].get<uint64_t>()) << "round " << r;
    EXPECT_LT(RelativeL2(Model(r), FedAvg(Model(r - 1), clients, r)), 1e-6) << "round " << r;
  }

  // Who an undisturbed run selects in round `r` (every client available).
  std::vector<std::string> Expected(uint64_t r) {
    std::vector<controller::AvailableClient> all;
    for (uint32_t c = 0; c < kClients; ++c) all.push_back({loadgen::ClientId("load-", c), ""});
    std::vector<std::string> out;
    for (const auto& c : controller::SelectClients(all, 30, 11, "cluster", r, 0)) out.push_back(c.client);
    std::sort(out.begin(), out.end());
    return out;
  }

  std::unique_ptr<TestNetwork> net_;
  fs::path dir_;
  std::string prefix_;
  uint16_t node_metrics_port_ = 0;  // 0: node agents serve no /metrics
};

}  // namespace
}  // namespace tributary
