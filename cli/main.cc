// The `tributary` command: one binary, one subcommand per role.
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>

#include "aggregate_bench.h"
#include "autoscale_bench.h"
#include "placement_bench.h"
#include "dataplane_bench.h"
#include "ingest_bench.h"
#include "plan_bench.h"
#include "round_bench.h"
#include "tributary/config/config.h"
#include "tributary/config/controller_config.h"
#include "tributary/controller/controller_service.h"
#include "tributary/function/function_host.h"
#include "tributary/keys/curve_keys.h"
#include "tributary/kubernetes/in_cluster.h"
#include "tributary/loadgen/loadgen.h"
#include "tributary/node/node_service.h"
#include "status_view.h"

#include <atomic>
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

void StopOnSignals() {
  std::signal(SIGINT, [](int) { g_stop = 1; });
  std::signal(SIGTERM, [](int) { g_stop = 1; });
}

// This executable, which node agents start functions from.
std::string SelfPath() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

// `tributary node`: the node agent under a controller, until SIGINT/SIGTERM.
int RunNode(const std::string& config_file, std::string controller, const std::string& node_id,
            const std::string& advertise, const std::string& binary) {
  auto cfg = tributary::config::LoadNodeConfig(config_file);
  if (!cfg) return Report(std::move(cfg).error());
  if (!node_id.empty()) {
    if (auto set = tributary::config::SetNodeId(cfg.value(), node_id); !set) return Report(set);
  }
  if (!advertise.empty()) {
    if (auto valid = tributary::config::ValidAdvertisedEndpoint(advertise); !valid) return Report(valid);
    cfg.value().gateway_advertise = advertise;
  }
  if (controller.empty()) controller = cfg.value().controller_endpoint;
  if (controller.empty()) {
    return Report(tributary::MakeError(tributary::ErrorCode::kConfig,
                                       config_file + ": no controller: set `controller:` or pass --controller"));
  }
  tributary::node::NodeOptions o;
  o.node_id = cfg.value().node_id;
  o.store = cfg.value().store;
  o.gateway.bind = cfg.value().gateway_bind;
  o.dataplane = tributary::dataplane::ParseDataPlaneMode(cfg.value().dataplane).value();
  o.keep_alive = std::chrono::milliseconds(cfg.value().keep_alive_ms);
  o.function_liveness = std::chrono::milliseconds(cfg.value().function_liveness_ms);
  o.autoscale = cfg.value().autoscale;
  o.autoscaling = cfg.value().autoscaling;
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
  tributary::node::ControllerLink link{.endpoint = controller, .advertised_gateway = cfg.value().gateway_advertise};
  if (cfg.value().controller_security == "curve") {
    auto server = tributary::keys::LoadPublicKey(cfg.value().controller_public_key_file);
    if (!server) return Report(std::move(server).error());
    auto own = tributary::keys::LoadKeyPair(cfg.value().controller_secret_key_file);
    if (!own) return Report(std::move(own).error());
    link.controller_public_key = server.value();
    link.public_key = own.value().public_key;
    link.secret_key = own.value().secret_key;
    spdlog::info("node {}: control plane CURVE, node public key (on the controller's allow-list): {}", o.node_id,
                 link.public_key);
  } else {
    spdlog::warn("node {}: controller_security mode none: the control plane is unauthenticated and unencrypted",
                 o.node_id);
  }
  auto service = tributary::node::NodeService::Start(o, link, cfg.value().metrics_bind);
  if (!service) return Report(std::move(service).error());
  spdlog::info("node {}: data plane: {}", o.node_id, service.value()->agent().dataplane_reason());
  spdlog::info("node {}: gateway on {}{}, segment {} ({} bytes), controller {}, metrics on port {}", o.node_id,
               service.value()->agent().gateway_endpoint(),
               link.advertised_gateway.empty() ? "" : " (announced as " + link.advertised_gateway + ")", o.store.name,
               o.store.bytes, controller, service.value()->metrics_port());
  StopOnSignals();
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  spdlog::info("node {}: stopping", o.node_id);
  return 0;
}

