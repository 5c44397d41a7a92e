// The gateway over real ZeroMQ sockets into a real shared-memory segment:
// accepted uploads land in a block byte for byte; each kind of bad input gets
// its typed error, leaks nothing, and does not stop the next good client.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <mutex>

#include "support/upload_client.h"
#include "tributary/gateway/gateway.h"

namespace tributary::gateway {
namespace {

using testing::UploadClient;

struct RecordingSink final : UpdateSink {
  std::mutex mu;
  std::vector<std::pair<AcceptedUpdate, shm::BlockRef>> got;
  Result<void> Accept(const AcceptedUpdate& u, shm::BlockRef block) override {
    std::lock_guard lock(mu);
    got.emplace_back(u, std::move(block));
    return Ok();
  }
  // Read under the lock: the gateway's thread writes `got`, and the reply that
  // tells the test an upload finished goes through libzmq, which TSan cannot see.
  size_t Size() {
    std::lock_guard lock(mu);
    return got.size();
  }
};

agg::ModelSpec Model() {
  return agg::ModelSpec::Create({{"w", agg::DType::kF32, {1000, 100}}, {"b", agg::DType::kF32, {100}}}).value();
}

std::string Payload(const agg::ModelSpec& spec, float seed) {
  std::vector<float> v(spec.elements());
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(seed + static_cast<float>(i));
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

v1::UpdateHeader Header(const std::string& client, const std::string& payload, uint64_t round = 3) {
  v1::UpdateHeader h;
  h.set_job_id("job");
  h.set_round(round);
  h.set_client_id(client);
  h.set_model_version(7);
  h.set_sample_count(60);
  const agg::ModelSpec model = Model();
  for (const auto& t : model.tensors()) *h.add_tensors() = protocol::ToProto(t);
  h.set_payload_bytes(payload.size());
  h.set_payload_xxh3(protocol::PayloadHasher::Of(std::as_bytes(std::span(payload.data(), payload.size()))));
  return h;
}

class GatewayTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(64ull << 20); }

  void Start(uint64_t segment_bytes, GatewayOptions options = {}) {
    gateway_.reset();
    models_.Clear();
    segment_.reset();
    segment_ = shm::Segment::Create({"tributary.gw." + std::to_string(getpid()), segment_bytes, 1024}).value();
    RoundSpec spec;
    spec.job = "job";
    spec.round = 3;
    spec.model_version = 7;
    spec.model = Model();
    for (int c = 0; c < 20; ++c) spec.selected["client-" + std::to_string(c)] = 100 + c;
    rounds_.OpenRound(spec);
    options.max_chunk_bytes = 64 << 10;
    auto g = Gateway::Start(options, *segment_, rounds_, sink_, models_);
    ASSERT_TRUE(g) << g.error().ToString();
    gateway_ = std::move(g).value();
  }

  void TearDown() override {
    gateway_.reset();
    sink_.got.clear();
    models_.Clear();
  }

