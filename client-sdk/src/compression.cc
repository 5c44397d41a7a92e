#include "tributary/client/compression.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tributary::client {
namespace {

uint16_t ToBF16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

float FromBF16(uint16_t h) {
  const uint32_t bits = uint32_t{h} << 16;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

template <typename T>
void Store(std::byte* at, T value) {
  std::memcpy(at, &value, sizeof value);
}

agg::DType TransportDType(Compression c) {
  switch (c) {
    case Compression::kNone: return agg::DType::kF32;
    case Compression::kF16: return agg::DType::kF16;
    case Compression::kBF16: return agg::DType::kBF16;
    case Compression::kInt8: return agg::DType::kI8;
  }
  return agg::DType::kF32;
}

}  // namespace

Result<Compression> ParseCompression(std::string_view name) {
  if (name == "none" || name == "f32") return Compression::kNone;
  if (name == "f16") return Compression::kF16;
  if (name == "bf16") return Compression::kBF16;
  if (name == "int8") return Compression::kInt8;
  return MakeError(ErrorCode::kInvalidArgument,
                   "unknown compression '" + std::string(name) + "' (none, f16, bf16, int8)");
}

Result<EncodedUpdate> Encode(const Parameters& parameters, Compression compression) {
  EncodedUpdate out;
  const agg::DType dtype = TransportDType(compression);
  uint64_t bytes = 0;
  for (const Tensor& t : parameters) {
    agg::TensorSpec spec{t.name, dtype, t.shape};
    if (spec.elements() != t.values.size()) {
      return MakeError(ErrorCode::kInvalidArgument, "tensor '" + t.name + "' has " + std::to_string(t.values.size()) +
                                                        " values for a shape of " + std::to_string(spec.elements()));
    }
    if (!std::all_of(t.values.begin(), t.values.end(), [](float x) { return std::isfinite(x); })) {
      return MakeError(ErrorCode::kNonFinite, "tensor '" + t.name + "' contains NaN or Inf");
    }
    bytes += spec.bytes();
    out.f32_bytes += t.values.size() * sizeof(float);
    out.tensors.push_back(std::move(spec));
  }
  // Sized once and written in place: growing the payload value by value
  // cost more than the upload of it.
  out.payload.resize(bytes);
  std::byte* w = out.payload.data();
  for (const Tensor& t : parameters) {
    const size_t n = t.values.size();
    const float* x = t.values.data();
    switch (compression) {
      case Compression::kNone:
        if (n > 0) std::memcpy(w, x, n * sizeof(float));
        w += n * sizeof(float);
        break;
      case Compression::kF16:
        for (size_t i = 0; i < n; ++i) Store(w + 2 * i, static_cast<_Float16>(x[i]));
        w += 2 * n;
        break;
      case Compression::kBF16:
        for (size_t i = 0; i < n; ++i) Store(w + 2 * i, ToBF16(x[i]));
        w += 2 * n;
        break;
      case Compression::kInt8: {
        if (n == 0) break;
        float max_abs = 0;
        for (size_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
        const float scale = max_abs / 127.0f;
        Store(w, scale);
        w += sizeof scale;
        for (size_t i = 0; i < n; ++i) {
          const float q = scale > 0 ? std::nearbyint(x[i] / scale) : 0.0f;
          Store(w + i, static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f)));
        }
        w += n;
        break;
      }
    }
  }
  return out;
}

Result<Parameters> Decode(std::span<const agg::TensorSpec> tensors, std::span<const std::byte> payload) {
  Parameters out;
  size_t at = 0;
  for (const agg::TensorSpec& spec : tensors) {
    const uint64_t n = spec.elements();
    if (payload.size() - at < spec.bytes()) {
      return MakeError(ErrorCode::kShapeMismatch, "payload too short for tensor '" + spec.name + "'");
    }
    Tensor t{spec.name, spec.shape, std::vector<float>(n)};
    const std::byte* p = payload.data() + at;
    switch (spec.dtype) {
      case agg::DType::kF32:
        if (n > 0) std::memcpy(t.values.data(), p, n * 4);  // an empty tensor has no buffer
        break;
      case agg::DType::kF16:
        for (uint64_t i = 0; i < n; ++i) {
          _Float16 h;
          std::memcpy(&h, p + 2 * i, 2);
          t.values[i] = static_cast<float>(h);
        }
        break;
      case agg::DType::kBF16:
        for (uint64_t i = 0; i < n; ++i) {
          uint16_t h;
          std::memcpy(&h, p + 2 * i, 2);
          t.values[i] = FromBF16(h);
        }
        break;
      case agg::DType::kI8: {
        if (n == 0) break;
        float scale;
        std::memcpy(&scale, p, 4);
        for (uint64_t i = 0; i < n; ++i) t.values[i] = scale * static_cast<float>(static_cast<int8_t>(p[4 + i]));
        break;
      }
    }
    at += spec.bytes();
    out.push_back(std::move(t));
  }
  if (at != payload.size()) return MakeError(ErrorCode::kShapeMismatch, "payload longer than its tensors");
  return out;
}

}  // namespace tributary::client