// The configuration and every job file (and its model), checked; errors
// name file, line, key.
tributary::Result<std::pair<tributary::config::ControllerConfig, std::vector<tributary::controller::ServiceJob>>>
LoadControllerSetup(const std::string& config_file) {
  TRIBUTARY_ASSIGN_OR_RETURN(tributary::config::ControllerConfig cfg, tributary::config::LoadControllerConfig(config_file));
  std::vector<tributary::controller::ServiceJob> jobs;
  for (const std::string& file : cfg.jobs) {
    TRIBUTARY_ASSIGN_OR_RETURN(tributary::config::DeploymentJob job, tributary::config::LoadDeploymentJob(file));
    auto service_job = tributary::controller::ServiceJobFor(job);
    if (!service_job) return tributary::MakeError(service_job.error().code, file + ": " + service_job.error().reason);
    jobs.push_back(std::move(service_job).value());
  }
  return std::pair{std::move(cfg), std::move(jobs)};
}

// `tributary controller`: the standalone controller, until SIGINT/SIGTERM.
int RunController(const std::string& config_file) {
  auto setup = LoadControllerSetup(config_file);
  if (!setup) return Report(std::move(setup).error());
  auto& [cfg, jobs] = setup.value();
  tributary::controller::ControllerOptions o;
  o.bind = cfg.bind;
  o.checkpoint_dir = cfg.state_dir;
  o.node_timeout = std::chrono::milliseconds(cfg.node_timeout_ms);
  o.client_ttl = std::chrono::milliseconds(cfg.client_ttl_ms);
  if (cfg.security == "curve") {
    auto keys = tributary::keys::LoadKeyPair(cfg.secret_key_file);
    if (!keys) return Report(std::move(keys).error());
    o.security = {keys.value().secret_key, cfg.node_allow_list};
    spdlog::info("controller: control plane CURVE, public key (nodes need it): {}", keys.value().public_key);
  } else {
    spdlog::warn("controller: security mode none: any node may connect, unauthenticated and unencrypted");
  }
  auto service = tributary::controller::ControllerService::Start(o, std::move(jobs), cfg.http_bind);
  if (!service) return Report(std::move(service).error());
  spdlog::info("controller: nodes connect to {}, HTTP on port {}, state in {}", service.value()->controller().endpoint(),
               service.value()->http_port(), cfg.state_dir);
  StopOnSignals();
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  spdlog::info("controller: stopping");
  return 0;
}

// With `job`: loadgen stops once the job completes a round it took part in,
// and fails if none completes before the run ends (`helm test`).
struct RoundWatch {
  std::string controller;  // HTTP, like `tributary status --controller`
  std::string job;
};