  RoundBook rounds_;
  ModelStore models_;
  RecordingSink sink_;
  std::unique_ptr<shm::Segment> segment_;
  std::unique_ptr<Gateway> gateway_;
};

TEST_F(GatewayTest, AcceptedUpdatesLandInSharedMemoryByteForByte) {
  UploadClient client(gateway_->endpoint());
  std::vector<std::string> payloads;
  for (int c = 0; c < 5; ++c) {
    payloads.push_back(Payload(Model(), static_cast<float>(c)));
    auto r = client.Upload(Header("client-" + std::to_string(c), payloads.back()), payloads.back());
    ASSERT_TRUE(r) << r.error().ToString();
    ASSERT_TRUE(r.value().has_update_accepted());
    EXPECT_EQ(r.value().update_accepted().payload_bytes(), payloads.back().size());
  }
  ASSERT_EQ(sink_.Size(), 5u);
  for (int c = 0; c < 5; ++c) {
    const auto& [u, block] = sink_.got[c];
    EXPECT_EQ(u.admission.client, "client-" + std::to_string(c));
    EXPECT_EQ(u.admission.route_key, 100u + c);
    EXPECT_EQ(block.meta().weight, 60.0);
    EXPECT_TRUE(block.meta().checked_finite);  // the functions will not scan it again
    ASSERT_EQ(block.bytes().size(), payloads[c].size());
    EXPECT_EQ(std::memcmp(block.bytes().data(), payloads[c].data(), payloads[c].size()), 0);
  }
  EXPECT_EQ(gateway_->Stats().accepted, 5u);
  for (int c = 0; c < 5; ++c) {  // each client delivered: admitted no more
    EXPECT_EQ(rounds_.Admit("job", 3, 7, "client-" + std::to_string(c)).error().code, ErrorCode::kDuplicateUpdate);
  }
  sink_.got.clear();
  EXPECT_EQ(segment_->Stats().live_blocks, 0u);
}

// Credit-based flow control: the gateway grants a window of chunks, and a
// client that sends every chunk without waiting still gets one answer per
// chunk, in order, and its update byte for byte.
TEST_F(GatewayTest, ChunksSentAheadOfTheAnswersAreAnsweredInOrder) {
  UploadClient client(gateway_->endpoint());
  const std::string payload = Payload(Model(), 1.5f);
  auto ready = client.Header(Header("client-0", payload));
  ASSERT_TRUE(ready) << ready.error().ToString();
  EXPECT_EQ(ready.value().upload_ready().window_chunks(), GatewayOptions{}.upload_window_chunks);
  const uint64_t chunk = 64 << 10;
  auto answers = client.AllChunksAtOnce(ready.value().upload_ready().upload_id(), payload, chunk);
  ASSERT_EQ(answers.size(), (payload.size() + chunk - 1) / chunk);
  for (size_t i = 0; i + 1 < answers.size(); ++i) {
    ASSERT_TRUE(answers[i]) << answers[i].error().ToString();
    EXPECT_EQ(answers[i].value().upload_progress().received_bytes(), (i + 1) * chunk);
  }
  ASSERT_TRUE(answers.back()) << answers.back().error().ToString();
  EXPECT_TRUE(answers.back().value().has_update_accepted());
  ASSERT_EQ(sink_.Size(), 1u);
  EXPECT_EQ(std::memcmp(sink_.got[0].second.bytes().data(), payload.data(), payload.size()), 0);
}

// Each chunk's values are checked as it arrives: a NaN whose bytes straddle
// two chunks is found, and reported after the checksum, as before; a
// corrupted payload is a checksum mismatch even when it also holds a NaN.
TEST_F(GatewayTest, ANonFiniteValueSplitAcrossChunksIsRefusedAfterTheChecksum) {
  UploadClient client(gateway_->endpoint());
  std::string nan_payload = Payload(Model(), 2.0f);
  const float nan = std::nanf("");
  std::memcpy(nan_payload.data() + 4092, &nan, 4);  // element 1023
  for (size_t piece : {size_t{4093}, size_t{64 << 10}}) {  // the first chunk ends inside it; or not
    auto r = client.Upload(Header("client-1", nan_payload), nan_payload, piece);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::kNonFinite) << piece;
  }
  auto corrupted = Header("client-2", nan_payload);
  corrupted.set_payload_xxh3(corrupted.payload_xxh3() ^ 1);
  auto r = client.Upload(corrupted, nan_payload);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kChecksumMismatch);
  EXPECT_TRUE(client.Upload(Header("client-1", Payload(Model(), 2.0f)), Payload(Model(), 2.0f)));
  EXPECT_EQ(sink_.Size(), 1u);
}

TEST_F(GatewayTest, HalfPrecisionTransportIsAccepted) {
  v1::UpdateHeader h = Header("client-1", "");
  std::string payload(Model().elements() * 2, '\0');  // f16 zeros
  for (auto& t : *h.mutable_tensors()) t.set_dtype(v1::DTYPE_F16);
  h.set_payload_bytes(payload.size());
  h.set_payload_xxh3(protocol::PayloadHasher::Of(std::as_bytes(std::span(payload.data(), payload.size()))));
  UploadClient client(gateway_->endpoint());
  auto r = client.Upload(h, payload);
  ASSERT_TRUE(r) << r.error().ToString();
  ASSERT_EQ(sink_.Size(), 1u);
  EXPECT_EQ(sink_.got[0].first.layout.runs()[0].dtype, agg::DType::kF16);
}

