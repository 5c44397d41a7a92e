#include "tributary/aggregator/kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace tributary::agg {
namespace {

uint16_t ToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return static_cast<uint16_t>(bits >> 16);
}

// Payload bytes of `values` laid out per `spec` (each tensor in its dtype).
std::vector<std::byte> Encode(const ModelSpec& spec, const std::vector<float>& values) {
  std::vector<std::byte> out(spec.payload_bytes());
  for (const DTypeRun& run : spec.runs()) {
    for (uint64_t i = 0; i < run.elements; ++i) {
      const float v = values[run.first_element + i];
      std::byte* dst = out.data() + run.byte_offset + i * DTypeSize(run.dtype);
      if (run.dtype == DType::kF32) {
        std::memcpy(dst, &v, 4);
      } else if (run.dtype == DType::kF16) {
        const _Float16 h = static_cast<_Float16>(v);
        std::memcpy(dst, &h, 2);
      } else {
        const uint16_t b = ToBF16(v);
        std::memcpy(dst, &b, 2);
      }
    }
  }
  return out;
}

// What each element decodes to in its dtype.
std::vector<float> Decode(const ModelSpec& spec, const std::vector<std::byte>& payload) {
  std::vector<float> out(spec.elements());
  for (const DTypeRun& run : spec.runs()) {
    for (uint64_t i = 0; i < run.elements; ++i) {
      const std::byte* src = payload.data() + run.byte_offset + i * DTypeSize(run.dtype);
      float v;
      if (run.dtype == DType::kF32) {
        std::memcpy(&v, src, 4);
      } else if (run.dtype == DType::kF16) {
        _Float16 h;
        std::memcpy(&h, src, 2);
        v = static_cast<float>(h);
      } else {
        uint16_t b;
        std::memcpy(&b, src, 2);
        const uint32_t bits = uint32_t{b} << 16;
        std::memcpy(&v, &bits, 4);
      }
      out[run.first_element + i] = v;
    }
  }
  return out;
}

std::vector<float> Random(uint64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

ModelSpec Mixed(uint64_t n) {
  return ModelSpec::Create({{"w32", DType::kF32, {static_cast<int64_t>(n)}},
                            {"w16", DType::kF16, {static_cast<int64_t>(n / 2)}},
                            {"wbf", DType::kBF16, {static_cast<int64_t>(n / 3)}},
                            {"tail", DType::kF32, {7}}})
      .value();
}

TEST(Kernels, FoldMatchesScalarReferenceForEveryDType) {
  const ModelSpec spec = Mixed(100'003);
  std::vector<std::vector<std::byte>> payloads;
  std::vector<FiniteUpdate> updates;
  for (uint32_t j = 0; j < 5; ++j) payloads.push_back(Encode(spec, Random(spec.elements(), j)));
  for (uint32_t j = 0; j < 5; ++j) updates.push_back(FiniteUpdate::Check(spec, payloads[j], 10.0 + j).value());

  std::vector<float> acc(spec.elements(), 0.0f);
  FoldUpdates(acc, updates);

  std::vector<float> want(spec.elements(), 0.0f);
  for (uint32_t j = 0; j < 5; ++j) {
    const std::vector<float> x = Decode(spec, payloads[j]);
    const float w = static_cast<float>(10.0 + j);
    for (uint64_t i = 0; i < want.size(); ++i) {
      const float p = w * x[i];
      want[i] = want[i] + p;
    }
  }
  ASSERT_EQ(std::memcmp(acc.data(), want.data(), acc.size() * 4), 0) << "fold differs from per-element sums";
}

TEST(Kernels, BatchedFoldIsBitIdenticalToOneAtATimeAtAnyThreadCount) {
  const uint64_t n = 300'001;  // large enough for the parallel path
  const ModelSpec spec = ModelSpec::Create({{"w", DType::kF32, {static_cast<int64_t>(n)}}}).value();
  std::vector<std::vector<std::byte>> payloads;
  std::vector<FiniteUpdate> updates;
  for (uint32_t j = 0; j < 21; ++j) payloads.push_back(Encode(spec, Random(n, 100 + j)));
  for (uint32_t j = 0; j < 21; ++j) updates.push_back(FiniteUpdate::Check(spec, payloads[j], 1.0 + j).value());

  std::vector<float> one(n, 0.0f);
  for (const FiniteUpdate& u : updates) FoldUpdates(one, std::span(&u, 1), {1});
  for (int threads : {1, 2, 3}) {
    std::vector<float> batched(n, 0.0f);
    FoldUpdates(batched, updates, {threads});  // 21 = a group of 16, then 5
    EXPECT_EQ(std::memcmp(one.data(), batched.data(), n * 4), 0) << threads << " threads";
  }
}

TEST(Kernels, RejectsNaNAndInfInEveryDType) {
  const ModelSpec spec = Mixed(1000);
  const std::vector<float> good = Random(spec.elements(), 7);
  ASSERT_TRUE(FiniteUpdate::Check(spec, Encode(spec, good), 1.0));
  for (const DTypeRun& run : spec.runs()) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      std::vector<float> v = good;
      v[run.first_element + run.elements - 1] = bad;
      auto r = FiniteUpdate::Check(spec, Encode(spec, v), 1.0);
      ASSERT_FALSE(r) << DTypeName(run.dtype) << " " << bad;
      EXPECT_EQ(r.error().code, ErrorCode::kNonFinite);
    }
  }
}

