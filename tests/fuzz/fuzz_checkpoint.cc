// Checkpoint files as the controller reads them back at start (a file left by
// a crash, a disk error, or another version): the first two bytes say what
// the job expects (elements, optimizer slots), the rest is the file. What
// decodes encodes back to the same state.
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "tributary/controller/checkpoint.h"

using namespace tributary;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint64_t elements = data[0];
  const uint64_t slots = data[1] % 4;
  const std::string_view file(reinterpret_cast<const char*>(data + 2), size - 2);
  auto state = controller::DecodeCheckpoint(file, elements, slots, "fuzz.ckpt");
  if (!state) return 0;
  if (state.value().model.size() != elements || state.value().slots.size() != slots) std::abort();
  for (const auto& slot : state.value().slots) {
    if (slot.size() != elements) std::abort();
  }
  auto again = controller::DecodeCheckpoint(controller::EncodeCheckpoint(state.value()), elements, slots, "again");
  if (!again || again.value().model_version != state.value().model_version ||
      again.value().steps != state.value().steps ||
      std::memcmp(again.value().model.data(), state.value().model.data(), elements * sizeof(float)) != 0) {
    std::abort();
  }
  return 0;
}