TEST_F(GatewayTest, AnInterruptedUploadResumesWhereTheGatewayStopped) {
  const std::string payload = Payload(Model(), 1);
  UploadClient first(gateway_->endpoint());
  auto ready = first.Header(Header("client-2", payload)).value();
  const uint64_t id = ready.upload_ready().upload_id();
  ASSERT_TRUE(first.Chunk(id, 0, payload.substr(0, 65536)));
  ASSERT_TRUE(first.Chunk(id, 65536, payload.substr(65536, 65536)));
  // A new connection (a reconnect) sends the header again.
  UploadClient second(gateway_->endpoint());
  auto again = second.Header(Header("client-2", payload));
  ASSERT_TRUE(again) << again.error().ToString();
  EXPECT_EQ(again.value().upload_ready().upload_id(), id);
  EXPECT_EQ(again.value().upload_ready().received_bytes(), 131072u);
  auto done = second.Upload(Header("client-2", payload), payload);
  ASSERT_TRUE(done) << done.error().ToString();
  EXPECT_TRUE(done.value().has_update_accepted());
  ASSERT_EQ(sink_.Size(), 1u);  // folded once, not twice
  EXPECT_EQ(std::memcmp(sink_.got[0].second.bytes().data(), payload.data(), payload.size()), 0);
}

// A client that crashed mid-upload and retrained comes back with another
// payload: its newer header replaces the unfinished upload at once (no wait
// for the idle timeout, no DUPLICATE_UPDATE), and only the new one lands.
TEST_F(GatewayTest, ANewerPayloadFromTheSameClientSupersedesItsUnfinishedUpload) {
  const std::string old_payload = Payload(Model(), 1), new_payload = Payload(Model(), 2);
  UploadClient crashed(gateway_->endpoint());
  const uint64_t old_id = crashed.Header(Header("client-2", old_payload)).value().upload_ready().upload_id();
  ASSERT_TRUE(crashed.Chunk(old_id, 0, old_payload.substr(0, 65536)));
  EXPECT_EQ(segment_->Stats().live_blocks, 1u);
  UploadClient back(gateway_->endpoint());
  auto ready = back.Header(Header("client-2", new_payload));
  ASSERT_TRUE(ready) << ready.error().ToString();
  EXPECT_NE(ready.value().upload_ready().upload_id(), old_id);
  EXPECT_EQ(ready.value().upload_ready().received_bytes(), 0u);
  EXPECT_EQ(segment_->Stats().live_blocks, 1u);  // the old block went
  auto stale = crashed.Chunk(old_id, 65536, old_payload.substr(65536, 65536));
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::kNotFound);
  auto done = back.Upload(Header("client-2", new_payload), new_payload);
  ASSERT_TRUE(done) << done.error().ToString();
  EXPECT_TRUE(done.value().has_update_accepted());
  ASSERT_EQ(sink_.Size(), 1u);
  EXPECT_EQ(std::memcmp(sink_.got[0].second.bytes().data(), new_payload.data(), new_payload.size()), 0);
  EXPECT_EQ(gateway_->Stats().uploads_superseded, 1u);
  // Now it is accepted: the same client again is DUPLICATE_UPDATE, which means exactly that.
  EXPECT_EQ(back.Upload(Header("client-2", old_payload), old_payload).error().code, ErrorCode::kDuplicateUpdate);
}

