// zmq::poll that a signal does not end. cppzmq throws zmq::error_t for
// EINTR (a signal handler ran on this thread: SIGTERM's, a profiler's, a
// fuzzer's alarm), and the exception would end the process instead of one
// turn of the caller's loop (the fuzzers found it in the gateway and the
// controller). Header-only: for targets that link libzmq (core does not).
#pragma once

#include <cerrno>
#include <chrono>
#include <optional>
#include <zmq.hpp>

namespace tributary {

// The number of ready items, or nullopt when a signal interrupted the wait
// (every revents cleared: nothing is ready).
inline std::optional<int> PollUnlessInterrupted(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout) {
  try {
    return zmq::poll(items, count, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
    for (size_t i = 0; i < count; ++i) items[i].revents = 0;
    return std::nullopt;
  }
}

}  // namespace tributary
