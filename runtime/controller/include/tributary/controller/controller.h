// The controller (`tributary controller`, or embedded in-process): jobs,
// rounds, the root of the aggregation tree, the global model's versions and
// their checkpoints.
//
// Node agents connect to its ZeroMQ ROUTER (CURVE with a node allow-list
// that binds each key to one node id, unless the options say none) and say
// hello with their capacity; heartbeats go both ways every 500 ms, and a
// node silent for `node_timeout` is lost until it says hello again. Nodes
// also report the clients that asked their gateways for work; the
// controller's ClientRegistry (client_registry.h) keeps those available.
// Every message from a node is checked against the connection's
// authenticated node id and against the plan that node was sent: a node
// posing as another, or answering a plan it was not given (one from before a
// restart, or another node's), is refused, counted by reason and logged.
//
// RunRound() sends
// each node its RoundPlan (its selected clients with route keys, the fan-in,
// the deadline), collects every node's partial aggregate (checksummed chunks),
// merges them in node-id order, finalizes with the job's strategy (the server
// optimizer) into the next model version, and checkpoints the job atomically
// (write, fsync, rename), with the model as a safetensors file beside it.
// AddJob() resumes a job from its checkpoint when one exists, so a restarted
// controller continues where it stopped. Under a RoundPolicy with
// min_updates, a node lost mid-round (or failing its part) costs only its
// updates: the round succeeds if the others bring min_updates, and close_at
// ends it early once that many updates were accepted across the nodes
// (over-selection).
//
// A personalized job (JobSpec.personalized, e.g. SemiPFL) has no global
// model: before each round the controller asks the job's stateful function
// for every selected client's personal model and publishes it to that
// client's node; the nodes send each accepted update on its own, and the
// controller hands them to the function as events, in arrival order, on the
// RunRound caller's thread. Such jobs are not checkpointed here (the
// function owns its state).
//
// Thread safety: public methods may be called from any thread. One round runs
// at a time, across all jobs: RunRound while another round is in progress is
// kInvalidArgument.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tributary/aggregator/personalized.h"
#include "tributary/aggregator/strategy.h"
#include "tributary/controller/client_registry.h"
#include "tributary/core/config_map.h"
#include "tributary/core/error.h"
#include "tributary/planner/placement.h"

