#include "tributary/protocol/codec.h"

#include <gtest/gtest.h>

#include <functional>

namespace tributary::protocol {
namespace {

agg::ModelSpec Model() {
  return agg::ModelSpec::Create({{"conv.weight", agg::DType::kF32, {4, 3}}, {"fc.bias", agg::DType::kF32, {5}}})
      .value();
}

v1::UpdateHeader GoodHeader() {
  v1::UpdateHeader h;
  h.set_job_id("job");
  h.set_round(3);
  h.set_client_id("client-7");
  h.set_sample_count(60);
  const agg::ModelSpec model = Model();
  for (const auto& t : model.tensors()) *h.add_tensors() = ToProto(t);
  h.set_payload_bytes(model.payload_bytes());
  return h;
}

TEST(Protocol, AcceptsAMatchingHeader) {
  auto layout = ValidateUpdateHeader(GoodHeader(), Model(), Limits{});
  ASSERT_TRUE(layout) << layout.error().ToString();
  EXPECT_EQ(layout.value().payload_bytes(), 68u);
}

TEST(Protocol, AcceptsHalfPrecisionTransport) {
  v1::UpdateHeader h = GoodHeader();
  h.mutable_tensors(0)->set_dtype(v1::DTYPE_F16);
  h.mutable_tensors(1)->set_dtype(v1::DTYPE_F16);
  h.set_payload_bytes(12 * 2 + 5 * 2);
  auto layout = ValidateUpdateHeader(h, Model(), Limits{});
  ASSERT_TRUE(layout) << layout.error().ToString();
  EXPECT_EQ(layout.value().runs().size(), 1u);
  // int8: a 4-byte scale per tensor.
  h.mutable_tensors(0)->set_dtype(v1::DTYPE_I8);
  h.mutable_tensors(1)->set_dtype(v1::DTYPE_I8);
  h.set_payload_bytes((4 + 12) + (4 + 5));
  ASSERT_TRUE(ValidateUpdateHeader(h, Model(), Limits{}));
}

TEST(Protocol, EachBadHeaderGetsItsTypedError) {
  struct Case {
    const char* what;
    std::function<void(v1::UpdateHeader&)> mutate;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {"no job", [](auto& h) { h.clear_job_id(); }, ErrorCode::kMalformedFrame},
      {"no client", [](auto& h) { h.clear_client_id(); }, ErrorCode::kMalformedFrame},
      {"zero samples", [](auto& h) { h.set_sample_count(0); }, ErrorCode::kInvalidArgument},
      {"missing tensor", [](auto& h) { h.mutable_tensors()->RemoveLast(); }, ErrorCode::kShapeMismatch},
      {"renamed tensor", [](auto& h) { h.mutable_tensors(1)->set_name("fc.b"); }, ErrorCode::kShapeMismatch},
      {"wrong shape", [](auto& h) { h.mutable_tensors(0)->set_shape(1, 4); }, ErrorCode::kShapeMismatch},
      {"mixed dtypes", [](auto& h) { h.mutable_tensors(0)->set_dtype(v1::DTYPE_F16); }, ErrorCode::kInvalidArgument},
      {"no dtype", [](auto& h) { h.mutable_tensors(0)->set_dtype(v1::DTYPE_UNSPECIFIED); },
       ErrorCode::kShapeMismatch},
      {"payload size lie", [](auto& h) { h.set_payload_bytes(67); }, ErrorCode::kShapeMismatch},
      {"oversized claim", [](auto& h) { h.set_payload_bytes(1ull << 50); }, ErrorCode::kTooLarge},
  };
  for (const Case& c : cases) {
    v1::UpdateHeader h = GoodHeader();
    c.mutate(h);
    auto r = ValidateUpdateHeader(h, Model(), Limits{});
    ASSERT_FALSE(r) << c.what;
    EXPECT_EQ(r.error().code, c.code) << c.what << ": " << r.error().ToString();
  }
  Limits tight;
  tight.max_tensors = 1;
  EXPECT_EQ(ValidateUpdateHeader(GoodHeader(), Model(), tight).error().code, ErrorCode::kTooLarge);
}

std::span<const std::byte> Bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

TEST(Protocol, EnvelopeRoundTripAndRejections) {
  v1::Envelope e;
  e.set_protocol_version(kProtocolVersion);
  e.set_request_id(42);
  *e.mutable_update() = GoodHeader();
  const std::string wire = EncodeEnvelope(e);
  auto back = DecodeEnvelope(Bytes(wire), Limits{});
  ASSERT_TRUE(back) << back.error().ToString();
  EXPECT_EQ(back.value().update().client_id(), "client-7");

  EXPECT_EQ(DecodeEnvelope(Bytes(std::string("\xff\xff\xff garbage", 11)), Limits{}).error().code,
            ErrorCode::kMalformedFrame);
  v1::Envelope future = e;
  future.set_protocol_version(2);
  EXPECT_EQ(DecodeEnvelope(Bytes(EncodeEnvelope(future)), Limits{}).error().code, ErrorCode::kUnsupportedVersion);
  v1::Envelope empty;
  empty.set_protocol_version(kProtocolVersion);
  EXPECT_EQ(DecodeEnvelope(Bytes(EncodeEnvelope(empty)), Limits{}).error().code, ErrorCode::kMalformedFrame);
  Limits tiny;
  tiny.max_envelope_bytes = 8;
  EXPECT_EQ(DecodeEnvelope(Bytes(wire), tiny).error().code, ErrorCode::kTooLarge);
}

TEST(Protocol, StreamingChecksumEqualsOneShot) {
  std::string data(100'000, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31);
  PayloadHasher h;
  for (size_t off = 0; off < data.size(); off += 7777) {
    h.Update(Bytes(data.substr(off, std::min<size_t>(7777, data.size() - off))));
  }
  EXPECT_EQ(h.Digest(), PayloadHasher::Of(Bytes(data)));
  data[500] ^= 1;
  EXPECT_NE(h.Digest(), PayloadHasher::Of(Bytes(data)));
}

TEST(Protocol, ErrorRepliesCarryCodeAndRetryability) {
  const v1::ErrorReply r = ToErrorReply(MakeError(ErrorCode::kResourceExhausted, "segment full"));
  EXPECT_EQ(r.code(), v1::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(r.retryable());
  EXPECT_FALSE(ToErrorReply(MakeError(ErrorCode::kNotSelected, "")).retryable());
  const Error back = FromErrorReply(r);
  EXPECT_EQ(back.code, ErrorCode::kResourceExhausted);
  v1::ErrorReply unknown;
  unknown.set_code(static_cast<v1::ErrorCode>(99));
  EXPECT_EQ(FromErrorReply(unknown).code, ErrorCode::kInternal);
}

}  // namespace
}  // namespace tributary::protocol
