// The node's front door for client updates (wire protocol v1, docs/protocol.md).
//
// A ZeroMQ ROUTER on TCP. An upload is two-phase: the client sends an
// UpdateHeader; the gateway checks it against the round (RoundBook) and the
// model spec and limits *before any payload moves*, reserves the update's
// block in the node's shared-memory segment and answers UploadReady. The
// client then sends UploadChunk messages, each with one payload frame, up to
// `upload_window_chunks` ahead of the answers (credit-based flow control).
// Each chunk is copied into the block in one pass with its hashing and NaN/Inf
// check, a cache-sized slice at a time (the only copy Tributary makes; libzmq
// owns the frame until then). After the last chunk the gateway verifies the
// checksum and, if the round asks for it, refuses NaN/Inf; then
// it hands the block to the UpdateSink (which emits the descriptor) and
// answers UpdateAccepted, or the sink's error if it refuses the update (the
// node's round closed while the upload ran): no client is told an update
// landed that will not be folded.
//
// A header repeated while its upload is unfinished resumes it: the answer is
// the same upload id with the bytes already stored. A header from the same
// client for another payload (it retrained after a crash) supersedes the
// unfinished upload at once: its block and admission go, and the new upload
// starts from zero. DUPLICATE_UPDATE means only "already accepted". Every rejection is an
// ErrorReply with a typed code, counted in Stats(); a rejected or abandoned
// upload releases its block and its admission, so nothing leaks and the client
// may try again. Malformed frames never stop the gateway.
//
// Clients also download the current global model here (ModelRequest ->
// ModelChunk), served in chunks from the shared-memory block of the
// ModelStore.
//
// Thread safety: the gateway runs its own thread; Stats() may be called from
// any thread; the sink is called on the gateway's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tributary/core/error.h"
#include "tributary/gateway/model_store.h"
#include "tributary/gateway/round_book.h"
#include "tributary/protocol/codec.h"
#include "tributary/shm/segment.h"

namespace tributary::gateway {

struct AcceptedUpdate {
  AdmittedUpload admission;
  agg::ModelSpec layout;  // the payload's tensors in their transport dtypes
  uint64_t sample_count = 0;
};

class UpdateSink {
 public:
  virtual ~UpdateSink() = default;
  // Takes the block's reference: the update now belongs to the data plane.
  // An error (kRoundClosed) refuses it: the block is dropped, the client gets the error.
  virtual Result<void> Accept(const AcceptedUpdate& update, shm::BlockRef block) = 0;
};

// Client authentication (keys/allow_list.h). No secret key: any client may
// connect in plaintext and claim any id (simulation on loopback, tests).
struct GatewaySecurity {
  std::string secret_key;  // the gateway's CURVE secret key, Z85
  std::string allow_list;  // required with a secret key
};

struct GatewayOptions {
  std::string bind = "tcp://127.0.0.1:0";  // "tcp://*:7600" in a deployment
  protocol::Limits limits;
  uint64_t max_chunk_bytes = 4ull << 20;
  // Chunks a client may send ahead of the answers (UploadReady.window_chunks):
  // enough to keep the connection busy while the gateway copies one. libzmq
  // buffers at most this many (plus a few small messages) per connection.
  uint32_t upload_window_chunks = 4;
  uint32_t max_uploads = 1024;                       // in progress at once
  std::chrono::milliseconds upload_idle_timeout{30'000};  // then the upload is dropped
  // NoTask tells clients to ask again after this, give or take half of it
  // (jitter, so that clients started together do not ask together).
  std::chrono::milliseconds task_poll_interval{200};
  GatewaySecurity security;
};

struct GatewayStats {
  uint64_t accepted = 0;
  uint64_t accepted_bytes = 0;
  uint64_t uploads_in_progress = 0;
  uint64_t uploads_expired = 0;
  uint64_t uploads_superseded = 0;  // unfinished uploads replaced by their client's newer header
  uint64_t model_bytes_served = 0;
  uint64_t clients_seen = 0;  // distinct client ids that asked for work, counted up to 65,536
  std::map<ErrorCode, uint64_t> rejected;  // by code
};

// A client that asked for work (TaskRequest): the node reports these to the
// controller, whose registry selects among them.
struct CheckIn {
  std::string client;
  ConfigMap properties;
  std::chrono::steady_clock::time_point at;  // its latest ask
};

class Gateway {
 public:
  static Result<std::unique_ptr<Gateway>> Start(const GatewayOptions& options, shm::Segment& segment,
                                                RoundBook& rounds, UpdateSink& sink, const ModelStore& models);
  ~Gateway();  // stops the thread, drops unfinished uploads
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // The bound endpoint, e.g. "tcp://127.0.0.1:41234".
  const std::string& endpoint() const;
  // Its CURVE public key (Z85), which clients steered here need; empty without CURVE.
  const std::string& public_key() const;
  GatewayStats Stats() const;
  // The clients that asked for work since the last call, each once with its
  // latest ask; at most `max` (the rest stay for the next call).
  std::vector<CheckIn> TakeCheckIns(size_t max);

 private:
  struct Impl;
  explicit Gateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::gateway
