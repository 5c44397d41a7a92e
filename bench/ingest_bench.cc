#include "ingest_bench.h"

#include "layered_model.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <ostream>
#include <thread>

#include "tributary/client/gateway_session.h"
#include "tributary/gateway/gateway.h"
#include "tributary/keys/curve_keys.h"
#include "tributary/loadgen/loadgen.h"

namespace tributary::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kIoBytes = 4ull << 20;       // the reference's reads and writes
constexpr uint64_t kDownloadFlag = 1ull << 63;  // reference header: a download request

double CpuSecondsOfThisProcess() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

bool WriteAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (read(fd, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

// A server in a forked child, so that its CPU time is its own. The child
// builds the server with `make` (its endpoint and what keeps it alive), then
// obeys the parent's commands on a pipe: 'b' opens a CPU window, 'e' closes it
// and reports the CPU seconds, 'q' tears the server down and exits.
class ChildServer {
 public:
  using Made = std::pair<std::string, std::shared_ptr<void>>;

  static Result<std::unique_ptr<ChildServer>> Start(const std::function<Result<Made>()>& make) {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) return MakeError(ErrorCode::kIo, "pipe failed");
    // The child must not inherit (and write again) what is buffered for stdout.
    std::cout.flush();
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) return MakeError(ErrorCode::kIo, "fork failed");
    if (pid == 0) {
      close(down[1]);
      close(up[0]);
      _exit(Serve(make, down[0], up[1]));
    }
    close(down[0]);
    close(up[1]);
    auto child = std::unique_ptr<ChildServer>(new ChildServer(pid, down[1], up[0]));
    const std::string hello = ReadLine(child->from_child_);
    if (hello.rfind("ok ", 0) != 0) return MakeError(ErrorCode::kInternal, "bench server: " + hello);
    child->endpoint_ = hello.substr(3);
    return child;
  }

  ~ChildServer() {
    (void)!write(to_child_, "q", 1);
    waitpid(pid_, nullptr, 0);
    close(to_child_);
    close(from_child_);
  }

  const std::string& endpoint() const { return endpoint_; }
  void Begin() { (void)!write(to_child_, "b", 1); }
  Result<double> End() {
    (void)!write(to_child_, "e", 1);
    const std::string line = ReadLine(from_child_);
    try {
      return std::stod(line);
    } catch (const std::exception&) {
      return MakeError(ErrorCode::kInternal, "bench server did not report its CPU time");
    }
  }

 private:
  ChildServer(pid_t pid, int to, int from) : pid_(pid), to_child_(to), from_child_(from) {}

  static int Serve(const std::function<Result<Made>()>& make, int commands, int replies) {
    // The servers' start-up lines would land in the middle of the table.
    spdlog::set_level(spdlog::level::warn);
    auto made = make();
    const std::string hello = made ? "ok " + made.value().first + "\n" : "error " + made.error().ToString() + "\n";
    (void)!write(replies, hello.data(), hello.size());
    if (!made) return 1;
    double since = 0;
    char c;
    while (read(commands, &c, 1) == 1 && c != 'q') {
      if (c == 'b') since = CpuSecondsOfThisProcess();
      if (c == 'e') {
        const std::string line = std::to_string(CpuSecondsOfThisProcess() - since) + "\n";
        (void)!write(replies, line.data(), line.size());
      }
    }
    made.value().second.reset();
    return 0;
  }

  pid_t pid_;
  int to_child_, from_child_;
  std::string endpoint_;
};

std::string SegmentName(const char* what) {
  static std::atomic<int> made{0};
  return std::string("tributary.bench-ingest-") + what + "-" + std::to_string(getpid()) + "-" + std::to_string(made++);
}

// The payload every client sends (and the model served): finite, varied values.
std::vector<float> Values(uint64_t elements) {
  std::vector<float> v(elements);
  uint32_t x = 2463534242u;
  for (float& f : v) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    f = static_cast<float>(static_cast<int32_t>(x)) * 4.6e-12f;
  }
  return v;
}

