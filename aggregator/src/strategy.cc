#include "tributary/aggregator/strategy.h"

#include <omp.h>

#include <cmath>
#include <string>

namespace tributary::agg {
namespace {

enum class ServerOptimizer { kNone, kMomentum, kAdagrad, kAdam, kYogi };

struct Hyper {
  double server_lr = 1.0;
  double momentum = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double tau = 1e-3;
};

Result<void> CheckRange(std::string_view what, double v, double lo, double hi, bool hi_open) {
  const bool ok = std::isfinite(v) && v >= lo && (hi_open ? v < hi : v <= hi);
  if (ok) return Ok();
  return MakeError(ErrorCode::kConfig, std::string(what) + " = " + std::to_string(v) + " is outside [" +
                                           std::to_string(lo) + ", " + std::to_string(hi) + (hi_open ? ")" : "]"));
}

// The FedAvg family: a weighted sum up the tree, a server optimizer at the root.
class WeightedMeanStrategy final : public Strategy {
 public:
  WeightedMeanStrategy(std::string name, ServerOptimizer opt, Hyper hyper, Parallelism par)
      : name_(std::move(name)), opt_(opt), hyper_(hyper), par_(par) {}

  std::string_view name() const override { return name_; }
  bool decomposable() const override { return true; }
  int state_slots() const override {
    switch (opt_) {
      case ServerOptimizer::kNone: return 0;
      case ServerOptimizer::kMomentum: return 1;
      default: return 2;
    }
  }

  Result<void> Fold(Partial& acc, std::span<const FiniteUpdate> updates) const override {
    for (const FiniteUpdate& u : updates) {
      if (u.layout().elements() != acc.sum.size()) {
        return MakeError(ErrorCode::kShapeMismatch, "update has " + std::to_string(u.layout().elements()) +
                                                        " elements, the accumulator " +
                                                        std::to_string(acc.sum.size()));
      }
    }
    FoldUpdates(acc.sum, updates, par_);
    for (const FiniteUpdate& u : updates) acc.weight += u.weight();
    acc.updates += updates.size();
    return Ok();
  }

  Result<void> Merge(Partial& acc, std::span<const PartialView> children) const override {
    std::vector<std::span<const float>> sums;
    sums.reserve(children.size());
    for (const PartialView& c : children) {
      if (c.sum.size() != acc.sum.size()) {
        return MakeError(ErrorCode::kShapeMismatch, "partial has " + std::to_string(c.sum.size()) +
                                                        " elements, the accumulator " +
                                                        std::to_string(acc.sum.size()));
      }
      sums.push_back(c.sum);
    }
    FoldPartials(acc.sum, sums, par_);
    for (const PartialView& c : children) {
      acc.weight += c.weight;
      acc.updates += c.updates;
    }
    return Ok();
  }

  Result<void> Finalize(const PartialView& total, ServerState& state) const override {
    const size_t n = state.model.size();
    if (total.sum.size() != n) {
      return MakeError(ErrorCode::kShapeMismatch, "total has " + std::to_string(total.sum.size()) +
                                                      " elements, the model " + std::to_string(n));
    }
    if (!(total.weight > 0)) return MakeError(ErrorCode::kInvalidArgument, "no updates to finalize");
    if (state.slots.size() != static_cast<size_t>(state_slots())) {
      return MakeError(ErrorCode::kInternal, "server state has " + std::to_string(state.slots.size()) +
                                                 " slots, " + name_ + " needs " + std::to_string(state_slots()));
    }
    for (std::span<float> s : state.slots) {
      if (s.size() != n) return MakeError(ErrorCode::kShapeMismatch, "server state slot size differs from model");
    }
    Step(total, state);
    ++state.steps;
    return Ok();
  }

