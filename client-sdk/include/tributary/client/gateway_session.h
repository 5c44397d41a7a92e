// GatewaySession: one client's connection to its gateway (docs/protocol.md).
//
// Contract
// - Upload() sends one update: the header, then the payload in chunks of at
//   most the gateway's chunk size, so an update of any size fits (payload
//   sizes are 64-bit). It returns once the gateway accepted the whole update.
// - A lost connection or a request without a reply within `request_timeout`
//   reconnects (a fresh socket) and retries. An upload that was interrupted
//   resumes: the gateway answers the repeated header with the bytes it still
//   holds, and only the rest is sent again; the update is folded once.
// - Retries wait exponentially longer (with full jitter) up to
//   `retry.max_backoff`, at most `retry.attempts` tries per request. Errors the
//   protocol marks retryable (a full segment, a busy gateway, a lost
//   connection) are retried; every other server error (not selected, round
//   closed, shape mismatch, duplicate...) is returned at once as its typed
//   tributary::Error, with the gateway's reason.
// - DownloadModel() fetches the job's current global model in chunks and
//   verifies its checksum. The overload that fills a GlobalModel reuses its
//   payload's storage: a client that downloads every round keeps one buffer
//   rather than having fresh pages faulted in and zeroed each time. On error
//   `into` holds no model (its contents are unspecified).
// - RequestTask() asks whether this client is selected for an open round,
//   always at the client's own gateway (`endpoint`). When the placement
//   steered the task to another node (its gateway is over capacity), the
//   assignment names that node's gateway and its CURVE key, and the session
//   follows: DownloadModel() and Upload() go there until the next
//   RequestTask(). If that gateway has no task for it (delivered, or its
//   round not open yet), fails it, or steers it on, the answer is "ask
//   again later". A CURVE session refuses a steering without that gateway's
//   key (kMalformedFrame).
// - Security: with `curve` set, the connection is encrypted and the client
//   authenticates with its keypair; a gateway that does not know the key
//   fails the handshake, reported at once as kUnknownClient (not retried).
//   Without it the connection is plaintext, which only a gateway configured
//   as insecure accepts.
//
// Thread safety: one thread at a time per session; use one session per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tributary/aggregator/tensor.h"
#include "tributary/client/security.h"
#include "tributary/core/config_map.h"
#include "tributary/core/error.h"

namespace tributary::client {

// The ZeroMQ context sessions make their sockets in. By default each session
// has its own (one I/O thread and a reaper thread: right for a device with one
// session). A process holding thousands of sessions (a load generator, a
// gateway for a fleet of sensors) shares one instead, so that it runs
// `io_threads` threads in all, and can hold `max_sockets` sockets (a session
// uses up to three: its connection and the pair that watches its handshake).
// A shared context lives until its last session is gone.
class SharedContext {
 public:
  static Result<std::shared_ptr<SharedContext>> Create(int io_threads, int max_sockets);
  ~SharedContext();
  SharedContext(const SharedContext&) = delete;
  SharedContext& operator=(const SharedContext&) = delete;

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  explicit SharedContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct RetryPolicy {
  uint32_t attempts = 8;                              // tries per request, the first included
  std::chrono::milliseconds initial_backoff{20};
  std::chrono::milliseconds max_backoff{2'000};
};

struct CurveOptions {
  std::string server_public_key;  // the gateway's, Z85
  CurveKeyPair client;
};

struct SessionOptions {
  std::string endpoint;   // the gateway, e.g. tcp://10.0.0.7:7600
  std::string client_id;
  std::optional<CurveOptions> curve;  // nullopt: plaintext
  std::chrono::milliseconds request_timeout{10'000};
  RetryPolicy retry;
  uint64_t chunk_bytes = 4ull << 20;  // lowered to the gateway's limit if larger
  std::shared_ptr<SharedContext> context;  // null: the session's own
};

// What the client sends: the tensors in payload order and their bytes.
struct UpdateFrame {
  std::string job;
  uint64_t round = 0;
  uint64_t model_version = 0;  // the global model version it was trained from
  uint64_t sample_count = 0;   // its aggregation weight
  std::vector<agg::TensorSpec> tensors;  // names, shapes and transport dtypes
  std::span<const std::byte> payload;
  std::map<std::string, double> metrics;
};

struct UploadReceipt {
  uint64_t payload_bytes = 0;
  uint64_t resumed_from = 0;  // bytes the gateway already held when the last attempt started
  uint32_t attempts = 0;      // header requests sent
};

struct Task {
  std::string job;
  uint64_t round = 0;
  uint64_t model_version = 0;
  ConfigMap config;
  std::string upload_gateway;  // set: the placement steered this task to that gateway
};

// RequestTask's answer: a task, or when to ask again.
struct TaskPoll {
  std::optional<Task> task;
  std::chrono::milliseconds retry_after{0};
};

struct GlobalModel {
  std::string job;
  uint64_t version = 0;
  std::vector<agg::TensorSpec> tensors;
  std::vector<std::byte> payload;
};

class GatewaySession {
 public:
  static Result<std::unique_ptr<GatewaySession>> Connect(SessionOptions options);
  ~GatewaySession();
  GatewaySession(const GatewaySession&) = delete;
  GatewaySession& operator=(const GatewaySession&) = delete;

  Result<UploadReceipt> Upload(const UpdateFrame& update);
  Result<GlobalModel> DownloadModel(const std::string& job);
  Result<void> DownloadModel(const std::string& job, GlobalModel& into);
  Result<TaskPoll> RequestTask(const ConfigMap& properties = {});

  const SessionOptions& options() const;
  // Speaks for another client from now on: a simulator multiplexes many
  // simulated clients over one connection. A CURVE gateway binds a
  // connection to its key's id, so there only that id is accepted.
  void set_client_id(std::string client_id);

 private:
  struct Impl;
  explicit GatewaySession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::client
