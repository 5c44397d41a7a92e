#include "tributary/gateway/gateway.h"

#include <malloc.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "tributary/aggregator/kernels.h"
#include "tributary/core/unique_fd.h"
#include "tributary/keys/allow_list.h"
#include "tributary/keys/curve_keys.h"
#include "tributary/core/zmq_poll.h"

namespace tributary::gateway {
namespace {

using Clock = std::chrono::steady_clock;
// Check-ins the node has not collected yet, at most (new clients beyond it
// wait for their next ask).
constexpr size_t kMaxPendingCheckIns = 1 << 20;
// clients_seen counts ids exactly up to this many, then stops growing: in
// plaintext any peer can claim fresh ids, and a stat must not be a leak.
constexpr size_t kMaxCountedClients = 1 << 16;

struct Upload {
  uint64_t id = 0;
  Admission admission;
  agg::ModelSpec layout;
  uint64_t sample_count = 0;
  uint64_t expected_xxh3 = 0;
  bool reject_non_finite = true;
  shm::BlockRef block;
  uint64_t received = 0;
  std::unique_ptr<protocol::PayloadHasher> hasher;
  agg::FiniteScan finite;   // the values received so far, checked
  bool non_finite = false;  // a NaN or Inf arrived: refused at the end, after the checksum
  Clock::time_point last_activity;
};

// Each chunk is copied, hashed and checked a slice at a time, so that the
// hash and the check read the slice from L1/L2 right after the copy wrote it.
constexpr uint64_t kIngestSlice = protocol::PayloadHasher::kCacheSlice;

std::string UploadKey(const std::string& job, uint64_t round, const std::string& client) {
  return job + '\n' + std::to_string(round) + '\n' + client;
}

// libzmq allocates every received chunk (4 MiB) with malloc, and the gateway
// frees it after the copy. With glibc's default, sliding thresholds a freed
// chunk at the top of the heap is soon trimmed, so the next chunk's pages are
// faulted in and zeroed again: as much CPU as the copy itself. Chunks stay in
// the heap instead (at most 64 MiB kept free per arena). Process-wide, once.
void KeepChunkBuffersInHeap(uint64_t max_chunk_bytes) {
  static std::once_flag once;
  std::call_once(once, [&] {
    mallopt(M_MMAP_THRESHOLD, static_cast<int>(std::min<uint64_t>(2 * max_chunk_bytes + (1 << 20), 32ull << 20)));
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
  });
}

}  // namespace

struct Gateway::Impl {
  GatewayOptions options;
  shm::Segment* segment = nullptr;
  RoundBook* rounds = nullptr;
  UpdateSink* sink = nullptr;
  const ModelStore* models = nullptr;
  zmq::context_t context{1};
  std::unique_ptr<keys::ZapAuthenticator> authenticator;  // before `socket`: handshakes need it
  zmq::socket_t socket{context, zmq::socket_type::router};
  std::unordered_set<std::string> clients_seen;
  std::string endpoint;
  std::string public_key;  // Z85, with CURVE
  std::atomic<bool> stop{false};
  UniqueFd wake{eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};  // written to stop the thread at once, not at its next poll
  std::thread thread;

  std::unordered_map<uint64_t, Upload> uploads;           // by upload id
  std::unordered_map<std::string, uint64_t> upload_of;     // job/round/client -> upload id
  uint64_t next_upload = 1;

  mutable std::mutex stats_mu;
  GatewayStats stats;
  std::unordered_map<std::string, CheckIn> check_ins;  // under stats_mu; since the last TakeCheckIns
  std::minstd_rand jitter{std::random_device{}()};

