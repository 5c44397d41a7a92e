#include "tributary/dataplane/payload_stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>

#include "sockets.h"

namespace tributary::dataplane {
namespace {

using internal::OsError;

Result<void> ReadExact(int fd, void* into, size_t n) {
  auto* p = static_cast<char*>(into);
  while (n > 0) {
    const ssize_t got = recv(fd, p, n, 0);
    if (got == 0) return MakeError(ErrorCode::kIo, "payload peer closed the connection");
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return OsError("recv payload");
    p += got;
    n -= static_cast<size_t>(got);
  }
  return Ok();
}

Result<void> WriteExact(int fd, const void* from, size_t n) {
  const auto* p = static_cast<const char*>(from);
  while (n > 0) {
    const ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0) return OsError("send payload");
    p += sent;
    n -= static_cast<size_t>(sent);
  }
  return Ok();
}

}  // namespace

struct PayloadServer::Impl {
  struct Connection {
    UniqueFd fd;
    std::thread reader;
  };
  UniqueFd listener;
  FrameReader read_frame;
  std::atomic<bool> stop{false};
  std::thread acceptor;
  std::mutex mu;
  std::list<Connection> connections;

  void Accept() {
    while (!stop.load()) {
      pollfd p{listener.get(), POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      UniqueFd fd(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!fd) continue;
      std::lock_guard lock(mu);
      Connection& c = connections.emplace_back(Connection{std::move(fd), {}});
      const int raw = c.fd.get();
      c.reader = std::thread([this, raw] {
        while (!stop.load() && read_frame(raw)) {
        }
      });
    }
  }
};

PayloadServer::PayloadServer(std::unique_ptr<Impl> impl, uint16_t port) : impl_(std::move(impl)), port_(port) {}

Result<std::unique_ptr<PayloadServer>> PayloadServer::Start(FrameReader read_frame) {
  auto impl = std::make_unique<Impl>();
  impl->read_frame = std::move(read_frame);
  impl->listener = UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!impl->listener) return OsError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(impl->listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return OsError("bind payload listener");
  if (listen(impl->listener.get(), 256) != 0) return OsError("listen");
  if (getsockname(impl->listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) return OsError("getsockname");
  Impl* self = impl.get();
  impl->acceptor = std::thread([self] { self->Accept(); });
  return std::unique_ptr<PayloadServer>(new PayloadServer(std::move(impl), ntohs(addr.sin_port)));
}

PayloadServer::~PayloadServer() {
  impl_->stop = true;
  impl_->acceptor.join();
  // Wakes readers blocked in recv; each sees its connection closed.
  for (auto& c : impl_->connections) shutdown(c.fd.get(), SHUT_RDWR);
  for (auto& c : impl_->connections) c.reader.join();
}

Result<UniqueFd> ConnectPayload(uint16_t port) { return internal::ConnectLoopback(port, "the payload peer"); }

Result<void> WritePayload(int fd, const PayloadHeader& header, std::span<const std::byte> bytes) {
  TRIBUTARY_TRY(WriteExact(fd, &header, sizeof header));
  return WriteExact(fd, bytes.data(), bytes.size());
}

Result<PayloadHeader> ReadPayloadHeader(int fd) {
  PayloadHeader h;
  TRIBUTARY_TRY(ReadExact(fd, &h, sizeof h));
  if (trb_classify(&h.descriptor, sizeof h.descriptor) == TRB_MALFORMED) return MakeError(ErrorCode::kMalformedFrame, "bad payload header");
  return h;
}

Result<void> ReadPayloadBytes(int fd, std::span<std::byte> into) { return ReadExact(fd, into.data(), into.size()); }

}  // namespace tributary::dataplane