// ---------------------------------------------------------------------------
// The reference: plain loopback TCP, one epoll thread.

class ReferenceServer {
 public:
  static Result<ChildServer::Made> Make(uint64_t segment_bytes, std::span<const float> model) {
    auto s = std::make_shared<ReferenceServer>();
    TRIBUTARY_ASSIGN_OR_RETURN(s->segment_, shm::Segment::Create({SegmentName("ref"), segment_bytes, 65536}));
    TRIBUTARY_ASSIGN_OR_RETURN(s->model_, s->segment_->Allocate(model.size_bytes(), {}));
    std::memcpy(s->model_.mutable_bytes().data(), model.data(), model.size_bytes());
    s->listen_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(s->listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(s->listen_, 256) != 0 ||
        getsockname(s->listen_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return MakeError(ErrorCode::kIo, std::string("reference server: ") + std::strerror(errno));
    }
    s->epoll_ = epoll_create1(0);
    s->stop_ = eventfd(0, 0);
    Watch(s->epoll_, s->listen_, EPOLLIN, EPOLL_CTL_ADD);
    Watch(s->epoll_, s->stop_, EPOLLIN, EPOLL_CTL_ADD);
    ReferenceServer* raw = s.get();
    s->thread_ = std::thread([raw] { raw->Run(); });
    return ChildServer::Made{std::to_string(ntohs(a.sin_port)), s};
  }

  ~ReferenceServer() {
    if (thread_.joinable()) {
      const uint64_t one = 1;
      (void)!write(stop_, &one, sizeof one);
      thread_.join();
    }
    for (auto& [fd, c] : connections_) close(fd);
    connections_.clear();
    model_ = {};
    for (int fd : {listen_, epoll_, stop_}) {
      if (fd >= 0) close(fd);
    }
  }

 private:
  struct Connection {
    uint64_t header = 0;
    size_t header_got = 0;
    uint64_t want = 0, got = 0;  // an upload's bytes
    shm::BlockRef block;
    uint64_t send_left = 0;      // a download's bytes still to write
    std::vector<std::byte> buffer;
  };

  static void Watch(int epoll, int fd, uint32_t events, int op) {
    epoll_event e{};
    e.events = events;
    e.data.fd = fd;
    epoll_ctl(epoll, op, fd, &e);
  }

  void Run() {
    epoll_event events[64];
    for (;;) {
      const int n = epoll_wait(epoll_, events, 64, -1);
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == stop_) return;
        if (fd == listen_) {
          for (int c; (c = accept4(listen_, nullptr, nullptr, SOCK_NONBLOCK)) >= 0;) {
            connections_[c].buffer.resize(kIoBytes);
            Watch(epoll_, c, EPOLLIN, EPOLL_CTL_ADD);
          }
          continue;
        }
        if (!(events[i].events & EPOLLOUT ? Write(fd, connections_.at(fd)) : Read(fd, connections_.at(fd)))) {
          close(fd);
          connections_.erase(fd);
        }
      }
    }
  }

  bool Read(int fd, Connection& c) {
    for (;;) {
      if (c.header_got < sizeof c.header) {
        const ssize_t r = recv(fd, reinterpret_cast<char*>(&c.header) + c.header_got, sizeof c.header - c.header_got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 && errno == EAGAIN;
        c.header_got += static_cast<size_t>(r);
        if (c.header_got < sizeof c.header) continue;
        if (c.header & kDownloadFlag) {
          c.header_got = 0;
          c.send_left = model_.bytes().size();
          Watch(epoll_, fd, EPOLLOUT, EPOLL_CTL_MOD);
          return true;
        }
        c.want = c.header;
        c.got = 0;
        auto block = segment_->Allocate(c.want, {});
        if (!block) {
          // The client only sees its connection close: say why here.
          std::fprintf(stderr, "reference server: %s\n", block.error().ToString().c_str());
          return false;
        }
        c.block = std::move(block).value();
      }
      const ssize_t r = recv(fd, c.buffer.data(), std::min<uint64_t>(kIoBytes, c.want - c.got), 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return r < 0 && errno == EAGAIN;
      std::memcpy(c.block.mutable_bytes().data() + c.got, c.buffer.data(), static_cast<size_t>(r));
      c.got += static_cast<uint64_t>(r);
      if (c.got == c.want) {
        c.block = {};
        c.header_got = 0;
        const char ack = 1;
        if (send(fd, &ack, 1, MSG_NOSIGNAL) != 1) return false;
      }
    }
  }

  bool Write(int fd, Connection& c) {
    const auto bytes = model_.bytes();
    while (c.send_left > 0) {
      const uint64_t at = bytes.size() - c.send_left;
      const ssize_t w = send(fd, bytes.data() + at, std::min(kIoBytes, c.send_left), MSG_NOSIGNAL);
      if (w < 0) return errno == EAGAIN;
      c.send_left -= static_cast<uint64_t>(w);
    }
    Watch(epoll_, fd, EPOLLIN, EPOLL_CTL_MOD);
    return true;
  }

  std::unique_ptr<shm::Segment> segment_;
  shm::BlockRef model_;
  int listen_ = -1, epoll_ = -1, stop_ = -1;
  std::map<int, Connection> connections_;
  std::thread thread_;
};

int ConnectLoopback(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// ---------------------------------------------------------------------------
// The gateway, in the same kind of child.

class DroppingSink : public gateway::UpdateSink {
 public:
  Result<void> Accept(const gateway::AcceptedUpdate&, shm::BlockRef) override { return Ok(); }
};

struct Curve {
  keys::CurveKeyPair gateway, client;
  std::filesystem::path allow_list;
};

constexpr const char* kJob = "bench";
constexpr uint64_t kModelVersion = 1;

std::string ClientId(uint64_t i) { return "c-" + std::to_string(i); }

class GatewayServer {
 public:
  static Result<ChildServer::Made> Make(uint64_t segment_bytes, const agg::ModelSpec& spec, std::span<const float> model,
                                        uint64_t clients, const Curve* curve) {
    auto s = std::make_shared<GatewayServer>();
    TRIBUTARY_ASSIGN_OR_RETURN(s->segment_, shm::Segment::Create({SegmentName("gw"), segment_bytes, 65536}));
    gateway::RoundSpec round;
    round.job = kJob;
    round.round = kModelVersion + 1;
    round.model_version = kModelVersion;
    round.model = spec;
    for (uint64_t i = 0; i < clients; ++i) round.selected[ClientId(i)] = static_cast<uint32_t>(i);
    s->rounds_.OpenRound(std::move(round));
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef block, s->segment_->Allocate(model.size_bytes(), {}));
    std::memcpy(block.mutable_bytes().data(), model.data(), model.size_bytes());
    const uint64_t xxh3 = protocol::PayloadHasher::Of(block.bytes());
    s->models_.Publish(kJob, gateway::PublishedModel{kModelVersion, spec, xxh3, std::move(block)});
    gateway::GatewayOptions options;
    if (curve) options.security = {curve->gateway.secret_key, curve->allow_list.string()};
    TRIBUTARY_ASSIGN_OR_RETURN(s->gateway_, gateway::Gateway::Start(options, *s->segment_, s->rounds_, s->sink_, s->models_));
    return ChildServer::Made{s->gateway_->endpoint(), s};
  }

  ~GatewayServer() {
    gateway_.reset();
    models_.Clear();
  }

 private:
  std::unique_ptr<shm::Segment> segment_;
  gateway::RoundBook rounds_;
  DroppingSink sink_;
  gateway::ModelStore models_;
  std::unique_ptr<gateway::Gateway> gateway_;
};

// ---------------------------------------------------------------------------
// Measurements.

struct Figures {
  double gb_per_s = 0;
  double cpu_s_per_gb = 0;
};

// Runs `work(t)` on `threads` threads released together; the wall time of all.
Result<double> Timed(uint32_t threads, const std::function<Result<void>(uint32_t)>& work) {
  std::barrier start(static_cast<std::ptrdiff_t>(threads) + 1);
  std::mutex mu;
  std::optional<Error> failure;
  std::vector<std::thread> pool;
  for (uint32_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      start.arrive_and_wait();
      auto r = work(t);
      if (!r) {
        std::lock_guard lock(mu);
        failure = r.error();
      }
    });
  }
  start.arrive_and_wait();
  const auto t0 = Clock::now();
  for (auto& t : pool) t.join();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (failure) return *failure;
  return s;
}

