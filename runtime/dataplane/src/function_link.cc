#include "tributary/dataplane/function_link.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "sockets.h"
#include "registration.h"

namespace tributary::dataplane {
namespace {

using internal::OsError;

Result<UniqueFd> ConnectUnix(const std::string& name) {
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return OsError("socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof addr.sun_path) return MakeError(ErrorCode::kInvalidArgument, "registration name too long");
  std::memcpy(addr.sun_path + 1, name.data(), name.size());  // abstract namespace
  const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return OsError("connect to the registration socket");
  return fd;
}

}  // namespace

Result<FunctionLink> FunctionLink::Connect(const SwitchAddress& address, uint32_t fn,
                                           std::chrono::milliseconds timeout) {
  TRIBUTARY_ASSIGN_OR_RETURN(UniqueFd data, internal::ConnectLoopback(address.tcp_port, "the switch"));
  TRIBUTARY_ASSIGN_OR_RETURN(UniqueFd reg, ConnectUnix(address.registration));

  internal::RegistrationRequest req;
  req.fn = fn;
  iovec iov{&req, sizeof req};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  const int data_fd = data.get();
  std::memcpy(CMSG_DATA(c), &data_fd, sizeof data_fd);
  if (sendmsg(reg.get(), &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof req)) return OsError("send registration");

  pollfd p{reg.get(), POLLIN, 0};
  const int ready = poll(&p, 1, static_cast<int>(timeout.count()));
  if (ready == 0) return MakeError(ErrorCode::kIo, "the switch did not answer the registration");
  if (ready < 0) return OsError("poll");
  internal::RegistrationReply reply;
  if (recv(reg.get(), &reply, sizeof reply, 0) != static_cast<ssize_t>(sizeof reply) ||
      reply.magic != internal::kRegistrationMagic) {
    return MakeError(ErrorCode::kMalformedFrame, "bad registration reply");
  }
  if (reply.code != 0) {
    reply.reason[sizeof reply.reason - 1] = '\0';
    return MakeError(static_cast<ErrorCode>(reply.code), reply.reason);
  }
  return FunctionLink(std::move(data), std::move(reg), fn);
}

Result<void> FunctionLink::Send(const Descriptor& d) {
  const ssize_t n = send(data_.get(), &d, sizeof d, MSG_NOSIGNAL);
  if (n == static_cast<ssize_t>(sizeof d)) return Ok();
  if (n < 0) return OsError("send descriptor");
  return MakeError(ErrorCode::kIo, "short send of a descriptor");
}

Result<std::optional<Descriptor>> FunctionLink::Receive(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (have_ < sizeof partial_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{data_.get(), POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return OsError("poll");
    if (ready == 0) return std::optional<Descriptor>();
    const ssize_t n = recv(data_.get(), reinterpret_cast<char*>(&partial_) + have_, sizeof partial_ - have_, 0);
    if (n == 0) return MakeError(ErrorCode::kIo, "the switch closed the data socket");
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return OsError("recv descriptor");
    have_ += static_cast<size_t>(n);
  }
  have_ = 0;
  return std::optional<Descriptor>(partial_);
}

}  // namespace tributary::dataplane
