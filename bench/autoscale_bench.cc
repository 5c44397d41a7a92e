#include "autoscale_bench.h"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <optional>
#include <ostream>
#include <random>

#include "tributary/aggregator/kernels.h"
#include "tributary/node/node_agent.h"
#include "tributary/planner/autoscale.h"
#include "tributary/planner/placement.h"
#include "tributary/planner/tree_plan.h"

namespace tributary::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct TraceRound {
  double plan_s = 0;
  double update_bytes = 0;
  std::vector<double> arrivals;        // sorted
  std::vector<uint32_t> key_of;        // by arrival: its client's place in the fold order (no relation to arrival)
};

// A policy's tree for a round: its fan-in, and whether parents reuse their
// first child's process.
struct TreeChoice {
  uint32_t fan_in = 8;
  bool reuse = false;
  planner::TreeShape shape(const TraceRound& r) const { return planner::ShapeFor(r.arrivals.size(), fan_in); }
  // Processes the tree runs in: with reuse, one per leaf.
  uint32_t processes(const TraceRound& r) const {
    const planner::TreeShape s = shape(r);
    return static_cast<uint32_t>(reuse ? s.leaves : s.functions());
  }
};

std::vector<TraceRound> MakeTrace(const AutoscaleBenchOptions& o) {
  std::mt19937_64 rng(o.seed);
  std::vector<TraceRound> trace;
  double t = 0;
  for (uint32_t r = 0; r < o.rounds; ++r) {
    TraceRound round;
    round.plan_s = t;
    const uint32_t n = std::uniform_int_distribution<uint32_t>(o.min_updates, o.max_updates)(rng);
    round.update_bytes = std::uniform_real_distribution<double>(o.min_update_mb, o.max_update_mb)(rng) * 1e6;
    const double start = t + o.lead_s, burst_at = start + std::uniform_real_distribution<double>(0, 0.9)(rng) * o.upload_window_s;
    std::uniform_real_distribution<double> anywhere(start, start + o.upload_window_s);
    std::uniform_real_distribution<double> burst(burst_at, burst_at + o.upload_window_s / 10);
    for (uint32_t i = 0; i < n; ++i) round.arrivals.push_back(i < n * o.burst_share ? burst(rng) : anywhere(rng));
    std::sort(round.arrivals.begin(), round.arrivals.end());
    round.key_of.resize(n);
    std::iota(round.key_of.begin(), round.key_of.end(), 0u);
    std::shuffle(round.key_of.begin(), round.key_of.end(), rng);
    trace.push_back(std::move(round));
    t = start + o.upload_window_s + o.gap_s;
  }
  return trace;
}

// One round through its tree. `ready(i, first_input)`: when function i of the
// tree (leaves, intermediates, then the node-root) can start folding. Each
// folds its inputs in the fixed order the node uses (a leaf its clients' keys,
// a parent its children's slots): an input that comes early waits for those
// before it, so a wide leaf whose first input comes last folds them all after it.
struct TreeRun {
  double done_s = 0;
  uint32_t waited = 0;  // functions an input waited for: critical-path cold starts
  double busy_function_s = 0;  // each process from its start to its last task's end
};

