// `tributary bench dataplane`: what one hop of a descriptor costs.
//
// For each update size (default 1 MB, 46.8 MB = ResNet-18 f32, 240 MB =
// ResNet-152 f32): the one-way latency (half a round trip, p50 and p99) and
// the pipelined rate of a 80-byte descriptor that references an update of
// that size, through the eBPF sk_msg redirect and through the userspace
// relay; beside it the "serverful" hop that sends the whole update over TCP
// loopback, measured in the same run.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "tributary/core/error.h"

namespace tributary::bench {

struct DataplaneBenchOptions {
  std::vector<uint64_t> sizes = {1'000'000, 46'758'048, 240'000'000};
  uint32_t round_trips = 20000;
  uint32_t stream_messages = 200000;
  std::string dataplane = "auto";  // which descriptor paths to measure: auto (both if possible), ebpf, userspace
};

Result<void> RunDataplaneBench(const DataplaneBenchOptions& options, std::ostream& out);

}  // namespace tributary::bench