  void Run() {
    while (!stop.load(std::memory_order_relaxed)) {
      zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake.get(), ZMQ_POLLIN, 0}};
      (void)PollUnlessInterrupted(items, 2, std::chrono::milliseconds(100));
      if (items[0].revents & ZMQ_POLLIN) {
        for (int burst = 0; burst < 256; ++burst) {
          std::vector<zmq::message_t> parts;
          if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
          Handle(parts);
        }
      }
      ExpireIdle();
    }
  }

  void Send(const zmq::message_t& identity, const v1::Envelope& e) {
    const std::string wire = protocol::EncodeEnvelope(e);
    socket.send(zmq::buffer(identity.data(), identity.size()), zmq::send_flags::sndmore);
    socket.send(zmq::buffer(wire), zmq::send_flags::none);
  }

  void Reject(const zmq::message_t& identity, uint64_t request_id, const Error& error) {
    {
      std::lock_guard lock(stats_mu);
      stats.rejected[error.code] += 1;
    }
    v1::Envelope e = protocol::NewEnvelope(request_id);
    *e.mutable_error() = protocol::ToErrorReply(error);
    Send(identity, e);
  }

  void Handle(std::vector<zmq::message_t>& parts) {
    if (parts.size() < 2) return;  // nothing to answer: no envelope
    const zmq::message_t& identity = parts[0];
    auto decoded = protocol::DecodeEnvelope(
        std::span(static_cast<const std::byte*>(parts[1].data()), parts[1].size()), options.limits);
    if (!decoded) return Reject(identity, 0, decoded.error());
    const v1::Envelope& e = decoded.value();
    const size_t payload_frames = parts.size() - 2;
    // With CURVE, the id the allow-list binds to this connection's key.
    const std::string authenticated = authenticator ? parts[1].gets("User-Id") : "";
    Result<void> r = Ok();
    switch (e.body_case()) {
      case v1::Envelope::kUpdate:
        r = payload_frames != 0 ? Result<void>(MakeError(ErrorCode::kMalformedFrame,
                                                         "an update header is sent without payload frames; "
                                                         "the payload follows in upload_chunk messages"))
                                : SameClient(e.update().client_id(), authenticated);
        if (r) r = OnHeader(identity, e.request_id(), e.update());
        break;
      case v1::Envelope::kUploadChunk:
        r = payload_frames == 1 ? OnChunk(identity, e.request_id(), e.upload_chunk(), parts[2], authenticated)
                                : Result<void>(MakeError(ErrorCode::kMalformedFrame,
                                                         "an upload_chunk carries exactly one payload frame"));
        break;
      case v1::Envelope::kModelRequest:
        r = payload_frames == 0
                ? (e.model_request().client_id().empty() ? Ok() : SameClient(e.model_request().client_id(), authenticated))
                : Result<void>(MakeError(ErrorCode::kMalformedFrame, "a model request has no frames"));
        if (r) r = OnModelRequest(identity, e.request_id(), e.model_request());
        break;
      case v1::Envelope::kTaskRequest:
        r = payload_frames == 0 ? SameClient(e.task_request().client_id(), authenticated)
                                : Result<void>(MakeError(ErrorCode::kMalformedFrame, "a task request has no frames"));
        if (r) r = OnTaskRequest(identity, e.request_id(), e.task_request());
        break;
      default:
        r = MakeError(ErrorCode::kMalformedFrame, "the gateway does not take this message");
    }
    if (!r) Reject(identity, e.request_id(), r.error());
  }

  // Without authentication any id goes; with it, only the connection's own.
  Result<void> SameClient(const std::string& claimed, const std::string& authenticated) const {
    if (!authenticator || keys::IdAuthorized(authenticated, claimed)) return Ok();
    return MakeError(ErrorCode::kUnknownClient,
                     "this connection's key belongs to client '" + authenticated + "', not '" + claimed + "'");
  }

  Result<void> OnTaskRequest(const zmq::message_t& identity, uint64_t request_id, const v1::TaskRequest& t) {
    if (t.client_id().empty()) return MakeError(ErrorCode::kInvalidArgument, "a task request names its client");
    if (!t.steered()) {  // a steered client's own gateway is the one that steered it
      if (clients_seen.size() < kMaxCountedClients) clients_seen.insert(t.client_id());
      std::lock_guard lock(stats_mu);
      stats.clients_seen = clients_seen.size();
      // A client flooding asks costs one entry, not one per ask.
      if (check_ins.count(t.client_id()) || check_ins.size() < kMaxPendingCheckIns) {
        check_ins[t.client_id()] = CheckIn{t.client_id(), protocol::FromProto(t.properties()), Clock::now()};
      }
    }
    v1::Envelope e = protocol::NewEnvelope(request_id);
    if (auto a = rounds->AssignmentFor(t.client_id())) {
      v1::TaskAssignment& out = *e.mutable_task_assignment();
      out.set_job_id(a->job);
      out.set_round(a->round);
      out.set_model_version(a->model_version);
      protocol::ToProto(a->config, out.mutable_config());
      if (a->upload_gateway) {
        out.set_upload_gateway(a->upload_gateway->endpoint);
        out.set_upload_gateway_public_key(a->upload_gateway->public_key);
      }
    } else {
      const auto base = static_cast<uint32_t>(options.task_poll_interval.count());
      e.mutable_no_task()->set_retry_after_ms(base / 2 + std::uniform_int_distribution<uint32_t>(0, base)(jitter));
    }
    Send(identity, e);
    return Ok();
  }

  Result<void> OnHeader(const zmq::message_t& identity, uint64_t request_id, const v1::UpdateHeader& h) {
    // The order of the checks is docs/protocol.md's: identity fields, the round, then the header's contents.
    if (h.job_id().empty() || h.client_id().empty()) {
      return MakeError(ErrorCode::kMalformedFrame, "an update header names its job_id and client_id");
    }
    TRIBUTARY_ASSIGN_OR_RETURN(RoundTerms spec, rounds->Lookup(h.job_id(), h.round(), h.model_version()));
    TRIBUTARY_ASSIGN_OR_RETURN(agg::ModelSpec layout, protocol::ValidateUpdateHeader(h, spec.model, options.limits));
    const std::string key = UploadKey(h.job_id(), h.round(), h.client_id());
    if (auto it = upload_of.find(key); it != upload_of.end()) {
      // The same (authenticated) client again while its upload is unfinished:
      // the same payload resumes; another one (it retrained) supersedes the
      // unfinished upload at once, whose block and admission go.
      Upload& u = uploads.at(it->second);
      if (u.expected_xxh3 == h.payload_xxh3() && u.layout.payload_bytes() == h.payload_bytes()) {
        u.last_activity = Clock::now();
        return ReplyReady(identity, request_id, u);
      }
      Drop(u.id);
      std::lock_guard lock(stats_mu);
      stats.uploads_superseded += 1;
    }
    if (uploads.size() >= options.max_uploads) {
      return MakeError(ErrorCode::kResourceExhausted, "too many uploads in progress; retry later");
    }
    TRIBUTARY_ASSIGN_OR_RETURN(Admission admission, rounds->Admit(h.job_id(), h.round(), h.model_version(), h.client_id()));
    shm::BlockMeta meta{.kind = shm::BlockKind::kUpdate, .round = h.round(), .weight = static_cast<double>(h.sample_count()), .updates = 1};
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef block, segment->Allocate(h.payload_bytes(), meta));  // or the admission goes
    Upload u;
    u.id = next_upload++;
    u.admission = std::move(admission);
    u.layout = std::move(layout);
    u.sample_count = h.sample_count();
    u.expected_xxh3 = h.payload_xxh3();
    u.reject_non_finite = spec.reject_non_finite;
    u.block = std::move(block);
    u.hasher = std::make_unique<protocol::PayloadHasher>();
    u.last_activity = Clock::now();
    upload_of.emplace(key, u.id);
    auto [it, _] = uploads.emplace(u.id, std::move(u));
    UpdateInProgress();
    return ReplyReady(identity, request_id, it->second);
  }

  Result<void> OnModelRequest(const zmq::message_t& identity, uint64_t request_id, const v1::ModelRequest& m) {
    TRIBUTARY_ASSIGN_OR_RETURN(PublishedModel model, models->Get(m.job_id(), m.client_id()));
    const uint64_t total = model.block.bytes().size();
    if (m.offset() > total) {
      return MakeError(ErrorCode::kInvalidArgument, "offset " + std::to_string(m.offset()) + " is past the model's " +
                                                        std::to_string(total) + " bytes");
    }
    const uint64_t want = m.max_bytes() == 0 ? options.max_chunk_bytes : std::min(m.max_bytes(), options.max_chunk_bytes);
    const uint64_t n = std::min(want, total - m.offset());
    v1::Envelope e = protocol::NewEnvelope(request_id);
    auto* c = e.mutable_model_chunk();
    c->set_job_id(m.job_id());
    c->set_model_version(model.version);
    for (const auto& t : model.spec.tensors()) *c->add_tensors() = protocol::ToProto(t);
    c->set_total_bytes(total);
    c->set_payload_xxh3(model.xxh3);
    c->set_offset(m.offset());
    const std::string wire = protocol::EncodeEnvelope(e);
    socket.send(zmq::buffer(identity.data(), identity.size()), zmq::send_flags::sndmore);
    socket.send(zmq::buffer(wire), zmq::send_flags::sndmore);
    // Zero copy: libzmq sends straight from the shared-memory block and
    // drops this reference once the bytes are on the wire.
    auto* hold = new shm::BlockRef(std::move(model.block));
    // libzmq only reads a message it did not allocate; its API takes void*.
    zmq::message_t frame(
        const_cast<std::byte*>(hold->bytes().data()) + m.offset(), n, [](void*, void* h) { delete static_cast<shm::BlockRef*>(h); }, hold);
    socket.send(frame, zmq::send_flags::none);
    std::lock_guard lock(stats_mu);
    stats.model_bytes_served += n;
    return Ok();
  }

  Result<void> ReplyReady(const zmq::message_t& identity, uint64_t request_id, const Upload& u) {
    v1::Envelope e = protocol::NewEnvelope(request_id);
    auto* ready = e.mutable_upload_ready();
    ready->set_upload_id(u.id);
    ready->set_max_chunk_bytes(options.max_chunk_bytes);
    ready->set_received_bytes(u.received);
    ready->set_window_chunks(options.upload_window_chunks);
    Send(identity, e);
    return Ok();
  }

  // Ends an upload that will not complete: its block and admission go.
  void Drop(uint64_t id) {
    auto it = uploads.find(id);
    if (it == uploads.end()) return;
    upload_of.erase(UploadKey(it->second.admission->job, it->second.admission->round, it->second.admission->client));
    uploads.erase(it);
    UpdateInProgress();
  }

  Result<void> OnChunk(const zmq::message_t& identity, uint64_t request_id, const v1::UploadChunk& c,
                       const zmq::message_t& frame, const std::string& authenticated) {
    auto it = uploads.find(c.upload_id());
    if (it == uploads.end()) {
      return MakeError(ErrorCode::kNotFound, "no upload " + std::to_string(c.upload_id()) +
                                                 " in progress; send the update header again");
    }
    Upload& u = it->second;
    TRIBUTARY_TRY(SameClient(u.admission->client, authenticated));
    if (frame.size() > options.max_chunk_bytes) {
      return MakeError(ErrorCode::kTooLarge, "chunk of " + std::to_string(frame.size()) + " bytes (limit " +
                                                 std::to_string(options.max_chunk_bytes) + ")");
    }
    if (c.offset() != u.received) {
      return MakeError(ErrorCode::kInvalidArgument, "chunk at offset " + std::to_string(c.offset()) +
                                                        ", the upload has " + std::to_string(u.received) +
                                                        " bytes; continue from there");
    }
    const uint64_t total = u.layout.payload_bytes();
    if (frame.size() > total - u.received) {
      const uint64_t id = u.id;
      Drop(id);
      return MakeError(ErrorCode::kTooLarge, "chunk runs past the announced payload_bytes; upload dropped");
    }
    const auto* from = static_cast<const std::byte*>(frame.data());
    std::byte* block = u.block.mutable_bytes().data();
    for (uint64_t at = 0; at < frame.size(); at += kIngestSlice) {
      const uint64_t n = std::min(kIngestSlice, frame.size() - at);
      std::byte* to = block + u.received + at;
      u.hasher->CopyAndUpdate(to, {from + at, n});
      if (u.reject_non_finite && !u.non_finite) u.non_finite = !u.finite.Advance(u.layout, block, u.received + at + n);
    }
    u.received += frame.size();
    u.last_activity = Clock::now();
    if (u.received < total) {
      v1::Envelope e = protocol::NewEnvelope(request_id);
      e.mutable_upload_progress()->set_upload_id(u.id);
      e.mutable_upload_progress()->set_received_bytes(u.received);
      Send(identity, e);
      return Ok();
    }
    return Finish(identity, request_id, u.id);
  }

  Result<void> Finish(const zmq::message_t& identity, uint64_t request_id, uint64_t id) {
    Upload& u = uploads.at(id);
    if (u.hasher->Digest() != u.expected_xxh3) {
      Drop(id);
      return MakeError(ErrorCode::kChecksumMismatch, "payload checksum differs from the header's payload_xxh3");
    }
    if (u.non_finite) {
      Drop(id);
      return MakeError(ErrorCode::kNonFinite, "the update contains NaN or Inf");
    }
    AcceptedUpdate accepted{*u.admission, u.layout, u.sample_count};
    const uint64_t bytes = u.received;
    // Checked once, here: the functions that fold it trust the mark.
    u.block.mutable_meta().checked_finite = u.reject_non_finite;
    shm::BlockRef block = std::move(u.block);
    const Result<void> taken = sink->Accept(accepted, std::move(block));
    if (!taken) {
      Drop(id);
      return taken;
    }
    u.admission.Commit();
    upload_of.erase(UploadKey(accepted.admission.job, accepted.admission.round, accepted.admission.client));
    uploads.erase(id);
    {
      std::lock_guard lock(stats_mu);
      stats.accepted += 1;
      stats.accepted_bytes += bytes;
      stats.uploads_in_progress = uploads.size();
    }
    v1::Envelope e = protocol::NewEnvelope(request_id);
    auto* ok = e.mutable_update_accepted();
    ok->set_job_id(accepted.admission.job);
    ok->set_round(accepted.admission.round);
    ok->set_client_id(accepted.admission.client);
    ok->set_payload_bytes(bytes);
    Send(identity, e);
    return Ok();
  }

  void ExpireIdle() {
    const auto now = Clock::now();
    std::vector<uint64_t> idle;
    for (const auto& [id, u] : uploads) {
      if (now - u.last_activity > options.upload_idle_timeout) idle.push_back(id);
    }
    for (uint64_t id : idle) Drop(id);
    if (!idle.empty()) {
      std::lock_guard lock(stats_mu);
      stats.uploads_expired += idle.size();
    }
  }

  void UpdateInProgress() {
    std::lock_guard lock(stats_mu);
    stats.uploads_in_progress = uploads.size();
  }
};

