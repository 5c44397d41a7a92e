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
// One round runs at a time across jobs, which take turns.
//
// HTTP (`http_bind`): /healthz (the process runs), /readyz (200 once every
// job's state is loaded), /metrics (Prometheus text), /v1/status (JSON:
// nodes with capacity, load, check-ins and this round's accepted updates;
// jobs with phase, round, attempt, model version and the last round's
// report; refusals by reason). docs/deploy.md lists the fields.
//
// Thread safety: public methods may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tributary/config/controller_config.h"
#include "tributary/controller/controller.h"
#include "tributary/core/error.h"

namespace tributary::controller {

// A deployment job's JobSpec: its model from its safetensors file (whose
// tensors, in file order, are the model spec) or from its layout and init.
Result<JobSpec> JobSpecFor(const config::DeploymentJob& job);

class ControllerService {
 public:
  // `http_bind` "host:port" (port 0: any); empty: no HTTP side.
  static Result<std::unique_ptr<ControllerService>> Start(const ControllerOptions& options,
                                                          std::vector<config::DeploymentJob> jobs,
                                                          const std::string& http_bind);
  ~ControllerService();  // ends the round in progress
  ControllerService(const ControllerService&) = delete;
  ControllerService& operator=(const ControllerService&) = delete;

  Controller& controller();
  int http_port() const;  // 0 without an HTTP side
  // /v1/status and /metrics, as served.
  std::string StatusJson() const;
  std::string Metrics() const;

 private:
  struct Impl;
  explicit ControllerService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::controller
