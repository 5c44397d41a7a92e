// The node agent's descriptor switch: where functions register and where
// descriptors go when the kernel does not route them.
//
// The switch listens on a loopback TCP port (functions' data sockets connect
// there) and on an abstract Unix socket (registration with SCM_RIGHTS). With
// a KernelRouter (eBPF), a registered function's socket goes into the sockhash
// and the kernel moves descriptors from socket to socket; what reaches the
// switch is only what the kernel could not deliver (no route yet, function
// gone), counted and reported through on_undeliverable if set (the node agent
// sets none: it keeps every update until it is folded and re-sends it when it
// rebuilds the tree, so an undelivered descriptor is dropped). Without one
// (userspace mode), the switch relays every descriptor itself with the same
// rules, so results are identical and only latency differs.
//
// Rules: a descriptor with dest_fn goes to that function; with dest_fn == 0 its
// route_key is looked up in the routes; malformed input is dropped and
// counted; a descriptor for a function without a socket is reported, never
// delivered elsewhere.
//
// A route change applies to the descriptors sent after it returns, in both
// modes.
//
// Thread safety: all public methods may be called from any thread. Callbacks
// run on the switch's thread (in userspace mode also on the thread changing a
// route) and must not destroy the switch.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tributary/core/error.h"
#include "tributary/dataplane/descriptor.h"
#include "tributary/dataplane/function_link.h"
#include "tributary/dataplane/kernel_router.h"

namespace tributary::dataplane {

struct FunctionCounters {
  uint64_t messages = 0;     // descriptors delivered to the function
  uint64_t bytes = 0;        // payload bytes they reference
  uint64_t undelivered = 0;  // meant for it, reported to the agent instead
};

struct SwitchCounters {
  std::map<uint32_t, FunctionCounters> functions;
  uint64_t malformed = 0;  // dropped
  uint64_t unrouted = 0;   // route key without a route: reported
};

struct SwitchCallbacks {
  std::function<void(const Descriptor&)> on_undeliverable;
  std::function<void(uint32_t fn)> on_function_exit;
};

class DescriptorSwitch {
 public:
  // `kernel` null: userspace relay. `name` makes the registration socket
  // name unique per node ("tributary.<name>.switch").
  static Result<std::unique_ptr<DescriptorSwitch>> Start(const std::string& name,
                                                         std::unique_ptr<KernelRouter> kernel,
                                                         SwitchCallbacks callbacks);
  ~DescriptorSwitch();
  DescriptorSwitch(const DescriptorSwitch&) = delete;
  DescriptorSwitch& operator=(const DescriptorSwitch&) = delete;

  const char* dataplane() const;  // "ebpf" or "userspace"
  SwitchAddress address() const;

  Result<void> SetRoute(uint32_t route_key, uint32_t fn);
  Result<void> RemoveRoute(uint32_t route_key);
  Result<SwitchCounters> Counters() const;

 private:
  struct Impl;
  explicit DescriptorSwitch(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::dataplane