Result<Figures> Measure(ChildServer& server, uint32_t threads, uint64_t bytes,
                        const std::function<Result<void>(uint32_t)>& work) {
  server.Begin();
  TRIBUTARY_ASSIGN_OR_RETURN(const double seconds, Timed(threads, work));
  TRIBUTARY_ASSIGN_OR_RETURN(const double cpu, server.End());
  const double gb = static_cast<double>(bytes) / 1e9;
  return Figures{gb / seconds, cpu / gb};
}

struct Row {
  uint64_t size = 0;
  uint32_t clients = 0;
  uint64_t transfers = 0;
  Figures reference, gateway;
  std::optional<Figures> curve;
  std::optional<Figures> beside_idle;  // the gateway with idle connections held open
};

struct Config {
  agg::ModelSpec spec;
  std::vector<float> values;
  uint32_t clients;
  uint64_t transfers;  // updates uploaded (and models downloaded), a multiple of `clients`
  uint64_t segment_bytes;
};

std::span<const std::byte> Bytes(const std::vector<float>& v) { return std::as_bytes(std::span(v)); }

Result<Figures> ReferenceUploads(ChildServer& server, const Config& c) {
  const auto port = static_cast<uint16_t>(std::stoi(server.endpoint()));
  const auto payload = Bytes(c.values);
  return Measure(server, c.clients, payload.size() * c.transfers, [&](uint32_t) -> Result<void> {
    const int fd = ConnectLoopback(port);
    if (fd < 0) return MakeError(ErrorCode::kIo, "cannot connect to the reference server");
    bool ok = true;
    for (uint64_t i = 0; ok && i < c.transfers / c.clients; ++i) {
      const uint64_t header = payload.size();
      ok = WriteAll(fd, &header, sizeof header);
      for (uint64_t at = 0; ok && at < payload.size(); at += kIoBytes) {
        ok = WriteAll(fd, payload.data() + at, std::min<uint64_t>(kIoBytes, payload.size() - at));
      }
      char ack;
      ok = ok && ReadAll(fd, &ack, 1);
    }
    close(fd);
    if (!ok) return MakeError(ErrorCode::kIo, "reference upload failed");
    return Ok();
  });
}

