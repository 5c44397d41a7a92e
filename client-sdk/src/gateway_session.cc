#include "tributary/client/gateway_session.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <random>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "tributary/protocol/codec.h"
#include "tributary/core/zmq_poll.h"

namespace tributary::client {

struct SharedContext::Impl {
  zmq::context_t context;
};

SharedContext::SharedContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SharedContext::~SharedContext() = default;

Result<std::shared_ptr<SharedContext>> SharedContext::Create(int io_threads, int max_sockets) {
  if (io_threads < 1 || max_sockets < 1) {
    return MakeError(ErrorCode::kInvalidArgument, "a shared context needs at least one I/O thread and one socket");
  }
  auto impl = std::make_unique<Impl>();
  // Both must be set before the context's first socket.
  if (zmq_ctx_set(impl->context.handle(), ZMQ_IO_THREADS, io_threads) != 0 ||
      zmq_ctx_set(impl->context.handle(), ZMQ_MAX_SOCKETS, max_sockets) != 0) {
    return MakeError(ErrorCode::kInvalidArgument, "ZeroMQ refused " + std::to_string(io_threads) + " I/O threads or " +
                                                      std::to_string(max_sockets) + " sockets: " + zmq_strerror(zmq_errno()));
  }
  return std::shared_ptr<SharedContext>(new SharedContext(std::move(impl)));
}

namespace {

// The context a session's sockets live in: the one it was given, or its own.
std::shared_ptr<SharedContext> ContextFor(const SessionOptions& options) {
  if (options.context) return options.context;
  return SharedContext::Create(/*io_threads=*/1, /*max_sockets=*/ZMQ_MAX_SOCKETS_DFLT).value();  // cannot fail
}

}  // namespace

struct GatewaySession::Impl {
  SessionOptions options;
  // Where requests go: the client's own gateway, or for the task in hand the
  // gateway the placement steered it to.
  std::string endpoint;
  std::string server_key;
  // Declared before the sockets, so that it outlives them.
  std::shared_ptr<SharedContext> context;
  std::unique_ptr<zmq::socket_t> socket;
  std::unique_ptr<zmq::socket_t> monitor;  // the socket's handshake events
  uint64_t sockets_made = 0;
  uint64_t next_request = 1;
  std::mt19937_64 jitter{std::random_device{}()};

  // A fresh DEALER: replies to requests of the old socket can never arrive.
  void Reconnect() {
    monitor.reset();
    socket = std::make_unique<zmq::socket_t>(context->impl().context, zmq::socket_type::dealer);
    socket->set(zmq::sockopt::linger, 0);
    if (options.curve) {
      socket->set(zmq::sockopt::curve_serverkey, server_key);
      socket->set(zmq::sockopt::curve_publickey, options.curve->client.public_key);
      socket->set(zmq::sockopt::curve_secretkey, options.curve->client.secret_key);
    }
    // A rejected key shows only as a handshake event: watch for it.
    const std::string events = "inproc://tributary-session-monitor-" +
                               std::to_string(reinterpret_cast<uintptr_t>(this)) + "-" + std::to_string(sockets_made++);
    if (zmq_socket_monitor(socket->handle(), events.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) == 0) {
      monitor = std::make_unique<zmq::socket_t>(context->impl().context, zmq::socket_type::pair);
      monitor->set(zmq::sockopt::linger, 0);
      monitor->connect(events);
    }
    socket->connect(endpoint);
  }

  // Requests go to `to` from now on (a fresh socket when that is a change).
  void Target(const std::string& to, const std::string& key) {
    if (to == endpoint && key == server_key) return;
    endpoint = to;
    server_key = key;
    Reconnect();
  }
  void TargetHome() { Target(options.endpoint, options.curve ? options.curve->server_public_key : ""); }

