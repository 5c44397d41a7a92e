#include "dataplane_bench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <memory>
#include <ostream>
#include <thread>

#include "tributary/core/unique_fd.h"
#include "tributary/dataplane/descriptor_switch.h"

namespace tributary::bench {
namespace {

using Clock = std::chrono::steady_clock;
using dataplane::Descriptor;
using dataplane::FunctionLink;

struct Hop {
  double p50_us = 0, p99_us = 0, per_second = 0;
};

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// Ping-pong and a pipelined stream between two functions on one switch.
Result<Hop> DescriptorHop(dataplane::DescriptorSwitch& sw, uint64_t length, const DataplaneBenchOptions& o) {
  TRIBUTARY_ASSIGN_OR_RETURN(FunctionLink a, FunctionLink::Connect(sw.address(), 2));
  TRIBUTARY_ASSIGN_OR_RETURN(FunctionLink b, FunctionLink::Connect(sw.address(), 3));
  const dataplane::BlockAddress block{.offset = 4096, .length = length, .generation = 1};
  const Descriptor to_b =
      dataplane::MakePartial({.dest_fn = 3, .src_fn = 2, .task = 1, .round = 1, .weight = 1.0, .block = block});
  const Descriptor to_a =
      dataplane::MakePartial({.dest_fn = 2, .src_fn = 3, .task = 1, .round = 1, .weight = 1.0, .block = block});
  const uint32_t warmup = 500;
  std::thread echo([&] {
    for (uint64_t i = 0; i < warmup + o.round_trips; ++i) {
      auto d = b.Receive(std::chrono::seconds(10));
      if (!d || !d.value() || !b.Send(to_a)) return;
    }
    for (uint64_t i = 0; i < o.stream_messages; ++i) {
      auto d = b.Receive(std::chrono::seconds(10));
      if (!d || !d.value()) return;
    }
    (void)b.Send(to_a);  // stream done
  });
  std::vector<double> one_way;
  one_way.reserve(o.round_trips);
  Result<void> status = Ok();
  for (uint32_t i = 0; i < warmup + o.round_trips && status; ++i) {
    const auto t0 = Clock::now();
    status = a.Send(to_b);
    auto back = a.Receive(std::chrono::seconds(10));
    if (status && (!back || !back.value())) status = MakeError(ErrorCode::kIo, "no reply within 10 s");
    if (i >= warmup) one_way.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / 2);
  }
  const auto s0 = Clock::now();
  for (uint32_t i = 0; i < o.stream_messages && status; ++i) status = a.Send(to_b);
  auto done = a.Receive(std::chrono::seconds(30));
  const double stream_s = std::chrono::duration<double>(Clock::now() - s0).count();
  echo.join();
  TRIBUTARY_TRY(status);
  if (!done || !done.value()) return MakeError(ErrorCode::kIo, "stream did not complete");
  return Hop{Percentile(one_way, 0.5), Percentile(one_way, 0.99), o.stream_messages / stream_s};
}

Result<std::pair<UniqueFd, UniqueFd>> TcpPair() {
  UniqueFd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (!listener || bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener.get(), 1) != 0 || getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return MakeError(ErrorCode::kIo, "loopback listener");
  }
  UniqueFd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!client || connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return MakeError(ErrorCode::kIo, "loopback connect");
  }
  UniqueFd server(accept(listener.get(), nullptr, nullptr));
  const int one = 1;
  setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(server.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return std::make_pair(std::move(client), std::move(server));
}

