#include "tributary/aggregator/tensor.h"

#include <limits>
#include <unordered_set>

namespace tributary::agg {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16:
    case DType::kBF16: return 2;
    case DType::kI8: return 1;
  }
  return 0;
}

uint64_t TensorBytes(DType dtype, uint64_t elements) {
  const uint64_t scale = dtype == DType::kI8 && elements > 0 ? sizeof(float) : 0;
  return scale + elements * DTypeSize(dtype);
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI8: return "i8";
  }
  return "?";
}

Result<DType> ParseDType(std::string_view name) {
  if (name == "f32" || name == "float32") return DType::kF32;
  if (name == "f16" || name == "float16") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "i8" || name == "int8") return DType::kI8;
  return MakeError(ErrorCode::kInvalidArgument, "unknown dtype '" + std::string(name) + "' (f32, f16, bf16, i8)");
}

uint64_t TensorSpec::elements() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

Result<ModelSpec> ModelSpec::Create(std::vector<TensorSpec> tensors) {
  if (tensors.empty()) return MakeError(ErrorCode::kInvalidArgument, "a model needs at least one tensor");
  std::unordered_set<std::string> names;
  constexpr uint64_t kMaxElements = uint64_t{1} << 40;  // 4 TiB of f32: far beyond any model
  uint64_t total = 0;
  for (const TensorSpec& t : tensors) {
    if (t.name.empty()) return MakeError(ErrorCode::kInvalidArgument, "tensor with an empty name");
    if (!names.insert(t.name).second)
      return MakeError(ErrorCode::kInvalidArgument, "duplicate tensor name '" + t.name + "'");
    uint64_t n = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return MakeError(ErrorCode::kInvalidArgument, "tensor '" + t.name + "' has a negative dimension");
      if (d != 0 && n > kMaxElements / static_cast<uint64_t>(d))
        return MakeError(ErrorCode::kTooLarge, "tensor '" + t.name + "' is too large");
      n *= static_cast<uint64_t>(d);
    }
    total += n;
    if (total > kMaxElements) return MakeError(ErrorCode::kTooLarge, "model is too large");
  }
  ModelSpec spec;
  spec.tensors_ = std::move(tensors);
  spec.Layout();
  return spec;
}

void ModelSpec::Layout() {
  runs_.clear();
  elements_ = 0;
  payload_bytes_ = 0;
  for (const TensorSpec& t : tensors_) {
    const uint64_t n = t.elements();
    if (n == 0) continue;
    // Each kI8 tensor is a run of its own: it has its own scale.
    if (!runs_.empty() && runs_.back().dtype == t.dtype && t.dtype != DType::kI8) {
      runs_.back().elements += n;
    } else {
      runs_.push_back(DTypeRun{t.dtype, elements_, n, payload_bytes_});
    }
    elements_ += n;
    payload_bytes_ += TensorBytes(t.dtype, n);
  }
}

ModelSpec ModelSpec::WithDType(DType dtype) const {
  ModelSpec out = *this;
  for (TensorSpec& t : out.tensors_) t.dtype = dtype;
  out.Layout();
  return out;
}

bool ModelSpec::SameShapes(const ModelSpec& other) const {
  if (tensors_.size() != other.tensors_.size()) return false;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (tensors_[i].name != other.tensors_[i].name || tensors_[i].shape != other.tensors_[i].shape) return false;
  }
  return true;
}

}  // namespace tributary::agg