Result<Figures> ReferenceDownloads(ChildServer& server, const Config& c) {
  const auto port = static_cast<uint16_t>(std::stoi(server.endpoint()));
  const uint64_t size = Bytes(c.values).size();
  return Measure(server, c.clients, size * c.transfers, [&](uint32_t) -> Result<void> {
    const int fd = ConnectLoopback(port);
    if (fd < 0) return MakeError(ErrorCode::kIo, "cannot connect to the reference server");
    std::vector<std::byte> into(size);  // the client's own memory
    bool ok = true;
    for (uint64_t i = 0; ok && i < c.transfers / c.clients; ++i) {
      const uint64_t header = kDownloadFlag;
      ok = WriteAll(fd, &header, sizeof header) && ReadAll(fd, into.data(), size);
    }
    close(fd);
    if (!ok) return MakeError(ErrorCode::kIo, "reference download failed");
    return Ok();
  });
}

client::SessionOptions SessionFor(const ChildServer& server, uint64_t client, const Curve* curve) {
  client::SessionOptions o;
  o.endpoint = server.endpoint();
  o.client_id = ClientId(client);
  o.request_timeout = std::chrono::seconds(60);
  if (curve) o.curve = client::CurveOptions{curve->gateway.public_key, curve->client};
  return o;
}