// Trusted: for blocks the gateway already checked. It skips the value scan
// (what the functions save) but not the size and weight checks.
TEST(Kernels, TrustedSkipsTheScanButNotTheSizeOrWeight) {
  const ModelSpec spec = Mixed(1000);
  std::vector<float> v = Random(spec.elements(), 7);
  v[3] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<std::byte> payload = Encode(spec, v);
  EXPECT_EQ(FiniteUpdate::Check(spec, payload, 1.0).error().code, ErrorCode::kNonFinite);
  auto trusted = FiniteUpdate::Trusted(spec, payload, 2.0);
  ASSERT_TRUE(trusted);
  EXPECT_EQ(trusted.value().weight(), 2.0);
  EXPECT_EQ(FiniteUpdate::Trusted(spec, std::span(payload).first(payload.size() - 1), 1.0).error().code,
            ErrorCode::kShapeMismatch);
  EXPECT_EQ(FiniteUpdate::Trusted(spec, payload, 0.0).error().code, ErrorCode::kInvalidArgument);
}

// int8 transport: each tensor carries its own f32 scale before its values.
TEST(Kernels, Int8TensorsFoldWithTheirOwnScale) {
  const ModelSpec spec =
      ModelSpec::Create({{"a", DType::kI8, {5}}, {"b", DType::kI8, {3}}, {"c", DType::kI8, {0}}}).value();
  ASSERT_EQ(spec.runs().size(), 2u);  // never merged: two scales; the empty tensor has no bytes
  ASSERT_EQ(spec.payload_bytes(), (4u + 5u) + (4u + 3u));
  const float scale_a = 0.5f, scale_b = 0.03125f;
  const int8_t qa[5] = {-127, -1, 0, 1, 127}, qb[3] = {3, -4, 100};
  std::vector<std::byte> payload(spec.payload_bytes());
  std::memcpy(payload.data(), &scale_a, 4);
  std::memcpy(payload.data() + 4, qa, 5);
  std::memcpy(payload.data() + 9, &scale_b, 4);
  std::memcpy(payload.data() + 13, qb, 3);
  auto u = FiniteUpdate::Check(spec, payload, 3.0);
  ASSERT_TRUE(u) << u.error().ToString();
  std::vector<float> acc(spec.elements(), 1.0f);
  FoldUpdates(acc, std::span(&u.value(), 1));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(acc[i], 1.0f + (3.0f * scale_a) * qa[i]) << i;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(acc[5 + i], 1.0f + (3.0f * scale_b) * qb[i]) << i;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(payload.data() + 9, &nan, 4);
  auto bad = FiniteUpdate::Check(spec, payload, 3.0);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kNonFinite);
}

TEST(Kernels, F16OverflowIsCaughtAsInf) {
  const ModelSpec spec = ModelSpec::Create({{"h", DType::kF16, {4}}}).value();
  // 1e6 does not fit in f16: the client's conversion produced Inf.
  auto r = FiniteUpdate::Check(spec, Encode(spec, {1.0f, 2.0f, 1e6f, 0.0f}), 1.0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNonFinite);
}