  // One task request at the gateway requests go to now.
  Result<TaskPoll> AskOnce(const ConfigMap& properties, bool steered) {
    v1::Envelope e = protocol::NewEnvelope();
    e.mutable_task_request()->set_client_id(options.client_id);
    e.mutable_task_request()->set_steered(steered);
    protocol::ToProto(properties, e.mutable_task_request()->mutable_properties());
    TRIBUTARY_ASSIGN_OR_RETURN(auto reply, Exchange(e, {}));
    TaskPoll poll;
    if (reply.first.has_task_assignment()) {
      const v1::TaskAssignment& a = reply.first.task_assignment();
      poll.task = Task{a.job_id(), a.round(), a.model_version(), protocol::FromProto(a.config()), a.upload_gateway()};
      steer_to = a.upload_gateway();
      steer_key = a.upload_gateway_public_key();
    } else if (reply.first.has_no_task()) {
      poll.retry_after = std::chrono::milliseconds(reply.first.no_task().retry_after_ms());
    } else {
      return MakeError(ErrorCode::kMalformedFrame, "expected task_assignment or no_task");
    }
    return poll;
  }
  std::string steer_to, steer_key;  // of the last assignment

  // The task at the gateway the placement steered this client to: that one
  // knows whether it is still to be done (this attempt of the round, not yet
  // delivered). Its key comes over the authenticated connection to the
  // client's own gateway, so a CURVE client requires it.
  Result<TaskPoll> FollowSteering(const ConfigMap& properties) {
    if (options.curve && steer_key.empty()) {
      return MakeError(ErrorCode::kMalformedFrame,
                       "the gateway steered this client to " + steer_to + " without that gateway's key");
    }
    try {
      Target(steer_to, options.curve ? steer_key : "");
    } catch (const zmq::error_t& e) {
      TargetHome();
      return MakeError(ErrorCode::kMalformedFrame, "cannot connect to the steered gateway '" + steer_to + "': " + e.what());
    }
    auto there = WithRetries([&] { return AskOnce(properties, /*steered=*/true); });
    if (there && there.value().task && !steer_to.empty()) {  // steered again: not followed
      TargetHome();
      TaskPoll later;
      later.retry_after = std::chrono::milliseconds(1000);
      return later;
    }
    // Nothing there (delivered, or its round is not open yet), or that
    // gateway failed this client (unreachable, refused its key): the client
    // asks its own gateway again later, and the round may go on without it.
    if (!there || !there.value().task) {
      TargetHome();
      TaskPoll later;
      later.retry_after = there ? there.value().retry_after : std::chrono::milliseconds(1000);
      return later;
    }
    there.value().task->upload_gateway = endpoint;
    return there;
  }

  // The reason the gateway refused the handshake, if it did.
  std::optional<Error> HandshakeRefused() {
    if (!monitor) return std::nullopt;
    std::vector<zmq::message_t> event;
    if (!zmq::recv_multipart(*monitor, std::back_inserter(event), zmq::recv_flags::dontwait) || event.empty() ||
        event[0].size() < 6) {
      return std::nullopt;
    }
    uint16_t id;
    uint32_t status;
    std::memcpy(&id, event[0].data(), 2);
    std::memcpy(&status, static_cast<const char*>(event[0].data()) + 2, 4);
    if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      return MakeError(ErrorCode::kUnknownClient, "the gateway " + endpoint + " refused this client's key (ZAP status " +
                                                      std::to_string(status) + ")");
    }
    return MakeError(ErrorCode::kUnknownClient, "security handshake with " + endpoint +
                                                    " failed: the gateway and this client disagree on CURVE settings");
  }

  // Payload frames libzmq still holds: they point into the caller's memory
  // (sent without a copy), which Upload() may not return before they are
  // released. Counted down by libzmq's I/O thread.
  std::atomic<uint64_t> borrowed_frames{0};

  // Sends a request (envelope + optional payload frame, borrowed from the
  // caller, not copied) and returns its request id.
  Result<uint64_t> Send(v1::Envelope request, std::span<const std::byte> frame) {
    const uint64_t id = next_request++;
    request.set_request_id(id);
    const std::string wire = protocol::EncodeEnvelope(request);
    const bool more = !frame.empty();
    if (!socket->send(zmq::buffer(wire), more ? zmq::send_flags::sndmore : zmq::send_flags::none)) {
      return MakeError(ErrorCode::kIo, "cannot send to the gateway");
    }
    if (more) {
      borrowed_frames.fetch_add(1, std::memory_order_relaxed);
      // libzmq only reads a message it did not allocate; its API takes void*.
      zmq::message_t borrowed(
          const_cast<std::byte*>(frame.data()), frame.size(),
          [](void*, void* count) { static_cast<std::atomic<uint64_t>*>(count)->fetch_sub(1, std::memory_order_release); },
          &borrowed_frames);
      socket->send(borrowed, zmq::send_flags::none);
    }
    return id;
  }

