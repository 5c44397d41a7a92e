// A simulation's run directory:
//   metrics.csv, metrics.json   one row per round (RoundMetrics)
//   model.bin, model.json       the final global model (f32, little-endian)
//                               and its layout and version
//   report.html                 accuracy, loss and round-time plots as inline
//                               SVG: opens offline, no script, no network
#pragma once

#include <string>
#include <vector>

#include "tributary/simulation/job.h"
#include "tributary/core/error.h"
#include "tributary/simulation/federation.h"

namespace tributary::simulation {

struct FinalModel {
  uint64_t version = 0;
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors;  // name, shape
  std::vector<float> values;
};

Result<void> WriteReport(const std::string& run_dir, const SimulationJob& job,
                         const std::vector<RoundMetrics>& rounds, const FinalModel& model);

}  // namespace tributary::simulation