Result<Figures> GatewayUploads(ChildServer& server, const Config& c, const Curve* curve) {
  const auto payload = Bytes(c.values);
  return Measure(server, c.clients, payload.size() * c.transfers, [&](uint32_t t) -> Result<void> {
    TRIBUTARY_ASSIGN_OR_RETURN(auto session, client::GatewaySession::Connect(SessionFor(server, t, curve)));
    for (uint64_t i = t; i < c.transfers; i += c.clients) {
      session->set_client_id(ClientId(i));
      const client::UpdateFrame u{kJob, kModelVersion + 1, kModelVersion, 1, c.spec.tensors(), payload, {}};
      TRIBUTARY_TRY(session->Upload(u));
    }
    return Ok();
  });
}

Result<Figures> GatewayDownloads(ChildServer& server, const Config& c, const Curve* curve) {
  const uint64_t size = Bytes(c.values).size();
  return Measure(server, c.clients, size * c.transfers, [&](uint32_t t) -> Result<void> {
    TRIBUTARY_ASSIGN_OR_RETURN(auto session, client::GatewaySession::Connect(SessionFor(server, t, curve)));
    client::GlobalModel m;  // one buffer, like the reference's client
    for (uint64_t i = 0; i < c.transfers / c.clients; ++i) {
      TRIBUTARY_TRY(session->DownloadModel(kJob, m));
      if (m.payload.size() != size) return MakeError(ErrorCode::kInternal, "downloaded a model of the wrong size");
    }
    return Ok();
  });
}

// `count` clients that connect, ask for a task once (none: they are not
// selected) and then hold their connections, quiet, until destroyed.
class IdleClients {
 public:
  static Result<IdleClients> Connect(const ChildServer& server, uint32_t count) {
    IdleClients idle;
    TRIBUTARY_ASSIGN_OR_RETURN(idle.context_, client::SharedContext::Create(1, static_cast<int>(4 * count + 1024)));
    for (uint32_t i = 0; i < count; ++i) {
      client::SessionOptions o;
      o.endpoint = server.endpoint();
      o.client_id = "idle-" + std::to_string(i);
      o.context = idle.context_;
      TRIBUTARY_ASSIGN_OR_RETURN(auto session, client::GatewaySession::Connect(o));
      TRIBUTARY_ASSIGN_OR_RETURN(const auto poll, session->RequestTask());
      if (poll.task) return MakeError(ErrorCode::kInternal, "an idle client was given a task");
      idle.sessions_.push_back(std::move(session));
    }
    return idle;
  }

 private:
  std::shared_ptr<client::SharedContext> context_;
  std::vector<std::unique_ptr<client::GatewaySession>> sessions_;
};

Figures Best(const Figures& a, const Figures& b) { return a.gb_per_s >= b.gb_per_s ? a : b; }

using Server = std::unique_ptr<ChildServer>;

Result<Server> StartReference(const Config& c) {
  return ChildServer::Start([&] { return ReferenceServer::Make(c.segment_bytes, c.values); });
}

Result<Server> StartGateway(const Config& c, const Curve* curve) {
  return ChildServer::Start([&] { return GatewayServer::Make(c.segment_bytes, c.spec, c.values, c.transfers, curve); });
}

