// The autoscaler's decisions (planner/autoscale.h) on recorded arrivals.
#include "tributary/planner/autoscale.h"

#include <gtest/gtest.h>

namespace tributary::planner {
namespace {

// One sample per second from `from_s` to `to_s` (inclusive), `per_s` updates each.
void Steady(std::vector<ArrivalSample>& out, double from_s, double to_s, double per_s) {
  for (double t = from_s; t <= to_s + 1e-9; t += 1) out.push_back({t, per_s});
}

// One function folds 5 updates per second, planned at 70 %: 3.5 per function.
AutoscaleInputs At(double now, const std::vector<ArrivalSample>& arrivals, uint32_t live) {
  return {now, arrivals, 5.0, live, 0};
}

TEST(ArrivalRate, CountsTheSamplesInsideTheWindowOverItsLength) {
  std::vector<ArrivalSample> a;
  Steady(a, 1, 100, 2);
  EXPECT_DOUBLE_EQ(ArrivalRate(a, 100, 60), 2.0);
  EXPECT_DOUBLE_EQ(ArrivalRate(a, 100, 6), 2.0);
  EXPECT_DOUBLE_EQ(ArrivalRate(a, 130, 60), 2.0 * 30 / 60);  // the last 30 s were silent
  EXPECT_DOUBLE_EQ(ArrivalRate(a, 100, 0), 0.0);
}

TEST(Autoscale, ASteadyLoadWantsItsRateOverWhatAFunctionFoldsAtTheTarget) {
  std::vector<ArrivalSample> a;
  Steady(a, 1, 60, 10);  // 10/s over 3.5 per function: 2.86, so 3
  const AutoscaleDecision d = Autoscale({}, {}, At(60, a, 3));
  EXPECT_EQ(d.desired, 3u);
  EXPECT_FALSE(d.panicking);
  EXPECT_EQ(d.why, "stable");
  EXPECT_EQ(d.next.last_arrival_s, 60);
}

TEST(Autoscale, ABurstPanicsAndPanicNeverScalesDownUntilAStableWindowPassesWithoutIt) {
  std::vector<ArrivalSample> a;
  Steady(a, 1, 54, 1);    // 1/s: one function
  Steady(a, 55, 60, 21);  // then 21/s for 6 s: the panic window wants 6, the stable one 3
  AutoscaleDecision d = Autoscale({}, {}, At(60, a, 1));
  EXPECT_TRUE(d.panicking);
  EXPECT_EQ(d.why, "panic");
  EXPECT_EQ(d.desired, 6u);
  // The burst is over: the panic window wants nothing, the stable one 3, but
  // panic holds the peak for 60 s after the condition last held.
  AutoscaleState s = d.next;
  d = Autoscale({}, s, At(90, a, 6));
  EXPECT_TRUE(d.panicking);
  EXPECT_EQ(d.desired, 6u);
  s = d.next;
  d = Autoscale({}, s, At(120, a, 6));
  EXPECT_TRUE(d.panicking) << "exactly a stable window after: still in panic";
  s = d.next;
  d = Autoscale({}, s, At(121, a, 6));
  EXPECT_FALSE(d.panicking);
  EXPECT_EQ(d.why, "stable");
  EXPECT_EQ(d.desired, 3u) << "the stable window still holds most of the burst, and 6 / 2 = 3 is the floor";
}

TEST(Autoscale, AFirstTrickleDoesNotPanic) {
  std::vector<ArrivalSample> a;
  Steady(a, 55, 60, 2);  // 2/s wants 1 function: not twice one
  const AutoscaleDecision d = Autoscale({}, {}, At(60, a, 0));
  EXPECT_FALSE(d.panicking);
  EXPECT_EQ(d.desired, 1u);
}

TEST(Autoscale, GrowthAndShrinkagePerDecisionAreBounded) {
  AutoscaleOptions o;
  o.max_scale_up_rate = 2;
  o.max_scale_down_rate = 2;
  std::vector<ArrivalSample> heavy;
  Steady(heavy, 1, 60, 35);  // wants 10
  EXPECT_EQ(Autoscale(o, {}, At(60, heavy, 1)).desired, 2u);
  EXPECT_EQ(Autoscale(o, {}, At(60, heavy, 4)).desired, 8u);
  EXPECT_EQ(Autoscale(o, {}, At(60, heavy, 0)).desired, 10u) << "from zero, no rate to multiply";
  std::vector<ArrivalSample> light;
  Steady(light, 1, 60, 0.5);  // wants 1
  EXPECT_EQ(Autoscale(o, {}, At(60, light, 8)).desired, 4u);
  EXPECT_EQ(Autoscale(o, {}, At(60, light, 2)).desired, 1u);
}

TEST(Autoscale, WithNothingWantedOneFunctionStaysForTheGraceThenNone) {
  std::vector<ArrivalSample> a = {{10, 3}};
  // At 75 s the sample is out of both windows: nothing wanted.
  AutoscaleState s;
  s.last_arrival_s = 50;
  AutoscaleDecision d = Autoscale({}, s, At(75, a, 1));
  EXPECT_EQ(d.desired, 1u);
  EXPECT_EQ(d.why, "grace");
  d = Autoscale({}, s, At(81, a, 1));
  EXPECT_EQ(d.desired, 0u);
  EXPECT_EQ(d.why, "idle");
  EXPECT_EQ(Autoscale({}, {}, At(81, {}, 0)).desired, 0u) << "scaled to zero stays there";
}

TEST(Autoscale, ThePlannedRoundsTreeIsWarmAtOnceWhateverTheWindowsAndRateLimitsSay) {
  AutoscaleOptions o;
  o.max_scale_up_rate = 2;
  AutoscaleInputs in = At(60, {}, 1);
  in.expected = 7;
  const AutoscaleDecision d = Autoscale(o, {}, in);
  EXPECT_EQ(d.desired, 7u);
  EXPECT_EQ(d.why, "planned round");
  std::vector<ArrivalSample> heavy;
  Steady(heavy, 1, 60, 35);  // wants 10: more than the plan
  in = At(60, heavy, 10);
  in.expected = 7;
  EXPECT_EQ(Autoscale(o, {}, in).desired, 10u);
}

TEST(Autoscale, TheCountStaysWithinTheNodesBounds) {
  AutoscaleOptions o;
  o.min_functions = 2;
  o.max_functions = 5;
  std::vector<ArrivalSample> heavy;
  Steady(heavy, 1, 60, 350);
  EXPECT_EQ(Autoscale(o, {}, At(60, heavy, 5)).desired, 5u);
  EXPECT_EQ(Autoscale(o, {}, At(600, {}, 0)).desired, 2u);
  AutoscaleInputs in = At(60, {}, 0);
  in.fold_updates_per_s = 0;  // unknown: one update per second
  in.arrivals = {{60, 12}};   // 2/s over the panic window, wants 3 at 70 %
  EXPECT_EQ(Autoscale({}, {}, in).desired, 3u);
}

}  // namespace
}  // namespace tributary::planner
