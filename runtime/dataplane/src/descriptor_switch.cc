#include "tributary/dataplane/descriptor_switch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "registration.h"
#include "sockets.h"

namespace tributary::dataplane {
namespace {

using internal::OsError;

// epoll tags: kind in the top byte, id below.
enum Tag : uint64_t { kStop = 1, kTcpListener, kUnixListener, kRegistration, kData };
uint64_t Pack(Tag t, uint64_t id) { return (uint64_t{t} << 56) | id; }

bool SameAddress(const sockaddr_in& a, const sockaddr_in& b) {
  return a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr;
}

struct Endpoint {
  uint32_t fn = 0;
  UniqueFd data;          // the switch's end of the function's TCP connection
  UniqueFd registration;  // closing means the function is gone
  std::string buffer;     // bytes read from `data`, not yet a whole descriptor
};

}  // namespace

struct DescriptorSwitch::Impl {
  static constexpr uint64_t kPending = uint64_t{1} << 40;  // tag bit: registration in progress

  std::string name;
  std::unique_ptr<KernelRouter> kernel;
  SwitchCallbacks callbacks;
  UniqueFd epoll, stop, tcp, unix_listener;
  uint16_t port = 0;
  std::thread loop;

  mutable std::mutex mu;  // guards everything below
  std::unordered_map<uint32_t, Endpoint> endpoints;
  std::vector<std::pair<UniqueFd, sockaddr_in>> accepted;  // TCP, not yet registered
  std::unordered_map<uint64_t, UniqueFd> registering;      // Unix, not yet registered
  uint64_t next_registering = 1;
  std::unordered_map<uint32_t, uint32_t> routes;
  SwitchCounters counters;  // userspace relay's own counts (and reports in eBPF mode)

  void Watch(int fd, uint64_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = tag;
    epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev);
  }

  void Run() {
    epoll_event events[64];
    for (;;) {
      const int n = epoll_wait(epoll.get(), events, 64, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return;
      // Exits first: a function that is gone must not be relayed to.
      for (int pass = 0; pass < 2; ++pass) {
        for (int i = 0; i < n; ++i) {
          const Tag tag = static_cast<Tag>(events[i].data.u64 >> 56);
          const uint64_t id = events[i].data.u64 & ((uint64_t{1} << 56) - 1);
          const bool hangup = events[i].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR);
          if (pass == 0) {
            if (tag == kStop) return;
            if (tag == kRegistration && hangup) OnHangup(id);
            continue;
          }
          switch (tag) {
            case kTcpListener: AcceptData(); break;
            case kUnixListener: AcceptRegistration(); break;
            case kRegistration: if (!hangup) Register(id); break;
            case kData: OnData(static_cast<uint32_t>(id)); break;
            default: break;
          }
        }
      }
    }
  }