// The gateway's uploads without and with `idle` connections held open,
// alternating, twice each: the best of each.
Result<void> MeasureBesideIdle(const Config& c, uint32_t idle, Row& row) {
  for (int pass = 0; pass < 2; ++pass) {
    {
      TRIBUTARY_ASSIGN_OR_RETURN(Server gw, StartGateway(c, nullptr));
      TRIBUTARY_ASSIGN_OR_RETURN(const Figures alone, GatewayUploads(*gw, c, nullptr));
      row.gateway = pass == 0 ? alone : Best(row.gateway, alone);
    }
    TRIBUTARY_ASSIGN_OR_RETURN(Server gw, StartGateway(c, nullptr));
    TRIBUTARY_ASSIGN_OR_RETURN(IdleClients held, IdleClients::Connect(*gw, idle));
    TRIBUTARY_ASSIGN_OR_RETURN(const Figures beside, GatewayUploads(*gw, c, nullptr));
    row.beside_idle = row.beside_idle ? Best(*row.beside_idle, beside) : beside;
  }
  return Ok();
}

// One direction of one configuration: reference, gateway and (optionally) CURVE.
Result<Row> MeasureRow(const Config& c, const Curve* curve, bool downloads, uint32_t idle) {
  Row row{Bytes(c.values).size(), c.clients, c.transfers, {}, {}, {}};
  {
    TRIBUTARY_ASSIGN_OR_RETURN(Server ref, StartReference(c));
    TRIBUTARY_ASSIGN_OR_RETURN(row.reference, downloads ? ReferenceDownloads(*ref, c) : ReferenceUploads(*ref, c));
  }
  if (idle > 0 && !downloads) {
    TRIBUTARY_TRY(MeasureBesideIdle(c, idle, row));
  } else {
    TRIBUTARY_ASSIGN_OR_RETURN(Server gw, StartGateway(c, nullptr));
    TRIBUTARY_ASSIGN_OR_RETURN(row.gateway, downloads ? GatewayDownloads(*gw, c, nullptr) : GatewayUploads(*gw, c, nullptr));
  }
  if (curve) {
    TRIBUTARY_ASSIGN_OR_RETURN(Server gw, StartGateway(c, curve));
    TRIBUTARY_ASSIGN_OR_RETURN(row.curve, downloads ? GatewayDownloads(*gw, c, curve) : GatewayUploads(*gw, c, curve));
  }
  return row;
}

Result<Curve> MakeCurve() {
  Curve c;
  TRIBUTARY_ASSIGN_OR_RETURN(c.gateway, keys::GenerateKeyPair());
  TRIBUTARY_ASSIGN_OR_RETURN(c.client, keys::GenerateKeyPair());
  c.allow_list = std::filesystem::temp_directory_path() / ("tributary-bench-ingest-" + std::to_string(getpid()) + ".allow");
  std::ofstream(c.allow_list) << "c-* " << c.client.public_key << "\n";
  return c;
}

nlohmann::json ToJson(const Figures& f) { return {{"gb_per_s", f.gb_per_s}, {"node_cpu_s_per_gb", f.cpu_s_per_gb}}; }

void PrintHeader(std::ostream& out, const char* direction, bool curve, uint32_t idle) {
  out << direction << "\n"
      << "  size MB  clients  transfers | reference GB/s  CPU s/GB | gateway GB/s  CPU s/GB | gateway/reference GB/s  CPU"
      << (curve ? " | curve GB/s  CPU s/GB" : "");
  if (idle > 0) out << " | beside " << idle << " idle GB/s  CPU s/GB  /alone";
  out << "\n";
}

