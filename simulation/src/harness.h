// Internal to the simulator: the deployment a simulated federation runs on
// (a controller and node agents in this process) and the client pool that
// plays the clients through the SDK. Shared by the FedAvg-family runner
// (federation.cc) and the SemiPFL runner (semipfl_federation.cc).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "tributary/client/session.h"
#include "tributary/simulation/job.h"
#include "tributary/controller/controller_service.h"
#include "tributary/node/node_service.h"
#include "tributary/simulation/federation.h"

namespace tributary::simulation {

// Threads for one thread's LibTorch work and for the BLAS under it (OpenBLAS,
// Debian's libopenblas0-pthread behind libblas.so.3, keeps one pool for the
// whole process). The client workers are the simulator's parallelism: they
// train with 1; evaluation between rounds, with the workers idle, uses every
// core. Any other BLAS is left as it is.
void UseComputeThreads(int threads);
int AllCores();

std::string ClientId(uint32_t c);
// Unique on the machine: node ids name the data plane's sockets and segments.
std::string NodeId(uint32_t n);

struct LocalRuntime {
  std::unique_ptr<controller::ControllerService> service;  // the controller, its round loop running `job`
  std::vector<std::unique_ptr<node::NodeService>> nodes;    // destroyed before the service
  std::vector<std::string> gateways;
  controller::Controller& controller() const { return service->controller(); }
};

// The controller's service with `job` (its round loop waits for clients) and
// job.nodes node agents (segments of `segment_bytes`), connected and ready;
// gateways without authentication on loopback. Simulated clients stay
// available once they checked in (they never leave).
Result<LocalRuntime> StartLocalRuntime(const SimulationJob& job, const SimulationOptions& options,
                                       uint64_t segment_bytes, controller::ServiceJob service_job);

// The round schedule of a simulated job: `rounds` rounds of clients_per_round
// clients each, which all must deliver; the first once every client checked in.
controller::RoundSchedule ScheduleOf(const SimulationJob& job, uint64_t rounds);

// Waits (at most 60 s) until every simulated client checked in.
Result<void> WaitForCheckIns(const controller::Controller& c, uint32_t clients);

// `clients` spread over the nodes (client c on node c % nodes).
std::map<std::string, std::vector<std::string>> ByNode(const std::vector<uint32_t>& clients, uint32_t nodes);

// What one simulated client does with its task and downloaded model, on
// worker thread `worker` (state kept per worker needs no lock).
using ClientWork = std::function<Result<client::FitResult>(uint32_t client, size_t worker, const client::Task& task,
                                                           const client::Parameters& model)>;

// What the clients did in a round, for the metrics.
struct ClientTally {
  uint64_t bytes_up = 0, bytes_down = 0, updates = 0;
  double train_loss = 0;  // sum of the fits' "train_loss" metrics
  std::chrono::steady_clock::time_point last_upload{};
};

// The simulated clients: `job.workers` threads serving every client in turn,
// each with one SDK session per node; an idle client costs nothing but its
// place in the queue. Idle clients ask for tasks at a pace of ~500 asks/s in
// all, a node's in evenly spaced turns (so one of them asks within
// milliseconds of the node's round opening, also when all checked in at
// once); the first task of a new round at a node makes every client waiting
// for that node ask at once (the round is open: selected clients are online
// and prompt, as if pushed).
class ClientPool {
 public:
  ClientPool(const SimulationJob& job, std::vector<std::string> gateways, uint64_t model_bytes, ClientWork work);
  ~ClientPool();

  Result<void> Start();
  ClientTally TakeTally();
  std::optional<Error> failure();

 private:
  using Clock = std::chrono::steady_clock;
  using Due = std::pair<Clock::time_point, uint32_t>;
  struct Worker {
    std::vector<std::unique_ptr<client::Session>> sessions;  // one per node
  };

  void Serve(size_t w);
  // Every queued client of `node` becomes due now, in its queue order; under mu_.
  void WakeNodeLocked(size_t node);
  // When client `c` is due again, after it asked (and perhaps trained).
  Clock::time_point Visit(size_t w, uint32_t c);
  // The next free turn of `node`'s idle clients, no sooner than `not_before`; under mu_.
  Clock::time_point NextTurnLocked(size_t node, Clock::time_point not_before);
  Clock::time_point Fail(const Error& e);

  const SimulationJob& job_;
  std::vector<std::string> gateways_;
  uint64_t model_bytes_;
  ClientWork work_;
  std::chrono::milliseconds pace_;   // between two asks of one idle client
  Clock::duration turn_spacing_;     // between two asks of a node's idle clients
  std::vector<Worker> workers_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::priority_queue<Due, std::vector<Due>, std::greater<>> due_;
  bool stop_ = false;
  std::vector<uint64_t> newest_round_;  // per node: of the tasks its gateway handed out so far
  std::vector<Clock::time_point> next_turn_;  // per node: the last turn given out
  ClientTally tally_;
  std::optional<Error> failure_;
};

}  // namespace tributary::simulation