TEST_F(GatewayTest, EachBadInputGetsItsTypedErrorAndLeaksNothing) {
  const std::string payload = Payload(Model(), 2);
  UploadClient c(gateway_->endpoint());
  auto code = [](const Result<v1::Envelope>& r) { return r ? ErrorCode::kOk : r.error().code; };
  struct Case {
    const char* what;
    std::function<Result<v1::Envelope>()> send;
    ErrorCode want;
  };
  std::string nan_payload = payload;
  const float nan = std::nanf("");
  std::memcpy(nan_payload.data() + 400, &nan, 4);
  const std::vector<Case> cases = {
      {"garbage envelope", [&] { return c.RequestRaw("\x0a\xff\xff not protobuf"); }, ErrorCode::kMalformedFrame},
      {"future protocol version",
       [&] {
         v1::Envelope e;
         e.set_protocol_version(2);
         *e.mutable_update() = Header("client-3", payload);
         return c.Request(e);
       },
       ErrorCode::kUnsupportedVersion},
      {"header with payload frames",
       [&] {
         v1::Envelope e;
         e.set_protocol_version(1);
         *e.mutable_update() = Header("client-3", payload);
         return c.Request(e, {payload});
       },
       ErrorCode::kMalformedFrame},
      {"unknown job",
       [&] {
         auto h = Header("client-3", payload);
         h.set_job_id("other");
         return c.Header(h);
       },
       ErrorCode::kUnknownJob},
      {"future round", [&] { return c.Header(Header("client-3", payload, 4)); }, ErrorCode::kRoundClosed},
      {"old round", [&] { return c.Header(Header("client-3", payload, 2)); }, ErrorCode::kReplay},
      {"stale model version",
       [&] {
         auto h = Header("client-3", payload);
         h.set_model_version(6);
         return c.Header(h);
       },
       ErrorCode::kReplay},
      {"not selected", [&] { return c.Header(Header("stranger", payload)); }, ErrorCode::kNotSelected},
      {"wrong shape",
       [&] {
         auto h = Header("client-3", payload);
         h.mutable_tensors(0)->set_shape(0, 299);
         return c.Header(h);
       },
       ErrorCode::kShapeMismatch},
      {"oversized claim",
       [&] {
         auto h = Header("client-3", payload);
         h.set_payload_bytes(1ull << 50);
         return c.Header(h);
       },
       ErrorCode::kTooLarge},
      {"chunk of no upload", [&] { return c.Chunk(424242, 0, "abc"); }, ErrorCode::kNotFound},
      {"chunk at the wrong offset",
       [&] {
         auto ready = c.Header(Header("client-4", payload)).value();
         return c.Chunk(ready.upload_ready().upload_id(), 100, payload.substr(100, 100));
       },
       ErrorCode::kInvalidArgument},
      {"chunk over the chunk limit",
       [&] {
         auto ready = c.Header(Header("client-4", payload)).value();  // resumes client-4
         return c.Chunk(ready.upload_ready().upload_id(), 0, payload.substr(0, 100000));
       },
       ErrorCode::kTooLarge},
      {"checksum mismatch",
       [&] {
         auto h = Header("client-5", payload);
         h.set_payload_xxh3(h.payload_xxh3() ^ 1);
         return c.Upload(h, payload);
       },
       ErrorCode::kChecksumMismatch},
      {"NaN in the payload", [&] { return c.Upload(Header("client-6", nan_payload), nan_payload); },
       ErrorCode::kNonFinite},
      {"first upload of client-7", [&] { return c.Upload(Header("client-7", payload), payload); }, ErrorCode::kOk},
      {"duplicate of client-7", [&] { return c.Upload(Header("client-7", payload), payload); },
       ErrorCode::kDuplicateUpdate},
      {"chunk past the end",
       [&] {
         const std::string small = payload.substr(0, 64);
         auto ready = c.Header(Header("client-8", payload)).value();
         std::string r = payload.substr(0, 65536);
         uint64_t off = 0;
         while (off + 65536 <= payload.size()) {
           if (!c.Chunk(ready.upload_ready().upload_id(), off, payload.substr(off, 65536))) break;
           off += 65536;
         }
         return c.Chunk(ready.upload_ready().upload_id(), off, std::string(65536, 'x'));
       },
       ErrorCode::kTooLarge},
  };
  for (const Case& k : cases) EXPECT_EQ(code(k.send()), k.want) << k.what;

  // After a checksum or NaN rejection the client may send a correct update.
  auto retry = c.Upload(Header("client-5", payload), payload);
  ASSERT_TRUE(retry) << retry.error().ToString();
  const GatewayStats s = gateway_->Stats();
  EXPECT_EQ(s.accepted, 2u);
  EXPECT_EQ(s.rejected.at(ErrorCode::kMalformedFrame), 2u);
  EXPECT_EQ(s.rejected.at(ErrorCode::kReplay), 2u);
  EXPECT_EQ(s.rejected.at(ErrorCode::kTooLarge), 3u);
  EXPECT_EQ(s.rejected.size(), 13u);  // every code of the table above
  EXPECT_EQ(s.uploads_in_progress, 1u);  // client-4's, resumable
  // Only the accepted blocks and client-4's reservation are in the segment.
  EXPECT_EQ(segment_->Stats().live_blocks, 3u);
  sink_.got.clear();
  gateway_.reset();
  EXPECT_EQ(segment_->Stats().live_blocks, 0u);
}

