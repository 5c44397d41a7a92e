// How many aggregator functions a node keeps live: a pure function of what
// it observed (no processes, no clock), so that every decision is
// unit-tested on recorded traces (tests/unit/autoscale_test.cc).
//
// Knative's pod autoscaler, for functions. The load is the arrival rate of
// updates; one function folds `fold_updates_per_s` of them, of which the
// autoscaler plans to use `target_utilization`. The count wanted is that
// rate over that capacity, averaged over two windows of recent arrivals: the
// stable window (60 s) and the panic window (6 s). When the panic window
// wants at least `panic_threshold` (2) times the functions live, the
// autoscaler panics: it follows the panic window, never scales down, and
// stays in panic until the stable window has passed since the condition last
// held. Each decision grows the count at most `max_scale_up_rate` times (from
// zero: to what is wanted) and shrinks it at most to 1 / `max_scale_down_rate`
// of what is live. With nothing wanted it keeps one function until no update
// arrived for `scale_to_zero_grace`, then none.
//
// FL knows the future: `expected` is the size of the tree of the round the
// node was planned last (every leaf, intermediate and node-root), which the
// node agent passes while that round runs and for a stable window after it
// ends, since rounds recur.
// That many functions are wanted at once, whatever the windows say and
// without the rate limits, so that the next round finds them warm. In panic
// the count never falls below the highest it wanted in that panic.
//
// Errors: none; inputs out of range are clamped (a non-positive fold rate
// counts as one update per second).
//
// Thread safety: plain functions and value types.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace tributary::planner {

struct AutoscaleOptions {
  double stable_window_s = 60;
  double panic_window_s = 6;
  double panic_threshold = 2.0;
  double max_scale_up_rate = 1000;
  double max_scale_down_rate = 2;
  double target_utilization = 0.7;
  double scale_to_zero_grace_s = 30;
  uint32_t min_functions = 0;
  uint32_t max_functions = 120;  // the node agent's limit
};

// Updates that arrived in (the previous sample's time, t_s].
struct ArrivalSample {
  double t_s = 0;
  double updates = 0;
};

struct AutoscaleInputs {
  double now_s = 0;
  std::vector<ArrivalSample> arrivals;  // oldest first; those before the stable window are ignored
  double fold_updates_per_s = 1;        // one function's measured fold rate, in updates
  uint32_t live = 0;                    // functions live now
  uint32_t expected = 0;                // the planned round's tree; 0: no round planned
};

// What the autoscaler remembers between decisions.
struct AutoscaleState {
  double panic_since_s = -1;  // the last time the panic condition held; < 0: not panicking
  double last_arrival_s = -std::numeric_limits<double>::infinity();
  uint32_t panic_peak = 0;    // the most wanted while panicking (panic never scales down)
};

struct AutoscaleDecision {
  uint32_t desired = 0;
  bool panicking = false;
  std::string why;  // for logs and the status view: "stable", "panic", "planned round", "grace", "idle"
  AutoscaleState next;
};

// Updates per second over the window ending at now_s.
double ArrivalRate(const std::vector<ArrivalSample>& arrivals, double now_s, double window_s);

AutoscaleDecision Autoscale(const AutoscaleOptions& options, const AutoscaleState& state, const AutoscaleInputs& in);

}  // namespace tributary::planner