TEST(Kernels, RejectsWrongSizeAndBadWeight) {
  const ModelSpec spec = ModelSpec::Create({{"w", DType::kF32, {10}}}).value();
  std::vector<std::byte> short_payload(36);
  EXPECT_EQ(FiniteUpdate::Check(spec, short_payload, 1.0).error().code, ErrorCode::kShapeMismatch);
  std::vector<std::byte> payload(40);
  EXPECT_EQ(FiniteUpdate::Check(spec, payload, 0.0).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(FiniteUpdate::Check(spec, payload, std::nan("")).error().code, ErrorCode::kInvalidArgument);
}

TEST(Kernels, AxpyAndFoldPartials) {
  std::vector<float> acc(70'000, 1.0f);
  const std::vector<float> x = Random(acc.size(), 3);
  Axpy(acc, x, 2.0f);
  EXPECT_EQ(acc[12345], 1.0f + 2.0f * x[12345]);
  std::vector<float> acc2(acc.size(), 0.0f);
  const std::vector<std::span<const float>> parts = {acc, x};
  FoldPartials(acc2, parts);
  EXPECT_EQ(acc2[999], acc[999] + x[999]);
}

}  // namespace
}  // namespace tributary::agg

namespace tributary::agg {
namespace {

// FiniteScan over a payload that arrives in pieces of any size gives
// AllFinite's answer, for every dtype, with the bad value anywhere (an
// element split across pieces, an i8 tensor's scale).
TEST(FiniteScanTest, PiecesOfAnySizeGiveAllFinitesAnswer) {
  const ModelSpec layout = ModelSpec::Create({{"a", DType::kF32, {301}},
                                              {"b", DType::kF16, {77}},
                                              {"q", DType::kI8, {50}},
                                              {"c", DType::kBF16, {33}},
                                              {"d", DType::kF32, {0}},
                                              {"e", DType::kF32, {19}}})
                               .value();
  std::vector<std::byte> clean(layout.payload_bytes(), std::byte{0});
  // Zero bytes are finite in every dtype; give the i8 scale and some floats values.
  const float scale = 0.5f;
  const uint64_t q_offset = layout.runs()[2].byte_offset;
  std::memcpy(clean.data() + q_offset, &scale, 4);
  const float one = 1.0f;
  std::memcpy(clean.data() + 8, &one, 4);
  ASSERT_TRUE(AllFinite(layout, clean));

  struct Bad {
    uint64_t byte;  // where the bad value starts
    std::vector<uint8_t> bytes;
  };
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  auto f32 = [](float v) {
    std::vector<uint8_t> b(4);
    std::memcpy(b.data(), &v, 4);
    return b;
  };
  const uint64_t f16_at = layout.runs()[1].byte_offset, bf16_at = layout.runs()[3].byte_offset;
  const std::vector<Bad> bads = {{0, f32(nan)},
                                 {4 * 300, f32(inf)},
                                 {f16_at + 2 * 40, {0x00, 0x7e}},  // f16 NaN
                                 {q_offset, f32(nan)},             // the i8 scale
                                 {bf16_at + 2 * 32, {0x80, 0x7f}},  // bf16 Inf
                                 {layout.payload_bytes() - 4, f32(-inf)}};
  std::mt19937 rng(5);
  for (size_t k = 0; k <= bads.size(); ++k) {
    std::vector<std::byte> payload = clean;
    if (k < bads.size()) std::memcpy(payload.data() + bads[k].byte, bads[k].bytes.data(), bads[k].bytes.size());
    const bool want = AllFinite(layout, payload);
    EXPECT_EQ(want, k == bads.size());
    for (int trial = 0; trial < 50; ++trial) {
      FiniteScan scan;
      bool ok = true;
      for (uint64_t got = 0; got < payload.size();) {
        got = std::min<uint64_t>(payload.size(), got + 1 + rng() % (trial < 25 ? 7 : 300));
        ok = scan.Advance(layout, payload.data(), got) && ok;
      }
      EXPECT_EQ(ok, want) << "bad value " << k << ", trial " << trial;
    }
  }
}

}  // namespace
}  // namespace tributary::agg
