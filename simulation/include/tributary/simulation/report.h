// A simulation's run directory:
//   metrics.csv, metrics.jsonl  one line per round (RoundMetrics), appended as
//                               each round ends: a killed run keeps its rounds
//   metrics.json                every round, rewritten with the report after each
//   run.json                    what makes the directory this job's run
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

// Makes `run_dir` this job's run (run.json: the job's name, seed and every
// setting that changes the model), or checks that it already is: kConfig for
// a directory of another job or settings.
Result<void> ClaimRunDir(const std::string& run_dir, const SimulationJob& job);

// The functions below write into a run directory ClaimRunDir made.

// Appends round `m` to metrics.csv (with its header when new) and metrics.jsonl.
Result<void> AppendRound(const std::string& run_dir, const RoundMetrics& m);

// The rounds logged in `run_dir` (metrics.jsonl), at most the first `keep`,
// stopping at a line a kill cut short; the log is rewritten to hold exactly
// those, so a resumed run appends after them. No log: no rounds.
Result<std::vector<RoundMetrics>> LoggedRounds(const std::string& run_dir, uint64_t keep);

// metrics.json, the model files and report.html, from `rounds`.
Result<void> WriteReport(const std::string& run_dir, const SimulationJob& job,
                         const std::vector<RoundMetrics>& rounds, const FinalModel& model);

}  // namespace tributary::simulation
