#include "tributary/aggregator/strategy.h"

#include "support/numeric.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace tributary::agg {
namespace {

struct Round {
  ModelSpec spec;
  std::vector<std::vector<float>> values;
  std::vector<double> weights;
  std::vector<FiniteUpdate> updates;
};

Round MakeRound(uint64_t elements, int n, uint32_t seed) {
  Round r{ModelSpec::Create({{"w", DType::kF32, {static_cast<int64_t>(elements)}}}).value(), {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::uniform_int_distribution<int> samples(1, 600);
  for (int j = 0; j < n; ++j) {
    std::vector<float> v(elements);
    for (float& x : v) x = d(rng);
    r.values.push_back(std::move(v));
    r.weights.push_back(samples(rng));
  }
  for (int j = 0; j < n; ++j) {
    r.updates.push_back(
        FiniteUpdate::Check(r.spec, std::as_bytes(std::span<const float>(r.values[j])), r.weights[j]).value());
  }
  return r;
}

std::unique_ptr<Strategy> Make(StrategyOptions o) { return Strategy::Create(o).value(); }

StrategyOptions Named(const char* name) {
  StrategyOptions o;
  o.name = name;
  return o;
}

double RelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  return testing::RelativeError(std::span<const float>(a), std::span<const float>(b));
}

// Leaves fold `fan_in` updates each; each level merges `fan_in` partials.
// Returns the root's sum (a copy) and its totals; the returned Partial's span
// is not valid after return.
std::pair<std::vector<float>, Partial> TreeAggregate(const Strategy& s, const Round& r, size_t fan_in) {
  const size_t n = r.spec.elements();
  std::vector<std::vector<float>> sums;
  std::vector<Partial> level;
  sums.reserve(r.updates.size());
  for (size_t j = 0; j < r.updates.size(); j += fan_in) {
    sums.emplace_back(n, 0.0f);
    Partial p{sums.back(), 0, 0};
    EXPECT_TRUE(s.Fold(p, std::span(r.updates).subspan(j, std::min(fan_in, r.updates.size() - j))));
    level.push_back(p);
  }
  std::vector<std::vector<float>> storage;
  storage.reserve(r.updates.size());
  while (level.size() > 1) {
    std::vector<Partial> up;
    for (size_t j = 0; j < level.size(); j += fan_in) {
      storage.emplace_back(n, 0.0f);
      Partial p{storage.back(), 0, 0};
      std::vector<PartialView> children;
      for (size_t c = j; c < std::min(j + fan_in, level.size()); ++c) children.push_back(View(level[c]));
      EXPECT_TRUE(s.Merge(p, children));
      up.push_back(p);
    }
    level = std::move(up);
  }
  std::vector<float> out(level[0].sum.begin(), level[0].sum.end());
  return {out, level[0]};
}

TEST(Strategy, AnyTreeEqualsFlatAggregationWithin1e6Relative) {
  const Round r = MakeRound(20'011, 97, 1);
  auto s = Make({});
  std::vector<float> flat(r.spec.elements(), 0.0f);
  Partial fp{flat, 0, 0};
  ASSERT_TRUE(s->Fold(fp, r.updates));
  for (size_t fan_in : {2, 3, 4, 8, 16, 97}) {
    auto [tree, tp] = TreeAggregate(*s, r, fan_in);
    EXPECT_LT(RelativeError(tree, flat), 1e-6) << "fan-in " << fan_in;
    EXPECT_EQ(tp.updates, 97u);
    EXPECT_DOUBLE_EQ(tp.weight, fp.weight);
    // The finalized models agree too.
    std::vector<float> m1(r.spec.elements(), 0.0f), m2(r.spec.elements(), 0.0f);
    ServerState a{m1, {}, 0}, b{m2, {}, 0};
    ASSERT_TRUE(s->Finalize(View(fp), a));
    ASSERT_TRUE(s->Finalize(PartialView{tree, tp.weight, tp.updates}, b));
    EXPECT_LT(RelativeError(m2, m1), 1e-6);
  }
}

TEST(Strategy, SameInputsSameOrderAreBitIdentical) {
  const Round r = MakeRound(150'001, 12, 2);
  auto s = Make({});
  auto [a, pa] = TreeAggregate(*s, r, 3);
  auto [b, pb] = TreeAggregate(*s, r, 3);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
}

TEST(Strategy, FedAvgIsTheWeightedMean) {
  const Round r = MakeRound(1000, 10, 3);
  auto s = Make({});
  std::vector<float> sum(1000, 0.0f), model(1000, 5.0f);
  Partial p{sum, 0, 0};
  ASSERT_TRUE(s->Fold(p, r.updates));
  ServerState st{model, {}, 0};
  ASSERT_TRUE(s->Finalize(View(p), st));
  double wsum = 0;
  for (double w : r.weights) wsum += w;
  for (size_t i = 0; i < 1000; i += 37) {
    double want = 0;
    for (size_t j = 0; j < r.values.size(); ++j) want += r.weights[j] * r.values[j][i];
    EXPECT_NEAR(model[i], want / wsum, 1e-5);
  }
  EXPECT_EQ(st.steps, 1u);
}

// Reddi et al. Algorithm 2 and FedAvgM in double precision, two rounds.
struct Reference {
  std::string name;
  double lr, mom, b1, b2, tau;
  std::vector<double> x, m, v;
  void Step(const std::vector<double>& avg, bool first) {
    for (size_t i = 0; i < x.size(); ++i) {
      const double d = avg[i] - x[i];
      if (name == "fedavgm") {
        m[i] = mom * m[i] + d;
        x[i] += lr * m[i];
        continue;
      }
      const double v0 = first ? tau * tau : v[i];
      m[i] = b1 * m[i] + (1 - b1) * d;
      if (name == "fedadagrad") v[i] = v0 + d * d;
      if (name == "fedadam") v[i] = b2 * v0 + (1 - b2) * d * d;
      if (name == "fedyogi") v[i] = v0 - (1 - b2) * d * d * ((v0 - d * d) > 0 ? 1 : ((v0 - d * d) < 0 ? -1 : 0));
      x[i] += lr * m[i] / (std::sqrt(v[i]) + tau);
    }
  }
};

TEST(Strategy, ServerOptimizersMatchTheirDefinitions) {
  for (const char* name : {"fedavgm", "fedadagrad", "fedadam", "fedyogi"}) {
    StrategyOptions o;
    o.name = name;
    o.server_lr = 0.05;
    auto s = Make(o);
    const size_t n = 2000;
    std::vector<float> model(n, 0.25f);
    std::vector<std::vector<float>> slots(s->state_slots(), std::vector<float>(n, 0.0f));
    ServerState st{model, {}, 0};
    for (auto& sl : slots) st.slots.push_back(sl);
    Reference ref{name, 0.05, 0.9, 0.9, 0.99, 1e-3, std::vector<double>(n, 0.25), std::vector<double>(n, 0),
                  std::vector<double>(n, 0)};
    for (int round = 0; round < 3; ++round) {
      const Round r = MakeRound(n, 4, 10 + round);
      std::vector<float> sum(n, 0.0f);
      Partial p{sum, 0, 0};
      ASSERT_TRUE(s->Fold(p, r.updates));
      ASSERT_TRUE(s->Finalize(View(p), st)) << name;
      std::vector<double> avg(n);
      for (size_t i = 0; i < n; ++i) avg[i] = double(sum[i]) / p.weight;
      ref.Step(avg, round == 0);
    }
    double max_err = 0;
    for (size_t i = 0; i < n; ++i) max_err = std::max(max_err, std::abs(model[i] - ref.x[i]));
    EXPECT_LT(max_err, 1e-4) << name;
  }
}

TEST(Strategy, ChecksShapesAndState) {
  auto s = Make(Named("fedadam"));
  EXPECT_EQ(s->state_slots(), 2);
  const Round r = MakeRound(100, 2, 4);
  std::vector<float> small(50);
  Partial p{small, 0, 0};
  EXPECT_EQ(s->Fold(p, r.updates).error().code, ErrorCode::kShapeMismatch);
  std::vector<float> model(100), sum(100);
  ServerState st{model, {}, 0};
  EXPECT_EQ(s->Finalize(PartialView{sum, 1.0, 1}, st).error().code, ErrorCode::kInternal);
  EXPECT_EQ(s->Finalize(PartialView{sum, 0.0, 0}, st).error().code, ErrorCode::kInvalidArgument);
}

TEST(Strategy, RejectsBadOptions) {
  EXPECT_EQ(Strategy::Create(Named("fedmedian")).error().code, ErrorCode::kConfig);
  StrategyOptions o = Named("fedadam");
  o.beta1 = 1.0;
  EXPECT_EQ(Strategy::Create(o).error().code, ErrorCode::kConfig);
  o = Named("fedavg");
  o.server_lr = 0.1;
  EXPECT_EQ(Strategy::Create(o).error().code, ErrorCode::kConfig);
  o = Named("fedavgm");
  o.tau = 0.1;
  EXPECT_EQ(Strategy::Create(o).error().code, ErrorCode::kConfig);
  o = Named("fedyogi");
  o.server_lr = 0.1;
  o.beta2 = 0.999;
  EXPECT_TRUE(Strategy::Create(o));
}

}  // namespace
}  // namespace tributary::agg