// The serverful hop: the whole update crosses a TCP loopback connection into
// the receiver's memory; the receiver acknowledges with one byte.
Result<Hop> WholeUpdateHop(uint64_t size) {
  TRIBUTARY_ASSIGN_OR_RETURN(auto pair, TcpPair());
  const int reps = size <= 2'000'000 ? 200 : (size <= 50'000'000 ? 20 : 6);
  std::vector<char> send_buf(size, 1), recv_buf(size);
  std::thread receiver([&] {
    for (int r = 0; r < reps; ++r) {
      uint64_t got = 0;
      while (got < size) {
        const ssize_t n = recv(pair.second.get(), recv_buf.data() + got, size - got, 0);
        if (n <= 0) return;
        got += static_cast<uint64_t>(n);
      }
      const char ack = 1;
      if (send(pair.second.get(), &ack, 1, MSG_NOSIGNAL) != 1) return;
    }
  });
  std::vector<double> hops;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    uint64_t sent = 0;
    while (sent < size) {
      const ssize_t n = send(pair.first.get(), send_buf.data() + sent, size - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<uint64_t>(n);
    }
    char ack;
    if (recv(pair.first.get(), &ack, 1, MSG_WAITALL) != 1) break;
    hops.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  receiver.join();
  if (hops.size() != static_cast<size_t>(reps)) return MakeError(ErrorCode::kIo, "TCP baseline failed");
  const double p50 = Percentile(hops, 0.5);
  return Hop{p50, Percentile(hops, 0.99), 1e6 / p50};
}

std::string Fmt(double v, int prec = 1) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(prec) << v;
  return s.str();
}

}  // namespace

Result<void> RunDataplaneBench(const DataplaneBenchOptions& o, std::ostream& out) {
  TRIBUTARY_ASSIGN_OR_RETURN(dataplane::DataPlaneMode mode, dataplane::ParseDataPlaneMode(o.dataplane));
  struct Path {
    std::string name;
    std::unique_ptr<dataplane::DescriptorSwitch> sw;
  };
  std::vector<Path> paths;
  if (mode != dataplane::DataPlaneMode::kUserspace) {
    std::string why;
    auto kernel = dataplane::OpenKernelRouter(dataplane::DataPlaneMode::kEbpf, &why);
    if (kernel) {
      TRIBUTARY_ASSIGN_OR_RETURN(auto sw, dataplane::DescriptorSwitch::Start("bench-ebpf." + std::to_string(getpid()),
                                                                             std::move(kernel).value(), {}));
      paths.push_back({"eBPF sk_msg redirect", std::move(sw)});
      out << "data plane: " << why << "\n";
    } else if (mode == dataplane::DataPlaneMode::kEbpf) {
      return std::move(kernel).error();
    } else {
      out << "data plane: eBPF unavailable (" << kernel.error().reason << "), measuring the userspace relay only\n";
    }
  }
  if (mode != dataplane::DataPlaneMode::kEbpf) {
    TRIBUTARY_ASSIGN_OR_RETURN(auto sw, dataplane::DescriptorSwitch::Start("bench-user." + std::to_string(getpid()),
                                                                           nullptr, {}));
    paths.push_back({"userspace relay", std::move(sw)});
  }
  out << "\none hop, " << o.round_trips << " round trips (one-way = RTT/2) and " << o.stream_messages
      << " pipelined descriptors per path\n\n";
  out << std::left << std::setw(12) << "update" << std::setw(44) << "path" << std::right << std::setw(10)
      << "p50 us" << std::setw(10) << "p99 us" << std::setw(14) << "msgs/s" << std::setw(16) << "p50 vs eBPF"
      << "\n";
  for (uint64_t size : o.sizes) {
    std::vector<std::pair<std::string, Hop>> rows;
    for (Path& p : paths) {
      TRIBUTARY_ASSIGN_OR_RETURN(Hop h, DescriptorHop(*p.sw, size, o));
      rows.emplace_back(p.name + " (" + std::to_string(sizeof(Descriptor)) + " B descriptor)", h);
    }
    TRIBUTARY_ASSIGN_OR_RETURN(Hop whole, WholeUpdateHop(size));
    rows.emplace_back("serverful: whole update over TCP loopback", whole);
    const double base = rows.front().second.p50_us;
    for (const auto& [name, h] : rows) {
      out << std::left << std::setw(12) << (Fmt(size / 1e6) + " MB") << std::setw(44) << name << std::right
          << std::setw(10) << Fmt(h.p50_us) << std::setw(10) << Fmt(h.p99_us) << std::setw(14) << Fmt(h.per_second, 0)
          << std::setw(15) << Fmt(h.p50_us / base, 2) << "x\n";
    }
  }
  return Ok();
}

}  // namespace tributary::bench
