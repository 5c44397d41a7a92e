// A function's end of the data plane.
//
// Connect() opens a loopback TCP connection to the descriptor switch (the data
// socket) and registers it: the socket itself is handed to the switch over a
// Unix socket with SCM_RIGHTS (no ptrace, no pidfd_getfd), and the switch
// puts it in the sockhash under the function id. Descriptors sent with Send()
// are routed by the kernel (or relayed by the switch); descriptors for this
// function arrive on the same socket and are read with Receive(). Dropping
// the link (or the process dying) unregisters the function.
//
// Thread safety: one thread sends and one receives at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "tributary/core/error.h"
#include "tributary/core/unique_fd.h"
#include "tributary/dataplane/descriptor.h"

namespace tributary::dataplane {

struct SwitchAddress {
  uint16_t tcp_port = 0;       // on 127.0.0.1
  std::string registration;    // abstract Unix socket name (no leading NUL)
};

class FunctionLink {
 public:
  static Result<FunctionLink> Connect(const SwitchAddress& address, uint32_t fn,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Sends one descriptor (kIo if the socket fails).
  Result<void> Send(const Descriptor& d);
  // The next descriptor for this function; nullopt after `timeout` without one.
  Result<std::optional<Descriptor>> Receive(std::chrono::milliseconds timeout);

  uint32_t fn() const { return fn_; }
  int data_fd() const { return data_.get(); }

 private:
  FunctionLink(UniqueFd data, UniqueFd registration, uint32_t fn)
      : data_(std::move(data)), registration_(std::move(registration)), fn_(fn) {}

  UniqueFd data_;
  UniqueFd registration_;
  uint32_t fn_;
  Descriptor partial_{};
  size_t have_ = 0;
};

}  // namespace tributary::dataplane
