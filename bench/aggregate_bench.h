// `tributary bench aggregate`: how fast and how lean the fold is.
//
// Three measurements, each beside a baseline measured in the same run:
//  1. Fold throughput (GB/s of update data) for N updates of M parameters,
//     folded eagerly in batches of up to `batch` arrived updates, against a
//     STREAM-style `acc += w * x` over the same sizes and threads (the
//     machine's memory bandwidth, counting the 12 bytes each element moves).
//  2. Wall time of that round, against a Flower-style server that holds every
//     update, scales a copy of each, and averages layer by layer.
//  3. Peak memory (anonymous RSS + shared-memory bytes in use) while N_mem
//     updates stream through the shared-memory store into one accumulator.
#pragma once

#include <cstdint>
#include <iosfwd>

#include "tributary/core/error.h"

namespace tributary::bench {

struct AggregateBenchOptions {
  uint64_t params = 11'689'512;  // ResNet-18
  uint32_t updates = 100;
  uint32_t memory_updates = 1000;
  uint32_t batch = 16;           // most arrived updates folded in one pass
  int threads = 0;               // 0: all cores
  int repetitions = 3;           // best of
  bool flower_baseline = true;
  bool json = false;
};

Result<void> RunAggregateBench(const AggregateBenchOptions& options, std::ostream& out);

}  // namespace tributary::bench
