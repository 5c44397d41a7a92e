#include "plan_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ostream>
#include <random>
#include <set>

#include "tributary/controller/client_registry.h"
#include "tributary/planner/placement.h"
#include "tributary/planner/tree_plan.h"

namespace tributary::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Timings {
  double available_s = 1e9, select_s = 1e9, place_s = 1e9, trees_s = 1e9, reference_s = 1e9;
  uint64_t steered = 0, unplaced = 0, functions = 0;
  double total() const { return available_s + select_s + place_s + trees_s; }
};

std::string NodeName(uint32_t n) {
  char name[16];
  std::snprintf(name, sizeof name, "node-%04u", n);
  return name;
}

Result<Timings> Measure(const PlanSize& size, const PlanBenchOptions& o) {
  // Check-ins: client i at node i mod nodes, in a shuffled order.
  controller::ClientRegistry registry(std::chrono::hours(1));
  const auto now = Clock::now();
  std::vector<std::string> ids;
  ids.reserve(size.clients);
  for (uint64_t i = 0; i < size.clients; ++i) ids.push_back("client-" + std::to_string(i));
  std::mt19937_64 rng(42);
  std::vector<uint64_t> order(size.clients);
  for (uint64_t i = 0; i < size.clients; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  for (uint64_t i : order) registry.CheckIn(ids[i], NodeName(static_cast<uint32_t>(i % size.nodes)), now);
  std::set<std::string> connected;
  std::vector<planner::NodeResources> nodes;
  // Room for twice a node's even share; one node in ten has a fifth of that.
  const uint64_t even = (size.selected + size.nodes - 1) / size.nodes;
  for (uint32_t n = 0; n < size.nodes; ++n) {
    connected.insert(NodeName(n));
    const uint64_t room = n % 10 == 3 ? even * 2 / 5 : even * 2;
    nodes.push_back({NodeName(n), (room + room / o.fan_in + 4) * o.update_bytes * 8 / 7, 1u << 20, 0});
  }

  Timings best;
  for (uint32_t rep = 0; rep < o.repetitions; ++rep) {
    auto t0 = Clock::now();
    const std::vector<controller::AvailableClient> available = registry.Available(now, connected);
    const double available_s = Since(t0);
    t0 = Clock::now();
    const std::vector<controller::AvailableClient> selected =
        controller::SelectClients(available, size.selected, 7, "bench", rep + 1, 0);
    const double select_s = Since(t0);
    t0 = Clock::now();
    planner::PlacementInputs in;
    in.nodes = nodes;
    in.clients.reserve(selected.size());
    for (const auto& c : selected) in.clients.push_back({c.client, c.node});
    in.update_bytes = o.update_bytes;
    in.fan_in = o.fan_in;
    TRIBUTARY_ASSIGN_OR_RETURN(planner::Placement placement, planner::PlanPlacement(in));
    const double place_s = Since(t0);
    t0 = Clock::now();
    uint64_t functions = 0;
    for (const planner::NodeShare& share : placement.nodes) {
      if (share.clients.empty()) continue;
      planner::TreeInputs tree;
      tree.fan_in = o.fan_in;
      tree.available_functions = 1u << 20;
      tree.expected_keys.resize(share.clients.size());
      for (uint32_t k = 0; k < tree.expected_keys.size(); ++k) tree.expected_keys[k] = k;
      TRIBUTARY_ASSIGN_OR_RETURN(planner::TreePlan plan, planner::PlanNodeTree(tree));
      functions += plan.functions.size();
    }
    const double trees_s = Since(t0);
    std::vector<std::string> copy = ids;
    t0 = Clock::now();
    std::sort(copy.begin(), copy.end());
    const double reference_s = Since(t0);
    if (available_s + select_s + place_s + trees_s < best.total()) {
      best = {available_s, select_s, place_s, trees_s, best.reference_s, placement.steered.size(),
              placement.unplaced.size(), functions};
    }
    best.reference_s = std::min(best.reference_s, reference_s);
  }
  return best;
}

}  // namespace

Result<void> RunPlanBench(const PlanBenchOptions& o, std::ostream& out) {
  if (o.repetitions == 0 || o.fan_in == 0 || o.update_bytes == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "repetitions, fan-in and update bytes must be positive");
  }
  out << "planning one round on one core (best of " << o.repetitions << "; fan-in " << o.fan_in << ", updates of "
      << o.update_bytes << " bytes)\n";
  char line[256];
  std::snprintf(line, sizeof line, "%6s %10s %9s | %9s %9s %9s %9s | %9s | %9s %6s | %8s %8s %9s\n", "nodes", "clients",
                "selected", "avail ms", "select ms", "place ms", "trees ms", "total ms", "sort ms", "x sort",
                "steered", "unplaced", "functions");
  out << line;
  for (const PlanSize& size : o.sizes) {
    if (size.nodes == 0 || size.selected > size.clients) {
      return MakeError(ErrorCode::kInvalidArgument, "each size needs nodes and at most its clients selected");
    }
    TRIBUTARY_ASSIGN_OR_RETURN(const Timings t, Measure(size, o));
    std::snprintf(line, sizeof line, "%6u %10llu %9llu | %9.1f %9.1f %9.1f %9.1f | %9.1f | %9.1f %6.2f | %8llu %8llu %9llu\n",
                  size.nodes, static_cast<unsigned long long>(size.clients),
                  static_cast<unsigned long long>(size.selected), t.available_s * 1e3, t.select_s * 1e3,
                  t.place_s * 1e3, t.trees_s * 1e3, t.total() * 1e3, t.reference_s * 1e3, t.total() / t.reference_s,
                  static_cast<unsigned long long>(t.steered), static_cast<unsigned long long>(t.unplaced),
                  static_cast<unsigned long long>(t.functions));
    out << line << std::flush;
  }
  out << "total: the registry's view, the selection, the placement and every node's tree; x sort: total over "
         "sorting the checked-in ids once (same run)\n";
  return Ok();
}

}  // namespace tributary::bench
