// The round's placement across nodes (planner/placement.h) on recorded inputs.
#include "tributary/planner/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

namespace tributary::planner {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

// A node whose room is `room` updates of one byte in a 1 s budget (its fold
// throughput binds; its segment and function limit do not).
NodeResources Room(const std::string& node, uint64_t room) {
  return {node, 1ull << 40, 1u << 30, static_cast<double>(room)};
}

PlacementInputs Inputs(std::vector<NodeResources> nodes, const std::map<std::string, int>& asked) {
  PlacementInputs in;
  in.nodes = std::move(nodes);
  for (const auto& [node, n] : asked) {
    for (int i = 0; i < n; ++i) in.clients.push_back({node + "-c" + std::to_string(10 + i), node});
  }
  in.update_bytes = 1;
  in.fan_in = 4;
  in.round_budget_s = 1;
  return in;
}

const NodeShare& Share(const Placement& p, const std::string& node) {
  return *std::find_if(p.nodes.begin(), p.nodes.end(), [&](const NodeShare& s) { return s.node == node; });
}

TEST(UpdatesThatFit, TheSegmentHoldsTheUpdatesTheTreesAccumulatorsAndTheModelWithAnEighthFree) {
  // 87.5 MiB usable: 64 updates + 21 functions + the model = 86 MiB fit;
  // 65 need 65 + 23 + 1 = 89 MiB.
  const NodeResources n{"a", 100 * kMiB, 1000, 0};
  EXPECT_EQ(UpdatesThatFit(n, kMiB, kMiB, 4, 0), 64u);
  // Compressed uploads, a quarter of the model's bytes each: 150 x 0.25 +
  // (38 + 10 + 1) accumulators + the model = 87.5 MiB exactly.
  EXPECT_EQ(UpdatesThatFit(n, kMiB / 4, kMiB, 4, 0), 150u);
}

TEST(UpdatesThatFit, TheFunctionLimitRaisesTheFanInAndTheFoldThroughputBinds) {
  // 100 MiB, 87.5 usable. Fan-in 4 with functions to spare: 64 updates + 21
  // accumulators + the model. At most 10 functions: the node plans at the
  // fan-in that fits (9 leaves of 9 + the root), fewer accumulators, more room:
  // 76 updates + 10 + 1 = 87 MiB.
  EXPECT_EQ(UpdatesThatFit({"a", 100 * kMiB, 1000, 0}, kMiB, kMiB, 4, 0), 64u);
  EXPECT_EQ(UpdatesThatFit({"a", 100 * kMiB, 10, 0}, kMiB, kMiB, 4, 0), 76u);
  EXPECT_EQ(FanInThatFits(76, 4, 10), 9u);
}

// Room is bisected: whatever fits, fewer fit too, also where the node's
// fan-in steps up (3,680 updates at fan-in 32 are 120 functions, 3,681 at 33
// are 117), and the node's own plan for a share never needs more than the
// room counted.
TEST(UpdatesThatFit, RoomIsMonotoneAcrossTheFanInSteps) {
  const NodeResources node{"a", 8000 * kMiB, 120, 0};
  const uint64_t usable = node.segment_free_bytes - node.segment_free_bytes / 8;
  const uint64_t room = UpdatesThatFit(node, kMiB, kMiB, 32, 0);
  ASSERT_GT(room, 3681u);
  EXPECT_EQ(FanInThatFits(3680, 32, 120), 32u);
  EXPECT_EQ(FanInThatFits(3681, 32, 120), 33u);
  for (uint64_t k = 3600; k <= room; k += k < 3700 || k + 100 > room ? 1 : 97) {
    const uint32_t f = FanInThatFits(k, 32, 120);
    const uint64_t planned = k * kMiB + (ShapeFor(k, f).functions() + 1) * kMiB;
    EXPECT_LE(planned, usable) << k;
    EXPECT_LE(ShapeFor(k, f).functions(), 120u) << k;
  }
  PlacementInputs in = Inputs({node}, {{"a", static_cast<int>(room)}});
  in.update_bytes = in.model_bytes = kMiB;
  in.fan_in = 32;
  in.round_budget_s = 0;
  const auto p = PlanPlacement(in);
  ASSERT_TRUE(p) << p.error().ToString();
  EXPECT_TRUE(p.value().unplaced.empty());
  EXPECT_GT(Share(p.value(), "a").fan_in, 32u) << "the share's tree is the node's, at the raised fan-in";
  EXPECT_LE(Share(p.value(), "a").tree.functions(), 120u);
  // 10 MiB/s for a 2 s round: 20 updates of 1 MiB.
  EXPECT_EQ(UpdatesThatFit({"a", 1ull << 40, 1000, 10.0 * kMiB}, kMiB, kMiB, 4, 2.0), 20u);
  // Unknown throughput (0) is no limit; no segment is no room.
  EXPECT_EQ(UpdatesThatFit({"a", 0, 1000, 0}, kMiB, kMiB, 4, 2.0), 0u);
}

TEST(PlanPlacement, EveryUpdateIsFoldedWhereItLandsWhenTheNodesHaveRoom) {
  auto p = PlanPlacement(Inputs({Room("a", 10), Room("b", 10), Room("c", 10)}, {{"a", 9}, {"b", 3}}));
  ASSERT_TRUE(p) << p.error().ToString();
  EXPECT_TRUE(p.value().steered.empty());
  EXPECT_TRUE(p.value().unplaced.empty());
  EXPECT_EQ(p.value().partials, 2u) << "one partial per node with updates, none for the idle node";
  EXPECT_EQ(p.value().cross_node_bytes, 2u);
  EXPECT_EQ(Share(p.value(), "a").clients.size(), 9u);
  EXPECT_EQ(Share(p.value(), "a").tree.leaves, 3u);
  EXPECT_EQ(Share(p.value(), "a").tree.functions(), 4u);
  EXPECT_EQ(Share(p.value(), "c").tree.functions(), 0u);
}

TEST(PlanPlacement, AnOverloadedNodesLastClientsGoToTheNodeWithTheLeastRoomThatTakesThemAll) {
  // a takes 5 of its 9; b has 8 left, c 5: best fit for 4 is c.
  auto p = PlanPlacement(Inputs({Room("a", 5), Room("b", 10), Room("c", 6)}, {{"a", 9}, {"b", 2}, {"c", 1}}));
  ASSERT_TRUE(p) << p.error().ToString();
  const Placement& pl = p.value();
  ASSERT_EQ(pl.steered.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(pl.steered[i].client, "a-c" + std::to_string(15 + i));
    EXPECT_EQ(pl.steered[i].from, "a");
    EXPECT_EQ(pl.steered[i].to, "c");
  }
  EXPECT_EQ(Share(pl, "a").clients, (std::vector<std::string>{"a-c10", "a-c11", "a-c12", "a-c13", "a-c14"}));
  EXPECT_EQ(Share(pl, "a").steered_out, 4u);
  EXPECT_EQ(Share(pl, "c").steered_in, 4u);
  EXPECT_EQ(Share(pl, "c").clients.size(), 5u);
  EXPECT_EQ(Share(pl, "b").clients.size(), 2u);
  EXPECT_EQ(pl.partials, 3u);
  EXPECT_EQ(pl.cross_node_bytes, 3u + 4u);
  EXPECT_TRUE(pl.unplaced.empty());
}

TEST(PlanPlacement, AnExcessNoNodeTakesWholeIsSplitLargestRoomFirstAndWhatIsLeftIsUnplaced) {
  // a: 10 too many. b has 6 left, c 5: b takes 6, then c (best fit) 4.
  auto p = PlanPlacement(Inputs({Room("a", 2), Room("b", 6), Room("c", 5)}, {{"a", 12}}));
  ASSERT_TRUE(p) << p.error().ToString();
  EXPECT_EQ(Share(p.value(), "b").steered_in, 6u);
  EXPECT_EQ(Share(p.value(), "c").steered_in, 4u);
  EXPECT_TRUE(p.value().unplaced.empty());
  // Two more than all the room there is: the last two by id stay out.
  auto q = PlanPlacement(Inputs({Room("a", 2), Room("b", 6), Room("c", 5)}, {{"a", 15}}));
  ASSERT_TRUE(q) << q.error().ToString();
  EXPECT_EQ(q.value().unplaced, (std::vector<std::string>{"a-c23", "a-c24"}));
  EXPECT_EQ(q.value().steered.size(), 11u);
}

TEST(PlanPlacement, TheLargestExcessIsPlacedFirst) {
  // a is 6 over, b 2 over; c has 6 left and d 2: best fit in that order
  // gives each excess one node (the other order would split a's).
  auto p = PlanPlacement(
      Inputs({Room("a", 4), Room("b", 4), Room("c", 6), Room("d", 2)}, {{"a", 10}, {"b", 6}}));
  ASSERT_TRUE(p) << p.error().ToString();
  for (const Steer& s : p.value().steered) EXPECT_EQ(s.to, s.from == "a" ? "c" : "d") << s.client;
  EXPECT_EQ(p.value().steered.size(), 8u);
}

TEST(PlanPlacement, TheSkewedClusterOfTheBenchmarkSpillsOnlyFromItsSmallNode) {
  // 100 updates of 4 MiB over three nodes, 60/30/10; node a has a quarter of
  // the others' segment (256 MiB against 1 GiB): it holds 48 of its 60
  // (48 x 4 MiB + 7 accumulators and the model = 224 MiB, seven eighths).
  PlacementInputs in;
  in.nodes = {{"a", 256 * kMiB, 256, 0}, {"b", 1024 * kMiB, 256, 0}, {"c", 1024 * kMiB, 256, 0}};
  for (int i = 0; i < 100; ++i) {
    in.clients.push_back({"client-" + std::to_string(1000 + i), i < 60 ? "a" : i < 90 ? "b" : "c"});
  }
  in.update_bytes = 4 * kMiB;
  in.fan_in = 8;
  auto p = PlanPlacement(in);
  ASSERT_TRUE(p) << p.error().ToString();
  EXPECT_EQ(Share(p.value(), "a").room, 48u);
  EXPECT_EQ(Share(p.value(), "a").steered_out, 12u);
  EXPECT_EQ(Share(p.value(), "b").steered_in + Share(p.value(), "c").steered_in, 12u);
  EXPECT_EQ(p.value().partials, 3u);
  EXPECT_EQ(p.value().cross_node_bytes, (3u + 12u) * 4 * kMiB);
}

TEST(PlanPlacement, TheSameInputsInAnyOrderGiveTheSamePlacement) {
  PlacementInputs in = Inputs({Room("a", 7), Room("b", 3), Room("c", 20), Room("d", 1)},
                              {{"a", 15}, {"b", 9}, {"c", 4}, {"d", 4}});
  auto first = PlanPlacement(in);
  ASSERT_TRUE(first) << first.error().ToString();
  std::mt19937 rng(5);
  for (int trial = 0; trial < 5; ++trial) {
    std::shuffle(in.nodes.begin(), in.nodes.end(), rng);
    std::shuffle(in.clients.begin(), in.clients.end(), rng);
    auto again = PlanPlacement(in);
    ASSERT_TRUE(again);
    ASSERT_EQ(again.value().nodes.size(), first.value().nodes.size());
    for (size_t i = 0; i < first.value().nodes.size(); ++i) {
      EXPECT_EQ(again.value().nodes[i].node, first.value().nodes[i].node);
      EXPECT_EQ(again.value().nodes[i].clients, first.value().nodes[i].clients);
    }
    ASSERT_EQ(again.value().steered.size(), first.value().steered.size());
    for (size_t i = 0; i < first.value().steered.size(); ++i) {
      EXPECT_EQ(again.value().steered[i].client, first.value().steered[i].client);
      EXPECT_EQ(again.value().steered[i].to, first.value().steered[i].to);
    }
    EXPECT_EQ(again.value().unplaced, first.value().unplaced);
  }
}

TEST(PlanPlacement, InconsistentInputsAreRefused) {
  auto code = [](PlacementInputs in) { return PlanPlacement(in).error().code; };
  PlacementInputs ok = Inputs({Room("a", 5), Room("b", 5)}, {{"a", 2}});
  PlacementInputs twice_node = ok;
  twice_node.nodes.push_back(Room("a", 3));
  EXPECT_EQ(code(twice_node), ErrorCode::kInvalidArgument);
  PlacementInputs twice_client = ok;
  twice_client.clients.push_back({"a-c10", "b"});
  EXPECT_EQ(code(twice_client), ErrorCode::kInvalidArgument);
  PlacementInputs unknown_node = ok;
  unknown_node.clients.push_back({"x", "z"});
  EXPECT_EQ(code(unknown_node), ErrorCode::kInvalidArgument);
  PlacementInputs bad_bounds = ok;
  bad_bounds.fan_in = 0;  // auto
  bad_bounds.fan_in_min = 9;
  bad_bounds.fan_in_max = 8;
  EXPECT_EQ(code(bad_bounds), ErrorCode::kInvalidArgument);
  bad_bounds.fan_in_min = 0;
  EXPECT_EQ(code(bad_bounds), ErrorCode::kInvalidArgument);
  PlacementInputs no_size = ok;
  no_size.update_bytes = 0;
  EXPECT_EQ(code(no_size), ErrorCode::kInvalidArgument);
}

// 10 MB updates, one function folds 10 GB/s: 1,000 folds a second.
FanInInputs FanIn(uint64_t updates, double arrivals_per_s) {
  return {updates, 10'000'000, arrivals_per_s, 10e9, 2, 64, 0.1};
}

TEST(FanInForThroughput, TheTailTargetBoundsALeafsWidth) {
  // Arriving slowly, one leaf keeps up with all; its fixed-order fold may
  // have to do everything after the last upload: 0.1 s x 1,000 folds/s = 100.
  EXPECT_EQ(FanInForThroughput(FanIn(50, 10)), 50u);
  FanInInputs tail = FanIn(50, 10);
  tail.max = 1000;
  tail.updates = 500;
  EXPECT_EQ(FanInForThroughput(tail), 100u);
  EXPECT_EQ(FanInForThroughput(FanIn(500, 10)), 64u) << "within the job's maximum";
}

TEST(FanInForThroughput, EnoughLeavesToKeepUpWithTheArrivals) {
  // 2,800 updates/s need 2,800 / (0.7 x 1,000) = 4 leaves: 400 updates make leaves of 100, capped at 64.
  EXPECT_EQ(FanInForThroughput(FanIn(400, 2800)), 64u);
  // 7,000/s: 10 leaves, 40 each.
  EXPECT_EQ(FanInForThroughput(FanIn(400, 7000)), 40u);
  // A flood: the narrowest the job allows.
  EXPECT_EQ(FanInForThroughput(FanIn(400, 1e7)), 2u);
}

TEST(FanInForThroughput, AnUnknownFoldRateGivesTheMinimum) {
  FanInInputs unknown = FanIn(400, 10);
  unknown.function_fold_bytes_per_s = 0;
  EXPECT_EQ(FanInForThroughput(unknown), 2u);
}

// Auto fan-in in the placement: rooms at the minimum, each node's fan-in from
// its own rate and its own clients.
TEST(PlanPlacement, AutoFanInIsChosenPerNode) {
  PlacementInputs in;
  in.nodes = {{"fast", 1ull << 40, 1000, 0, 10e9, 0}, {"slow", 1ull << 40, 1000, 0, 1e9, 0}};
  for (int i = 0; i < 300; ++i) in.clients.push_back({"c" + std::to_string(1000 + i), i % 2 ? "fast" : "slow"});
  in.update_bytes = 10'000'000;
  in.fan_in = 0;
  in.round_budget_s = 10;  // 150 updates over 10 s: 15/s, well within one function on either
  const Placement p = PlanPlacement(in).value();
  EXPECT_EQ(Share(p, "fast").fan_in, 64u);
  EXPECT_EQ(Share(p, "fast").tree.leaves, 3u);  // 150 / 64
  EXPECT_EQ(Share(p, "slow").fan_in, 10u) << "100 folds/s x 0.1 s";
  EXPECT_EQ(Share(p, "slow").tree.leaves, 15u);
  EXPECT_EQ(Share(p, "slow").tree.intermediates, 2u);
  EXPECT_EQ(PlanPlacement(in).value().nodes[0].fan_in, p.nodes[0].fan_in) << "deterministic";
}

// The baselines move clients away from where they asked: round-robin sends
// client i (by id) to node i mod 3, so two thirds of them cross nodes.
TEST(PlanPlacement, RoundRobinIgnoresWhereClientsAsked) {
  PlacementInputs in = Inputs({Room("a", 100), Room("b", 100), Room("c", 100)}, {{"a", 60}, {"b", 30}, {"c", 9}});
  in.policy = PlacementPolicy::kRoundRobin;
  const Placement p = PlanPlacement(in).value();
  EXPECT_EQ(Share(p, "a").clients.size(), 33u);
  EXPECT_EQ(Share(p, "b").clients.size(), 33u);
  EXPECT_EQ(Share(p, "c").clients.size(), 33u);
  EXPECT_GT(p.steered.size(), 50u);
  EXPECT_EQ(p.partials, 3u);
  EXPECT_EQ(p.cross_node_bytes, 3 + p.steered.size());
  // Locality on the same inputs: nothing moves.
  in.policy = PlacementPolicy::kLocality;
  EXPECT_TRUE(PlanPlacement(in).value().steered.empty());
}

// A full node's client goes to the next node with room; random is a
// function of its seed.
TEST(PlanPlacement, BaselinesRespectRoomsAndRandomFollowsItsSeed) {
  PlacementInputs in = Inputs({Room("a", 5), Room("b", 100), Room("c", 100)}, {{"a", 60}, {"b", 30}, {"c", 9}});
  in.policy = PlacementPolicy::kRandom;
  in.seed = 42;
  const Placement p = PlanPlacement(in).value();
  EXPECT_EQ(Share(p, "a").clients.size(), 5u);
  EXPECT_TRUE(p.unplaced.empty());
  EXPECT_EQ(Share(p, "a").clients.size() + Share(p, "b").clients.size() + Share(p, "c").clients.size(), 99u);
  const Placement again = PlanPlacement(in).value();
  ASSERT_EQ(again.steered.size(), p.steered.size());
  for (size_t i = 0; i < p.steered.size(); ++i) EXPECT_EQ(again.steered[i].to, p.steered[i].to);
  in.seed = 43;
  const Placement other = PlanPlacement(in).value();
  bool differs = other.steered.size() != p.steered.size();
  for (size_t i = 0; !differs && i < p.steered.size(); ++i) differs = other.steered[i].to != p.steered[i].to;
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace tributary::planner
