// Run(): the client loop. Until `max_rounds` rounds are done (0: forever) or
// `stop` is set: ask the gateway for a task (waiting as it says between
// asks), download the round's global model, check it against
// GetParameters(), Evaluate it if the config says `evaluate: true`, Fit,
// upload the result. A round whose Fit fails is skipped (the round's
// deadline covers the missing update); transport errors that retries could
// not fix end the loop with that error.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "tributary/client/client.h"
#include "tributary/client/session.h"

namespace tributary::client {

struct RunOptions {
  SessionOptions session;
  Compression compression = Compression::kNone;
  uint32_t max_rounds = 0;                  // 0: until stopped
  std::chrono::milliseconds max_idle{0};    // give up after this long without a task (0: never)
  const std::atomic<bool>* stop = nullptr;  // checked between steps
};

struct RunSummary {
  uint32_t rounds = 0;         // updates accepted
  uint32_t failed_fits = 0;    // rounds skipped because Fit returned an error
  uint64_t bytes_sent = 0;
  uint64_t bytes_saved = 0;
};

Result<RunSummary> Run(Client& client, const RunOptions& options);

}  // namespace tributary::client
