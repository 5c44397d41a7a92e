// Where a round's updates are folded across nodes: the controller's plan,
// as a pure function of what it knows (no sockets), so that every decision
// is unit-tested on recorded inputs (tests/unit/placement_test.cc).
//
// Locality first: a selected client uploads to the node whose gateway it
// asked, and that node folds it in its own tree (tree_plan.h), so the only
// bytes that cross nodes are one partial per node. A node has room for the
// updates its segment can hold while they are in flight, with its tree's
// accumulators and the model (UpdatesThatFit), within its function limit and,
// when its fold throughput is known, within what it folds in the round's
// budget. Clients beyond a node's room are steered, before they upload, to
// other nodes: the excesses, largest first, go by best fit over the other
// nodes' residual room (the node with the least room that takes the whole
// excess; failing that, the one with the most room, and the rest again).
// Which clients move: a node keeps its first clients by id. Clients no node
// has room for are left out of the round (`unplaced`).
//
// Baselines (PlacementPolicy, for `tributary bench placement`): round-robin
// (client i by id to node i mod N, as the public LIFL code pairs
// aggregators) and random (each client to a node drawn from the seed), both
// within the nodes' rooms (a full node's client goes to the next with room).
//
// Fan-in: the job's, or with fan_in 0 (auto) chosen per node from
// throughput (FanInForThroughput) once its clients are known; rooms are then
// counted at fan_in_min, the narrowest tree (the most accumulators).
//
// Deterministic: the same inputs give the same placement, whatever their order.
//
// Errors: kInvalidArgument for fan_in 0, update_bytes 0, a node listed
// twice, a client selected twice, or a client on a node not listed.
//
// Thread safety: plain functions and value types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tributary/core/error.h"
#include "tributary/planner/tree_plan.h"

namespace tributary::planner {

struct NodeResources {
  std::string node;
  uint64_t segment_free_bytes = 0;  // from its latest heartbeat
  uint32_t function_limit = 0;      // most functions it runs at once
  double fold_bytes_per_s = 0;      // measured update bytes folded per second; 0: unknown (no limit)
  double function_fold_bytes_per_s = 0;  // one function's alone; 0: unknown
  double arrivals_per_s = 0;             // updates its gateway took in per second lately, at the peak
};

struct SelectedClient {
  std::string client;
  std::string node;  // whose gateway it asked
};

enum class PlacementPolicy { kLocality, kRoundRobin, kRandom };

struct PlacementInputs {
  std::vector<NodeResources> nodes;     // the connected nodes
  std::vector<SelectedClient> clients;  // this round's selection
  uint64_t update_bytes = 0;            // one update in a segment
  uint64_t model_bytes = 0;             // the model, and each function's accumulator (0: update_bytes)
  uint32_t fan_in = 8;                       // 0: auto, per node within [fan_in_min, fan_in_max]
  uint32_t fan_in_min = 2, fan_in_max = 64;
  double round_budget_s = 0;  // the updates must fold within this; 0: no throughput limit
  double tail_target_s = 0.1;  // auto: the longest a leaf may fold after its last input arrives
  PlacementPolicy policy = PlacementPolicy::kLocality;
  uint64_t seed = 0;           // kRandom's draws
};

struct NodeShare {
  std::string node;
  std::vector<std::string> clients;  // upload here (its own and steered in), sorted
  uint64_t checked_in = 0;           // selected clients that asked this node
  uint64_t room = 0;                 // UpdatesThatFit
  uint64_t steered_in = 0, steered_out = 0;
  uint32_t fan_in = 0;               // its leaves' fan-in
  TreeShape tree;                    // its functions per level
};

struct Steer {
  std::string client, from, to;
};

struct Placement {
  std::vector<NodeShare> nodes;          // every input node, by id
  std::vector<Steer> steered;            // by client id
  std::vector<std::string> unplaced;     // no node had room, sorted
  uint64_t partials = 0;                 // nodes with updates: the partials that cross to the controller
  uint64_t cross_node_bytes = 0;         // the partials and the steered uploads
};

// The most updates `node` takes in one round.
uint64_t UpdatesThatFit(const NodeResources& node, uint64_t update_bytes, uint64_t model_bytes, uint32_t fan_in,
                        double round_budget_s);

// Fan-in from throughput: the widest leaves that still keep a round's tail
// (last upload to the node's partial) short. Two bounds. A leaf folds its
// inputs in a fixed order, so when its first input comes last it folds all
// of them after the last upload: fan-in x update_bytes / fold rate must stay
// within `tail_target_s`. And the leaves together must keep up with the
// arrivals at 70 % of one function's fold rate each, or updates queue: at
// least arrivals x update_bytes / (0.7 x fold rate) leaves. Within [min, max];
// `min` when the fold rate is unknown. Wider leaves mean fewer levels and
// fewer processes for the same round.
struct FanInInputs {
  uint64_t updates = 0;                  // the node's expected updates
  uint64_t update_bytes = 0;
  double arrivals_per_s = 0;             // expected peak; 0: no bound from the rate
  double function_fold_bytes_per_s = 0;  // one function's; 0: unknown
  uint32_t min = 2, max = 64;
  double tail_target_s = 0.1;
};
uint32_t FanInForThroughput(const FanInInputs& inputs);

Result<Placement> PlanPlacement(const PlacementInputs& inputs);

}  // namespace tributary::planner
