// Loads and drives the sk_msg descriptor router (bpf/router.bpf.c).
//
// Load() opens and loads the skeleton and attaches the verdict program to the
// socket hash; the destructor detaches it and frees the maps (sockets in the
// hash are released, their owners keep them). OS failures come back as
// Error{kIo} with errno's text; missing privileges (CAP_BPF/CAP_NET_ADMIN)
// say so. Not thread-safe: one owner (the node agent's switch) drives it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tributary/core/error.h"
#include "tributary/ebpf/abi.h"

struct router_bpf;  // the generated skeleton

namespace tributary::ebpf {

class BpfRouter {
 public:
  static Result<std::unique_ptr<BpfRouter>> Load();
  ~BpfRouter();
  BpfRouter(const BpfRouter&) = delete;
  BpfRouter& operator=(const BpfRouter&) = delete;

  // Puts the socket `fd` (an established TCP socket) under function id `fn`;
  // the caller may close its fd afterwards.
  Result<void> AddSocket(uint32_t fn, int fd);
  Result<void> RemoveSocket(uint32_t fn);  // kNotFound if absent
  Result<void> SetRoute(uint32_t route_key, uint32_t fn);
  Result<void> RemoveRoute(uint32_t route_key);
  // Counters summed over CPUs, indexed by function id (size TRB_MAX_FUNCTIONS).
  Result<std::vector<trb_counters>> ReadCounters() const;

  // Map and program ids, for `bpftool map dump id N`.
  uint32_t sockets_map_id() const;
  uint32_t routes_map_id() const;
  uint32_t counters_map_id() const;
  uint32_t program_id() const;

 private:
  explicit BpfRouter(router_bpf* skel) : skel_(skel) {}
  router_bpf* skel_;
};

}  // namespace tributary::ebpf