void PrintRow(std::ostream& out, const Row& r) {
  out << std::fixed << std::setprecision(1) << std::setw(9) << r.size / 1e6 << std::setw(9) << r.clients
      << std::setw(11) << r.transfers << " |" << std::setprecision(2) << std::setw(15) << r.reference.gb_per_s
      << std::setprecision(3) << std::setw(10) << r.reference.cpu_s_per_gb << " |" << std::setprecision(2)
      << std::setw(13) << r.gateway.gb_per_s << std::setprecision(3) << std::setw(10) << r.gateway.cpu_s_per_gb
      << " |" << std::setprecision(2) << std::setw(22) << r.gateway.gb_per_s / r.reference.gb_per_s << "x"
      << std::setw(5) << r.gateway.cpu_s_per_gb / r.reference.cpu_s_per_gb << "x";
  if (r.curve) {
    out << " |" << std::setprecision(2) << std::setw(11) << r.curve->gb_per_s << std::setprecision(3) << std::setw(10)
        << r.curve->cpu_s_per_gb;
  }
  if (r.beside_idle) {
    out << " |" << std::setprecision(2) << std::setw(21) << r.beside_idle->gb_per_s << std::setprecision(3)
        << std::setw(10) << r.beside_idle->cpu_s_per_gb << std::setprecision(2) << std::setw(7)
        << r.beside_idle->gb_per_s / r.gateway.gb_per_s << "x";
  }
  out << "\n";
}

}  // namespace

Result<void> RunIngestBench(const IngestBenchOptions& o, std::ostream& out) {
  std::optional<Curve> curve;
  if (o.curve) {
    TRIBUTARY_ASSIGN_OR_RETURN(curve, MakeCurve());
  }
  const Curve* curve_or_null = curve ? &*curve : nullptr;
  // About four descriptors per client, for the idle clients and the
  // uploaders, here and (inherited) in the gateway's child.
  if (o.idle > 0) TRIBUTARY_TRY(loadgen::RaiseDescriptorLimit(o.idle + 256));
  nlohmann::json results = nlohmann::json::array();
  for (const bool downloads : {false, true}) {
    if (downloads && !o.downloads) break;
    if (!o.json) PrintHeader(out, downloads ? "downloads of the model" : "uploads of updates", o.curve, downloads ? 0 : o.idle);
    for (const uint64_t size : o.sizes) {
      if (size < 4) return MakeError(ErrorCode::kInvalidArgument, "an update is at least one f32");
      Config c{LayeredSpec(size / 4), Values(size / 4), 0, 0, 0};
      for (const uint32_t clients : o.clients) {
        c.clients = clients;
        const uint64_t bytes = c.spec.payload_bytes();
        c.transfers = std::max<uint64_t>(1, (o.bytes_per_run + bytes * clients - 1) / (bytes * clients)) * clients;
        // Every client's update in flight at once, the model, allocator slack.
        c.segment_bytes = (clients + 2) * (bytes + 4096) + (64ull << 20);
        TRIBUTARY_ASSIGN_OR_RETURN(Row row, MeasureRow(c, curve_or_null, downloads, o.idle));
        if (!o.json) PrintRow(out, row);
        nlohmann::json j{{"direction", downloads ? "download" : "upload"},
                         {"bytes", row.size},
                         {"clients", row.clients},
                         {"transfers", row.transfers},
                         {"reference", ToJson(row.reference)},
                         {"gateway", ToJson(row.gateway)},
                         {"ratio_gb_per_s", row.gateway.gb_per_s / row.reference.gb_per_s},
                         {"ratio_cpu_per_gb", row.gateway.cpu_s_per_gb / row.reference.cpu_s_per_gb}};
        if (row.curve) j["curve"] = ToJson(*row.curve);
        if (row.beside_idle) {
          j["beside_idle"] = ToJson(*row.beside_idle);
          j["idle_connections"] = o.idle;
          j["ratio_beside_idle_gb_per_s"] = row.beside_idle->gb_per_s / row.gateway.gb_per_s;
        }
        results.push_back(std::move(j));
      }
    }
  }
  if (curve) std::filesystem::remove(curve->allow_list);
  if (o.json) out << nlohmann::json{{"bench", "ingest"}, {"results", results}}.dump(2) << "\n";
  return Ok();
}

}  // namespace tributary::bench
