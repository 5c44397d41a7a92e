// Aggregation strategies: fold / merge / finalize.
//
// A round's aggregation is a tree. Leaves Fold client updates into a Partial
// (a weighted sum and its total weight); inner nodes Merge their children's
// partials; the root Finalizes the total into the next global model with the
// strategy's server optimizer. For decomposable strategies (the whole FedAvg
// family here) any tree shape gives flat aggregation's result up to f32
// rounding, and the same inputs in the same order give the same bits.
//
// Strategies (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, and
// Hsu et al. 2019 for FedAvgM). With avg = sum / weight and the pseudo-gradient
// d = avg - model:
//   fedavg      model = avg
//   fedavgm     m = momentum * m + d;                 model += server_lr * m
//   fedadagrad  m = b1 m + (1-b1) d; v = v + d^2;     model += server_lr * m / (sqrt(v) + tau)
//   fedadam     m = b1 m + (1-b1) d; v = b2 v + (1-b2) d^2; (same step)
//   fedyogi     m = b1 m + (1-b1) d; v = v - (1-b2) d^2 sign(v - d^2); (same step)
// v starts at tau^2, m at 0, as in the paper's Algorithm 2 (no bias correction).
// FedProx is FedAvg on the server (its proximal term is applied by clients).
//
// The strategy does not own memory: partials, the model and the optimizer's
// state slots are spans the caller provides (heap or shared memory).
//
// Thread safety: a Strategy is immutable; concurrent calls on distinct
// partials are safe.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tributary/aggregator/kernels.h"
#include "tributary/core/error.h"

namespace tributary::agg {

// A mutable weighted sum of updates.
struct Partial {
  std::span<float> sum;
  double weight = 0;
  uint64_t updates = 0;
};

struct PartialView {
  std::span<const float> sum;
  double weight = 0;
  uint64_t updates = 0;
};

inline PartialView View(const Partial& p) { return PartialView{p.sum, p.weight, p.updates}; }

// The root's state: the global model and the optimizer's per-parameter slots
// (Strategy::state_slots() of them, each model-sized, zero-initialised by the
// caller before the first round).
struct ServerState {
  std::span<float> model;
  std::vector<std::span<float>> slots;
  uint64_t steps = 0;  // finalized rounds
};

struct StrategyOptions {
  std::string name = "fedavg";  // fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad
  // Unset values take the defaults of the strategy (see docs/aggregation.md).
  std::optional<double> server_lr;
  std::optional<double> momentum;  // fedavgm
  std::optional<double> beta1;     // adaptive
  std::optional<double> beta2;     // fedadam, fedyogi
  std::optional<double> tau;       // adaptive
  Parallelism parallelism;
};

class Strategy {
 public:
  // Validates names and ranges of hyperparameters (kConfig errors).
  static Result<std::unique_ptr<Strategy>> Create(const StrategyOptions& options);

  virtual ~Strategy() = default;

  virtual std::string_view name() const = 0;
  // Whether partial aggregates combine up a tree (false: the planner must send
  // a round's updates to one function).
  virtual bool decomposable() const = 0;
  // Model-sized f32 vectors the server optimizer keeps between rounds.
  virtual int state_slots() const = 0;

  // acc += updates, in order. kShapeMismatch if sizes differ.
  virtual Result<void> Fold(Partial& acc, std::span<const FiniteUpdate> updates) const = 0;
  // acc += children, in order.
  virtual Result<void> Merge(Partial& acc, std::span<const PartialView> children) const = 0;
  // Turns the round's total into the next model (state.model, in place).
  virtual Result<void> Finalize(const PartialView& total, ServerState& state) const = 0;
};

}  // namespace tributary::agg
