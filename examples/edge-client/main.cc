// An edge client as a developer would start one: a LibTorch model, local
// data, the SDK's run loop against a node agent's gateway.
//
//   edge-client --gateway tcp://10.0.0.7:7600 --client-id sensor-17
//               --gateway-key gateway.pub --key sensor-17.key [--compression int8]
//   edge-client --gateway tcp://127.0.0.1:7600 --client-id sim-1 --insecure
//
// The local data here is synthetic (two Gaussian blobs per class); replace
// LocalData() with the device's own.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <tributary/client/run.h>
#include <tributary/client/torch/module_client.h>

using namespace tributary;
namespace ta = tributary::client::torch_adapter;

struct NetImpl : torch::nn::Module {
  NetImpl() : fc1(register_module("fc1", torch::nn::Linear(8, 32))), fc2(register_module("fc2", torch::nn::Linear(32, 3))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc2->forward(torch::relu(fc1->forward(x))); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Net);

std::pair<torch::Tensor, torch::Tensor> LocalData(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  const torch::Tensor y = torch::randint(0, 3, {n}, torch::kLong);
  const torch::Tensor centers = torch::eye(3, 8) * 3;
  return {centers.index_select(0, y) + torch::randn({n, 8}), y};
}

int main(int argc, char** argv) {
  CLI::App app{"Tributary edge client (LibTorch)"};
  client::RunOptions options;
  std::string gateway_key, key, compression = "none";
  bool insecure = false;
  uint64_t seed = 1;
  app.add_option("--gateway", options.session.endpoint, "The node agent's gateway")->required();
  app.add_option("--client-id", options.session.client_id, "This client's id (bound to its key)")->required();
  app.add_option("--gateway-key", gateway_key, "The gateway's public key file (.pub)");
  app.add_option("--key", key, "This client's secret key file (.key)");
  app.add_flag("--insecure", insecure, "Plaintext, unauthenticated (only for a gateway with gateway_security: none)");
  app.add_option("--compression", compression, "none, f16, bf16 or int8");
  app.add_option("--rounds", options.max_rounds, "Stop after this many rounds (0: run until killed)");
  app.add_option("--seed", seed, "Seed of the synthetic local data");
  CLI11_PARSE(app, argc, argv);

  if (!insecure) {
    if (gateway_key.empty() || key.empty()) {
      spdlog::error("--gateway-key and --key are required (or --insecure for a gateway without authentication)");
      return 2;
    }
    auto server = client::LoadPublicKey(gateway_key);
    auto mine = client::LoadKeyPair(key);
    if (!server || !mine) {
      spdlog::error("{}", (!server ? server.error() : mine.error()).ToString());
      return 2;
    }
    options.session.curve = client::CurveOptions{server.value(), mine.value()};
  } else {
    spdlog::warn("insecure mode: the connection is neither encrypted nor authenticated");
  }
  auto parsed = client::ParseCompression(compression);
  if (!parsed) {
    spdlog::error("{}", parsed.error().ToString());
    return 2;
  }
  options.compression = parsed.value();

  auto [x, y] = LocalData(256, seed);
  ta::ModuleClient<Net> model(Net(), x, y, [](const torch::Tensor& out, const torch::Tensor& t) {
    return torch::nn::functional::cross_entropy(out, t);
  });
  auto summary = client::Run(model, options);
  if (!summary) {
    spdlog::error("{}", summary.error().ToString());
    return 1;
  }
  spdlog::info("{} rounds, {} bytes sent, {} bytes saved by compression", summary.value().rounds,
               summary.value().bytes_sent, summary.value().bytes_saved);
  return 0;
}