template <typename Ready>
TreeRun RunTree(const TraceRound& r, const TreeChoice& tree, double fold_bytes_per_s, Ready ready) {
  const double f = r.update_bytes / fold_bytes_per_s;  // one update, or one f32 partial of the same size
  const uint32_t fan_in = tree.fan_in;
  const planner::TreeShape shape = tree.shape(r);
  const uint32_t leaves = shape.leaves, mids = shape.intermediates;
  TreeRun out;
  // Folds `inputs` (times they are available, in fold order) on function `i`;
  // `host_free`: with reuse, when its first child's process is free for it.
  auto fold = [&](uint32_t i, const std::vector<double>& inputs, std::optional<double> host_free) {
    const double first = *std::min_element(inputs.begin(), inputs.end());
    double start;
    if (host_free) {
      start = *host_free;  // the same process, right after its last task: no start, no wait
    } else {
      const auto [at, cold] = ready(i, first);
      start = at;
      if (start > first) out.waited += cold ? 1 : 0;
    }
    double t = start;
    for (double a : inputs) t = std::max(t, a) + f;
    if (!host_free) out.busy_function_s += t - std::min(start, first);
    return t;
  };
  std::vector<std::vector<double>> leaf_inputs(leaves);
  std::vector<std::vector<uint32_t>> leaf_keys(leaves);
  for (size_t k = 0; k < r.arrivals.size(); ++k) leaf_keys[r.key_of[k] / fan_in].push_back(static_cast<uint32_t>(k));
  std::vector<double> level;
  for (uint32_t l = 0; l < leaves; ++l) {
    std::sort(leaf_keys[l].begin(), leaf_keys[l].end(), [&](uint32_t a, uint32_t b) { return r.key_of[a] < r.key_of[b]; });
    for (uint32_t k : leaf_keys[l]) leaf_inputs[l].push_back(r.arrivals[k]);
    level.push_back(fold(l, leaf_inputs[l], std::nullopt));
  }
  // A parent over `children` (their done times in slot order); with reuse it
  // runs in its first child's process once that child is done, and the
  // process's busy time runs on to the parent's end.
  auto parent = [&](uint32_t i, const std::vector<double>& children) {
    if (!tree.reuse) return fold(i, children, std::nullopt);
    const double done = fold(i, children, children.front());
    out.busy_function_s += done - children.front();
    return done;
  };
  if (mids > 0) {
    std::vector<double> next;
    for (uint32_t m = 0; m < mids; ++m) {
      const std::vector<double> in(level.begin() + m * fan_in, level.begin() + std::min<size_t>(level.size(), (m + 1) * fan_in));
      next.push_back(parent(leaves + m, in));
    }
    level = std::move(next);
  }
  out.done_s = parent(leaves + mids, level);
  return out;
}

struct PolicyResult {
  std::string name;
  double function_s = 0;
  uint32_t cold_on_path = 0, cold_on_path_after_first = 0, cold_starts = 0;
  std::vector<double> tails;
  std::vector<uint32_t> fan_ins;  // per round, where the policy chose them
  double mean_tail() const { return std::accumulate(tails.begin(), tails.end(), 0.0) / std::max<size_t>(tails.size(), 1); }
  double max_tail() const { return tails.empty() ? 0 : *std::max_element(tails.begin(), tails.end()); }
};

double TraceEnd(const std::vector<TraceRound>& trace, const AutoscaleBenchOptions& o) {
  return trace.back().plan_s + o.lead_s + o.upload_window_s + o.gap_s;
}

PolicyResult AlwaysOn(const std::vector<TraceRound>& trace, const AutoscaleBenchOptions& o, double rate) {
  PolicyResult p{"always-on (pool for the peak)"};
  const TreeChoice tree{o.fan_in, false};
  uint64_t peak = 0;
  for (const TraceRound& r : trace) peak = std::max<uint64_t>(peak, tree.processes(r));
  p.cold_starts = static_cast<uint32_t>(peak);  // once, before the first round
  for (const TraceRound& r : trace) {
    const TreeRun run = RunTree(r, tree, rate, [&](uint32_t, double) { return std::pair{r.plan_s, false}; });
    p.tails.push_back(run.done_s - r.arrivals.back());
  }
  p.function_s = static_cast<double>(peak) * TraceEnd(trace, o);
  return p;
}

PolicyResult ColdPerTask(const std::vector<TraceRound>& trace, const AutoscaleBenchOptions& o, double rate, double cold_s) {
  PolicyResult p{"cold start per task"};
  const TreeChoice tree{o.fan_in, false};
  for (size_t k = 0; k < trace.size(); ++k) {
    const TraceRound& r = trace[k];
    const TreeRun run = RunTree(r, tree, rate, [&](uint32_t, double first) { return std::pair{first + cold_s, true}; });
    p.tails.push_back(run.done_s - r.arrivals.back());
    p.function_s += run.busy_function_s;
    p.cold_on_path += run.waited;
    if (k > 0) p.cold_on_path_after_first += run.waited;
    p.cold_starts += tree.processes(r);
  }
  return p;
}

