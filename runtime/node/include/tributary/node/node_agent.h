// The node agent (`tributary node`): one per machine.
//
// It owns the node's shared-memory segment, the descriptor data plane (eBPF
// or userspace), the gateway, the function supervisor, and the node's part of
// each round: the leaves that fold client updates and the node-root that
// merges them into the node's single partial aggregate.
//
// A round on a node: OpenRound() takes the round spec (selected clients and
// their route keys) and the fan-in, plans the node's tree (planner/tree_plan.h:
// leaves of at most `fan_in` clients, intermediates when there are more than
// `fan_in` leaves, one node-root), acquires functions (warm ones first), sends
// them their tasks and points the route keys at the leaves. Each accepted update is
// handed to its leaf's lease and sent by route key; the agent keeps its own
// reference to every update until the leaf that folds it commits (hands the
// agent a reference to its result), and keeps committed leaf results until
// the node's partial is complete. So the segment holds the updates in flight,
// not the whole round. If a function of the round dies, the round's tree is
// rebuilt on the same plan with fresh tasks: replacement functions take the
// same places, committed leaf results go to their leaves' parents at their
// slots, and every uncommitted update is sent again, so no update is lost,
// none is counted twice (results of the abandoned tasks are ignored), and the
// node's partial has the same bits as without the failure. At the deadline,
// the tree is planned anew for the updates that arrived (results committed
// before go to the node-root after its children). A function silent past
// `function_liveness` (stopped, wedged) is killed and counts as a failure
// (supervisor.h), so a hung function cannot hold a round past its deadline.
// WaitRound() returns the node's partial aggregate.
//
// RunPersonalRound() is a personalized job's round (SemiPFL): there is
// nothing to fold, so no functions run; each accepted update is decoded to
// f32 and handed to the caller as it arrives, for the controller's stateful
// function.
//
// NodeOptions::transport kTcp runs the same tree the serverful way, for the
// round benchmark's comparison (dataplane/aggregation_transport.h): each
// update is written whole to its leaf over loopback TCP and released, and
// functions pass whole payloads to their parents. That mode has no
// re-dispatch: a function death or the deadline fails the round.
//
// Thread safety: public methods may be called from any thread; one round at a
// time per agent.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tributary/core/error.h"
#include "tributary/dataplane/aggregation_transport.h"
#include "tributary/dataplane/kernel_router.h"
#include "tributary/gateway/gateway.h"
#include "tributary/gateway/round_book.h"
#include "tributary/node/supervisor.h"
#include "tributary/planner/autoscale.h"
#include "tributary/shm/segment.h"

namespace tributary::node {

using dataplane::AggregationTransport;

struct NodeOptions {
  std::string node_id = "node-0";
  shm::SegmentOptions store;
  gateway::GatewayOptions gateway;
  dataplane::DataPlaneMode dataplane = dataplane::DataPlaneMode::kAuto;
  std::string binary;  // the `tributary` executable functions are started from
  std::chrono::milliseconds keep_alive{60'000};
  std::chrono::milliseconds function_liveness{10'000};  // Supervisor: silent this long, killed
  uint32_t kernel_threads = 1;  // per function
  AggregationTransport transport = AggregationTransport::kSharedMemory;
  // Functions follow the load (planner/autoscale.h), decided once a second
  // from the gateway's accepted updates; the tree of the last planned round
  // stays warm for a stable window after it. Off: functions start on demand
  // and idle ones go after the keep-alive.
  bool autoscale = true;
  planner::AutoscaleOptions autoscaling;
};

struct NodeRoundResult {
  shm::BlockRef partial;  // f32 weighted sum; meta().weight and meta().updates
  uint32_t rebuilds = 0;  // tree rebuilds (function failures, deadline)
  std::vector<std::string> clients;  // whose updates it folds, sorted
};

// The round open on the node, for the controller's heartbeats.
struct RoundProgress {
  std::string job;
  uint64_t round = 0;
  uint64_t accepted = 0;  // updates accepted so far
};

// One client's update in a personalized round.
struct ClientUpdate {
  std::string client;
  double weight = 0;          // its sample count
  std::vector<float> values;  // the update decoded to f32
};

struct NodeStats {
  gateway::GatewayStats gateway;
  SupervisorStats functions;
  shm::SegmentStats store;
  std::string dataplane;
  uint64_t rounds_completed = 0;
  uint64_t rebuilds = 0;
  uint32_t function_limit = 0;  // most functions the node runs at once
  double fold_bytes_per_s = 0;           // one function's rate times the cores (an upper bound)
  double function_fold_bytes_per_s = 0;  // one function (its kernel threads)
  uint32_t autoscale_desired = 0;        // the autoscaler's last decision
  double peak_arrivals_per_s = 0;        // most updates accepted in one second over the stable window
  std::string autoscale_why;
};

class NodeAgent {
 public:
  static Result<std::unique_ptr<NodeAgent>> Start(const NodeOptions& options);
  ~NodeAgent();
  NodeAgent(const NodeAgent&) = delete;
  NodeAgent& operator=(const NodeAgent&) = delete;

  const std::string& gateway_endpoint() const;
  const std::string& gateway_public_key() const;  // Z85; empty without CURVE
  // Why this data plane runs (for the start-up log).
  const std::string& dataplane_reason() const;
  shm::Segment& segment();
  // The global models the gateway serves (the controller link publishes).
  gateway::ModelStore& models();

  Result<void> OpenRound(gateway::RoundSpec spec, uint32_t fan_in);
  // The node's partial once every selected client's update is folded, or at
  // the deadline with what arrived (kRoundClosed if nothing did).
  Result<NodeRoundResult> WaitRound(std::chrono::steady_clock::time_point deadline);

  // Opens a personalized round and hands each accepted update to `on_update`
  // on the calling thread, in arrival order, until every selected client has
  // delivered or the deadline passes (then the round closes). Returns the
  // number of updates handed over; kRoundClosed if none arrived; the first
  // error `on_update` returns ends the round with that error.
  Result<uint64_t> RunPersonalRound(gateway::RoundSpec spec, std::chrono::steady_clock::time_point deadline,
                                    const std::function<Result<void>(ClientUpdate)>& on_update);

  // A round this node folds nothing of: the placement steered every client
  // that asked here to other nodes. The gateway tells them where to upload
  // (spec.steered_away; spec.selected is empty) until EndSteering(job).
  void SteerOnly(gateway::RoundSpec spec);
  void EndSteering(const std::string& job);

  // Ends round `round` of `job` early, if it is the open one: the gateway
  // closes it and the node folds what was accepted, as at the deadline (the
  // controller's over-selection: enough updates arrived across the nodes).
  void CloseRound(const std::string& job, uint64_t round);
  // The open round and its accepted updates; none between rounds.
  std::optional<RoundProgress> Progress() const;

  // The clients that asked the gateway for work since the last call (gateway.h).
  std::vector<gateway::CheckIn> TakeCheckIns(size_t max);

  // The processes working on the open round, in plan order: one per leaf that
  // runs, and one for a parent none of whose children runs (reuse runs each
  // parent in its first running child's process: planner::ReuseHosts).
  std::vector<FunctionInstance> RoundFunctions() const;

  // Ends the round in progress (its WaitRound or RunPersonalRound returns
  // kRoundClosed) and refuses new ones: for teardown from another thread.
  void Shutdown();

  // Stops idle functions past the keep-alive (silent ones are killed on the
  // agent's own liveness thread, every 100 ms).
  uint32_t ReapIdleFunctions();
  NodeStats Stats() const;

 private:
  struct Impl;
  explicit NodeAgent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::node
