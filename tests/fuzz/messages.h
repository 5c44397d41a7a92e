// How a fuzz input becomes a sequence of ZeroMQ multipart messages, for the
// targets that drive a real socket server (the gateway, the controller).
//
// Input: records, each one message: a byte F (the message has 1 + F % 3
// frames), then per frame a little-endian u16 length and that many bytes
// (cut short at the end of the input). make_seeds.cc writes the same format.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

namespace tributary::fuzz {

using Message = std::vector<std::string>;  // frames

inline std::vector<Message> SplitMessages(const uint8_t* data, size_t size) {
  std::vector<Message> out;
  size_t at = 0;
  while (at < size) {
    const size_t frames = 1 + data[at++] % 3;
    Message m;
    for (size_t f = 0; f < frames && at < size; ++f) {
      size_t len = data[at++];
      if (at < size) len |= static_cast<size_t>(data[at++]) << 8;
      len = std::min(len, size - at);
      m.emplace_back(reinterpret_cast<const char*>(data + at), len);
      at += len;
    }
    if (!m.empty()) out.push_back(std::move(m));
  }
  return out;
}

inline void AppendMessage(std::string& input, const Message& m) {
  input.push_back(static_cast<char>(m.size() - 1));
  for (const std::string& frame : m) {
    input.push_back(static_cast<char>(frame.size() & 0xff));
    input.push_back(static_cast<char>(frame.size() >> 8));
    input += frame;
  }
}

// A blocking receive (up to the socket's rcvtimeo) that a signal, such as
// libFuzzer's timeout alarm, does not end. False: timed out.
inline bool Receive(zmq::socket_t& socket, std::vector<zmq::message_t>& parts) {
  for (;;) {
    try {
      parts.clear();
      return zmq::recv_multipart(socket, std::back_inserter(parts)).has_value();
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

}  // namespace tributary::fuzz
