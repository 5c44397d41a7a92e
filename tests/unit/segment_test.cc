#include "tributary/shm/segment.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>

namespace tributary::shm {
namespace {

std::string UniqueName(const char* what) { return std::string("tributary.test.") + what + "." + std::to_string(getpid()); }

std::unique_ptr<Segment> MakeSegment(const char* what, uint64_t bytes = 16 << 20) {
  auto s = Segment::Create({UniqueName(what), bytes, 4096});
  EXPECT_TRUE(s) << s.error().ToString();
  return std::move(s).value();
}

TEST(Segment, AllocateWriteReleaseReturnsEverything) {
  auto seg = MakeSegment("basic");
  const SegmentStats before = seg->Stats();
  {
    auto block = seg->Allocate(1000, {.kind = BlockKind::kUpdate, .round = 2, .weight = 60.0, .updates = 1});
    ASSERT_TRUE(block) << block.error().ToString();
    auto b = std::move(block).value();
    EXPECT_EQ(b.bytes().size(), 1000u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.bytes().data()) % 64, 0u);
    std::memset(b.mutable_bytes().data(), 0xab, 1000);
    EXPECT_EQ(b.meta().weight, 60.0);
    EXPECT_EQ(seg->Stats().live_blocks, 1u);
    EXPECT_EQ(seg->Stats().payload_bytes_in_use, 1000u);
  }
  const SegmentStats after = seg->Stats();
  EXPECT_EQ(after.live_blocks, 0u);
  EXPECT_EQ(after.payload_bytes_in_use, 0u);
  EXPECT_EQ(after.allocator_bytes_in_use, before.allocator_bytes_in_use);
}

TEST(Segment, ClonesKeepTheBlockAliveUntilTheLastRelease) {
  auto seg = MakeSegment("clone");
  auto a = seg->Allocate(64, {}).value();
  auto b = a.Clone().value();
  a.Release();
  EXPECT_FALSE(a);
  EXPECT_EQ(seg->Stats().live_blocks, 1u);
  BlockRef moved = std::move(b);
  EXPECT_EQ(seg->Stats().live_blocks, 1u);
  moved.Release();
  EXPECT_EQ(seg->Stats().live_blocks, 0u);
}

TEST(Segment, AFullSegmentIsATypedErrorNotACrash) {
  auto seg = MakeSegment("full", 4 << 20);
  std::vector<BlockRef> held;
  Result<BlockRef> r = seg->Allocate(1 << 20, {});
  while (r) {
    held.push_back(std::move(r).value());
    r = seg->Allocate(1 << 20, {});
  }
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
  EXPECT_GE(held.size(), 2u);
  EXPECT_EQ(seg->Allocate(uint64_t{1} << 40, {}).error().code, ErrorCode::kResourceExhausted);
  held.pop_back();
  EXPECT_TRUE(seg->Allocate(1 << 20, {}));  // room again
}

TEST(Segment, BlockSlotsAreBoundedToo) {
  auto s = Segment::Create({UniqueName("slots"), 4 << 20, 3});
  ASSERT_TRUE(s);
  auto& seg = *s.value();
  auto a = seg.Allocate(8, {}).value();
  auto b = seg.Allocate(8, {}).value();
  auto c = seg.Allocate(8, {}).value();
  EXPECT_EQ(seg.Allocate(8, {}).error().code, ErrorCode::kResourceExhausted);
  b.Release();
  EXPECT_TRUE(seg.Allocate(8, {}));
}

TEST(Segment, HandOffAndAdoptMoveOneHoldBetweenLeases) {
  auto owner = MakeSegment("handoff");
  auto other = Segment::Open(owner->name());
  ASSERT_TRUE(other) << other.error().ToString();
  EXPECT_NE(other.value()->lease(), owner->lease());

  auto block = owner->Allocate(128, {BlockKind::kPartial}).value();
  std::memset(block.mutable_bytes().data(), 7, 128);
  const BlockToken token = block.HandOff(other.value()->lease()).value();
  EXPECT_FALSE(block);
  EXPECT_EQ(owner->Stats().live_blocks, 1u);  // parked in the inbox

  auto adopted = other.value()->Adopt(token);
  ASSERT_TRUE(adopted) << adopted.error().ToString();
  EXPECT_EQ(static_cast<int>(adopted.value().bytes()[127]), 7);
  EXPECT_EQ(adopted.value().meta().kind, BlockKind::kPartial);
  // A second adopt of the same token has nothing to claim.
  EXPECT_EQ(other.value()->Adopt(token).error().code, ErrorCode::kStaleReference);
  adopted.value().Release();
  EXPECT_EQ(owner->Stats().live_blocks, 0u);
  // The block is gone: its token is stale.
  EXPECT_EQ(other.value()->Adopt(token).error().code, ErrorCode::kStaleReference);
}

TEST(Segment, ForgedAndStaleTokensAreRejected) {
  auto seg = MakeSegment("forged");
  auto block = seg->Allocate(256, {}).value();
  const BlockToken t = block.token();
  EXPECT_EQ(seg->Adopt({t.offset, t.generation + 1}).error().code, ErrorCode::kStaleReference);
  EXPECT_EQ(seg->Adopt({t.offset + 64, t.generation}).error().code, ErrorCode::kStaleReference);
  EXPECT_EQ(seg->Adopt({t.offset + 3, t.generation}).error().code, ErrorCode::kStaleReference);
  EXPECT_EQ(seg->Adopt({uint64_t{1} << 60, 1}).error().code, ErrorCode::kStaleReference);
  // Found by fuzz_descriptor: an offset whose sum with the header size wraps past 2^64.
  EXPECT_EQ(seg->Adopt({~uint64_t{63}, 1}).error().code, ErrorCode::kStaleReference);
  EXPECT_EQ(seg->Adopt({0, 0}).error().code, ErrorCode::kStaleReference);
  // Not handed to this lease.
  EXPECT_EQ(seg->Adopt(t).error().code, ErrorCode::kStaleReference);
  EXPECT_EQ(block.HandOff(kMaxLeases + 5).error().code, ErrorCode::kNotFound);
  EXPECT_TRUE(block);  // a failed hand-off keeps the ref
}

TEST(Segment, ClosingAnOpenerDropsWhatItStillHeld) {
  auto owner = MakeSegment("close");
  auto block = owner->Allocate(64, {}).value();
  {
    auto other = Segment::Open(owner->name()).value();
    (void)block.HandOff(other->lease()).value();  // never adopted
    EXPECT_EQ(owner->Stats().live_leases, 2u);
  }
  EXPECT_EQ(owner->Stats().live_leases, 1u);
  EXPECT_EQ(owner->Stats().live_blocks, 0u);
}

bool InDevShm(const std::string& file) { return std::filesystem::exists("/dev/shm/" + file); }

// A segment whose owner died (here: a child that exits without destructors,
// as a SIGKILLed process does) is found and removed; a live owner's is not,
// and its name cannot be taken. (Not under "tributary.": node agents started
// by tests running alongside sweep those.)
TEST(Segment, AbandonedSegmentsAreRemovedLiveOnesAreNot) {
  const std::string prefix = "trbtest." + std::to_string(getpid()) + ".";
  const std::string abandoned = prefix + "abandoned";
  const pid_t child = fork();
  if (child == 0) _exit(Segment::Create({abandoned, 1 << 20, 64}) ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_TRUE(InDevShm(abandoned));
  ASSERT_TRUE(InDevShm(abandoned + ".owner"));

  auto made = Segment::Create({prefix + "live-owner", 1 << 20, 64});
  ASSERT_TRUE(made) << made.error().ToString();
  std::unique_ptr<Segment> live = std::move(made).value();
  const std::vector<std::string> removed = RemoveAbandonedSegments(prefix);
  EXPECT_EQ(removed, std::vector<std::string>{abandoned});
  EXPECT_FALSE(InDevShm(abandoned));
  EXPECT_FALSE(InDevShm(abandoned + ".owner"));
  EXPECT_TRUE(InDevShm(live->name()));
  EXPECT_TRUE(Segment::Open(live->name()));

  auto again = Segment::Create({live->name(), 1 << 20, 64});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kConfig);
  EXPECT_NE(again.error().reason.find("belongs to a running process"), std::string::npos) << again.error().reason;
  const std::string name = live->name();
  live.reset();  // the owner removes both files
  EXPECT_FALSE(InDevShm(name));
  EXPECT_FALSE(InDevShm(name + ".owner"));
}

// A dead owner's name is taken over directly by the next Create.
TEST(Segment, CreateReplacesADeadOwnersSegment) {
  const std::string name = "trbtest." + std::to_string(getpid()) + ".replaced";
  const pid_t child = fork();
  if (child == 0) _exit(Segment::Create({name, 1 << 20, 64}) ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto s = Segment::Create({name, 2 << 20, 64});
  ASSERT_TRUE(s) << s.error().ToString();
  EXPECT_EQ(s.value()->Stats().capacity_bytes, 2u << 20);
}

TEST(Segment, OpenRejectsMissingSegments) {
  auto r = Segment::Open("tributary.test.does-not-exist");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(Segment::Create({"bad/name", 1 << 20, 16}).error().code, ErrorCode::kConfig);
  EXPECT_EQ(Segment::Create({UniqueName("tiny"), 1024, 16}).error().code, ErrorCode::kConfig);
}

TEST(Segment, NoLeakAfterAMillionAllocateReleaseCycles) {
  auto seg = MakeSegment("million", 64 << 20);
  const uint64_t baseline = seg->Stats().allocator_bytes_in_use;
  std::vector<BlockRef> window;
  for (int i = 0; i < 1'000'000; ++i) {
    auto b = seg->Allocate(64 + (i % 97) * 512, {.kind = BlockKind::kUpdate, .round = static_cast<uint64_t>(i)});
    ASSERT_TRUE(b) << i << ": " << b.error().ToString();
    window.push_back(std::move(b).value());
    if (i % 3 == 0) window.push_back(window.back().Clone().value());
    if (window.size() > 8) window.erase(window.begin(), window.begin() + 4);
  }
  window.clear();
  const SegmentStats s = seg->Stats();
  EXPECT_EQ(s.live_blocks, 0u);
  EXPECT_EQ(s.payload_bytes_in_use, 0u);
  EXPECT_EQ(s.allocator_bytes_in_use, baseline);
}

}  // namespace
}  // namespace tributary::shm