TEST_F(GatewayTest, ClientsDownloadTheGlobalModelInChunksFromSharedMemory) {
  UploadClient c(gateway_->endpoint());
  EXPECT_EQ(c.DownloadModel("job").error().code, ErrorCode::kNotFound);
  const std::string payload = Payload(Model(), 9);
  auto block = segment_->Allocate(payload.size(), {shm::BlockKind::kModel}).value();
  std::memcpy(block.mutable_bytes().data(), payload.data(), payload.size());
  const uint64_t xxh3 = protocol::PayloadHasher::Of(block.bytes());
  models_.Publish("job", PublishedModel{5, Model(), xxh3, std::move(block)});
  auto got = c.DownloadModel("job", 50'000);
  ASSERT_TRUE(got) << got.error().ToString();
  EXPECT_EQ(got.value().first.model_version(), 5u);
  EXPECT_EQ(got.value().first.tensors_size(), 2);
  EXPECT_EQ(got.value().first.payload_xxh3(), xxh3);
  EXPECT_EQ(got.value().second, payload);
  // An older version never replaces a newer one.
  models_.Publish("job", PublishedModel{4, Model(), 0, segment_->Allocate(8, {}).value()});
  EXPECT_EQ(c.DownloadModel("job").value().first.model_version(), 5u);
  v1::Envelope past;
  past.set_protocol_version(1);
  past.mutable_model_request()->set_job_id("job");
  past.mutable_model_request()->set_offset(payload.size() + 1);
  EXPECT_EQ(c.Request(past).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(gateway_->Stats().model_bytes_served, 2 * payload.size());
}

TEST_F(GatewayTest, AFullSegmentIsRetryableAndIdleUploadsExpire) {
  GatewayOptions o;
  o.upload_idle_timeout = std::chrono::milliseconds(300);
  Start(2ull << 20, o);  // room for fewer than 20 reservations of 120 KB... and a bit
  const std::string payload = Payload(Model(), 3);
  UploadClient c(gateway_->endpoint());
  int reserved = 0;
  Result<v1::Envelope> r = v1::Envelope();
  for (int k = 0; k < 20; ++k) {
    r = c.Header(Header("client-" + std::to_string(k), payload));
    if (!r) break;
    ++reserved;
  }
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
  EXPECT_TRUE(protocol::IsRetryable(r.error().code));
  EXPECT_GT(reserved, 3);
  // Abandoned reservations are dropped after the idle timeout...
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  EXPECT_EQ(gateway_->Stats().uploads_expired, static_cast<uint64_t>(reserved));
  EXPECT_EQ(segment_->Stats().live_blocks, 0u);
  // ...and their clients may start over.
  auto again = c.Upload(Header("client-0", payload), payload);
  ASSERT_TRUE(again) << again.error().ToString();
}

}  // namespace
}  // namespace tributary::gateway
