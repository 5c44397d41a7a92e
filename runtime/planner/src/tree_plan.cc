#include "tributary/planner/tree_plan.h"

#include <algorithm>
#include <string>

namespace tributary::planner {
namespace {

uint32_t CeilDiv(uint64_t n, uint32_t d) { return static_cast<uint32_t>((n + d - 1) / d); }

}  // namespace

TreeShape ShapeFor(uint64_t updates, uint32_t fan_in) {
  TreeShape s;
  s.leaves = CeilDiv(updates, fan_in);
  s.intermediates = s.leaves > fan_in ? CeilDiv(s.leaves, fan_in) : 0;
  return s;
}

uint32_t FanInThatFits(uint64_t updates, uint32_t fan_in, uint32_t available_functions) {
  if (fan_in == 0) return 0;
  const uint64_t widest = std::max<uint64_t>({fan_in, updates, 1});
  // No fan-in below this fits: its leaves alone, with the root, are too many.
  const uint64_t leaves_that_fit = std::max<uint32_t>(available_functions, 2) - 1;
  uint64_t f = fan_in;
  if (ShapeFor(updates, fan_in).functions() > available_functions) f = std::max<uint64_t>(f + 1, (updates + leaves_that_fit - 1) / leaves_that_fit);
  // Fewer functions as the fan-in grows: the first that fits is the smallest.
  while (f < widest && ShapeFor(updates, static_cast<uint32_t>(f)).functions() > available_functions) ++f;
  return static_cast<uint32_t>(std::min(f, widest));
}

Result<TreePlan> PlanNodeTree(const TreeInputs& in) {
  if (in.fan_in == 0) return MakeError(ErrorCode::kInvalidArgument, "fan-in must be positive");
  if (in.expected_keys.empty() && in.committed_results == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "a tree needs updates or committed results to fold");
  }
  std::vector<uint32_t> keys = in.expected_keys;
  std::sort(keys.begin(), keys.end());
  if (std::adjacent_find(keys.begin(), keys.end()) != keys.end()) {
    return MakeError(ErrorCode::kInvalidArgument, "a route key is expected twice");
  }
  // More updates per leaf rather than a round the node cannot run.
  const uint32_t fan_in = FanInThatFits(keys.size(), in.fan_in, in.available_functions);
  TreePlan plan;
  plan.fan_in = fan_in;
  const TreeShape shape = ShapeFor(keys.size(), fan_in);
  plan.leaves = shape.leaves;
  plan.intermediates = shape.intermediates;
  const uint64_t needed = uint64_t{plan.leaves} + plan.intermediates + 1;
  if (needed > in.available_functions) {
    return MakeError(ErrorCode::kResourceExhausted, "the tree needs " + std::to_string(needed) + " functions, " +
                                                        std::to_string(in.available_functions) + " are available");
  }
  const uint32_t root = plan.leaves + plan.intermediates;
  plan.functions.resize(root + 1);
  for (uint32_t i = 0; i < plan.leaves; ++i) {
    PlannedFunction& leaf = plan.functions[i];
    leaf.role = Role::kLeaf;
    const size_t begin = size_t{i} * fan_in, end = std::min(keys.size(), begin + fan_in);
    leaf.keys.assign(keys.begin() + static_cast<std::ptrdiff_t>(begin), keys.begin() + static_cast<std::ptrdiff_t>(end));
    leaf.fan_in = static_cast<uint32_t>(leaf.keys.size());
    for (uint32_t k : leaf.keys) plan.leaf_of[k] = i;
    leaf.parent = plan.intermediates ? plan.leaves + i / fan_in : root;
    leaf.index_in_parent = plan.intermediates ? i % fan_in : i;
  }
  for (uint32_t m = 0; m < plan.intermediates; ++m) {
    PlannedFunction& mid = plan.functions[plan.leaves + m];
    mid.role = Role::kIntermediate;
    mid.fan_in = std::min(plan.leaves, (m + 1) * fan_in) - m * fan_in;
    mid.parent = root;
    mid.index_in_parent = m;
  }
  PlannedFunction& node_root = plan.functions[root];
  node_root.role = Role::kNodeRoot;
  node_root.parent = root;
  node_root.fan_in = plan.root_children() + in.committed_results;
  return plan;
}

std::vector<uint32_t> ReuseHosts(const TreePlan& plan, const std::vector<bool>& runs) {
  const uint32_t n = static_cast<uint32_t>(plan.functions.size());
  std::vector<uint32_t> host(n, kNoProcess);
  // Children come before their parents (leaves, intermediates, the node-root),
  // so each child's host is known when its parent's is chosen.
  std::vector<uint32_t> first_running_child(n, kNoProcess), first_slot(n, UINT32_MAX);
  for (uint32_t i = 0; i < n; ++i) {
    const PlannedFunction& f = plan.functions[i];
    if (i < plan.leaves) {
      if (runs[i]) host[i] = i;
    } else {
      const uint32_t child = first_running_child[i];
      host[i] = child == kNoProcess ? i : host[child];
    }
    if (f.role == Role::kNodeRoot || host[i] == kNoProcess) continue;
    if (f.index_in_parent < first_slot[f.parent]) {
      first_slot[f.parent] = f.index_in_parent;
      first_running_child[f.parent] = i;
    }
  }
  return host;
}

}  // namespace tributary::planner
