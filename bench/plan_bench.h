// `tributary bench plan`: what planning a round costs the controller, at
// internet scale, on one core.
//
// For each (nodes, checked-in clients, selected) size: the registry's view of
// the available clients at the round's start, the seeded selection, the
// placement across nodes (planner/placement.h; node segments drawn so that
// about a tenth of the nodes are short of room and spill), and every node's
// tree plan (planner/tree_plan.h). Best of `repetitions`. Beside it, the
// same run's reference: sorting the checked-in client ids once, the least any
// planner that orders its clients must do.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <vector>

#include "tributary/core/error.h"

namespace tributary::bench {

struct PlanSize {
  uint32_t nodes = 1000;
  uint64_t clients = 1'000'000;  // checked in
  uint64_t selected = 100'000;
};

struct PlanBenchOptions {
  std::vector<PlanSize> sizes = {{10, 10'000, 1'000},      {100, 100'000, 10'000},   {1000, 100'000, 10'000},
                                 {100, 1'000'000, 100'000}, {1000, 1'000'000, 100'000}};
  uint32_t repetitions = 3;
  uint32_t fan_in = 8;
  uint64_t update_bytes = 46'758'048;  // ResNet-18, f32
};

Result<void> RunPlanBench(const PlanBenchOptions& options, std::ostream& out);

}  // namespace tributary::bench
