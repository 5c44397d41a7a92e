// Model files in the safetensors format (https://huggingface.co/docs/safetensors),
// which PyTorch, NumPy, JAX and most ML tools read: the controller writes
// each round's global model as one, and a deployment job may start from one.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON
//   {"<tensor>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
//    ..., "__metadata__": {"<key>": "<string>", ...}}
// padded with spaces to a multiple of 8, then the tensors' bytes; offsets are
// relative to the end of the header. Tributary writes tensors in the model's
// order, packed, little-endian f32, and reads them back in offset order.
//
// Errors: a malformed file (a header longer than the file or than 100 MB,
// JSON that is not an object of tensor entries, an unknown dtype, offsets
// that overlap, leave holes, do not match the shape or run past the end) is
// kConfig naming the file and what is wrong. Only F32 tensors are read.
// I/O failures are kIo.
//
// Thread safety: plain functions and value types.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tributary/aggregator/tensor.h"
#include "tributary/core/error.h"

namespace tributary::controller {

struct SafetensorsModel {
  agg::ModelSpec spec;  // every tensor F32, in offset order
  std::vector<float> values;
  std::map<std::string, std::string> metadata;
};

// `spec`'s names and shapes with `values` (spec.elements() f32) as F32 tensors.
Result<std::string> EncodeSafetensors(const agg::ModelSpec& spec, std::span<const float> values,
                                      const std::map<std::string, std::string>& metadata);
// `where` names the data in errors.
Result<SafetensorsModel> DecodeSafetensors(std::string_view data, const std::string& where);

// Written atomically (WriteFileAtomically, checkpoint.h).
Result<void> WriteSafetensors(const std::string& path, const agg::ModelSpec& spec, std::span<const float> values,
                              const std::map<std::string, std::string>& metadata);
Result<SafetensorsModel> ReadSafetensors(const std::string& path);

}  // namespace tributary::controller
