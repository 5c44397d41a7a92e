// The controller (`tributary controller`, or embedded in-process): jobs,
// rounds, the root of the aggregation tree, the global model's versions and
// their checkpoints.
//
// Node agents connect to its ZeroMQ ROUTER and say hello. RunRound() sends
// each node its RoundPlan (its selected clients with route keys, the fan-in,
// the deadline), collects every node's partial aggregate (checksummed chunks),
// merges them in node-id order, finalizes with the job's strategy (the server
// optimizer) into the next model version, and checkpoints the job atomically
// (write, fsync, rename). AddJob() resumes a job from its checkpoint when one
// exists, so a restarted controller continues where it stopped.
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
#include "tributary/core/config_map.h"
#include "tributary/core/error.h"

namespace tributary::controller {

struct ControllerOptions {
  std::string bind = "tcp://127.0.0.1:0";
  std::string checkpoint_dir;  // empty: no checkpoints
};

struct JobSpec {
  std::string id;
  agg::ModelSpec model;
  agg::StrategyOptions strategy;
  std::vector<float> initial_model;  // model.elements() values
  uint32_t fan_in = 8;
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
};

class Controller {
 public:
  static Result<std::unique_ptr<Controller>> Start(const ControllerOptions& options);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  const std::string& endpoint() const;
  // Node id -> its gateway endpoint, for the nodes that said hello.
  std::map<std::string, std::string> Nodes() const;
  Result<void> WaitForNodes(size_t count, std::chrono::milliseconds timeout) const;

  // Registers a job; resumes it from its checkpoint if there is one.
  Result<void> AddJob(JobSpec job);
  // The next round: `clients_by_node` names the selected clients per node.
  Result<RoundReport> RunRound(const std::string& job, const std::map<std::string, std::vector<std::string>>& clients_by_node);

  Result<std::vector<float>> Model(const std::string& job) const;
  Result<uint64_t> ModelVersion(const std::string& job) const;

 private:
  struct Impl;
  explicit Controller(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::controller