// The node agent: at a plan, the tree's functions from the warm pool, the
// missing ones started one after another, and the tree's tasks sent once all
// are there (updates that arrive meanwhile wait); the autoscaler's decision
// every second sets the pool between rounds. Parents reuse their first
// child's process; with `auto_fan_in` each round's fan-in is the
// controller's choice (planner::FanInForThroughput) from the peak arrivals
// the node saw in the last stable window (the round's updates over its
// window before any was seen).
PolicyResult Autoscaled(const std::vector<TraceRound>& trace, const AutoscaleBenchOptions& o, double rate, double cold_s,
                        bool auto_fan_in) {
  PolicyResult p{auto_fan_in ? "autoscaler, reuse, fan-in auto" : "autoscaler, reuse"};
  const planner::AutoscaleOptions ao;
  planner::AutoscaleState state;
  uint32_t pool = 0;
  const double end = TraceEnd(trace, o);
  std::vector<std::pair<double, uint32_t>> busy;  // (until, functions) of each round's tree
  size_t next = 0;
  double last_plan = -1e9;
  uint32_t last_tree = 0;
  std::vector<planner::ArrivalSample> samples;
  const TraceRound* current = nullptr;
  for (double t = 0; t < end; t += 1) {
    // Rounds planned within (t - 1, t]: their trees taken at the plan.
    while (next < trace.size() && trace[next].plan_s <= t) {
      const TraceRound& r = trace[next];
      TreeChoice tree{o.fan_in, true};
      if (auto_fan_in) {
        double peak = 0;
        for (const planner::ArrivalSample& s : samples) peak = std::max(peak, s.updates);
        const double n = static_cast<double>(r.arrivals.size());
        tree.fan_in = planner::FanInForThroughput({r.arrivals.size(), static_cast<uint64_t>(r.update_bytes),
                                                   std::max(peak, n / o.upload_window_s), rate, 2, 64,
                                                   o.tail_target_ms / 1e3});
        p.fan_ins.push_back(tree.fan_in);
      }
      const uint32_t m = tree.processes(r);
      const uint32_t missing = m > pool ? m - pool : 0;
      p.cold_starts += missing;
      const double all_there = r.plan_s + missing * cold_s;
      const TreeRun run = RunTree(r, tree, rate, [&](uint32_t, double) { return std::pair{all_there, true}; });
      const uint32_t waited = all_there > r.arrivals.front() ? missing : 0;
      p.cold_on_path += waited;
      if (next > 0) p.cold_on_path_after_first += waited;
      p.tails.push_back(run.done_s - r.arrivals.back());
      pool = std::max(pool, m);
      busy.push_back({run.done_s, m});
      last_plan = r.plan_s;
      last_tree = m;
      current = &r;
      ++next;
    }
    double arrived = 0;
    for (const TraceRound& r : trace) {
      for (double a : r.arrivals) arrived += (a > t - 1 && a <= t) ? 1 : 0;
    }
    samples.push_back({t, arrived});
    std::erase_if(samples, [&](const planner::ArrivalSample& s) { return s.t_s <= t - ao.stable_window_s; });
    const double per_function = current ? rate / current->update_bytes : 1;
    const bool recent = t - last_plan <= ao.stable_window_s;
    const planner::AutoscaleDecision d =
        planner::Autoscale(ao, state, {t, samples, per_function, pool, recent ? last_tree : 0});
    state = d.next;
    uint32_t in_use = 0;
    for (const auto& [until, m] : busy) in_use += until > t ? m : 0;
    if (d.desired > pool) p.cold_starts += d.desired - pool;
    pool = std::max(d.desired, in_use);
    p.function_s += pool;  // one second at this count
  }
  return p;
}

// Seconds a cold start costs here: a node agent starts a round's tree of
// real `tributary function` processes, one after another.
Result<double> MeasureColdStart(const std::string& binary) {
  node::NodeOptions n;
  n.node_id = "bench-autoscale-" + std::to_string(getpid());
  n.store = {"tributary." + n.node_id, 64ull << 20, 4096};
  n.binary = binary;
  n.dataplane = dataplane::DataPlaneMode::kUserspace;
  n.autoscale = false;
  n.gateway.bind = "tcp://127.0.0.1:0";
  TRIBUTARY_ASSIGN_OR_RETURN(auto agent, node::NodeAgent::Start(n));
  gateway::RoundSpec spec;
  spec.job = "cold";
  spec.round = 1;
  TRIBUTARY_ASSIGN_OR_RETURN(spec.model, agg::ModelSpec::Create({{"w", agg::DType::kF32, {1024}}}));
  constexpr uint32_t kClients = 64, kFanIn = 4;  // 16 leaves, 4 intermediates, a node-root
  for (uint32_t c = 0; c < kClients; ++c) spec.selected["c" + std::to_string(c)] = c + 1;
  const auto t0 = Clock::now();
  TRIBUTARY_TRY(agent->OpenRound(spec, kFanIn));
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  agent->CloseRound("cold", 1);
  (void)agent->WaitRound(Clock::now() + std::chrono::seconds(5));  // nothing arrived: kRoundClosed
  return s / static_cast<double>(planner::ShapeFor(kClients, kFanIn).functions());
}

}  // namespace

