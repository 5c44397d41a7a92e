// Tensor and model descriptions, and the payload layout derived from them.
//
// A model is an ordered list of named tensors. An update's payload is the
// tensors' raw little-endian bytes, concatenated in that order, each in its
// own dtype. Aggregation always accumulates in f32: the accumulator of a model
// is one contiguous f32 array of ModelSpec::elements() values.
//
// Thread safety: immutable after construction; share freely.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tributary/core/error.h"

namespace tributary::agg {

// Numbers are those of tributary.v1.DType.
// Transport dtypes of update payloads; sums are always f32. kI8 is quantized
// per tensor: the tensor's bytes are an f32 scale followed by one int8 per
// element (value = scale * q).
enum class DType : uint8_t { kF32 = 1, kF16 = 2, kBF16 = 3, kI8 = 4 };

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);
Result<DType> ParseDType(std::string_view name);  // "f32", "f16", "bf16", "i8"
// Bytes of a tensor of `elements` in `dtype`, the kI8 scale included.
uint64_t TensorBytes(DType dtype, uint64_t elements);

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  uint64_t elements() const;
  uint64_t bytes() const { return TensorBytes(dtype, elements()); }
  bool operator==(const TensorSpec&) const = default;
};

// A maximal range of consecutive elements stored in one dtype (for kI8, one
// tensor).
struct DTypeRun {
  DType dtype;
  uint64_t first_element;
  uint64_t elements;
  uint64_t byte_offset;  // where the run starts in the payload (for kI8, its scale)
};

// The model's tensors with their payload layout precomputed.
class ModelSpec {
 public:
  ModelSpec() = default;  // the empty model
  // Rejects empty names, duplicate names, negative dimensions and overflow.
  static Result<ModelSpec> Create(std::vector<TensorSpec> tensors);

  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  const std::vector<DTypeRun>& runs() const { return runs_; }
  uint64_t elements() const { return elements_; }
  uint64_t payload_bytes() const { return payload_bytes_; }
  // Bytes of the f32 accumulator: elements() * 4.
  uint64_t accumulator_bytes() const { return elements_ * sizeof(float); }

  // The same tensors (names, shapes) with every dtype replaced: a client may
  // send an f16 update of an f32 model.
  ModelSpec WithDType(DType dtype) const;

  // Equal names and shapes in the same order; dtypes may differ.
  bool SameShapes(const ModelSpec& other) const;

 private:
  void Layout();

  std::vector<TensorSpec> tensors_;
  std::vector<DTypeRun> runs_;
  uint64_t elements_ = 0;
  uint64_t payload_bytes_ = 0;
};

}  // namespace tributary::agg
