// The node's tree planner on plain inputs: shapes at the edges of the fan-in,
// fold orders, committed results, limits, determinism.
#include "tributary/planner/tree_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>

namespace tributary::planner {
namespace {

std::vector<uint32_t> Keys(uint32_t n, uint32_t first = 1) {
  std::vector<uint32_t> k(n);
  std::iota(k.begin(), k.end(), first);
  return k;
}

// Every key is folded by exactly one leaf, every non-root has a parent of the
// level above, and each parent's children fill its slots 0..fan_in-1 once.
void ExpectWellFormed(const TreePlan& p, const TreeInputs& in) {
  ASSERT_EQ(p.functions.size(), size_t{p.leaves} + p.intermediates + 1);
  EXPECT_EQ(p.functions.back().role, Role::kNodeRoot);
  std::map<uint32_t, std::set<uint32_t>> slots_of;  // parent -> slots used
  size_t keys = 0;
  for (uint32_t i = 0; i < p.root(); ++i) {
    const PlannedFunction& f = p.functions[i];
    EXPECT_EQ(f.role, i < p.leaves ? Role::kLeaf : Role::kIntermediate);
    EXPECT_LE(f.fan_in, in.fan_in);
    EXPECT_GT(f.fan_in, 0u);
    EXPECT_TRUE(slots_of[f.parent].insert(f.index_in_parent).second) << "slot used twice";
    if (f.role == Role::kLeaf) {
      EXPECT_EQ(p.functions[f.parent].role, p.intermediates ? Role::kIntermediate : Role::kNodeRoot);
      EXPECT_EQ(f.keys.size(), f.fan_in);
      EXPECT_TRUE(std::is_sorted(f.keys.begin(), f.keys.end()));
      for (uint32_t k : f.keys) EXPECT_EQ(p.leaf_of.at(k), i);
      keys += f.keys.size();
    } else {
      EXPECT_EQ(f.parent, p.root());
    }
  }
  EXPECT_EQ(keys, in.expected_keys.size());
  EXPECT_EQ(p.leaf_of.size(), in.expected_keys.size());
  for (const auto& [parent, slots] : slots_of) {
    EXPECT_EQ(*slots.rbegin() + 1, slots.size()) << "slots of " << parent << " have a gap";
    const uint32_t extra = parent == p.root() ? in.committed_results : 0;
    EXPECT_EQ(p.functions[parent].fan_in, slots.size() + extra);
  }
}

TEST(TreePlan, OneClientIsOneLeafUnderTheRoot) {
  const TreeInputs in{{7}, 0, 4, 256};
  auto p = PlanNodeTree(in).value();
  ExpectWellFormed(p, in);
  EXPECT_EQ(p.leaves, 1u);
  EXPECT_EQ(p.intermediates, 0u);
  EXPECT_EQ(p.functions[0].keys, std::vector<uint32_t>{7});
  EXPECT_EQ(p.functions.back().fan_in, 1u);
}

TEST(TreePlan, FanInClientsFillOneLeaf) {
  const TreeInputs in{Keys(4), 0, 4, 256};
  auto p = PlanNodeTree(in).value();
  ExpectWellFormed(p, in);
  EXPECT_EQ(p.leaves, 1u);
  EXPECT_EQ(p.functions[0].fan_in, 4u);
}

TEST(TreePlan, FanInPlusOneClientsMakeTwoLeaves) {
  const TreeInputs in{Keys(5), 0, 4, 256};
  auto p = PlanNodeTree(in).value();
  ExpectWellFormed(p, in);
  EXPECT_EQ(p.leaves, 2u);
  EXPECT_EQ(p.intermediates, 0u);
  EXPECT_EQ(p.functions[0].keys, (std::vector<uint32_t>{1, 2, 3, 4}));
  EXPECT_EQ(p.functions[1].keys, std::vector<uint32_t>{5});
  EXPECT_EQ(p.functions.back().fan_in, 2u);
}

TEST(TreePlan, FanInSquaredPlusOneClientsAddAnIntermediateLevel) {
  const TreeInputs in{Keys(17), 0, 4, 256};
  auto p = PlanNodeTree(in).value();
  ExpectWellFormed(p, in);
  EXPECT_EQ(p.leaves, 5u);         // 4 full leaves and one of 1 client
  EXPECT_EQ(p.intermediates, 2u);  // 4 leaves, then 1
  EXPECT_EQ(p.functions[5].fan_in, 4u);
  EXPECT_EQ(p.functions[6].fan_in, 1u);
  EXPECT_EQ(p.functions[4].parent, 6u);
  EXPECT_EQ(p.functions[4].index_in_parent, 0u);
  EXPECT_EQ(p.functions.back().fan_in, 2u);
}

TEST(TreePlan, NothingToFoldIsAnError) {
  EXPECT_EQ(PlanNodeTree({{}, 0, 4, 256}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(PlanNodeTree({Keys(3), 0, 0, 256}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(PlanNodeTree({{3, 3}, 0, 4, 256}).error().code, ErrorCode::kInvalidArgument);
}

TEST(TreePlan, OnlyCommittedResultsLeaveARootAlone) {
  const TreeInputs in{{}, 3, 4, 256};
  auto p = PlanNodeTree(in).value();
  ASSERT_EQ(p.functions.size(), 1u);
  EXPECT_EQ(p.functions[0].role, Role::kNodeRoot);
  EXPECT_EQ(p.functions[0].fan_in, 3u);
  EXPECT_EQ(p.root_children(), 0u);
}

TEST(TreePlan, CommittedResultsFollowTheRootsChildren) {
  const TreeInputs in{Keys(6), 2, 4, 256};
  auto p = PlanNodeTree(in).value();
  ExpectWellFormed(p, in);
  EXPECT_EQ(p.root_children(), 2u);
  EXPECT_EQ(p.functions.back().fan_in, 4u);
}

TEST(TreePlan, MoreFunctionsThanAvailableRaisesTheFanIn) {
  const TreePlan fits = PlanNodeTree({Keys(9), 0, 4, 4}).value();  // 3 leaves + root
  EXPECT_EQ(fits.fan_in, 4u);
  EXPECT_EQ(fits.leaves, 3u);
  const TreePlan raised = PlanNodeTree({Keys(9), 0, 4, 3}).value();
  EXPECT_EQ(raised.fan_in, 5u);  // 2 leaves (5 + 4) + root
  EXPECT_EQ(raised.leaves, 2u);
  EXPECT_EQ(raised.functions[0].keys.size(), 5u);
  EXPECT_EQ(raised.functions[1].keys.size(), 4u);
  // 5,000 updates at fan-in 32 would need 157 leaves, 5 intermediates and a root.
  const TreePlan wide = PlanNodeTree({Keys(5000), 0, 32, 120}).value();
  EXPECT_LE(wide.functions.size(), 120u);
  EXPECT_GT(wide.fan_in, 32u);
  EXPECT_GT(ShapeFor(5000, wide.fan_in - 1).functions(), 120u);  // the smallest that fits
  EXPECT_EQ(wide.leaf_of.size(), 5000u);
  EXPECT_EQ(PlanNodeTree({Keys(9), 0, 4, 1}).error().code, ErrorCode::kResourceExhausted);  // no leaf and root
}

TEST(TreePlan, IsAFunctionOfTheKeySetAlone) {
  std::vector<uint32_t> shuffled = Keys(40, 100);
  std::reverse(shuffled.begin(), shuffled.end());
  std::swap(shuffled[3], shuffled[17]);
  auto a = PlanNodeTree({Keys(40, 100), 1, 3, 256}).value();
  auto b = PlanNodeTree({shuffled, 1, 3, 256}).value();
  ASSERT_EQ(a.functions.size(), b.functions.size());
  for (size_t i = 0; i < a.functions.size(); ++i) {
    EXPECT_EQ(a.functions[i].keys, b.functions[i].keys);
    EXPECT_EQ(a.functions[i].parent, b.functions[i].parent);
    EXPECT_EQ(a.functions[i].index_in_parent, b.functions[i].index_in_parent);
    EXPECT_EQ(a.functions[i].fan_in, b.functions[i].fan_in);
  }
  EXPECT_EQ(a.leaf_of, b.leaf_of);
}

// Reuse: 9 leaves at fan-in 4 make 3 intermediates (leaves 0-3, 4-7, 8) and
// the node-root (9 + 3 = 12). Each parent runs in its first child's process,
// so the tree runs in its 9 leaves' processes.
TEST(ReuseHosts, EachParentRunsInItsFirstChildsProcess) {
  const TreePlan p = PlanNodeTree({Keys(33), 0, 4, 256}).value();
  ASSERT_EQ(p.leaves, 9u);
  ASSERT_EQ(p.intermediates, 3u);
  const std::vector<uint32_t> host = ReuseHosts(p, std::vector<bool>(p.functions.size(), true));
  for (uint32_t i = 0; i < p.leaves; ++i) EXPECT_EQ(host[i], i);
  EXPECT_EQ(host[9], 0u);
  EXPECT_EQ(host[10], 4u);
  EXPECT_EQ(host[11], 8u);
  EXPECT_EQ(host[12], 0u) << "the node-root runs after intermediate 0, in leaf 0's process";
  EXPECT_EQ(std::set<uint32_t>(host.begin(), host.end()).size(), p.leaves);
}

// After a failure, committed leaves do not run: a parent goes to the first
// child that still runs, and one whose children are all committed runs alone.
TEST(ReuseHosts, CommittedChildrenPassTheParentOn) {
  const TreePlan p = PlanNodeTree({Keys(33), 0, 4, 256}).value();
  std::vector<bool> runs(p.functions.size(), true);
  for (uint32_t i : {0u, 1u, 4u, 5u, 6u, 7u}) runs[i] = false;  // committed
  const std::vector<uint32_t> host = ReuseHosts(p, runs);
  EXPECT_EQ(host[0], kNoProcess);
  EXPECT_EQ(host[4], kNoProcess);
  EXPECT_EQ(host[9], 2u) << "leaves 0 and 1 are committed: leaf 2 is the first that runs";
  EXPECT_EQ(host[10], 10u) << "all of intermediate 1's leaves are committed: its own process";
  EXPECT_EQ(host[12], 2u);
}

// One leaf under the node-root: one process for the node.
TEST(ReuseHosts, ASingleLeafRunsTheWholeTree) {
  const TreePlan p = PlanNodeTree({Keys(5), 0, 8, 256}).value();
  ASSERT_EQ(p.functions.size(), 2u);
  EXPECT_EQ(ReuseHosts(p, {true, true}), (std::vector<uint32_t>{0, 0}));
  EXPECT_EQ(ReuseHosts(p, {false, true}), (std::vector<uint32_t>{kNoProcess, 1}))
      << "its result committed, the node-root runs alone";
}

}  // namespace
}  // namespace tributary::planner
