#include "tributary/planner/autoscale.h"

#include <algorithm>
#include <cmath>

namespace tributary::planner {
namespace {

// Whole functions for `load` functions' worth of work (a rounding tolerance
// keeps 3.0000000001 at 3).
uint32_t Functions(double load) { return static_cast<uint32_t>(std::max(0.0, std::ceil(load - 1e-9))); }

}  // namespace

double ArrivalRate(const std::vector<ArrivalSample>& arrivals, double now_s, double window_s) {
  if (window_s <= 0) return 0;
  double sum = 0;
  for (const ArrivalSample& s : arrivals) {
    if (s.t_s > now_s - window_s && s.t_s <= now_s) sum += s.updates;
  }
  return sum / window_s;
}

AutoscaleDecision Autoscale(const AutoscaleOptions& o, const AutoscaleState& state, const AutoscaleInputs& in) {
  AutoscaleDecision d;
  d.next = state;
  const double per_function =
      (in.fold_updates_per_s > 0 ? in.fold_updates_per_s : 1.0) * std::clamp(o.target_utilization, 0.01, 1.0);
  const uint32_t stable = Functions(ArrivalRate(in.arrivals, in.now_s, o.stable_window_s) / per_function);
  const uint32_t panic = Functions(ArrivalRate(in.arrivals, in.now_s, o.panic_window_s) / per_function);
  for (const ArrivalSample& s : in.arrivals) {
    if (s.updates > 0 && s.t_s <= in.now_s) d.next.last_arrival_s = std::max(d.next.last_arrival_s, s.t_s);
  }
  // As Knative: no live function counts as one, so a first trickle does not panic.
  const double live = std::max<uint32_t>(in.live, 1);
  if (panic >= o.panic_threshold * live) {
    d.next.panic_since_s = in.now_s;
  } else if (d.next.panic_since_s >= 0 && in.now_s - d.next.panic_since_s > o.stable_window_s) {
    d.next.panic_since_s = -1;
    d.next.panic_peak = 0;
  }
  d.panicking = d.next.panic_since_s >= 0;
  uint32_t want = stable;
  d.why = "stable";
  if (d.panicking) {
    want = std::max(panic, d.next.panic_peak);
    d.next.panic_peak = want;
    d.why = "panic";
  }
  if (in.live > 0) {
    const auto up = static_cast<uint32_t>(std::min(std::ceil(o.max_scale_up_rate * in.live), 4294967295.0));
    const auto down = static_cast<uint32_t>(std::floor(in.live / std::max(o.max_scale_down_rate, 1.0)));
    want = std::clamp(want, down, std::max(up, down));
  }
  if (want == 0 && in.live > 0 && in.now_s - d.next.last_arrival_s < o.scale_to_zero_grace_s) {
    want = 1;
    d.why = "grace";
  }
  if (want == 0) d.why = "idle";
  if (in.expected > want) {
    want = in.expected;
    d.why = "planned round";
  }
  d.desired = std::clamp(want, o.min_functions, std::max(o.min_functions, o.max_functions));
  return d;
}

}  // namespace tributary::planner
