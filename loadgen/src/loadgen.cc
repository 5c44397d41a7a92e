#include "tributary/loadgen/loadgen.h"

#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "tributary/client/gateway_session.h"
#include "tributary/keys/curve_keys.h"

namespace tributary::loadgen {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t Hash(const std::string& client, uint64_t round) {
  const uint64_t seed = XXH3_64bits(client.data(), client.size());
  return XXH3_64bits_withSeed(&round, sizeof(round), seed);
}

LatencySummary Summarize(std::vector<double> ms) {
  LatencySummary s;
  s.count = ms.size();
  if (ms.empty()) return s;
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * static_cast<double>(ms.size())))]; };
  s.p50_ms = at(0.50);
  s.p99_ms = at(0.99);
  s.max_ms = ms.back();
  return s;
}

// An update made and waiting for its training time to pass.
struct Trained {
  client::Task task;
  std::vector<agg::TensorSpec> tensors;
  std::vector<float> values;
};

struct SimClient {
  std::string id;
  size_t gateway = 0;
  std::unique_ptr<client::GatewaySession> session;
  Clock::time_point due;
  uint32_t delivered = 0;
  std::optional<Trained> trained;  // set: upload at `due`
};

struct Shared {
  std::mutex mu;
  LoadgenReport report;
  std::vector<double> task_ms, download_ms, upload_ms;
};

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void Reject(Shared& shared, const Error& e) {
  std::lock_guard lock(shared.mu);
  shared.report.rejected[std::string(ErrorCodeName(e.code))] += 1;
}

// A selected client: download the round's model and make its update (the
// upload waits for the training time, without holding the worker).
void Train(SimClient& c, const client::Task& task, std::chrono::milliseconds train_time, Shared& shared) {
  const auto t0 = Clock::now();
  c.due = t0 + std::chrono::milliseconds(200);  // a failed download is not retried at once
  auto model = c.session->DownloadModel(task.job);
  const auto t1 = Clock::now();
  if (!model) return Reject(shared, model.error());
  if (model.value().version != task.model_version) {
    return Reject(shared, MakeError(ErrorCode::kReplay, "the gateway serves another model version than the task's"));
  }
  {
    std::lock_guard lock(shared.mu);
    shared.download_ms.push_back(Ms(t1 - t0));
  }
  const auto& payload = model.value().payload;
  std::vector<float> values(payload.size() / 4);
  std::memcpy(values.data(), payload.data(), values.size() * 4);
  c.trained = Trained{task, model.value().tensors, FakeUpdate(c.id, task.round, values)};
  for (auto& t : c.trained->tensors) t.dtype = agg::DType::kF32;
  c.due = Clock::now() + train_time;
}

void Upload(SimClient& c, Shared& shared) {
  Trained t = std::move(*c.trained);
  c.trained.reset();
  client::UpdateFrame frame;
  frame.job = t.task.job;
  frame.round = t.task.round;
  frame.model_version = t.task.model_version;
  frame.sample_count = FakeSampleCount(c.id);
  frame.tensors = t.tensors;
  frame.payload = std::as_bytes(std::span(t.values));
  const auto t0 = Clock::now();
  auto sent = c.session->Upload(frame);
  const auto t1 = Clock::now();
  if (!sent) return Reject(shared, sent.error());
  std::lock_guard lock(shared.mu);
  shared.upload_ms.push_back(Ms(t1 - t0));
  shared.report.accepted += 1;
  c.delivered += 1;
}

}  // namespace

std::string ClientId(const std::string& prefix, uint32_t i) {
  char digits[16];
  std::snprintf(digits, sizeof(digits), "%05u", i);
  return prefix + digits;
}

std::vector<float> FakeUpdate(const std::string& client, uint64_t round, std::span<const float> model) {
  const uint64_t h = Hash(client, round);
  std::vector<float> out(model.size());
  for (size_t i = 0; i < model.size(); ++i) {
    const uint64_t r = (h + i * 0x9E3779B97F4A7C15ull) >> 40;  // 24 bits
    out[i] = model[i] + (static_cast<float>(r % 2001) - 1000.0f) * 1e-5f;
  }
  return out;
}

uint64_t FakeSampleCount(const std::string& client) { return 1 + XXH3_64bits(client.data(), client.size()) % 64; }

Result<void> RaiseDescriptorLimit(uint32_t clients) {
  const rlim_t needed = 4ull * clients + 256;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return MakeError(ErrorCode::kIo, "getrlimit(RLIMIT_NOFILE) failed");
  if (limit.rlim_cur >= needed) return Ok();
  if (limit.rlim_max < needed) {
    return MakeError(ErrorCode::kInvalidArgument,
                     std::to_string(clients) + " clients need about " + std::to_string(needed) +
                         " open descriptors; this process may have " + std::to_string(limit.rlim_max) +
                         " (raise the hard limit: ulimit -Hn, or LimitNOFILE in a unit)");
  }
  limit.rlim_cur = needed;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return MakeError(ErrorCode::kIo, "setrlimit(RLIMIT_NOFILE) failed");
  return Ok();
}

