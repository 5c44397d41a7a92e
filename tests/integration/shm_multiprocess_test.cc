// The shared-memory store across real processes: a writer and a reader, a
// reader killed (-9) while it holds references, and processes killed at
// random moments in the middle of reference-count updates.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "tributary/shm/segment.h"

namespace tributary::shm {
namespace {

std::string UniqueName(const char* what) { return std::string("tributary.mp.") + what + "." + std::to_string(getpid()); }

struct Pipe {
  int fd[2];
  Pipe() { EXPECT_EQ(pipe(fd), 0); }
  ~Pipe() {
    close(fd[0]);
    close(fd[1]);
  }
  template <class T>
  void Write(const T& v) {
    EXPECT_EQ(write(fd[1], &v, sizeof v), static_cast<ssize_t>(sizeof v));
  }
  template <class T>
  bool Read(T& v) {
    return read(fd[0], &v, sizeof v) == static_cast<ssize_t>(sizeof v);
  }
};

uint8_t Pattern(uint64_t block, uint64_t i) { return static_cast<uint8_t>(block * 131 + i * 7); }

int WaitExit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

// Reader: opens the segment, says its lease, adopts every token it is sent,
// checks the bytes, releases. Exit code = number of bad blocks.
[[noreturn]] void ReaderMain(const std::string& name, Pipe& to_writer, Pipe& from_writer, int count) {
  auto seg = Segment::Open(name);
  if (!seg) _exit(100);
  to_writer.Write(seg.value()->lease());
  int bad = 0;
  for (int k = 0; k < count; ++k) {
    BlockToken t;
    if (!from_writer.Read(t)) _exit(101);
    auto block = seg.value()->Adopt(t);
    if (!block) _exit(102);
    const auto bytes = block.value().bytes();
    for (uint64_t i = 0; i < bytes.size(); i += 61) bad += static_cast<uint8_t>(bytes[i]) != Pattern(block.value().meta().round, i);
  }
  _exit(bad);
}

TEST(ShmMultiProcess, WriterAndReaderShareBlocksByReference) {
  auto seg = Segment::Create({UniqueName("rw"), 64 << 20, 1024}).value();
  const uint64_t baseline = seg->Stats().allocator_bytes_in_use;
  Pipe up, down;
  constexpr int kBlocks = 200;
  const pid_t reader = fork();
  ASSERT_GE(reader, 0);
  if (reader == 0) ReaderMain(seg->name(), up, down, kBlocks);
  uint32_t reader_lease;
  ASSERT_TRUE(up.Read(reader_lease));
  for (int k = 0; k < kBlocks; ++k) {
    auto block = seg->Allocate(4096 + k * 100, {.kind = BlockKind::kUpdate, .round = static_cast<uint64_t>(k), .weight = 1.0, .updates = 1}).value();
    auto bytes = block.mutable_bytes();
    for (uint64_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(Pattern(k, i));
    down.Write(block.HandOff(reader_lease).value());
  }
  const int status = WaitExit(reader);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "reader saw corrupted or missing blocks";
  EXPECT_EQ(seg->Stats().live_blocks, 0u);
  EXPECT_EQ(seg->Stats().allocator_bytes_in_use, baseline);
}

TEST(ShmMultiProcess, ReferencesOfAReaderKilledWithSigkillAreReclaimed) {
  auto seg = Segment::Create({UniqueName("kill"), 64 << 20, 1024}).value();
  const uint64_t baseline = seg->Stats().allocator_bytes_in_use;
  Pipe up, down;
  const pid_t reader = fork();
  ASSERT_GE(reader, 0);
  if (reader == 0) {
    auto child = Segment::Open(seg->name());
    if (!child) _exit(100);
    up.Write(child.value()->lease());
    std::vector<BlockRef> held;
    BlockToken t;
    for (int k = 0; k < 10; ++k) {
      if (!down.Read(t)) _exit(101);
      held.push_back(child.value()->Adopt(t).value());
      held.push_back(held.back().Clone().value());  // two holds on each
    }
    up.Write(uint32_t{1});  // holding everything
    pause();
    _exit(0);
  }
  uint32_t reader_lease, ready;
  ASSERT_TRUE(up.Read(reader_lease));
  std::vector<BlockRef> kept;  // the writer keeps half the blocks too
  for (int k = 0; k < 10; ++k) {
    auto block = seg->Allocate(1 << 16, {}).value();
    if (k % 2 == 0) kept.push_back(block.Clone().value());
    down.Write(block.HandOff(reader_lease).value());
  }
  // Two more handed off but never adopted: the inbox is reclaimed too.
  for (int k = 0; k < 2; ++k) (void)seg->Allocate(1 << 10, {}).value().HandOff(reader_lease).value();
  ASSERT_TRUE(up.Read(ready));
  EXPECT_EQ(seg->Stats().live_blocks, 12u);
  EXPECT_EQ(seg->Stats().live_leases, 2u);

  kill(reader, SIGKILL);
  const int status = WaitExit(reader);
  ASSERT_TRUE(WIFSIGNALED(status));
  const SweepReport report = seg->SweepDeadLeases();
  EXPECT_EQ(report.dead_leases, 1u);
  EXPECT_EQ(report.holds_dropped, 22u);  // 10 blocks x 2 holds + 2 inbox entries
  EXPECT_EQ(report.blocks_freed, 7u);    // the 5 the writer kept survive
  EXPECT_EQ(seg->Stats().live_blocks, 5u);
  EXPECT_EQ(seg->Stats().live_leases, 1u);
  kept.clear();
  EXPECT_EQ(seg->Stats().live_blocks, 0u);
  EXPECT_EQ(seg->Stats().allocator_bytes_in_use, baseline);
  EXPECT_EQ(seg->SweepDeadLeases().dead_leases, 0u);  // idempotent
}

// A process killed inside a locked update leaves the journal set; the next
// locker undoes it. Whatever the moment of death, after the sweep the counts
// are exact: the owner's blocks live until it releases them, then all is free.
TEST(ShmMultiProcess, KilledAtRandomMomentsCountsStayExact) {
  auto seg = Segment::Create({UniqueName("chaos"), 64 << 20, 1024}).value();
  const uint64_t baseline = seg->Stats().allocator_bytes_in_use;
  std::mt19937 rng(12345);
  int kills = 0, poisoned = 0;
  uint64_t recoveries = 0;
  for (int attempt = 0; attempt < 400 && (kills < 20 || recoveries + seg->Stats().lock_recoveries < 3); ++attempt) {
    std::vector<BlockRef> mine;
    for (int k = 0; k < 4; ++k) {
      auto b = seg->Allocate(256, {.kind = BlockKind::kModel, .round = static_cast<uint64_t>(k)}).value();
      std::memset(b.mutable_bytes().data(), k, 256);
      mine.push_back(std::move(b));
    }
    Pipe up, down;
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      auto c = Segment::Open(seg->name());
      if (!c) _exit(100);
      up.Write(c.value()->lease());
      std::vector<BlockRef> held;
      BlockToken t;
      for (int k = 0; k < 4; ++k) {
        if (!down.Read(t)) _exit(101);
        held.push_back(c.value()->Adopt(t).value());
      }
      up.Write(uint32_t{1});
      for (uint64_t i = 0;; ++i) {  // churn until killed
        auto extra = held[i % 4].Clone().value();
        auto block = c.value()->Allocate(128, {}).value();
        auto token = block.HandOff(c.value()->lease()).value();
        auto again = c.value()->Adopt(token).value();
      }
    }
    uint32_t lease, ready;
    ASSERT_TRUE(up.Read(lease));
    for (BlockRef& b : mine) down.Write(b.Clone().value().HandOff(lease).value());
    ASSERT_TRUE(up.Read(ready));
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 3000)(rng)));
    kill(child, SIGKILL);
    WaitExit(child);
    ++kills;
    seg->SweepDeadLeases();
    if (seg->Stats().poisoned) {
      // Died inside Boost's allocator: allocation refuses, blocks stay readable.
      ++poisoned;
      EXPECT_EQ(seg->Allocate(64, {}).error().code, ErrorCode::kInternal);
      for (int k = 0; k < 4; ++k) ASSERT_EQ(static_cast<int>(mine[k].bytes()[255]), k);
      mine.clear();
      recoveries += seg->Stats().lock_recoveries;
      seg.reset();
      seg = Segment::Create({UniqueName("chaos"), 64 << 20, 1024}).value();
      continue;
    }
    ASSERT_EQ(seg->Stats().live_blocks, 4u) << "after kill " << kills;
    for (int k = 0; k < 4; ++k) {
      ASSERT_EQ(static_cast<int>(mine[k].bytes()[255]), k);
      ASSERT_EQ(mine[k].meta().round, static_cast<uint64_t>(k));
    }
    mine.clear();
    ASSERT_EQ(seg->Stats().live_blocks, 0u) << "after kill " << kills;
    ASSERT_EQ(seg->Stats().allocator_bytes_in_use, baseline) << "after kill " << kills;
  }
  recoveries += seg->Stats().lock_recoveries;
  EXPECT_GE(kills, 20);
  EXPECT_GE(recoveries, 1u) << "no kill landed inside a locked update";
  RecordProperty("lock_recoveries", static_cast<int>(recoveries));
  RecordProperty("poisoned", poisoned);
}

}  // namespace
}  // namespace tributary::shm