  void AcceptData() {
    for (;;) {
      sockaddr_in peer{};
      socklen_t len = sizeof peer;
      UniqueFd fd(accept4(tcp.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
      if (!fd) return;
      const int one = 1;
      setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard lock(mu);
      accepted.emplace_back(std::move(fd), peer);
    }
  }

  void AcceptRegistration() {
    for (;;) {
      UniqueFd fd(accept4(unix_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!fd) return;
      std::lock_guard lock(mu);
      const uint64_t id = next_registering++;
      Watch(fd.get(), Pack(kRegistration, id | kPending));
      registering.emplace(id, std::move(fd));
    }
  }

  static void Reply(int fd, const Result<void>& r) {
    internal::RegistrationReply reply;
    if (!r) {
      reply.code = static_cast<uint32_t>(r.error().code);
      std::strncpy(reply.reason, r.error().reason.c_str(), sizeof reply.reason - 1);
    }
    send(fd, &reply, sizeof reply, MSG_NOSIGNAL);
  }

  // A registration message on a connection still being registered. Ids of
  // such connections carry kPending; registered ones are function ids.
  void Register(uint64_t id) {
    if ((id & kPending) == 0) return;  // a registered function's socket: nothing to read
    const uint64_t conn = id & (kPending - 1);
    std::unique_lock lock(mu);
    auto it = registering.find(conn);
    if (it == registering.end()) return;
    UniqueFd reg = std::move(it->second);
    registering.erase(it);
    epoll_ctl(epoll.get(), EPOLL_CTL_DEL, reg.get(), nullptr);

    internal::RegistrationRequest req;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    iovec iov{&req, sizeof req};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t got = recvmsg(reg.get(), &msg, MSG_CMSG_CLOEXEC);
    UniqueFd theirs;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
        theirs.reset(fd);
      }
    }
    auto fail = [&](ErrorCode code, const std::string& why) { Reply(reg.get(), MakeError(code, why)); };
    if (got != static_cast<ssize_t>(sizeof req) || req.magic != internal::kRegistrationMagic || !theirs) {
      return fail(ErrorCode::kMalformedFrame, "registration needs a request and one socket");
    }
    if (req.version != internal::kRegistrationVersion) {
      return fail(ErrorCode::kUnsupportedVersion, "registration version " + std::to_string(req.version));
    }
    if (req.fn == TRB_NO_FUNCTION || req.fn >= TRB_MAX_FUNCTIONS) {
      return fail(ErrorCode::kInvalidArgument, "function id " + std::to_string(req.fn) + " out of range");
    }
    if (endpoints.count(req.fn) != 0) {
      return fail(ErrorCode::kInvalidArgument, "function id " + std::to_string(req.fn) + " is already registered");
    }
    // Pair the handed-over socket with the connection the switch accepted:
    // its local address is the accepted connection's peer address.
    sockaddr_in local{};
    socklen_t len = sizeof local;
    if (getsockname(theirs.get(), reinterpret_cast<sockaddr*>(&local), &len) != 0 || local.sin_family != AF_INET) {
      return fail(ErrorCode::kInvalidArgument, "the handed-over descriptor is not a TCP socket");
    }
    lock.unlock();
    AcceptData();  // the connection may not have been accepted yet
    lock.lock();
    auto match = std::find_if(accepted.begin(), accepted.end(),
                              [&](const auto& a) { return SameAddress(a.second, local); });
    if (match == accepted.end()) {
      return fail(ErrorCode::kInvalidArgument, "the socket is not connected to this switch");
    }
    if (kernel) {
      auto added = kernel->AddSocket(req.fn, theirs.get());
      if (!added) return fail(added.error().code, added.error().reason);
    }
    theirs.reset();  // the sockhash keeps the socket; the function's close removes it
    Endpoint e;
    e.fn = req.fn;
    e.data = std::move(match->first);
    accepted.erase(match);
    Watch(e.data.get(), Pack(kData, req.fn));
    Watch(reg.get(), Pack(kRegistration, req.fn));
    Reply(reg.get(), Ok());
    e.registration = std::move(reg);
    endpoints.emplace(req.fn, std::move(e));
  }

  void OnHangup(uint64_t id) {
    std::unique_lock lock(mu);
    if (id & kPending) {  // gone before registering
      auto p = registering.find(id & (kPending - 1));
      if (p != registering.end()) {
        epoll_ctl(epoll.get(), EPOLL_CTL_DEL, p->second.get(), nullptr);
        registering.erase(p);
      }
      return;
    }
    auto it = endpoints.find(static_cast<uint32_t>(id));
    if (it == endpoints.end()) return;
    const uint32_t fn = it->first;
    epoll_ctl(epoll.get(), EPOLL_CTL_DEL, it->second.data.get(), nullptr);
    epoll_ctl(epoll.get(), EPOLL_CTL_DEL, it->second.registration.get(), nullptr);
    // Deliver to the agent what the function's own socket had still sent.
    DrainLocked(it->second);
    endpoints.erase(it);
    if (kernel) (void)kernel->RemoveSocket(fn);  // usually gone already with the socket
    lock.unlock();
    if (callbacks.on_function_exit) callbacks.on_function_exit(fn);
  }

  void OnData(uint32_t fn) {
    std::unique_lock lock(mu);
    auto it = endpoints.find(fn);
    if (it == endpoints.end()) return;
    std::vector<Descriptor> reports = DrainLocked(it->second);
    lock.unlock();
    for (const Descriptor& d : reports) {
      if (callbacks.on_undeliverable) callbacks.on_undeliverable(d);
    }
  }

  // Reads what is available from a function's data socket and handles each
  // whole descriptor; returns those to report.
  std::vector<Descriptor> DrainLocked(Endpoint& e) {
    char chunk[64 * 256];
    for (;;) {
      const ssize_t n = recv(e.data.get(), chunk, sizeof chunk, MSG_DONTWAIT);
      if (n <= 0) break;
      e.buffer.append(chunk, static_cast<size_t>(n));
    }
    std::vector<Descriptor> reports;
    const uint32_t magic = TRB_DESCRIPTOR_MAGIC;
    const std::string_view magic_bytes(reinterpret_cast<const char*>(&magic), sizeof magic);
    size_t pos = 0;
    while (pos < e.buffer.size()) {
      const std::string_view rest = std::string_view(e.buffer).substr(pos);
      if (rest.substr(0, std::min(rest.size(), magic_bytes.size())) != magic_bytes.substr(0, std::min(rest.size(), magic_bytes.size()))) {
        // Out of step (a short or garbage write): skip to the next magic, or
        // to a tail that could still begin one. One malformed message counted.
        counters.malformed += 1;
        size_t next = e.buffer.find(magic_bytes, pos + 1);
        if (next == std::string::npos) {
          next = e.buffer.size();
          for (size_t k = std::min<size_t>(3, rest.size() - 1); k > 0; --k) {
            if (std::string_view(e.buffer).substr(e.buffer.size() - k) == magic_bytes.substr(0, k)) {
              next = e.buffer.size() - k;
              break;
            }
          }
        }
        pos = next;
        continue;
      }
      if (rest.size() < sizeof(Descriptor)) break;  // the rest has not arrived yet
      Descriptor d;
      std::memcpy(&d, rest.data(), sizeof d);
      pos += sizeof d;
      Handle(d, reports);
    }
    e.buffer.erase(0, pos);
    return reports;
  }

  // A route change applies to descriptors sent after it, as in the kernel,
  // where the lookup happens at send time: the relay first routes what was
  // already sent, under the old route.
  Result<void> ChangeRoute(uint32_t route_key, uint32_t fn) {
    std::vector<Descriptor> reports;
    {
      std::lock_guard lock(mu);
      if (kernel) {
        TRIBUTARY_TRY(fn == TRB_NO_FUNCTION ? kernel->RemoveRoute(route_key) : kernel->SetRoute(route_key, fn));
      } else {
        for (auto& [id, e] : endpoints) {
          std::vector<Descriptor> r = DrainLocked(e);
          reports.insert(reports.end(), r.begin(), r.end());
        }
      }
      if (fn == TRB_NO_FUNCTION) {
        routes.erase(route_key);
      } else {
        routes[route_key] = fn;
      }
    }
    for (const Descriptor& d : reports) {
      if (callbacks.on_undeliverable) callbacks.on_undeliverable(d);
    }
    return Ok();
  }

  void Handle(const Descriptor& d, std::vector<Descriptor>& reports) {
    const int kind = trb_classify(&d, sizeof d);
    if (kind == TRB_MALFORMED) {
      counters.malformed += 1;
      return;
    }
    uint32_t fn = d.dest_fn;
    if (kind == TRB_BY_ROUTE) {
      auto r = routes.find(d.route_key);
      if (r == routes.end()) {
        counters.unrouted += 1;
        reports.push_back(d);
        return;
      }
      fn = r->second;
    }
    auto dest = endpoints.find(fn);
    if (kernel || dest == endpoints.end()) {
      // In eBPF mode anything here is what the kernel could not deliver.
      counters.functions[fn].undelivered += 1;
      reports.push_back(d);
      return;
    }
    if (send(dest->second.data.get(), &d, sizeof d, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof d)) {
      counters.functions[fn].undelivered += 1;
      reports.push_back(d);
      return;
    }
    counters.functions[fn].messages += 1;
    counters.functions[fn].bytes += d.length;
  }
};

DescriptorSwitch::DescriptorSwitch(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<DescriptorSwitch>> DescriptorSwitch::Start(const std::string& name,
                                                                  std::unique_ptr<KernelRouter> kernel,
                                                                  SwitchCallbacks callbacks) {
  auto impl = std::make_unique<Impl>();
  impl->name = "tributary." + name + ".switch";
  impl->kernel = std::move(kernel);
  impl->callbacks = std::move(callbacks);
  impl->epoll.reset(epoll_create1(EPOLL_CLOEXEC));
  impl->stop.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->epoll || !impl->stop) return OsError("epoll/eventfd");

  impl->tcp.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (!impl->tcp || bind(impl->tcp.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(impl->tcp.get(), 1024) != 0 ||
      getsockname(impl->tcp.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return OsError("listen on loopback");
  }
  impl->port = ntohs(addr.sin_port);

  impl->unix_listener.reset(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_un ua{};
  ua.sun_family = AF_UNIX;
  if (impl->name.size() + 1 > sizeof ua.sun_path) return MakeError(ErrorCode::kConfig, "switch name too long");
  std::memcpy(ua.sun_path + 1, impl->name.data(), impl->name.size());
  const socklen_t ulen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + impl->name.size());
  if (!impl->unix_listener || bind(impl->unix_listener.get(), reinterpret_cast<sockaddr*>(&ua), ulen) != 0 ||
      listen(impl->unix_listener.get(), 1024) != 0) {
    return OsError("listen on @" + impl->name);
  }
  impl->Watch(impl->stop.get(), Pack(kStop, 0));
  impl->Watch(impl->tcp.get(), Pack(kTcpListener, 0));
  impl->Watch(impl->unix_listener.get(), Pack(kUnixListener, 0));
  Impl* raw = impl.get();
  impl->loop = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<DescriptorSwitch>(new DescriptorSwitch(std::move(impl)));
}

DescriptorSwitch::~DescriptorSwitch() {
  const uint64_t one = 1;
  (void)!write(impl_->stop.get(), &one, sizeof one);
  impl_->loop.join();
  std::lock_guard lock(impl_->mu);
  if (impl_->kernel) {
    for (const auto& [fn, e] : impl_->endpoints) (void)impl_->kernel->RemoveSocket(fn);
  }
}

const char* DescriptorSwitch::dataplane() const { return impl_->kernel ? "ebpf" : "userspace"; }

SwitchAddress DescriptorSwitch::address() const { return SwitchAddress{impl_->port, impl_->name}; }

Result<void> DescriptorSwitch::SetRoute(uint32_t route_key, uint32_t fn) {
  if (fn == TRB_NO_FUNCTION || fn >= TRB_MAX_FUNCTIONS) {
    return MakeError(ErrorCode::kInvalidArgument, "function id " + std::to_string(fn) + " out of range");
  }
  return impl_->ChangeRoute(route_key, fn);
}

Result<void> DescriptorSwitch::RemoveRoute(uint32_t route_key) { return impl_->ChangeRoute(route_key, TRB_NO_FUNCTION); }

Result<SwitchCounters> DescriptorSwitch::Counters() const {
  std::lock_guard lock(impl_->mu);
  SwitchCounters out = impl_->counters;
  if (!impl_->kernel) return out;
  // The kernel counts what it delivered; everything else reached the switch
  // and is in its own counts (malformed, unrouted, undelivered), once each.
  TRIBUTARY_ASSIGN_OR_RETURN(std::vector<trb_counters> k, impl_->kernel->ReadCounters());
  for (uint32_t fn = 1; fn < k.size(); ++fn) {
    if (k[fn].messages == 0 && k[fn].bytes == 0) continue;
    out.functions[fn].messages += k[fn].messages;
    out.functions[fn].bytes += k[fn].bytes;
  }
  return out;
}

}  // namespace tributary::dataplane
