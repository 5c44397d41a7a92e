// A personalized server function: the stateful counterpart of Strategy, for
// jobs where every client gets its own model (SemiPFL).
//
// Instead of folding updates into one aggregate, the controller hands the
// function each client's update as an event, in the order the updates reach
// the controller, and asks it for each selected client's personal model
// before a round. The function owns its state (a hypernetwork, say); the
// events of one round may arrive in any order, so a function whose updates
// do not commute is reproducible only up to that order.
//
// Thread safety: the controller calls one method at a time.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tributary/aggregator/tensor.h"
#include "tributary/core/error.h"

namespace tributary::agg {

class PersonalizedFunction {
 public:
  virtual ~PersonalizedFunction() = default;

  // The layout of the personal model a client downloads (f32).
  virtual const ModelSpec& personal_model() const = 0;
  // The layout of the update a client sends back (f32 in the controller).
  virtual const ModelSpec& update_model() const = 0;

  // `client`'s personal model for `round`: personal_model().elements() values.
  virtual Result<std::vector<float>> ModelFor(const std::string& client, uint64_t round) = 0;
  // One client's update (update_model().elements() values, checked finite by
  // the gateway), weighted by its sample count.
  virtual Result<void> OnUpdate(const std::string& client, uint64_t round, double weight,
                                std::span<const float> values) = 0;
};

}  // namespace tributary::agg
