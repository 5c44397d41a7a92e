#include "tributary/planner/placement.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <unordered_map>

namespace tributary::planner {
namespace {

// An eighth of the segment stays free: allocator overhead, fragmentation,
// and the blocks of a round still being released.
constexpr uint64_t kHeadroomDivisor = 8;

// Segment bytes `updates` updates need in flight on one node: the updates,
// one accumulator per function of its tree, and the model. The tree is
// counted at the job's fan-in, capped at the function limit: never below
// what the node plans (a raised fan-in has fewer functions, and at most the
// limit), and growing with `updates`, so room can be searched by bisection.
uint64_t SegmentBytesFor(uint64_t updates, uint64_t update_bytes, uint64_t model_bytes, uint32_t fan_in,
                         uint32_t function_limit) {
  const uint64_t functions = std::min<uint64_t>(ShapeFor(updates, fan_in).functions(), function_limit);
  return updates * update_bytes + (functions + 1) * model_bytes;
}

// The share of a function's fold rate the tree plans to use (as the autoscaler's target).
constexpr double kFoldUtilization = 0.7;


// Locality first: each node keeps its first clients by id up to its room;
// the excesses, largest first, go by best fit over the others' residual room.
void PlaceByLocality(const std::vector<NodeResources>& nodes, std::vector<std::vector<std::string>>& asked,
                     Placement& out, std::vector<std::vector<std::string>>& steered_in) {
  std::vector<uint64_t> residual(nodes.size());
  std::vector<std::vector<std::string>> excess(nodes.size());
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    std::vector<std::string>& mine = asked[i];
    std::sort(mine.begin(), mine.end());
    NodeShare& share = out.nodes[i];
    const size_t keep = std::min<uint64_t>(mine.size(), share.room);
    excess[i].assign(std::make_move_iterator(mine.begin() + static_cast<std::ptrdiff_t>(keep)),
                     std::make_move_iterator(mine.end()));
    mine.resize(keep);
    share.clients = std::move(mine);
    residual[i] = share.room - keep;
  }
  // Best fit, largest excess first; the room left per node, smallest first.
  std::set<std::pair<uint64_t, uint32_t>> room;
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    if (residual[i] > 0) room.insert({residual[i], i});
  }
  std::vector<uint32_t> overloaded;
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    if (!excess[i].empty()) overloaded.push_back(i);
  }
  std::stable_sort(overloaded.begin(), overloaded.end(),
                   [&](uint32_t a, uint32_t b) { return excess[a].size() > excess[b].size(); });
  for (uint32_t from : overloaded) {
    size_t next = 0;
    const std::vector<std::string>& moving = excess[from];
    while (next < moving.size() && !room.empty()) {
      const uint64_t left = moving.size() - next;
      auto target = room.lower_bound({left, 0});
      if (target == room.end()) target = std::prev(room.end());
      const auto [space, to] = *target;
      room.erase(target);
      const uint64_t n = std::min(space, left);
      for (uint64_t k = 0; k < n; ++k) {
        out.steered.push_back({moving[next + k], nodes[from].node, nodes[to].node});
        steered_in[to].push_back(moving[next + k]);
      }
      next += n;
      out.nodes[from].steered_out += n;
      out.nodes[to].steered_in += n;
      if (space > n) room.insert({space - n, to});
    }
    out.unplaced.insert(out.unplaced.end(), moving.begin() + static_cast<std::ptrdiff_t>(next), moving.end());
  }
}

// The baselines: each client, by id, to the node the rule names (round-robin
// over the nodes by id, or drawn from the seed), or the next one with room.
void PlaceByRule(const PlacementInputs& in, const std::vector<NodeResources>& nodes,
                 const std::unordered_map<std::string, uint32_t>& index, Placement& out,
                 std::vector<std::vector<std::string>>& steered_in) {
  std::vector<const SelectedClient*> clients;
  for (const SelectedClient& c : in.clients) clients.push_back(&c);
  std::sort(clients.begin(), clients.end(), [](const auto* a, const auto* b) { return a->client < b->client; });
  std::vector<uint64_t> left(nodes.size());
  for (uint32_t i = 0; i < nodes.size(); ++i) left[i] = out.nodes[i].room;
  std::mt19937_64 rng(in.seed);
  const auto n = static_cast<uint32_t>(nodes.size());
  for (size_t k = 0; k < clients.size(); ++k) {
    const SelectedClient& c = *clients[k];
    const uint32_t from = index.at(c.node);
    const uint32_t rule = in.policy == PlacementPolicy::kRoundRobin ? static_cast<uint32_t>(k % n)
                                                                    : std::uniform_int_distribution<uint32_t>(0, n - 1)(rng);
    uint32_t step = 0;
    while (step < n && left[(rule + step) % n] == 0) ++step;
    if (step == n) {
      out.unplaced.push_back(c.client);
      continue;
    }
    const uint32_t to = (rule + step) % n;
    left[to] -= 1;
    if (to == from) {
      out.nodes[to].clients.push_back(c.client);
      continue;
    }
    out.steered.push_back({c.client, c.node, nodes[to].node});
    steered_in[to].push_back(c.client);
    out.nodes[from].steered_out += 1;
    out.nodes[to].steered_in += 1;
  }
}

}  // namespace