Result<void> RunAutoscaleBench(const AutoscaleBenchOptions& o, std::ostream& out) {
  if (o.rounds == 0 || o.min_updates == 0 || o.max_updates < o.min_updates || o.fan_in == 0 ||
      o.min_update_mb <= 0 || o.max_update_mb < o.min_update_mb) {
    return MakeError(ErrorCode::kInvalidArgument, "bench autoscale: rounds, updates, sizes and fan-in must be positive ranges");
  }
  const double rate = agg::MeasureFoldBytesPerSecond({1});
  TRIBUTARY_ASSIGN_OR_RETURN(const double cold_s, MeasureColdStart(o.binary));
  const std::vector<TraceRound> trace = MakeTrace(o);
  const std::vector<PolicyResult> results = {AlwaysOn(trace, o, rate), ColdPerTask(trace, o, rate, cold_s),
                                             Autoscaled(trace, o, rate, cold_s, false),
                                             Autoscaled(trace, o, rate, cold_s, true)};
  const PolicyResult& base = results.front();
  if (o.json) {
    nlohmann::json j = {{"fold_bytes_per_s", rate}, {"cold_start_s", cold_s}, {"rounds", o.rounds}, {"policies", nlohmann::json::array()}};
    for (const PolicyResult& p : results) {
      j["policies"].push_back({{"policy", p.name},
                               {"function_seconds", p.function_s},
                               {"function_seconds_vs_always_on", p.function_s / base.function_s},
                               {"cold_starts", p.cold_starts},
                               {"cold_starts_on_critical_path", p.cold_on_path},
                               {"after_round_1", p.cold_on_path_after_first},
                               {"mean_tail_s", p.mean_tail()},
                               {"max_tail_s", p.max_tail()},
                               {"mean_tail_vs_always_on", p.mean_tail() / base.mean_tail()},
                               {"tails_s", p.tails},
                               {"fan_ins", p.fan_ins}});
    }
    out << j.dump() << "\n";
    return Ok();
  }
  char line[256];
  std::snprintf(line, sizeof line,
                "bench autoscale: %u rounds of %u-%u updates of %.0f-%.0f MB, fan-in %u; one function folds %.2f GB/s, "
                "a cold start takes %.1f ms (measured now)\n\n",
                o.rounds, o.min_updates, o.max_updates, o.min_update_mb, o.max_update_mb, o.fan_in, rate / 1e9, cold_s * 1e3);
  out << line;
  std::snprintf(line, sizeof line, "%-32s %14s %7s %12s %14s %10s %10s %7s\n", "policy", "function-s", "x a", "cold starts",
                "on path (>r1)", "mean tail", "max tail", "x a");
  out << line;
  for (const PolicyResult& p : results) {
    const std::string path = std::to_string(p.cold_on_path) + " (" + std::to_string(p.cold_on_path_after_first) + ")";
    std::snprintf(line, sizeof line, "%-32s %14.0f %7.2f %12u %14s %9.3fs %9.3fs %7.2f\n", p.name.c_str(), p.function_s,
                  p.function_s / base.function_s, p.cold_starts, path.c_str(), p.mean_tail(), p.max_tail(),
                  p.mean_tail() / base.mean_tail());
    out << line;
  }
  const std::vector<uint32_t>& chosen = results.back().fan_ins;
  if (!chosen.empty()) {
    out << "\nfan-in auto chose " << *std::min_element(chosen.begin(), chosen.end()) << " to "
        << *std::max_element(chosen.begin(), chosen.end()) << " (job bounds 2-64, tail target " << o.tail_target_ms
        << " ms)\n";
  }
  return Ok();
}

}  // namespace tributary::bench