  // Waits until libzmq released every borrowed payload frame: at once after
  // the gateway answered them all, soon after Reconnect() dropped the rest.
  void ReturnBorrowedFrames() {
    while (borrowed_frames.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }

  // One request and its reply.
  Result<std::pair<v1::Envelope, zmq::message_t>> Exchange(v1::Envelope request, std::span<const std::byte> frame) {
    TRIBUTARY_ASSIGN_OR_RETURN(const uint64_t id, Send(std::move(request), frame));
    return Await(id);
  }

  // The reply to request `id` (envelope + optional payload frame); replies to
  // earlier, abandoned requests are skipped. Lost connections and timeouts
  // are kIo (the socket is replaced); a server error is its typed Error.
  Result<std::pair<v1::Envelope, zmq::message_t>> Await(uint64_t id) {
    const auto deadline = std::chrono::steady_clock::now() + options.request_timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      zmq::pollitem_t items[2] = {{socket->handle(), 0, ZMQ_POLLIN, 0}, {monitor ? monitor->handle() : nullptr, 0, ZMQ_POLLIN, 0}};
      const std::optional<int> polled = left.count() <= 0 ? 0 : PollUnlessInterrupted(items, monitor ? 2 : 1, left);
      if (!polled) continue;  // a signal: wait out the rest of the deadline
      const int ready = *polled;
      if (items[1].revents & ZMQ_POLLIN) {
        if (auto refused = HandshakeRefused()) {
          Reconnect();
          return *refused;
        }
        continue;
      }
      if (ready == 0) {
        Reconnect();
        return MakeError(ErrorCode::kIo, "no reply from the gateway " + endpoint + " within " +
                                             std::to_string(options.request_timeout.count()) + " ms");
      }
      std::vector<zmq::message_t> parts;
      (void)zmq::recv_multipart(*socket, std::back_inserter(parts));
      if (parts.empty() || parts.size() > 2) continue;
      auto reply = protocol::DecodeEnvelope(
          std::span<const std::byte>(static_cast<const std::byte*>(parts[0].data()), parts[0].size()), {});
      if (!reply) return std::move(reply).error();
      if (reply.value().request_id() != id) continue;  // a late answer to an abandoned request
      if (reply.value().has_error()) return protocol::FromErrorReply(reply.value().error());
      return std::make_pair(std::move(reply).value(), parts.size() == 2 ? std::move(parts[1]) : zmq::message_t());
    }
  }