 private:
  void Step(const PartialView& total, ServerState& state) const {
    const int64_t n = static_cast<int64_t>(state.model.size());
    const float inv_w = static_cast<float>(1.0 / total.weight);
    const float lr = static_cast<float>(hyper_.server_lr);
    const float b1 = static_cast<float>(hyper_.beta1);
    const float b2 = static_cast<float>(hyper_.beta2);
    const float tau = static_cast<float>(hyper_.tau);
    const float mom = static_cast<float>(hyper_.momentum);
    const bool first = state.steps == 0;
    float* x = state.model.data();
    const float* s = total.sum.data();
    float* m = state.slots.size() > 0 ? state.slots[0].data() : nullptr;
    float* v = state.slots.size() > 1 ? state.slots[1].data() : nullptr;
    const int threads = ThreadCount(par_);
    const ServerOptimizer opt = opt_;
#pragma omp parallel for simd schedule(static) num_threads(threads) if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) {
      const float avg = s[i] * inv_w;
      const float d = avg - x[i];
      switch (opt) {
        case ServerOptimizer::kNone:
          x[i] = avg;
          break;
        case ServerOptimizer::kMomentum:
          m[i] = mom * m[i] + d;
          x[i] += lr * m[i];
          break;
        case ServerOptimizer::kAdagrad:
        case ServerOptimizer::kAdam:
        case ServerOptimizer::kYogi: {
          const float d2 = d * d;
          const float v0 = first ? tau * tau : v[i];
          m[i] = b1 * m[i] + (1.0f - b1) * d;
          if (opt == ServerOptimizer::kAdagrad) {
            v[i] = v0 + d2;
          } else if (opt == ServerOptimizer::kAdam) {
            v[i] = b2 * v0 + (1.0f - b2) * d2;
          } else {
            const float diff = v0 - d2;
            const float sign = diff > 0.0f ? 1.0f : (diff < 0.0f ? -1.0f : 0.0f);
            v[i] = v0 - (1.0f - b2) * d2 * sign;
          }
          x[i] += lr * m[i] / (std::sqrt(v[i]) + tau);
          break;
        }
      }
    }
  }

  std::string name_;
  ServerOptimizer opt_;
  Hyper hyper_;
  Parallelism par_;
};

}  // namespace

Result<std::unique_ptr<Strategy>> Strategy::Create(const StrategyOptions& o) {
  ServerOptimizer opt;
  Hyper h;
  if (o.name == "fedavg" || o.name == "fedprox") {
    opt = ServerOptimizer::kNone;
  } else if (o.name == "fedavgm") {
    opt = ServerOptimizer::kMomentum;
    h.momentum = 0.9;
  } else if (o.name == "fedadagrad") {
    opt = ServerOptimizer::kAdagrad;
    h.server_lr = 1e-1;
  } else if (o.name == "fedadam") {
    opt = ServerOptimizer::kAdam;
    h.server_lr = 1e-2;
  } else if (o.name == "fedyogi") {
    opt = ServerOptimizer::kYogi;
    h.server_lr = 1e-2;
  } else {
    return MakeError(ErrorCode::kConfig, "unknown strategy '" + o.name +
                                             "' (fedavg, fedprox, fedavgm, fedadagrad, fedadam, fedyogi)");
  }
  const bool adaptive = opt == ServerOptimizer::kAdagrad || opt == ServerOptimizer::kAdam ||
                        opt == ServerOptimizer::kYogi;
  auto reject_unused = [&](const std::optional<double>& v, const char* key, bool used) -> Result<void> {
    if (v && !used) return MakeError(ErrorCode::kConfig, std::string(key) + " does not apply to " + o.name);
    return Ok();
  };
  TRIBUTARY_TRY(reject_unused(o.server_lr, "server_lr", opt != ServerOptimizer::kNone));
  TRIBUTARY_TRY(reject_unused(o.momentum, "momentum", opt == ServerOptimizer::kMomentum));
  TRIBUTARY_TRY(reject_unused(o.beta1, "beta1", adaptive));
  TRIBUTARY_TRY(reject_unused(o.beta2, "beta2", opt == ServerOptimizer::kAdam || opt == ServerOptimizer::kYogi));
  TRIBUTARY_TRY(reject_unused(o.tau, "tau", adaptive));
  h.server_lr = o.server_lr.value_or(h.server_lr);
  h.momentum = o.momentum.value_or(h.momentum);
  h.beta1 = o.beta1.value_or(h.beta1);
  h.beta2 = o.beta2.value_or(h.beta2);
  h.tau = o.tau.value_or(h.tau);
  TRIBUTARY_TRY(CheckRange("server_lr", h.server_lr, 1e-12, 1e3, false));
  TRIBUTARY_TRY(CheckRange("momentum", h.momentum, 0.0, 1.0, true));
  TRIBUTARY_TRY(CheckRange("beta1", h.beta1, 0.0, 1.0, true));
  TRIBUTARY_TRY(CheckRange("beta2", h.beta2, 0.0, 1.0, true));
  TRIBUTARY_TRY(CheckRange("tau", h.tau, 1e-12, 1.0, false));
  if (o.parallelism.threads < 0) return MakeError(ErrorCode::kConfig, "threads must be >= 0");
  return std::make_unique<WeightedMeanStrategy>(o.name, opt, h, o.parallelism);
}

}  // namespace tributary::agg
