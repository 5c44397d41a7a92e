// Update compression for transport. The gateway's functions widen every
// transport dtype back to f32 while folding, so compression changes bytes on
// the wire and in shared memory, never the aggregation code path.
//   kNone  f32, 4 bytes per value
//   kF16   IEEE half (round to nearest even), 2 bytes; values beyond +-65504
//          become Inf and the gateway rejects the update (kNonFinite)
//   kBF16  bfloat16 (round to nearest even), 2 bytes, f32's range
//   kInt8  per tensor: scale = max|x| / 127, q = round(x / scale), 1 byte per
//          value plus a 4-byte scale; error at most scale / 2 per value
#pragma once

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "tributary/aggregator/tensor.h"
#include "tributary/client/types.h"
#include "tributary/core/error.h"

namespace tributary::client {

enum class Compression { kNone, kF16, kBF16, kInt8 };

Result<Compression> ParseCompression(std::string_view name);  // none, f16, bf16, int8

struct EncodedUpdate {
  std::vector<agg::TensorSpec> tensors;  // names, shapes, transport dtype
  std::vector<std::byte> payload;
  uint64_t f32_bytes = 0;  // what the same update costs uncompressed
};

// kInvalidArgument if a tensor's values do not match its shape; kNonFinite
// for NaN or Inf (caught here, before anything is sent).
Result<EncodedUpdate> Encode(const Parameters& parameters, Compression compression);

// Tensors of any transport dtype back to f32 Parameters (a global model is
// f32; the others are for tests and tools).
Result<Parameters> Decode(std::span<const agg::TensorSpec> tensors, std::span<const std::byte> payload);

}  // namespace tributary::client
