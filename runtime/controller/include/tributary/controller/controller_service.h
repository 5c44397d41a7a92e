// The controller as a long-running service (what `tributary controller`
// runs): a Controller, the deployment jobs it runs by themselves, and its
// HTTP side.
//
// Each job's rounds run without a caller: wait until `start_after` clients
// are available (checked in at any node, within the registry's time-to-live),
// select ceil(clients_per_round * over_selection) of them (SelectClients:
// seeded by the job's seed, round and attempt), run the round under the
// policy {min_updates: min_clients, close_at: clients_per_round when
// over-selecting}, and go on until `rounds` (0: until stopped). A round with
// too few updates (a node lost, stragglers) is run again with a new
// selection (the next attempt); the registry keeps selecting among the
// clients available now, so a lost node's clients drop out until it is back.
// One round runs at a time across jobs, which take turns. The simulator runs
// its rounds here too, with hooks (ServiceJob): it evaluates after each
// round and ends the run on a failure instead of running the round again.
//
// HTTP (`http_bind`): /healthz (the process runs), /readyz (200 once every
// job's state is loaded), /metrics (Prometheus text), /v1/status (JSON:
// nodes with capacity, load, check-ins and this round's accepted updates;
// jobs with phase, round, attempt, model version and the last round's
// report; refusals by reason). docs/deploy.md lists the fields.
//
// Thread safety: public methods may be called from any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tributary/config/controller_config.h"
#include "tributary/controller/controller.h"
#include "tributary/core/error.h"
#include "tributary/planner/placement.h"

namespace tributary::controller {

// When a job's rounds run and whom they select (a deployment job's round
// settings, config/controller_config.h).
struct RoundSchedule {
  uint64_t rounds = 0;  // 0: until stopped
  uint32_t clients_per_round = 0;
  uint32_t min_clients = 0;     // a round succeeds with at least this many updates
  double over_selection = 1.0;  // select this many times clients_per_round; close at clients_per_round
  uint32_t start_after = 0;     // available clients before the first round
  uint64_t seed = 0;            // of every round's selection
};

// Called on the service's round thread once a round completed, before the
// job's next round (the simulator evaluates the model there). An error ends
// the job: its phase becomes "failed" and WaitForJob returns the error.
using AfterRound = std::function<Result<void>(const RoundReport& report, const std::vector<AvailableClient>& selected)>;
// Called on the round thread when an attempt failed. Ok: run the round again
// with a new selection (a deployment's answer); an error ends the job.
using OnRoundFailure = std::function<Result<void>(const Error& failure)>;

struct ServiceJob {
  std::string source;  // where it came from, for errors
  JobSpec spec;
  RoundSchedule schedule;
  AfterRound after_round;       // optional
  OnRoundFailure on_failure;    // optional: default, run again
  bool log_rounds = true;       // log each round (the simulator prints its own lines)
  // Where clients upload: locality (the planner), or a baseline to compare it with.
  planner::PlacementPolicy placement = planner::PlacementPolicy::kLocality;
};

// A deployment job as the service runs it: its model from its safetensors
// file (whose tensors, in file order, are the model spec) or from its layout
// and init.
Result<ServiceJob> ServiceJobFor(const config::DeploymentJob& job);

class ControllerService {
 public:
  // `http_bind` "host:port" (port 0: any); empty: no HTTP side.
  static Result<std::unique_ptr<ControllerService>> Start(const ControllerOptions& options,
                                                          std::vector<ServiceJob> jobs, const std::string& http_bind);
  ~ControllerService();  // ends the round in progress
  ControllerService(const ControllerService&) = delete;
  ControllerService& operator=(const ControllerService&) = delete;

  Controller& controller();
  int http_port() const;  // 0 without an HTTP side
  // Blocks until the job ran all its rounds (Ok) or ended with an error
  // (that error); kUnknownJob for a job the service does not run.
  Result<void> WaitForJob(const std::string& job) const;
  // /v1/status and /metrics, as served.
  std::string StatusJson() const;
  std::string Metrics() const;

 private:
  struct Impl;
  explicit ControllerService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::controller
