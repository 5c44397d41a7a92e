// The node's aggregation tree, planned as a pure function of what the node
// expects: no processes, no sockets, so every decision is unit-tested on
// plain inputs (tests/unit/tree_plan_test.cc).
//
// Shape: leaves of at most `fan_in` client updates each; when there are more
// than `fan_in` leaves, one level of intermediates of at most `fan_in` leaves
// each; one node-root that folds its children and then the results already
// committed by leaves of an earlier attempt of the round (after a rebuild).
// A leaf folds its clients in ascending route-key order, a parent its
// children by index: the tree's arithmetic is a function of the plan alone.
//
// When the job's fan_in would need more functions than are available, the
// fan-in is raised to the smallest that fits (TreePlan::fan_in): a node with
// many clients runs fewer, fuller leaves instead of refusing the round.
//
// Errors: kInvalidArgument for fan_in 0, nothing to fold, or a route key
// expected twice (each client has one key, so one update); kResourceExhausted
// if not even one leaf and the node-root fit in the functions available.
//
// Thread safety: plain functions and value types.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "tributary/core/error.h"

namespace tributary::planner {

enum class Role { kLeaf, kIntermediate, kNodeRoot };

struct PlannedFunction {
  Role role = Role::kLeaf;
  uint32_t parent = 0;           // index into TreePlan::functions (the node-root: itself)
  uint32_t index_in_parent = 0;  // its place in the parent's fold order
  uint32_t fan_in = 0;           // inputs it folds before it sends its result
  std::vector<uint32_t> keys;    // a leaf's clients' route keys, in fold order
};

struct TreePlan {
  // Leaves first, then intermediates, the node-root last.
  std::vector<PlannedFunction> functions;
  uint32_t leaves = 0;
  uint32_t intermediates = 0;
  uint32_t fan_in = 0;  // the inputs' fan_in, or the larger one that fits the functions available
  std::map<uint32_t, uint32_t> leaf_of;  // route key -> index of its leaf

  uint32_t root() const { return static_cast<uint32_t>(functions.size() - 1); }
  // The node-root's inputs from this plan's own functions; committed results follow them.
  uint32_t root_children() const { return intermediates ? intermediates : leaves; }
};

struct TreeInputs {
  std::vector<uint32_t> expected_keys;  // route keys of the updates still to fold (any order, unique)
  uint32_t committed_results = 0;       // leaf results kept from an earlier attempt
  uint32_t fan_in = 1;
  uint32_t available_functions = 256;   // functions the node may run at once
};

Result<TreePlan> PlanNodeTree(const TreeInputs& inputs);

// Reuse across levels (LIFL's aggregator reuse): which process runs each
// place of `plan`. A parent runs in the process of its first child that has
// one, after that child's task: it folds its children in slot order, and
// the slots before that child are committed results, there at once, so no
// fold waits longer than with a process of its own. A tree of L leaves then
// needs about L processes instead of L + intermediates + 1.
// `runs[i]`: place i needs running (false: a leaf whose result is committed).
// Returns, per place, the place whose process runs it: itself for a place
// that needs a process of its own, kNoProcess for a place that does not run.
inline constexpr uint32_t kNoProcess = UINT32_MAX;
std::vector<uint32_t> ReuseHosts(const TreePlan& plan, const std::vector<bool>& runs);

// The shape PlanNodeTree gives `updates` updates (fan_in > 0): how many
// functions per level, for planners that need only the counts.
struct TreeShape {
  uint32_t leaves = 0;
  uint32_t intermediates = 0;
  uint64_t functions() const { return leaves ? uint64_t{leaves} + intermediates + 1 : 0; }  // with the node-root
};
TreeShape ShapeFor(uint64_t updates, uint32_t fan_in);

// The smallest fan-in from `fan_in` up whose tree for `updates` needs at
// most `available_functions` functions (max(fan_in, updates) if none does;
// 0 for fan_in 0): the rule PlanNodeTree plans with, for the placement to
// count with. `updates` is below 2^32 (route keys are 32-bit).
uint32_t FanInThatFits(uint64_t updates, uint32_t fan_in, uint32_t available_functions);

}  // namespace tributary::planner
