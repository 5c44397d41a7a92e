// Safetensors model files (a job's initial model, a model a user brings): the
// header's JSON, its offsets and dtypes, against the bytes that follow. What
// decodes encodes back to the same tensors and values.
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "tributary/controller/safetensors.h"

using namespace tributary;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view file(reinterpret_cast<const char*>(data), size);
  auto model = controller::DecodeSafetensors(file, "fuzz.safetensors");
  if (!model) return 0;
  const auto& m = model.value();
  if (m.values.size() != m.spec.elements()) std::abort();
  auto encoded = controller::EncodeSafetensors(m.spec, m.values, m.metadata);
  if (!encoded) std::abort();
  auto again = controller::DecodeSafetensors(encoded.value(), "again");
  if (!again || again.value().spec.tensors() != m.spec.tensors() || again.value().metadata != m.metadata ||
      std::memcmp(again.value().values.data(), m.values.data(), m.values.size() * sizeof(float)) != 0) {
    std::abort();
  }
  return 0;
}