Result<LoadgenReport> RunLoadgen(const LoadgenOptions& options, const std::atomic<bool>* stop) {
  if (options.gateways.empty()) return MakeError(ErrorCode::kInvalidArgument, "loadgen needs at least one gateway");
  if (options.clients == 0 || options.concurrency == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "loadgen needs clients and concurrency above 0");
  }
  TRIBUTARY_TRY(RaiseDescriptorLimit(options.clients));
  TRIBUTARY_ASSIGN_OR_RETURN(
      auto context, client::SharedContext::Create(static_cast<int>(std::max(options.io_threads, 1u)),
                                                  static_cast<int>(std::min<uint64_t>(4ull * options.clients + 1024, 1u << 30))));
  std::vector<SimClient> clients(options.clients);
  for (uint32_t i = 0; i < options.clients; ++i) {
    SimClient& c = clients[i];
    c.id = ClientId(options.id_prefix, options.first_client + i);
    c.gateway = i % options.gateways.size();
    client::SessionOptions so;
    so.endpoint = options.gateways[c.gateway];
    so.client_id = c.id;
    so.context = context;
    // Short: a worker serves many clients, and one gateway out of reach must
    // not hold the others back for long.
    so.request_timeout = std::chrono::milliseconds(2'000);
    so.retry.attempts = 2;
    if (!options.gateway_public_key.empty()) {
      TRIBUTARY_ASSIGN_OR_RETURN(keys::CurveKeyPair pair,
                                 keys::LoadKeyPair(!options.client_key_file.empty()
                                                       ? options.client_key_file
                                                       : options.client_keys_dir + "/" + c.id + ".key"));
      so.curve = client::CurveOptions{options.gateway_public_key, pair};
    }
    TRIBUTARY_ASSIGN_OR_RETURN(c.session, client::GatewaySession::Connect(so));
  }
  Shared shared;
  const auto start = Clock::now();
  const auto end = options.duration.count() > 0 ? start + options.duration : Clock::time_point::max();
  auto stopped = [&] { return (stop && stop->load()) || Clock::now() >= end; };
  const uint32_t workers = std::min(options.concurrency, options.clients);
  std::vector<std::thread> threads;
  // Each worker serves the clients of one gateway (of several, with fewer
  // workers than gateways), so that a gateway out of reach stalls only its
  // own clients.
  const size_t gateways = options.gateways.size();
  std::vector<std::vector<SimClient*>> mine(workers);
  for (size_t g = 0; g < gateways; ++g) {
    std::vector<uint32_t> own;  // the workers of gateway g
    for (uint32_t w = 0; w < workers; ++w) {
      if (workers >= gateways ? w % gateways == g : g % workers == w) own.push_back(w);
    }
    std::vector<SimClient*> group;
    for (SimClient& c : clients) {
      if (c.gateway == g) group.push_back(&c);
    }
    for (size_t k = 0; k < group.size(); ++k) mine[own[k * own.size() / group.size()]].push_back(group[k]);
  }
  for (uint32_t w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      while (!stopped()) {
        bool active = false;
        auto next = Clock::now() + std::chrono::milliseconds(200);
        for (SimClient* c : mine[w]) {
          if (stopped()) break;
          if (options.rounds > 0 && c->delivered >= options.rounds) continue;
          active = true;
          if (Clock::now() < c->due) {
            next = std::min(next, c->due);
            continue;
          }
          if (c->trained) {
            Upload(*c, shared);
            c->due = Clock::now();
            continue;
          }
          const auto asked = Clock::now();
          auto poll = c->session->RequestTask();
          {
            std::lock_guard lock(shared.mu);
            shared.report.task_requests += 1;
            shared.task_ms.push_back(Ms(Clock::now() - asked));
            if (poll && poll.value().task) shared.report.tasks += 1;
            if (!poll) shared.report.rejected[std::string(ErrorCodeName(poll.error().code))] += 1;
          }
          if (!poll) {
            c->due = Clock::now() + std::chrono::milliseconds(500);
          } else if (poll.value().task) {
            Train(*c, *poll.value().task, options.train_time, shared);
          } else {
            c->due = Clock::now() + std::max(poll.value().retry_after, std::chrono::milliseconds(10));
          }
          next = std::min(next, c->due);
        }
        if (!active) return;
        std::this_thread::sleep_until(std::min(next, end));
      }
    });
  }
  for (auto& t : threads) t.join();
  LoadgenReport r = std::move(shared.report);
  r.task = Summarize(std::move(shared.task_ms));
  r.download = Summarize(std::move(shared.download_ms));
  r.upload = Summarize(std::move(shared.upload_ms));
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return r;
}

void PrintReport(const LoadgenReport& r, bool json, std::ostream& out) {
  if (json) {
    auto lat = [](const LatencySummary& s) {
      return nlohmann::json{{"count", s.count}, {"p50_ms", s.p50_ms}, {"p99_ms", s.p99_ms}, {"max_ms", s.max_ms}};
    };
    out << nlohmann::json{{"task_requests", r.task_requests}, {"tasks", r.tasks},          {"accepted", r.accepted},
                          {"rejected", r.rejected},           {"task", lat(r.task)},
                          {"download", lat(r.download)},      {"upload", lat(r.upload)},
                          {"seconds", r.seconds}}
               .dump()
        << "\n";
    return;
  }
  char line[256];
  std::snprintf(line, sizeof(line), "loadgen: %.1f s, %llu task requests, %llu tasks, %llu updates accepted\n", r.seconds,
                static_cast<unsigned long long>(r.task_requests), static_cast<unsigned long long>(r.tasks),
                static_cast<unsigned long long>(r.accepted));
  out << line;
  for (const auto& [code, n] : r.rejected) out << "  rejected " << code << ": " << n << "\n";
  for (const auto& [name, s] :
       {std::pair{"task", r.task}, std::pair{"download", r.download}, std::pair{"upload", r.upload}}) {
    std::snprintf(line, sizeof(line), "  %-8s p50 %.1f ms  p99 %.1f ms  max %.1f ms  (%llu)\n", name, s.p50_ms, s.p99_ms,
                  s.max_ms, static_cast<unsigned long long>(s.count));
    out << line;
  }
}

}  // namespace tributary::loadgen
