// Load (issue 18, label `slow`): 10,000 clients (four `tributary loadgen`
// processes of 2,500, as a process may hold 20,000 descriptors here and a
// client takes four) hold connections to one node agent's gateway, check in,
// are all selected, and each uploads one 100 KB update. The round must accept
// and fold every update exactly once: the global model is the flat FedAvg of
// the 10,000 fake updates. The figures (peak RSS and open descriptors of this
// process, which holds the controller and the node agent with its gateway;
// task request, download and upload latencies per loadgen) are printed for
// docs/reliability.md.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
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

constexpr uint32_t kClients = 10'000;
constexpr uint32_t kLoadgens = 4;
constexpr size_t kParams = 25'600;  // 100 KB of f32

size_t OpenDescriptors() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) n += 1;
  return n;
}

std::vector<float> FedAvg(const std::vector<float>& model, const std::vector<AvailableClient>& clients,
                          uint64_t round) {
  std::vector<double> sum(model.size(), 0.0);
  double weight = 0;
  for (const AvailableClient& c : clients) {
    const std::vector<float> u = loadgen::FakeUpdate(c.client, round, model);
    const auto n = static_cast<double>(loadgen::FakeSampleCount(c.client));
    for (size_t i = 0; i < u.size(); ++i) sum[i] += n * u[i];
    weight += n;
  }
  std::vector<float> out(model.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(sum[i] / weight);
  return out;
}

TEST(Load, TenThousandClientsOnOneNodeEveryUpdateFoldedOnce) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("load-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::mutex mu;
  std::vector<AvailableClient> selected;
  uint64_t folded = 0;

  ServiceJob job;
  job.source = "load";
  job.spec.id = "load";
  job.spec.model = agg::ModelSpec::Create({{"w", agg::DType::kF32, {kParams}}}).value();
  job.spec.initial_model.assign(kParams, 0.0f);
  job.spec.deadline = std::chrono::seconds(240);
  job.schedule = {.rounds = 1, .clients_per_round = kClients, .min_clients = kClients, .start_after = kClients, .seed = 5};
  job.after_round = [&](const RoundReport& r, const std::vector<AvailableClient>& who) -> Result<void> {
    std::lock_guard lock(mu);
    selected = who;
    folded = r.updates;
    return Ok();
  };
  ControllerOptions co;
  co.checkpoint_dir = (dir / "state").string();
  std::vector<ServiceJob> jobs;
  jobs.push_back(std::move(job));
  auto service = ControllerService::Start(co, std::move(jobs), "");
  ASSERT_TRUE(service) << service.error().ToString();

  const std::string node_id = "load" + std::to_string(getpid());
  node::NodeOptions n;
  n.node_id = node_id;
  // Room for every update at once (the folds keep up, but need not).
  n.store = {"tributary." + node_id, 1536ull << 20, 16384};
  n.binary = TRIBUTARY_BINARY;
  n.dataplane = dataplane::DataPlaneMode::kUserspace;
  n.gateway.max_uploads = kClients;
  auto node = node::NodeService::Start(n, {.endpoint = service.value()->controller().endpoint()});
  ASSERT_TRUE(node) << node.error().ToString();
  ASSERT_TRUE(service.value()->controller().WaitForNodes(1, std::chrono::seconds(20)));

  const size_t descriptors_before = OpenDescriptors();
  std::atomic<bool> stop{false};
  std::atomic<size_t> peak_descriptors{0};
  std::thread sampler([&] {
    while (!stop) {
      peak_descriptors = std::max(peak_descriptors.load(), OpenDescriptors());
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  });
  std::vector<std::thread> loadgens;
  std::vector<int> exits(kLoadgens, -1);
  for (uint32_t k = 0; k < kLoadgens; ++k) {
    const uint32_t each = kClients / kLoadgens;
    const std::string command = std::string(TRIBUTARY_BINARY) + " loadgen --gateway " +
                                node.value()->agent().gateway_endpoint() + " --clients " + std::to_string(each) +
                                " --first-client " + std::to_string(k * each) +
                                " --rounds 1 --concurrency 4 --duration 300 --json > " +
                                (dir / ("loadgen-" + std::to_string(k) + ".json")).string() + " 2>&1";
    loadgens.emplace_back([&exits, k, command] { exits[k] = std::system(command.c_str()); });
  }
  const bool done = service.value()->WaitForJob("load").has_value();
  for (auto& t : loadgens) t.join();
  stop = true;
  sampler.join();
  ASSERT_TRUE(done) << service.value()->StatusJson();

  uint64_t accepted = 0, tasks = 0;
  std::vector<nlohmann::json> reports;
  for (uint32_t k = 0; k < kLoadgens; ++k) {
    std::ifstream in(dir / ("loadgen-" + std::to_string(k) + ".json"));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_EQ(exits[k], 0) << text;
    const nlohmann::json j = nlohmann::json::parse(text.substr(text.rfind("\n{") + 1), nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << text;
    accepted += j["accepted"].get<uint64_t>();
    tasks += j["tasks"].get<uint64_t>();
    reports.push_back(j);
  }
  EXPECT_EQ(accepted, kClients);
  EXPECT_EQ(tasks, kClients);
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(folded, kClients) << "every update folded, none twice";
    ASSERT_EQ(selected.size(), kClients);
    const std::vector<float> expected = FedAvg(std::vector<float>(kParams, 0.0f), selected, 1);
    auto model = service.value()->controller().Model("load");
    ASSERT_TRUE(model) << model.error().ToString();
    double d = 0, norm = 0;
    for (size_t i = 0; i < kParams; ++i) {
      d += std::pow(double(model.value()[i]) - expected[i], 2);
      norm += double(expected[i]) * expected[i];
    }
    EXPECT_LT(std::sqrt(d / norm), 1e-5) << "the model is the FedAvg of the 10,000 updates";
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("load: %u clients; controller + node agent: peak RSS %.0f MB, descriptors %zu before the clients, "
              "peak %zu\n",
              kClients, static_cast<double>(usage.ru_maxrss) / 1024.0, descriptors_before, peak_descriptors.load());
  for (const nlohmann::json& j : reports) std::printf("load: loadgen %s\n", j.dump().c_str());
  node.value().reset();
  service.value().reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tributary::controller