Gateway::Gateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Gateway>> Gateway::Start(const GatewayOptions& options, shm::Segment& segment,
                                                RoundBook& rounds, UpdateSink& sink, const ModelStore& models) {
  if (options.upload_window_chunks == 0) return MakeError(ErrorCode::kConfig, "upload_window_chunks must be positive");
  KeepChunkBuffersInHeap(options.max_chunk_bytes);
  auto impl = std::make_unique<Impl>();
  if (!impl->wake) return MakeError(ErrorCode::kIo, std::string("gateway: eventfd: ") + std::strerror(errno));
  impl->options = options;
  impl->segment = &segment;
  impl->rounds = &rounds;
  impl->sink = &sink;
  impl->models = &models;
  if (!options.security.secret_key.empty()) {
    if (options.security.allow_list.empty()) {
      return MakeError(ErrorCode::kConfig, "a gateway with a CURVE key needs an allow-list of client keys");
    }
    TRIBUTARY_ASSIGN_OR_RETURN(impl->authenticator,
                               keys::ZapAuthenticator::Start(impl->context, options.security.allow_list, "gateway", "client"));
    TRIBUTARY_ASSIGN_OR_RETURN(impl->public_key, keys::PublicKeyOf(options.security.secret_key));
  }
  try {
    if (impl->authenticator) {
      impl->socket.set(zmq::sockopt::curve_server, 1);
      impl->socket.set(zmq::sockopt::curve_secretkey, options.security.secret_key);
      impl->socket.set(zmq::sockopt::zap_domain, "tributary");
    }
    // Frames larger than a chunk or an envelope are refused by libzmq before
    // they are buffered: a client cannot make the gateway hold a huge frame.
    const int64_t max_frame = static_cast<int64_t>(std::max(options.max_chunk_bytes, options.limits.max_envelope_bytes));
    impl->socket.set(zmq::sockopt::maxmsgsize, max_frame + 4096);
    // What one connection can make the gateway buffer: a window of chunks
    // and the few small requests a client has open beside it.
    impl->socket.set(zmq::sockopt::rcvhwm, static_cast<int>(options.upload_window_chunks) + 16);
    impl->socket.set(zmq::sockopt::linger, 0);
    impl->socket.set(zmq::sockopt::router_mandatory, 0);
    impl->socket.bind(options.bind);
    impl->endpoint = impl->socket.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return MakeError(ErrorCode::kIo, "gateway cannot bind " + options.bind + ": " + e.what());
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<Gateway>(new Gateway(std::move(impl)));
}

Gateway::~Gateway() {
  impl_->stop = true;
  const uint64_t one = 1;
  (void)!write(impl_->wake.get(), &one, sizeof one);
  impl_->thread.join();
  impl_->uploads.clear();  // their admissions release themselves
}

const std::string& Gateway::endpoint() const { return impl_->endpoint; }
const std::string& Gateway::public_key() const { return impl_->public_key; }

GatewayStats Gateway::Stats() const {
  std::lock_guard lock(impl_->stats_mu);
  return impl_->stats;
}

std::vector<CheckIn> Gateway::TakeCheckIns(size_t max) {
  std::lock_guard lock(impl_->stats_mu);
  std::vector<CheckIn> out;
  for (auto it = impl_->check_ins.begin(); it != impl_->check_ins.end() && out.size() < max;) {
    out.push_back(std::move(it->second));
    it = impl_->check_ins.erase(it);
  }
  return out;
}

}  // namespace tributary::gateway
