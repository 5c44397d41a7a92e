// Whole payloads over loopback TCP: the "serverful" comparison transport.
//
// Inside a node, Tributary moves updates between aggregators as descriptors
// that point into shared memory. To measure what that saves (LIFL's
// comparison), a node can run the same tree the way a serverful system does:
// every hop writes the whole payload to the next aggregator over TCP, and the
// receiver reads it into its own memory. This file is that transport; nothing
// else in the runtime uses it.
//
// A frame is a PayloadHeader followed by `header.descriptor.length` bytes.
// The descriptor says what the payload is (kind, task, weight) exactly as it
// would in shared-memory mode; `updates` is the number of client updates a
// partial aggregate holds.
//
// The node agent and the functions reach this only through their transport
// seams (node/src/update_transport.h, function/src/task_transport.h).
//
// Errors: every function returns kIo when the socket fails or closes, and
// kMalformedFrame for a header that is not a descriptor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <type_traits>

#include "tributary/core/error.h"
#include "tributary/core/unique_fd.h"
#include "tributary/dataplane/descriptor.h"

namespace tributary::dataplane {

struct PayloadHeader {
  Descriptor descriptor;
  uint64_t updates = 0;
  bool checked_finite = false;  // an update the gateway checked for NaN/Inf
};
// Written and read as raw bytes between processes of one machine and build.
static_assert(std::is_trivially_copyable_v<PayloadHeader> && sizeof(PayloadHeader) == 96);

// Accepts loopback connections and runs `read_frame` on each connection's
// own thread, one frame per call, until it fails or the peer closes.
class PayloadServer {
 public:
  using FrameReader = std::function<Result<void>(int fd)>;
  static Result<std::unique_ptr<PayloadServer>> Start(FrameReader read_frame);
  ~PayloadServer();  // closes every connection and joins their threads
  PayloadServer(const PayloadServer&) = delete;
  PayloadServer& operator=(const PayloadServer&) = delete;

  uint16_t port() const { return port_; }

 private:
  struct Impl;
  PayloadServer(std::unique_ptr<Impl> impl, uint16_t port);
  std::unique_ptr<Impl> impl_;
  uint16_t port_;
};

Result<UniqueFd> ConnectPayload(uint16_t port);
Result<void> WritePayload(int fd, const PayloadHeader& header, std::span<const std::byte> bytes);
Result<PayloadHeader> ReadPayloadHeader(int fd);
Result<void> ReadPayloadBytes(int fd, std::span<std::byte> into);

}  // namespace tributary::dataplane
