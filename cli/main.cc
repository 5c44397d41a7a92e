// The `tributary` command: one binary, one subcommand per role.
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "aggregate_bench.h"
#include "dataplane_bench.h"
#include "round_bench.h"
#include "tributary/keys/curve_keys.h"
#include "tributary/config/config.h"
#include "tributary/function/function_host.h"
#include "tributary/node/node_service.h"

#include <csignal>
#include <spdlog/spdlog.h>
#include <thread>
#include <unistd.h>

namespace {

int Report(const tributary::Result<void>& r) {
  if (r) return 0;
  std::cerr << "tributary: " << r.error().ToString() << "\n";
  return 1;
}

volatile std::sig_atomic_t g_stop = 0;

// This executable, which node agents start functions from.
std::string SelfPath() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

// `tributary node`: the node agent under a controller, until SIGINT/SIGTERM.
int RunNode(const std::string& config_file, const std::string& controller, const std::string& binary) {
  auto cfg = tributary::config::LoadNodeConfig(config_file);
  if (!cfg) return Report(std::move(cfg).error());
  tributary::node::NodeOptions o;
  o.node_id = cfg.value().node_id;
  o.store = cfg.value().store;
  o.gateway.bind = cfg.value().gateway_bind;
  o.dataplane = tributary::dataplane::ParseDataPlaneMode(cfg.value().dataplane).value();
  o.keep_alive = std::chrono::milliseconds(cfg.value().keep_alive_ms);
  o.function_liveness = std::chrono::milliseconds(cfg.value().function_liveness_ms);
  o.transport = tributary::dataplane::ParseAggregationTransport(cfg.value().aggregation_transport).value();
  o.binary = binary;
  if (cfg.value().gateway_security == "curve") {
    auto keys = tributary::keys::LoadKeyPair(cfg.value().gateway_secret_key_file);
    if (!keys) return Report(std::move(keys).error());
    o.gateway.security = {keys.value().secret_key, cfg.value().gateway_allow_list};
    spdlog::info("node {}: gateway public key (clients need it): {}", o.node_id, keys.value().public_key);
  } else {
    spdlog::warn("node {}: gateway_security mode none: clients connect unauthenticated and unencrypted", o.node_id);
  }
  auto service = tributary::node::NodeService::Start(o, controller, cfg.value().metrics_bind);
  if (!service) return Report(std::move(service).error());
  spdlog::info("node {}: data plane: {}", o.node_id, service.value()->agent().dataplane_reason());
  spdlog::info("node {}: gateway on {}, segment {} ({} bytes), controller {}, metrics on port {}", o.node_id,
               service.value()->agent().gateway_endpoint(), o.store.name, o.store.bytes, controller,
               service.value()->metrics_port());
  std::signal(SIGINT, [](int) { g_stop = 1; });
  std::signal(SIGTERM, [](int) { g_stop = 1; });
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  spdlog::info("node {}: stopping", o.node_id);
  return 0;
}


}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tributary: serverless federated-learning aggregation over shared memory."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tributary 0.1.0");

  CLI::App* bench = app.add_subcommand("bench", "Run a benchmark and print its figures beside a same-run baseline");
  bench->require_subcommand(1);
  tributary::bench::AggregateBenchOptions agg;
  CLI::App* bench_agg = bench->add_subcommand(
      "aggregate",
      "Fold N updates of M parameters: throughput vs. memory bandwidth, round time vs. a Flower-style server, "
      "peak memory while streaming updates through the shared-memory store");
  bench_agg->option_defaults()->always_capture_default();
  bench_agg->add_option("--params", agg.params, "Parameters per update (default: ResNet-18, 11.7 M)")
      ->check(CLI::PositiveNumber);
  bench_agg->add_option("--updates", agg.updates, "Updates per round for throughput and time")
      ->check(CLI::PositiveNumber);
  bench_agg->add_option("--memory-updates", agg.memory_updates, "Updates streamed for the memory figure")
      ->check(CLI::PositiveNumber);
  bench_agg->add_option("--batch", agg.batch, "Most arrived updates folded in one pass over the accumulator")
      ->check(CLI::Range(1, 1024));
  bench_agg->add_option("--threads", agg.threads, "Kernel threads (0: one per core)")->check(CLI::Range(0, 1024));
  bench_agg->add_option("--repetitions", agg.repetitions, "Repetitions; the best is reported")
      ->check(CLI::Range(1, 100));
  bench_agg->add_flag("!--no-baseline", agg.flower_baseline, "Skip the Flower-style baseline (saves memory)");
  bench_agg->add_flag("--json", agg.json, "Also print the figures as JSON");

  tributary::bench::DataplaneBenchOptions dp;
  CLI::App* bench_dp = bench->add_subcommand(
      "dataplane",
      "One descriptor hop (p50, p99, msgs/s) through the eBPF redirect and the userspace relay, against sending "
      "the whole update over TCP loopback, for 1 MB, 46.8 MB and 240 MB updates");
  bench_dp->option_defaults()->always_capture_default();
  bench_dp->add_option("--sizes", dp.sizes, "Update sizes in bytes");
  bench_dp->add_option("--round-trips", dp.round_trips, "Round trips per path and size")->check(CLI::PositiveNumber);
  bench_dp->add_option("--stream", dp.stream_messages, "Pipelined descriptors per path and size")
      ->check(CLI::PositiveNumber);
  bench_dp->add_option("--dataplane", dp.dataplane, "Descriptor paths: auto (both where eBPF loads), ebpf, userspace")
      ->check(CLI::IsMember({"auto", "ebpf", "userspace"}));

  tributary::bench::RoundBenchOptions round;
  CLI::App* bench_round = bench->add_subcommand(
      "round",
      "A whole round through a real node (gateway, function tree, controller): shared-memory transport against "
      "the serverful one (whole payloads over TCP), N updates of M parameters");
  bench_round->option_defaults()->always_capture_default();
  bench_round->add_option("--params", round.params, "Parameters per update (default: ResNet-18, 11.7 M)")
      ->check(CLI::PositiveNumber);
  bench_round->add_option("--updates", round.updates, "Updates per round, one figure each (e.g. 100,1000)")
      ->delimiter(',');
  bench_round->add_option("--fan-in", round.fan_in, "Updates per leaf function")->check(CLI::Range(1, 4096));
  bench_round->add_option("--uploaders", round.uploaders, "Concurrent client sessions")->check(CLI::Range(1, 256));
  std::string round_segment = "8GiB";
  bench_round->add_option("--segment-bytes", round_segment, "The node's shared-memory segment size (e.g. 8GiB)");
  bench_round->add_flag("--json", round.json, "Print the figures as JSON");

  tributary::function::FunctionOptions fn;
  int64_t idle_exit_ms = 0;
  CLI::App* function = app.add_subcommand(
      "function", "Run one aggregator function (started by the node agent's supervisor, not by hand)");
  function->add_option("--fn", fn.fn, "Function id")->required()->check(CLI::Range(2, TRB_MAX_FUNCTIONS - 1));
  function->add_option("--segment", fn.segment, "The node's shared-memory segment")->required();
  function->add_option("--switch-port", fn.switch_address.tcp_port, "The descriptor switch's loopback port")
      ->required();
  function->add_option("--switch-name", fn.switch_address.registration,
                       "The descriptor switch's registration socket (abstract name)")
      ->required();
  std::string fn_transport = "shared-memory";
  function->add_option("--transport", fn_transport,
                       "shared-memory, or tcp (the serverful comparison: inputs and results as whole payloads over "
                       "loopback TCP)")
      ->check(CLI::IsMember({"shared-memory", "tcp"}));
  function->add_option("--idle-exit-ms", idle_exit_ms, "Exit after this long without work (0: never)")
      ->check(CLI::NonNegativeNumber);

  CLI::App* simulate = app.add_subcommand(
      "simulate", "Run a simulated federation from a job file: tributary simulate job.yaml [--out DIR] [--rounds N]");
  simulate->prefix_command();  // everything after `simulate` goes to tributary-simulate,
  simulate->set_help_flag();   // --help included: it has the options

  std::string key_name, key_dir = ".";
  CLI::App* keys = app.add_subcommand("keys", "CURVE keys for gateways and clients");
  keys->require_subcommand(1);
  CLI::App* keys_generate =
      keys->add_subcommand("generate", "Write a keypair: DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub");
  keys_generate->add_option("--name", key_name, "A client id (its .pub goes into gateways' allow-lists) or a gateway name")
      ->required();
  keys_generate->add_option("--out", key_dir, "Directory to write into")->capture_default_str();

  std::string node_config, controller_endpoint;
  CLI::App* node = app.add_subcommand("node", "Run the node agent: shared memory, data plane, gateway, functions");
  node->add_option("--config", node_config, "Node configuration (YAML; see `tributary config node`)")->required();
  node->add_option("--controller", controller_endpoint, "The controller's endpoint, e.g. tcp://10.0.0.1:7700")
      ->required();

  CLI::App* config = app.add_subcommand("config", "Check configuration files");
  config->require_subcommand(1);
  std::string node_file;
  CLI::App* config_node = config->add_subcommand("node", "Validate a node agent configuration (node.yaml)");
  config_node->add_option("file", node_file, "The YAML file")->required();

  CLI11_PARSE(app, argc, argv);

  if (bench_agg->parsed()) return Report(tributary::bench::RunAggregateBench(agg, std::cout));
  if (node->parsed()) return RunNode(node_config, controller_endpoint, SelfPath());
  if (function->parsed()) {
    fn.idle_exit = std::chrono::milliseconds(idle_exit_ms);
    fn.transport = tributary::dataplane::ParseAggregationTransport(fn_transport).value();
    return Report(tributary::function::RunFunction(fn));
  }
  if (bench_round->parsed()) {
    auto bytes = tributary::config::ParseByteSize(round_segment);
    if (!bytes) return Report(std::move(bytes).error());
    round.segment_bytes = bytes.value();
    round.binary = SelfPath();
    return Report(tributary::bench::RunRoundBench(round, std::cout));
  }
  if (bench_dp->parsed()) return Report(tributary::bench::RunDataplaneBench(dp, std::cout));
  if (simulate->parsed()) {
    // A separate executable beside this one, so that only simulations load LibTorch.
    const std::string exe = (std::filesystem::path(SelfPath()).parent_path() / "tributary-simulate").string();
    std::vector<std::string> args = {exe};
    for (const std::string& a : simulate->remaining()) args.push_back(a);
    std::vector<char*> argv_out;
    for (std::string& a : args) argv_out.push_back(a.data());
    argv_out.push_back(nullptr);
    execv(exe.c_str(), argv_out.data());
    return Report(tributary::MakeError(tributary::ErrorCode::kNotFound, "cannot run " + exe + ": " + std::strerror(errno)));
  }
  if (keys_generate->parsed()) {
    auto pair = tributary::keys::GenerateKeyPair();
    if (!pair) return Report(std::move(pair).error());
    if (auto written = tributary::keys::WriteKeyPair(pair.value(), key_dir, key_name); !written) return Report(written);
    std::cout << key_dir << "/" << key_name << ".key (secret), " << key_dir << "/" << key_name
              << ".pub: " << pair.value().public_key << "\n";
    return 0;
  }
  if (config_node->parsed()) {
    auto c = tributary::config::LoadNodeConfig(node_file);
    if (!c) return Report(std::move(c).error());
    std::cout << node_file << ": ok (node " << c.value().node_id << ", segment " << c.value().store.name << ", "
              << c.value().store.bytes << " bytes)\n";
    return 0;
  }
  return EXIT_FAILURE;
}