uint32_t FanInForThroughput(const FanInInputs& in) {
  const uint32_t lo = std::max(1u, std::min(in.min, in.max)), hi = std::max(lo, in.max);
  if (in.function_fold_bytes_per_s <= 0 || in.update_bytes == 0 || in.updates == 0) return lo;
  const double folds_per_s = in.function_fold_bytes_per_s / static_cast<double>(in.update_bytes);
  double widest = std::floor(in.tail_target_s * folds_per_s);
  if (in.arrivals_per_s > 0) {
    const double leaves = std::max(1.0, std::ceil(in.arrivals_per_s / (kFoldUtilization * folds_per_s)));
    widest = std::min(widest, std::ceil(static_cast<double>(in.updates) / leaves));
  }
  return static_cast<uint32_t>(std::clamp(widest, static_cast<double>(lo), static_cast<double>(hi)));
}

uint64_t UpdatesThatFit(const NodeResources& node, uint64_t update_bytes, uint64_t model_bytes, uint32_t fan_in,
                        double round_budget_s) {
  if (update_bytes == 0 || fan_in == 0) return 0;
  if (model_bytes == 0) model_bytes = update_bytes;
  const uint64_t usable = node.segment_free_bytes - node.segment_free_bytes / kHeadroomDivisor;
  uint64_t most = usable / update_bytes;
  if (node.fold_bytes_per_s > 0 && round_budget_s > 0) {
    most = std::min<uint64_t>(most, static_cast<uint64_t>(node.fold_bytes_per_s * round_budget_s /
                                                          static_cast<double>(update_bytes)));
  }
  // The node raises its fan-in until its tree fits the function limit, which
  // it always can with room for one leaf and the root.
  if (node.function_limit < 2) return 0;
  // The largest k within `most` whose tree fits the segment.
  auto fits = [&](uint64_t k) {
    return SegmentBytesFor(k, update_bytes, model_bytes, fan_in, node.function_limit) <= usable;
  };
  uint64_t lo = 0, hi = most;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo + 1) / 2;
    if (fits(mid)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

Result<Placement> PlanPlacement(const PlacementInputs& in) {
  const bool auto_fan_in = in.fan_in == 0;
  if (auto_fan_in && (in.fan_in_min == 0 || in.fan_in_min > in.fan_in_max)) {
    return MakeError(ErrorCode::kInvalidArgument, "fan-in bounds must satisfy 0 < min <= max");
  }
  const uint32_t room_fan_in = auto_fan_in ? in.fan_in_min : in.fan_in;
  if (in.update_bytes == 0) return MakeError(ErrorCode::kInvalidArgument, "an update must have a size");
  const uint64_t model_bytes = in.model_bytes ? in.model_bytes : in.update_bytes;
  std::vector<NodeResources> nodes = in.nodes;
  std::sort(nodes.begin(), nodes.end(), [](const auto& a, const auto& b) { return a.node < b.node; });
  std::unordered_map<std::string, uint32_t> index;
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    if (!index.emplace(nodes[i].node, i).second) {
      return MakeError(ErrorCode::kInvalidArgument, "node " + nodes[i].node + " is listed twice");
    }
  }
  std::vector<std::vector<std::string>> asked(nodes.size());
  for (const SelectedClient& c : in.clients) {
    auto it = index.find(c.node);
    if (it == index.end()) {
      return MakeError(ErrorCode::kInvalidArgument, "client " + c.client + " is on node " + c.node + ", not listed");
    }
    asked[it->second].push_back(c.client);
  }

  {
    std::vector<const std::string*> all;
    all.reserve(in.clients.size());
    for (const SelectedClient& c : in.clients) all.push_back(&c.client);
    std::sort(all.begin(), all.end(), [](const std::string* a, const std::string* b) { return *a < *b; });
    auto dup = std::adjacent_find(all.begin(), all.end(), [](const std::string* a, const std::string* b) { return *a == *b; });
    if (dup != all.end()) return MakeError(ErrorCode::kInvalidArgument, "client " + **dup + " is selected twice");
  }

  Placement out;
  out.nodes.resize(nodes.size());
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    out.nodes[i].node = nodes[i].node;
    out.nodes[i].checked_in = asked[i].size();
    out.nodes[i].room = UpdatesThatFit(nodes[i], in.update_bytes, model_bytes, room_fan_in, in.round_budget_s);
  }
  std::vector<std::vector<std::string>> steered_in(nodes.size());
  if (in.policy == PlacementPolicy::kLocality) {
    PlaceByLocality(nodes, asked, out, steered_in);
  } else {
    PlaceByRule(in, nodes, index, out, steered_in);
  }
  std::sort(out.steered.begin(), out.steered.end(), [](const Steer& a, const Steer& b) { return a.client < b.client; });
  std::sort(out.unplaced.begin(), out.unplaced.end());
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    NodeShare& share = out.nodes[i];
    if (!steered_in[i].empty()) {
      share.clients.insert(share.clients.end(), steered_in[i].begin(), steered_in[i].end());
      std::sort(share.clients.begin(), share.clients.end());
    }
    share.fan_in = in.fan_in;
    if (auto_fan_in) {
      const uint64_t n = share.clients.size();
      const double spread = in.round_budget_s > 0 ? static_cast<double>(n) / in.round_budget_s : 0;
      share.fan_in = FanInForThroughput({n, in.update_bytes, std::max(nodes[i].arrivals_per_s, spread),
                                         nodes[i].function_fold_bytes_per_s, in.fan_in_min, in.fan_in_max,
                                         in.tail_target_s});
    }
    share.fan_in = FanInThatFits(share.clients.size(), share.fan_in, nodes[i].function_limit);
    share.tree = ShapeFor(share.clients.size(), share.fan_in);
    if (!share.clients.empty()) out.partials += 1;
  }
  out.cross_node_bytes = out.partials * model_bytes + out.steered.size() * in.update_bytes;
  return out;
}

}  // namespace tributary::planner