  std::chrono::milliseconds Backoff(uint32_t attempt) {
    const auto cap = std::min<int64_t>(options.retry.max_backoff.count(),
                                       options.retry.initial_backoff.count() << std::min<uint32_t>(attempt, 20));
    return std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(0, std::max<int64_t>(cap, 1))(jitter));
  }

  // Runs `attempt` until it succeeds, fails for good, or the tries run out.
  template <typename F>
  auto WithRetries(F&& attempt) -> decltype(attempt()) {
    for (uint32_t i = 0;; ++i) {
      auto r = attempt();
      if (r || !protocol::IsRetryable(r.error().code) || i + 1 >= options.retry.attempts) return r;
      std::this_thread::sleep_for(Backoff(i));
    }
  }

  Result<UploadReceipt> UploadOnce(const UpdateFrame& u, UploadReceipt& receipt) {
    v1::Envelope e = protocol::NewEnvelope();
    v1::UpdateHeader& h = *e.mutable_update();
    h.set_job_id(u.job);
    h.set_round(u.round);
    h.set_client_id(options.client_id);
    h.set_model_version(u.model_version);
    h.set_sample_count(u.sample_count);
    for (const auto& t : u.tensors) *h.add_tensors() = protocol::ToProto(t);
    h.set_payload_bytes(u.payload.size());
    h.set_payload_xxh3(protocol::PayloadHasher::Of(u.payload));
    for (const auto& [k, v] : u.metrics) (*h.mutable_metrics())[k] = v;
    receipt.attempts += 1;
    TRIBUTARY_ASSIGN_OR_RETURN(auto ready, Exchange(e, {}));
    if (ready.first.has_update_accepted()) {  // an earlier attempt completed it
      receipt.payload_bytes = u.payload.size();
      return receipt;
    }
    if (!ready.first.has_upload_ready()) return MakeError(ErrorCode::kMalformedFrame, "expected upload_ready");
    const v1::UploadReady r = ready.first.upload_ready();
    const uint64_t chunk = std::max<uint64_t>(1, std::min(options.chunk_bytes, r.max_chunk_bytes()));
    // The gateway's credit; a revision-1 gateway grants none: stop-and-wait.
    const uint32_t window = std::max<uint32_t>(1, r.window_chunks());
    uint64_t sent = r.received_bytes();
    receipt.resumed_from = sent;
    v1::Envelope last = ready.first;
    std::deque<uint64_t> unanswered;  // request ids of the chunks in flight
    while (sent < u.payload.size() || !unanswered.empty()) {
      while (unanswered.size() < window && sent < u.payload.size()) {
        const uint64_t n = std::min<uint64_t>(chunk, u.payload.size() - sent);
        v1::Envelope c = protocol::NewEnvelope();
        c.mutable_upload_chunk()->set_upload_id(r.upload_id());
        c.mutable_upload_chunk()->set_offset(sent);
        TRIBUTARY_ASSIGN_OR_RETURN(const uint64_t id, Send(std::move(c), u.payload.subspan(sent, n)));
        unanswered.push_back(id);
        sent += n;
      }
      TRIBUTARY_ASSIGN_OR_RETURN(auto reply, Await(unanswered.front()));
      unanswered.pop_front();
      last = std::move(reply.first);
    }
    if (!last.has_update_accepted()) return MakeError(ErrorCode::kMalformedFrame, "the gateway did not accept the update");
    receipt.payload_bytes = u.payload.size();
    return receipt;
  }

  Result<uint64_t> RequestModel(const std::string& job, uint64_t offset, uint64_t max_bytes) {
    v1::Envelope e = protocol::NewEnvelope();
    e.mutable_model_request()->set_job_id(job);
    e.mutable_model_request()->set_client_id(options.client_id);
    e.mutable_model_request()->set_offset(offset);
    e.mutable_model_request()->set_max_bytes(max_bytes);
    return Send(std::move(e), {});
  }

  // The model in chunks: the first answer gives its size and the gateway's
  // chunk size, then requests for the following chunks stay kDownloadWindow
  // ahead of the answers (model requests are independent, so a gateway of
  // any revision serves them in order). Each chunk is copied into `m` and
  // hashed in one pass.
  static constexpr size_t kDownloadWindow = 4;
  Result<void> DownloadOnce(const std::string& job, GlobalModel& m) {
    for (;;) {  // until one version arrives whole
      m.job = job;
      protocol::PayloadHasher hasher;
      v1::ModelChunk head;
      bool have_head = false;
      uint64_t received = 0, step = 0, requested = 0;  // step: the gateway's chunk size, from the first answer
      std::deque<uint64_t> unanswered;
      TRIBUTARY_ASSIGN_OR_RETURN(const uint64_t first, RequestModel(job, 0, options.chunk_bytes));
      unanswered.push_back(first);
      bool restart = false;
      while (!unanswered.empty()) {
        TRIBUTARY_ASSIGN_OR_RETURN(auto reply, Await(unanswered.front()));
        unanswered.pop_front();
        if (!reply.first.has_model_chunk()) return MakeError(ErrorCode::kMalformedFrame, "expected model_chunk");
        const v1::ModelChunk& c = reply.first.model_chunk();
        const uint64_t n = reply.second.size();
        if (!have_head) {
          head = c;
          have_head = true;
          m.payload.resize(c.total_bytes());  // no-op when the buffer already has the model's size
        } else if (c.model_version() != head.model_version()) {
          restart = true;  // a new version published mid-download: start over on it
          break;
        }
        if (c.offset() != received || c.total_bytes() != head.total_bytes() || n > c.total_bytes() - received ||
            (n == 0 && received < c.total_bytes())) {
          return MakeError(ErrorCode::kMalformedFrame, "model chunk out of order");
        }
        hasher.CopyAndUpdate(m.payload.data() + received, {static_cast<const std::byte*>(reply.second.data()), n});
        received += n;
        if (step == 0) step = requested = std::max<uint64_t>(n, 1);
        while (unanswered.size() < kDownloadWindow && requested < head.total_bytes()) {
          TRIBUTARY_ASSIGN_OR_RETURN(const uint64_t id, RequestModel(job, requested, step));
          unanswered.push_back(id);
          requested += std::min(step, head.total_bytes() - requested);
        }
      }
      if (restart) continue;  // the answers still in flight are skipped as stale
      if (received != head.total_bytes()) return MakeError(ErrorCode::kMalformedFrame, "model download ended early");
      if (hasher.Digest() != head.payload_xxh3()) {
        return MakeError(ErrorCode::kChecksumMismatch, "global model checksum mismatch");
      }
      m.version = head.model_version();
      TRIBUTARY_ASSIGN_OR_RETURN(m.tensors, protocol::TensorSpecsFromProto(head.tensors()));
      return Ok();
    }
  }

  // UploadOnce, after which libzmq holds none of the payload: chunks still
  // in flight after a failure go with their socket.
  Result<UploadReceipt> UploadOnceReturningPayload(const UpdateFrame& u, UploadReceipt& receipt) {
    auto r = UploadOnce(u, receipt);
    if (!r && borrowed_frames.load(std::memory_order_acquire) != 0) Reconnect();
    ReturnBorrowedFrames();
    return r;
  }
};

