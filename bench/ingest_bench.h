// `tributary bench ingest`: how fast a node takes in updates and serves the
// model, against the loopback limit measured in the same run.
//
// For each update size and number of concurrent clients U, three receivers,
// each in a child process of its own (its CPU time is the node's):
//   reference  plain TCP on loopback: U sender threads each write their
//              updates in 4 MiB writes; one receiver thread (epoll) reads
//              each connection into a 4 MiB buffer and copies every read
//              into a shared-memory block, one block per update, and answers
//              one byte per update. What any gateway must do at least.
//   gateway    the real Gateway (wire protocol, validation, admission,
//              checksum, NaN/Inf check) into the same kind of segment, fed by
//              U client-SDK sessions; accepted blocks are dropped at once
//              (no aggregation: this measures ingest).
//   curve      the gateway again with CURVE on (encryption costs what it
//              costs; compared with the same plaintext reference).
// Downloads are measured the same way: U clients fetch the model (the same
// size) again and again; the reference server writes it from its shared-
// memory block, the clients read it into their own buffer.
//
// Reported per row: GB/s (payload bytes over wall time) and node CPU seconds
// per GB, and the gateway / reference ratios.
//
// With `idle` > 0, each upload row also measures the gateway while that many
// other clients hold connections open (each asked for a task once, then
// sends nothing): the gateway's uploads with and without them, twice each in
// turn, the best of each (the gateway column too), and their ratio.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <vector>

#include "tributary/core/error.h"

namespace tributary::bench {

struct IngestBenchOptions {
  std::vector<uint64_t> sizes = {1'000'000, 46'758'048, 240'000'000};  // bytes per update (f32 layers)
  std::vector<uint32_t> clients = {1, 4, 16};                           // concurrent senders
  uint64_t bytes_per_run = 2ull << 30;  // each measurement moves at least this much
  bool curve = true;                    // also the gateway under CURVE
  bool downloads = true;
  uint32_t idle = 0;  // idle connections held open beside the uploads (upload rows only)
  bool json = false;
};

Result<void> RunIngestBench(const IngestBenchOptions& options, std::ostream& out);

}  // namespace tributary::bench