// `tributary loadgen`: synthetic clients until done or SIGINT/SIGTERM.
int RunLoadgen(tributary::loadgen::LoadgenOptions o, const std::string& gateway_key, bool json,
               const RoundWatch& watch) {
  uint64_t rounds_before = 0;
  if (!watch.job.empty()) {
    if (o.duration.count() == 0) {
      return Report(tributary::MakeError(tributary::ErrorCode::kInvalidArgument,
                                         "--wait-job needs --duration: the longest to wait for the round"));
    }
    // The controller may still be starting (a fresh release): ask until the run's end.
    const auto give_up = std::chrono::steady_clock::now() + o.duration;
    auto done = tributary::cli::JobRoundsDone(watch.controller, watch.job);
    while (!done && done.error().code == tributary::ErrorCode::kIo && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      done = tributary::cli::JobRoundsDone(watch.controller, watch.job);
    }
    if (!done) return Report(std::move(done).error());
    rounds_before = done.value();
  }
  if (!gateway_key.empty()) {
    // A file first: a 40-character path is also valid Z85.
    auto key = !std::filesystem::exists(gateway_key) && tributary::keys::IsZ85Key(gateway_key)
                   ? tributary::Result<std::string>(gateway_key)
                   : tributary::keys::LoadPublicKey(gateway_key);
    if (!key) return Report(std::move(key).error());
    o.gateway_public_key = key.value();
  }
  static std::atomic<bool> stop{false};
  std::atomic<bool> round_completed{false};
  // One poll of the controller; a failed one counts as "not yet".
  const auto poll_round = [&] {
    auto done = tributary::cli::JobRoundsDone(watch.controller, watch.job);
    if (done && done.value() > rounds_before) round_completed = true;
    return round_completed.load();
  };
  StopOnSignals();
  std::thread watcher([&] {
    auto next_poll = std::chrono::steady_clock::now();
    while (!stop.load()) {
      if (g_stop) stop = true;
      if (!watch.job.empty() && std::chrono::steady_clock::now() >= next_poll) {
        next_poll += std::chrono::milliseconds(500);
        if (poll_round()) stop = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  const auto started = std::chrono::steady_clock::now();
  auto report = tributary::loadgen::RunLoadgen(o, &stop);
  stop = true;
  watcher.join();
  if (!report) return Report(std::move(report).error());
  // The clients are done when their updates are accepted; the round completes
  // once the controller has merged the nodes' partials, a moment later.
  while (!watch.job.empty() && !round_completed && !g_stop && std::chrono::steady_clock::now() < started + o.duration) {
    if (!poll_round()) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  tributary::loadgen::PrintReport(report.value(), json, std::cout);
  if (!watch.job.empty()) {
    if (!round_completed) {
      return Report(tributary::MakeError(tributary::ErrorCode::kRoundClosed,
                                         "job '" + watch.job + "' completed no round while loadgen ran (it had " +
                                             std::to_string(rounds_before) + " rounds done)"));
    }
    std::cout << "job '" << watch.job << "' completed round " << rounds_before + 1 << "\n";
  }
  return 0;
}

// `tributary keys kubernetes-secret`: a keypair as a Secret, created once.
int CreateKeySecret(const std::string& secret, const std::string& name, const std::vector<std::string>& labels,
                    const std::string& api_server, const std::string& service_account) {
  std::map<std::string, std::string> label_map;
  for (const std::string& l : labels) {
    const size_t eq = l.find('=');
    if (eq == 0 || eq == std::string::npos) {
      return Report(tributary::MakeError(tributary::ErrorCode::kInvalidArgument, "--label " + l + ": expected KEY=VALUE"));
    }
    label_map[l.substr(0, eq)] = l.substr(eq + 1);
  }
  auto credentials = tributary::kubernetes::LoadInClusterCredentials(service_account, api_server);
  if (!credentials) return Report(std::move(credentials).error());
  auto pair = tributary::keys::GenerateKeyPair();
  if (!pair) return Report(std::move(pair).error());
  const std::map<std::string, std::string> data = {{name + ".key", pair.value().secret_key + "\n"},
                                                   {name + ".pub", pair.value().public_key + "\n"}};
  auto outcome = tributary::kubernetes::CreateSecretOnce(credentials.value(), secret, data, label_map);
  if (!outcome) return Report(std::move(outcome).error());
  if (outcome.value() == tributary::kubernetes::SecretOutcome::kCreated) {
    std::cout << "created Secret " << secret << " (" << name << ".key, " << name << ".pub): " << pair.value().public_key
              << "\n";
  } else {
    std::cout << "kept the existing Secret " << secret << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tributary: serverless federated-learning aggregation over shared memory."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tributary " TRIBUTARY_VERSION);

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

  tributary::bench::IngestBenchOptions ingest;
  std::string ingest_bytes = "2GiB";
  CLI::App* bench_ingest = bench->add_subcommand(
      "ingest", "How fast the gateway takes in updates and serves the model (client SDK, real wire protocol) "
                "against plain loopback TCP into shared memory, per update size and number of clients");
  bench_ingest->option_defaults()->always_capture_default();
  bench_ingest->add_option("--sizes", ingest.sizes, "Bytes per update (f32 layers), e.g. 1000000,46758048")
      ->delimiter(',')->check(CLI::Range(uint64_t{4}, uint64_t{1} << 36));
  bench_ingest->add_option("--clients", ingest.clients, "Concurrent clients, e.g. 1,4,16")
      ->delimiter(',')->check(CLI::Range(1, 256));
  bench_ingest->add_option("--bytes", ingest_bytes, "Bytes each measurement moves at least (e.g. 2GiB)");
  bench_ingest->add_flag("!--no-curve", ingest.curve, "Skip the gateway under CURVE");
  bench_ingest->add_flag("!--no-downloads", ingest.downloads, "Skip the downloads");
  bench_ingest->add_option("--idle", ingest.idle,
                           "Also measure the uploads while this many other clients hold idle connections (0: no)");
  bench_ingest->add_flag("--json", ingest.json, "Print the figures as JSON");

  tributary::bench::PlanBenchOptions plan;
  std::vector<std::string> plan_sizes;
  CLI::App* bench_plan = bench->add_subcommand(
      "plan", "What planning a round costs the controller on one core: the registry's view, the selection, the "
              "placement across nodes and every node's tree, for nodes x checked-in clients x selected");
  bench_plan->add_option("--size", plan_sizes, "NODES:CLIENTS:SELECTED, repeatable (default: five sizes up to "
                                               "1000:1000000:100000)");
  bench_plan->add_option("--repetitions", plan.repetitions, "Repetitions; the best is reported")
      ->check(CLI::PositiveNumber)->capture_default_str();
  bench_plan->add_option("--fan-in", plan.fan_in, "Updates per leaf function")->check(CLI::Range(1, 4096))
      ->capture_default_str();

  tributary::bench::PlacementBenchOptions placement;
  std::string placement_segment = "1GiB";
  CLI::App* bench_placement = bench->add_subcommand(
      "placement", "Bytes crossing nodes and round time for this planner, round-robin and random placement, on a "
                   "3-node federation of network namespaces with skewed check-ins and one small node (root)");
  bench_placement->add_option("--rounds", placement.rounds, "Rounds per policy")->check(CLI::Range(2, 1000))
      ->capture_default_str();
  bench_placement->add_option("--clients", placement.clients, "Clients (loadgen)")->check(CLI::Range(1, 100000))
      ->capture_default_str();
  bench_placement->add_option("--clients-per-round", placement.clients_per_round, "Updates a round wants")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  bench_placement->add_option("--params", placement.params, "f32 parameters of the model")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 30))->capture_default_str();
  bench_placement->add_option("--segment-bytes", placement_segment, "Segment of nodes 2 and 3; node 1 has a quarter")
      ->capture_default_str();
  bench_placement->add_flag("--json", placement.json, "One JSON object instead of the table");

  tributary::bench::AutoscaleBenchOptions autoscale;
  CLI::App* bench_autoscale = bench->add_subcommand(
      "autoscale", "What live functions cost and what they save the tail, on a seeded bursty trace: a pool for the "
                   "peak, a cold start per task, and the node's autoscaler (a model with this machine's measured cold "
                   "start and fold rate)");
  bench_autoscale->add_option("--rounds", autoscale.rounds, "Rounds in the trace")->check(CLI::Range(1, 10000))
      ->capture_default_str();
  bench_autoscale->add_option("--min-updates", autoscale.min_updates, "Fewest updates in a round")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  bench_autoscale->add_option("--max-updates", autoscale.max_updates, "Most updates in a round")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  bench_autoscale->add_option("--min-mb", autoscale.min_update_mb, "Smallest update, MB")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_autoscale->add_option("--max-mb", autoscale.max_update_mb, "Largest update, MB")->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_autoscale->add_option("--fan-in", autoscale.fan_in, "Updates per leaf function")->check(CLI::Range(1, 4096))
      ->capture_default_str();
  bench_autoscale->add_option("--tail-target-ms", autoscale.tail_target_ms,
                              "Fan-in auto: the longest a leaf may fold after its last input")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_autoscale->add_option("--seed", autoscale.seed, "The trace's seed")->capture_default_str();
  bench_autoscale->add_flag("--json", autoscale.json, "Print the figures as JSON");

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
  std::string secret_name, api_server, service_account = tributary::kubernetes::kServiceAccountDir;
  std::vector<std::string> secret_labels;
  CLI::App* keys_secret = keys->add_subcommand(
      "kubernetes-secret",
      "Inside a Kubernetes pod: a fresh keypair stored as Secret SECRET with keys NAME.key and NAME.pub, once "
      "(a Secret of that name is kept as it is; the Helm chart's key hook)");
  keys_secret->add_option("--secret", secret_name, "The Secret's name")->required();
  keys_secret->add_option("--name", key_name, "The key files' name inside the Secret")->required();
  keys_secret->add_option("--label", secret_labels, "A label for the Secret, KEY=VALUE (repeat)");
  keys_secret->add_option("--api-server", api_server,
                          "The API server (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)");
  keys_secret->add_option("--service-account", service_account,
                          "The service account's token, ca.crt and namespace")->capture_default_str();

  std::string node_config, controller_endpoint, node_id, gateway_advertise;
  CLI::App* node = app.add_subcommand("node", "Run the node agent: shared memory, data plane, gateway, functions");
  node->add_option("--config", node_config, "Node configuration (YAML; see `tributary config node`)")->required();
  node->add_option("--controller", controller_endpoint,
                   "The controller's endpoint, e.g. tcp://10.0.0.1:7700 (default: node.yaml's `controller`)");
  node->add_option("--node-id", node_id,
                   "This node's id (default: node.yaml's `node_id`), e.g. one per Kubernetes node from the downward API");
  node->add_option("--gateway-advertise", gateway_advertise,
                   "The gateway endpoint other nodes' clients are steered to, e.g. tcp://10.0.0.5:7600 "
                   "(default: node.yaml's `gateway_advertise`, else the bound endpoint)");

  std::string controller_config;
  CLI::App* controller = app.add_subcommand(
      "controller", "Run the controller: jobs, rounds, client selection, the root merge, checkpoints and models");
  controller->add_option("--config", controller_config, "Controller configuration (YAML; see docs/deploy.md)")
      ->required();

  std::string status_url = "http://127.0.0.1:7701";
  bool status_json = false;
  CLI::App* status = app.add_subcommand("status", "Print a controller's status: nodes, clients, jobs and rounds");
  status->add_option("--controller", status_url, "The controller's HTTP address")->capture_default_str();
  status->add_flag("--json", status_json, "Print /v1/status as it is");

  tributary::loadgen::LoadgenOptions lg;
  std::string lg_gateway_key;
  bool lg_json = false;
  int64_t lg_duration_s = 0;
  CLI::App* loadgen = app.add_subcommand(
      "loadgen", "Synthetic clients: check in, take tasks, download, upload a fake update; print what happened");
  loadgen->option_defaults()->always_capture_default();
  loadgen->add_option("--gateway", lg.gateways, "A gateway endpoint (repeat: client i asks gateway i % count)")
      ->required();
  loadgen->add_option("--gateway-key", lg_gateway_key, "The gateway's CURVE public key (Z85, or a .pub file)");
  loadgen->add_option("--client-keys", lg.client_keys_dir, "With --gateway-key: the directory of <client-id>.key files");
  loadgen->add_option("--client-key", lg.client_key_file,
                      "With --gateway-key: one secret key file for every client (on the allow-list as a prefix "
                      "entry, e.g. `load-* KEY`)")
      ->excludes("--client-keys");
  loadgen->add_option("--clients", lg.clients, "Clients")->check(CLI::Range(1u, 1'000'000u));
  loadgen->add_option("--first-client", lg.first_client, "Index of the first client id");
  loadgen->add_option("--id-prefix", lg.id_prefix, "Client ids are this and a five-digit index");
  loadgen->add_option("--concurrency", lg.concurrency, "Worker threads")->check(CLI::Range(1u, 4096u));
  loadgen->add_option("--io-threads", lg.io_threads, "ZeroMQ I/O threads the clients share")->check(CLI::Range(1u, 64u));
  loadgen->add_option("--rounds", lg.rounds, "Updates per client, then it stops (0: no limit)");
  loadgen->add_option("--duration", lg_duration_s, "Seconds, then everything stops (0: until done or SIGTERM)")
      ->check(CLI::NonNegativeNumber);
  int64_t lg_train_ms = 0;
  loadgen->add_option("--train-ms", lg_train_ms, "A selected client waits this long before it uploads (training time)")
      ->check(CLI::NonNegativeNumber);
  loadgen->add_flag("--json", lg_json, "Print the report as JSON");
  RoundWatch lg_watch{.controller = "http://127.0.0.1:7701"};
  loadgen->add_option("--wait-job", lg_watch.job,
                      "Stop once this job completes a round, and fail if none completes within --duration");
  loadgen->add_option("--controller", lg_watch.controller, "With --wait-job: the controller's HTTP address");

  CLI::App* config = app.add_subcommand("config", "Check configuration files");
  config->require_subcommand(1);
  std::string node_file;
  CLI::App* config_node = config->add_subcommand("node", "Validate a node agent configuration (node.yaml)");
  config_node->add_option("file", node_file, "The YAML file")->required();
  std::string controller_file;
  CLI::App* config_controller =
      config->add_subcommand("controller", "Validate a controller configuration and every job file it names");
  config_controller->add_option("file", controller_file, "The YAML file")->required();

  CLI11_PARSE(app, argc, argv);

  if (bench_agg->parsed()) return Report(tributary::bench::RunAggregateBench(agg, std::cout));
  if (node->parsed()) return RunNode(node_config, controller_endpoint, node_id, gateway_advertise, SelfPath());
  if (controller->parsed()) return RunController(controller_config);
  if (status->parsed()) return Report(tributary::cli::PrintStatus(status_url, status_json, std::cout));
  if (loadgen->parsed()) {
    lg.duration = std::chrono::seconds(lg_duration_s);
    lg.train_time = std::chrono::milliseconds(lg_train_ms);
    return RunLoadgen(lg, lg_gateway_key, lg_json, lg_watch);
  }
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
  if (bench_ingest->parsed()) {
    auto bytes = tributary::config::ParseByteSize(ingest_bytes);
    if (!bytes) return Report(std::move(bytes).error());
    ingest.bytes_per_run = bytes.value();
    return Report(tributary::bench::RunIngestBench(ingest, std::cout));
  }
  if (bench_dp->parsed()) return Report(tributary::bench::RunDataplaneBench(dp, std::cout));
  if (bench_placement->parsed()) {
    auto bytes = tributary::config::ParseByteSize(placement_segment);
    if (!bytes) return Report(std::move(bytes).error());
    placement.segment_bytes = bytes.value();
    placement.binary = SelfPath();
    return Report(tributary::bench::RunPlacementBench(placement, std::cout));
  }
  if (bench_autoscale->parsed()) {
    autoscale.binary = SelfPath();
    return Report(tributary::bench::RunAutoscaleBench(autoscale, std::cout));
  }
  if (bench_plan->parsed()) {
    if (!plan_sizes.empty()) plan.sizes.clear();
    for (const std::string& s : plan_sizes) {
      tributary::bench::PlanSize size;
      unsigned long long clients = 0, selected = 0;
      if (std::sscanf(s.c_str(), "%u:%llu:%llu", &size.nodes, &clients, &selected) != 3) {
        return Report(tributary::MakeError(tributary::ErrorCode::kInvalidArgument,
                                           "--size takes NODES:CLIENTS:SELECTED, not '" + s + "'"));
      }
      size.clients = clients;
      size.selected = selected;
      plan.sizes.push_back(size);
    }
    return Report(tributary::bench::RunPlanBench(plan, std::cout));
  }
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
  if (keys_secret->parsed()) return CreateKeySecret(secret_name, key_name, secret_labels, api_server, service_account);
  if (config_node->parsed()) {
    auto c = tributary::config::LoadNodeConfig(node_file);
    if (!c) return Report(std::move(c).error());
    std::cout << node_file << ": ok (node " << c.value().node_id << ", segment " << c.value().store.name << ", "
              << c.value().store.bytes << " bytes)\n";
    return 0;
  }
  if (config_controller->parsed()) {
    auto setup = LoadControllerSetup(controller_file);
    if (!setup) return Report(std::move(setup).error());
    std::cout << controller_file << ": ok (" << setup.value().second.size() << " jobs, state in "
              << setup.value().first.state_dir << ")\n";
    return 0;
  }
  return EXIT_FAILURE;
}
