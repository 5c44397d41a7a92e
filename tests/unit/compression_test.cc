// The SDK's transport encodings round-trip within their documented error.
#include "tributary/client/compression.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace tributary::client {
namespace {

Parameters Sample() {
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 2.0f);
  Parameters p = {{"a", {3, 50}, std::vector<float>(150)}, {"b", {7}, std::vector<float>(7)}, {"empty", {0}, {}}};
  for (Tensor& t : p) {
    for (float& x : t.values) x = d(rng);
  }
  return p;
}

TEST(Compression, EachEncodingRoundTripsWithinItsError) {
  const Parameters p = Sample();
  for (Compression c : {Compression::kNone, Compression::kF16, Compression::kBF16, Compression::kInt8}) {
    auto e = Encode(p, c);
    ASSERT_TRUE(e) << e.error().ToString();
    EXPECT_EQ(e.value().f32_bytes, 157u * 4);
    auto d = Decode(e.value().tensors, e.value().payload);
    ASSERT_TRUE(d) << d.error().ToString();
    ASSERT_EQ(d.value().size(), p.size());
    for (size_t t = 0; t < p.size(); ++t) {
      float max_abs = 0;
      for (float x : p[t].values) max_abs = std::max(max_abs, std::fabs(x));
      for (size_t i = 0; i < p[t].values.size(); ++i) {
        const float x = p[t].values[i], y = d.value()[t].values[i];
        switch (c) {
          case Compression::kNone: EXPECT_EQ(x, y); break;
          case Compression::kF16: EXPECT_LE(std::fabs(x - y), std::fabs(x) * 0x1p-11f); break;
          case Compression::kBF16: EXPECT_LE(std::fabs(x - y), std::fabs(x) * 0x1p-8f); break;
          case Compression::kInt8: EXPECT_LE(std::fabs(x - y), max_abs / 127 / 2 * 1.0001f); break;
        }
      }
    }
  }
  EXPECT_EQ(Encode(p, Compression::kInt8).value().payload.size(), (4u + 150) + (4u + 7));
  EXPECT_EQ(Encode(p, Compression::kF16).value().payload.size(), 157u * 2);
}

TEST(Compression, BadParametersAreRefusedBeforeSending) {
  Parameters p = Sample();
  p[1].values.pop_back();
  EXPECT_EQ(Encode(p, Compression::kNone).error().code, ErrorCode::kInvalidArgument);
  p = Sample();
  p[0].values[9] = INFINITY;
  EXPECT_EQ(Encode(p, Compression::kF16).error().code, ErrorCode::kNonFinite);
  EXPECT_EQ(ParseCompression("zstd").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(ParseCompression("int8").value(), Compression::kInt8);
}

TEST(Compression, ATruncatedPayloadIsAShapeMismatch) {
  auto e = Encode(Sample(), Compression::kInt8).value();
  e.payload.pop_back();
  EXPECT_EQ(Decode(e.tensors, e.payload).error().code, ErrorCode::kShapeMismatch);
}

}  // namespace
}  // namespace tributary::client
