// The interface an edge developer implements (Flower-shaped).
//
// Contract
// - GetProperties: static facts about the device (e.g. "cores", "dataset"),
//   sent when the client asks the gateway for work.
// - GetParameters: the local model's tensors (names, shapes, values). The run
//   loop checks the global model against them before calling Fit, so a
//   model mismatch is a clear kShapeMismatch, not a crash in training.
// - Fit: train from `global` with the round's `config` (e.g. local_epochs,
//   lr) and return the new weights, the number of training examples (the
//   aggregation weight) and metrics. Return an Error to skip the round.
// - Evaluate: the loss of `global` on local data. The run loop calls it when
//   the round's config sets `evaluate: true`, and sends its results with the
//   update as metrics (eval_loss, eval_examples, eval_<name>).
// Methods are called from the thread running the loop, one at a time.
#pragma once

#include "tributary/client/types.h"
#include "tributary/core/error.h"

namespace tributary::client {

class Client {
 public:
  virtual ~Client() = default;
  virtual Config GetProperties() { return {}; }
  virtual Parameters GetParameters() = 0;
  virtual Result<FitResult> Fit(const Parameters& global, const Config& config) = 0;
  virtual Result<EvaluateResult> Evaluate(const Parameters& global, const Config& config);
};

}  // namespace tributary::client
