// A loopback TCP proxy for tests that cuts the first connection after it has
// carried `cut_after` bytes towards the server: a network failure in the
// middle of an upload. Later connections pass through untouched.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <list>
#include <mutex>
#include <string>
#include <thread>

namespace tributary::testing {

class TcpProxy {
 public:
  TcpProxy(uint16_t server_port, uint64_t cut_after) : server_port_(server_port), cut_after_(cut_after) {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    bind(listener_, reinterpret_cast<sockaddr*>(&a), len);
    listen(listener_, 16);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }

  ~TcpProxy() {
    stop_ = true;
    acceptor_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : pumps_) t.join();
    for (int fd : fds_) close(fd);
    close(listener_);
  }

  std::string endpoint() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  bool cut() const { return cut_.load(); }

 private:
  void Accept() {
    while (!stop_) {
      pollfd p{listener_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      const int client = accept(listener_, nullptr, nullptr);
      const int server = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(server_port_);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a);
      const bool first = connections_++ == 0;
      std::lock_guard lock(mu_);
      fds_.push_back(client);
      fds_.push_back(server);
      pumps_.emplace_back([this, client, server, first] { Pump(client, server, first); });
      pumps_.emplace_back([this, client, server] { Pump(server, client, false); });
    }
  }

  void Pump(int from, int to, bool may_cut) {
    char buf[64 << 10];
    uint64_t carried = 0;
    for (;;) {
      const ssize_t n = recv(from, buf, sizeof buf, 0);
      if (n <= 0) break;
      if (may_cut && carried + static_cast<uint64_t>(n) > cut_after_) {
        // Exactly cut_after bytes get through, however the sender batched them.
        const auto rest = static_cast<size_t>(cut_after_ - carried);
        if (rest > 0) (void)send(to, buf, rest, MSG_NOSIGNAL);
        cut_ = true;
        break;
      }
      carried += static_cast<uint64_t>(n);
      if (send(to, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
    }
    shutdown(from, SHUT_RDWR);
    shutdown(to, SHUT_RDWR);
  }

  uint16_t server_port_;
  uint64_t cut_after_;
  uint16_t port_ = 0;
  int listener_ = -1;
  std::atomic<bool> stop_{false}, cut_{false};
  std::atomic<int> connections_{0};
  std::mutex mu_;
  std::list<int> fds_;
  std::list<std::thread> pumps_;
  std::thread acceptor_;
};

}  // namespace tributary::testing
