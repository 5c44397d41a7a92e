// A descriptor as a function or the node agent receives it: the classifier
// the BPF router shares (ebpf/include/tributary/ebpf/abi.h), then the block
// it names claimed from the segment (Segment::Adopt). A forged or stale
// descriptor must classify as malformed or fail to adopt (kStaleReference):
// never reach memory outside a live block, never take a hold it was not given.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "tributary/ebpf/abi.h"
#include "tributary/shm/segment.h"

using namespace tributary;

namespace {

struct Fixture {
  std::unique_ptr<shm::Segment> segment;
  shm::BlockToken handed;  // a hold in this lease's inbox, renewed after each adopt
  uint64_t live_blocks = 0;

  Fixture() {
    segment = shm::Segment::Create({"tributary.fuzz-descriptor-" + std::to_string(getpid()), 4ull << 20, 64}).value();
    auto kept = segment->Allocate(4096, {});  // a block nobody hands off
    auto given = segment->Allocate(1000, {});
    handed = given.value().HandOff(segment->lease()).value();
    kept_block = std::move(kept).value();
    live_blocks = segment->Stats().live_blocks;
  }
  shm::BlockRef kept_block;
};

Fixture& TheFixture() {
  static Fixture f;  // removes its segment at exit
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = TheFixture();
  trb_descriptor d{};
  std::memcpy(&d, data, std::min(size, sizeof d));
  const int verdict = trb_classify(&d, static_cast<__u32>(size));
  if (verdict == TRB_MALFORMED) return 0;
  if (d.dest_fn >= TRB_MAX_FUNCTIONS) std::abort();
  auto block = f.segment->Adopt({d.offset, d.generation});
  if (block) {
    // Only the hold in the inbox can be claimed; its bytes are the block's.
    if (d.offset != f.handed.offset || d.generation != f.handed.generation) std::abort();
    if (block.value().bytes().size() != 1000) std::abort();
    f.handed = block.value().HandOff(f.segment->lease()).value();
  }
  if (f.segment->Stats().live_blocks != f.live_blocks) std::abort();
  return 0;
}