GatewaySession::GatewaySession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GatewaySession::~GatewaySession() = default;

Result<std::unique_ptr<GatewaySession>> GatewaySession::Connect(SessionOptions options) {
  if (options.endpoint.empty()) return MakeError(ErrorCode::kInvalidArgument, "no gateway endpoint");
  if (options.client_id.empty()) return MakeError(ErrorCode::kInvalidArgument, "no client id");
  if (options.retry.attempts == 0) return MakeError(ErrorCode::kInvalidArgument, "retry.attempts must be positive");
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->context = ContextFor(impl->options);
  impl->endpoint = impl->options.endpoint;
  if (impl->options.curve) impl->server_key = impl->options.curve->server_public_key;
  try {
    impl->Reconnect();
  } catch (const zmq::error_t& e) {
    return MakeError(ErrorCode::kInvalidArgument, "cannot connect to '" + impl->options.endpoint + "': " + e.what());
  }
  return std::unique_ptr<GatewaySession>(new GatewaySession(std::move(impl)));
}

const SessionOptions& GatewaySession::options() const { return impl_->options; }
void GatewaySession::set_client_id(std::string client_id) { impl_->options.client_id = std::move(client_id); }

Result<UploadReceipt> GatewaySession::Upload(const UpdateFrame& update) {
  UploadReceipt receipt;
  auto r = impl_->WithRetries([&] { return impl_->UploadOnceReturningPayload(update, receipt); });
  // A retry after a lost final reply finds the update already folded: that
  // duplicate is this client's own, accepted earlier.
  if (!r && r.error().code == ErrorCode::kDuplicateUpdate && receipt.attempts > 1) {
    receipt.payload_bytes = update.payload.size();
    return receipt;
  }
  return r;
}

Result<TaskPoll> GatewaySession::RequestTask(const ConfigMap& properties) {
  impl_->TargetHome();  // asking is checking in: always at the client's own gateway
  TRIBUTARY_ASSIGN_OR_RETURN(TaskPoll poll, impl_->WithRetries([&] { return impl_->AskOnce(properties, false); }));
  if (!poll.task || impl_->steer_to.empty()) return poll;
  return impl_->FollowSteering(properties);
}

Result<GlobalModel> GatewaySession::DownloadModel(const std::string& job) {
  GlobalModel m;
  TRIBUTARY_TRY(DownloadModel(job, m));
  return m;
}

Result<void> GatewaySession::DownloadModel(const std::string& job, GlobalModel& into) {
  return impl_->WithRetries([&] { return impl_->DownloadOnce(job, into); });
}

}  // namespace tributary::client
