// Socket helpers shared by the data plane's sources.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "tributary/core/error.h"
#include "tributary/core/unique_fd.h"

namespace tributary::dataplane::internal {

// kIo naming the failed call and errno.
inline Error OsError(const std::string& what) { return MakeError(ErrorCode::kIo, what + ": " + std::strerror(errno)); }

// A TCP connection to 127.0.0.1:port with Nagle off: descriptors and payload
// headers are small and must not wait.
inline Result<UniqueFd> ConnectLoopback(uint16_t port, const std::string& peer) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return OsError("socket");
  const int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return OsError("connect to " + peer);
  return fd;
}

}  // namespace tributary::dataplane::internal
