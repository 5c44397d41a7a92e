// The routing state that lives in the kernel when eBPF is used.
//
// The descriptor switch programs it (sockets of functions, routes) and reads
// its counters. It is an interface so the switch is unit-tested without a
// kernel; BpfKernelRouter is the real one. In userspace mode there is none and
// the switch relays descriptors itself.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tributary/core/error.h"
#include "tributary/ebpf/abi.h"

namespace tributary::dataplane {

class KernelRouter {
 public:
  virtual ~KernelRouter() = default;
  virtual Result<void> AddSocket(uint32_t fn, int fd) = 0;
  virtual Result<void> RemoveSocket(uint32_t fn) = 0;
  virtual Result<void> SetRoute(uint32_t route_key, uint32_t fn) = 0;
  virtual Result<void> RemoveRoute(uint32_t route_key) = 0;
  // Indexed by function id; slot 0 counts malformed drops and unrouted.
  virtual Result<std::vector<trb_counters>> ReadCounters() const = 0;
  // For logs and docs: how to inspect it ("bpftool map dump id ...").
  virtual std::string Describe() const = 0;
};

enum class DataPlaneMode { kAuto, kEbpf, kUserspace };

Result<DataPlaneMode> ParseDataPlaneMode(const std::string& text);  // "auto", "ebpf", "userspace"

// The kernel router for `mode`: the eBPF one, or nullptr for the userspace
// relay. kAuto falls back to userspace when BPF cannot be loaded and says why
// in `why`; kEbpf fails instead.
Result<std::unique_ptr<KernelRouter>> OpenKernelRouter(DataPlaneMode mode, std::string* why);

}  // namespace tributary::dataplane