namespace tributary::controller {

// No secret key: any node may connect in plaintext and claim any id
// (simulation and tests on loopback).
struct ControllerSecurity {
  std::string secret_key;       // the controller's CURVE secret key, Z85
  std::string node_allow_list;  // required with a secret key: <node-id>.pub files or "<node-id> <key>" lines
};

struct ControllerOptions {
  std::string bind = "tcp://127.0.0.1:0";
  // Per job: <dir>/<job>.ckpt, and <dir>/<job>/model-<version>.safetensors
  // after every round. Empty: no state kept.
  std::string checkpoint_dir;
  ControllerSecurity security;
  std::chrono::milliseconds node_timeout{5'000};  // silent this long: lost
  std::chrono::milliseconds client_ttl{30'000};   // a check-in keeps a client available this long
};

// How a round may end. The default (every node in the plan delivers, no
// early close) is the embedded federation's: any node failure fails the round.
struct RoundPolicy {
  uint64_t min_updates = 0;  // >0: the round succeeds with at least this many updates from the nodes that delivered
  uint64_t close_at = 0;     // >0: close the round once this many updates were accepted across its nodes
  // A node's fan-in where the placement chose one (a job with fan_in auto); the job's elsewhere.
  std::map<std::string, uint32_t> fan_in_by_node;
};

struct NodeInfo {
  std::string gateway;
  std::string gateway_public_key;  // Z85; empty without CURVE
  std::string version;
  uint32_t cores = 0;
  uint64_t segment_bytes = 0;
  uint32_t function_limit = 0;
  double fold_bytes_per_s = 0;  // measured by the node at start; 0: unknown
  double function_fold_bytes_per_s = 0;  // one function's; 0: unknown
  double peak_arrivals_per_s = 0;        // from its heartbeats: the most updates accepted in a second lately
  std::string dataplane;
  bool connected = false;
  double seconds_since_heard = 0;
  uint64_t segment_free_bytes = 0;
  uint32_t functions_live = 0, functions_idle = 0;
  uint64_t clients_checked_in = 0;
  uint64_t round_accepted = 0;  // updates accepted in the round open now, if this node is in it
};

struct ControllerStats {
  std::map<std::string, uint64_t> refused;  // messages and connections refused, by reason
  uint64_t node_losses = 0;
  uint64_t rounds_completed = 0;
  uint64_t rounds_failed = 0;
  uint64_t clients_available = 0;
};

struct JobSpec {
  std::string id;
  agg::ModelSpec model;
  agg::StrategyOptions strategy;
  std::vector<float> initial_model;  // model.elements() values
  uint32_t fan_in = 8;  // 0: auto, chosen per node from throughput within [fan_in_min, fan_in_max]
  uint32_t fan_in_min = 2, fan_in_max = 64;
  std::chrono::milliseconds fan_in_tail{100};  // auto: the longest a leaf folds after its last upload
  std::chrono::milliseconds deadline{60'000};
  bool reject_non_finite = true;
  ConfigMap client_config;  // sent to every selected client with its task (epochs, lr...), plus `round`
  // Set: a personalized job; `model` must be personalized->update_model(),
  // `strategy` and `initial_model` are unused.
  std::shared_ptr<agg::PersonalizedFunction> personalized;
};

struct RoundReport {
  uint64_t round = 0;
  uint64_t model_version = 0;  // after the round
  uint64_t updates = 0;
  double weight = 0;
  std::chrono::duration<double> seconds{0};
  std::map<std::string, uint64_t> updates_by_node;
  std::vector<std::string> clients;     // whose updates were folded, sorted (FedAvg-family jobs)
  std::vector<std::string> lost_nodes;  // nodes whose part was lost (RoundPolicy::min_updates)
  std::vector<std::string> missing;     // selected clients whose update was not folded, sorted
};

class Controller {
 public:
  static Result<std::unique_ptr<Controller>> Start(const ControllerOptions& options);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  const std::string& endpoint() const;
  // Node id -> its gateway endpoint, for the connected nodes.
  std::map<std::string, std::string> Nodes() const;
  // Every node that said hello, connected or lost.
  std::map<std::string, NodeInfo> NodeDetails() const;
  Result<void> WaitForNodes(size_t count, std::chrono::milliseconds timeout) const;
  // The clients available now (registry), sorted by id.
  std::vector<AvailableClient> AvailableClients() const;
  ControllerStats Stats() const;

  // Registers a job; resumes it from its checkpoint if there is one.
  Result<void> AddJob(JobSpec job);
  // The next round: `clients_by_node` names the selected clients that upload
  // to each node. `steered` are those of them the placement moved
  // (placement.h): each asked `from`'s gateway, which answers with `to`'s,
  // and is among `to`'s clients. A node whose clients were all steered away
  // gets a plan that only steers them; it folds and sends nothing.
  // kRoundClosed: too few updates (re-run it with a new selection);
  // kInvalidArgument: a steered client not among its `to` node's clients, or
  // steered twice; kNotFound: a node not connected.
  Result<RoundReport> RunRound(const std::string& job, const std::map<std::string, std::vector<std::string>>& clients_by_node,
                               RoundPolicy policy = {}, const std::vector<planner::Steer>& steered = {});

  // Ends the round in progress (its RunRound returns kRoundClosed) and
  // refuses new ones: for teardown from another thread.
  void Shutdown();

  Result<std::vector<float>> Model(const std::string& job) const;
  Result<uint64_t> ModelVersion(const std::string& job) const;

 private:
  struct Impl;
  explicit Controller(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::controller
