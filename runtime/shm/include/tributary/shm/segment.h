// The node's shared-memory update store.
//
// One Boost.Interprocess managed segment per node holds client updates,
// partial aggregates and global models as blocks. Every process that maps the
// segment holds a *lease* (a slot in the segment's lease table, tied to its
// pid and start time). A reference to a block is a BlockRef: move-only, it
// counts as one hold of its lease; the block is freed when the last hold of
// every lease is gone. References cross processes by hand-off: the holder
// moves one hold into another lease's inbox (BlockRef::HandOff) and sends the
// returned BlockToken (offset + generation) in a descriptor; the receiver
// claims it with Segment::Adopt. Blocks are named by offsets, never pointers.
//
// Crashes: hold counts are kept per lease, under a robust mutex with an undo
// journal, so when a process dies (even inside an update of the counts) the
// segment owner's SweepDeadLeases() drops exactly the holds and inbox entries
// of that lease, and frees the blocks nobody else holds. The allocator's own
// calls are journaled too: a block allocated but not yet registered is freed
// by the undo. A process killed *inside* Boost's allocator (a window of a
// few hundred nanoseconds) leaves the allocator's state unknown: the segment
// is then poisoned (SegmentStats::poisoned), allocation returns kInternal,
// live blocks stay readable, and the owner must recreate the segment.
//
// Errors are values (Result); a full segment or lease table is
// kResourceExhausted, a token that no longer names a live block is
// kStaleReference.
//
// Thread safety: Segment methods may be called from any thread. A BlockRef is
// used by one thread at a time; its payload is shared memory and the callers
// decide who writes it (by convention only the allocating process writes,
// before it hands the block on). A Segment must outlive its BlockRefs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tributary/core/error.h"

namespace tributary::shm {

inline constexpr uint32_t kMaxLeases = 128;

enum class BlockKind : uint8_t { kUpdate = 1, kPartial = 2, kModel = 3, kTask = 4 };

// What a descriptor carries to name a block.
struct BlockToken {
  uint64_t offset = 0;
  uint64_t generation = 0;
};

// Caller-owned metadata kept in the block header.
// It lives in shared memory: a change of layout bumps the segment's ABI version.
struct BlockMeta {
  BlockKind kind = BlockKind::kUpdate;
  bool checked_finite = false;  // an update every value of which the gateway checked (NaN/Inf refused at arrival)
  uint64_t round = 0;
  double weight = 0;     // sample count, or total weight of a partial
  uint64_t updates = 0;  // updates folded into a partial
};

class Segment;
struct BlockHeader;

class BlockRef {
 public:
  BlockRef() = default;
  BlockRef(BlockRef&& other) noexcept;
  BlockRef& operator=(BlockRef&& other) noexcept;
  BlockRef(const BlockRef&) = delete;
  BlockRef& operator=(const BlockRef&) = delete;
  ~BlockRef() { Release(); }

  explicit operator bool() const { return header_ != nullptr; }

  // Read access for every holder; writes need a non-const ref (by
  // convention only the allocating process writes, before it hands the block on).
  std::span<const std::byte> bytes() const;
  std::span<std::byte> mutable_bytes();
  const BlockMeta& meta() const;
  BlockMeta& mutable_meta();
  BlockToken token() const;

  // Another hold on the same block, in this process's lease.
  Result<BlockRef> Clone() const;
  // Moves this hold into lease `to`'s inbox; this ref becomes empty. On error
  // the ref is unchanged.
  Result<BlockToken> HandOff(uint32_t to);
  // Drops the hold now (the destructor does it otherwise).
  void Release();

 private:
  friend class Segment;
  BlockRef(Segment* segment, BlockHeader* header) : segment_(segment), header_(header) {}

  Segment* segment_ = nullptr;
  BlockHeader* header_ = nullptr;
};

struct SegmentOptions {
  std::string name;              // unique per node, e.g. "tributary.node-a"
  uint64_t bytes = 256ull << 20; // total size of the segment
  uint32_t max_blocks = 65536;   // blocks alive at once
};

struct SegmentStats {
  uint64_t capacity_bytes = 0;
  uint64_t allocator_bytes_in_use = 0;  // everything allocated, headers included
  uint64_t payload_bytes_in_use = 0;    // bytes of live blocks' payloads
  uint64_t live_blocks = 0;
  uint32_t live_leases = 0;
  uint64_t lock_recoveries = 0;  // locks taken over from a dead process (journal undone)
  bool poisoned = false;         // a process died inside the allocator: recreate the segment
};

struct SweepReport {
  uint32_t dead_leases = 0;
  uint64_t holds_dropped = 0;
  uint64_t blocks_freed = 0;
};

// Ownership: the creating process holds an flock on "<name>.owner" beside the
// segment in /dev/shm for the segment's life. The kernel drops the lock when
// the process ends, however it ends (SIGKILL included), so a segment whose
// owner file can be locked was abandoned.
//
// Removes every abandoned segment whose name starts with `prefix` (and its
// owner file); returns their names. Segments of live owners are untouched.
std::vector<std::string> RemoveAbandonedSegments(std::string_view prefix);

class Segment {
 public:
  // Creates the segment and takes the owner's lease; a segment of the same
  // name left by a dead owner is replaced, one whose owner lives is kConfig.
  // The owner removes the segment's name when destroyed.
  static Result<std::unique_ptr<Segment>> Create(const SegmentOptions& options);
  // Maps an existing segment and takes a lease.
  static Result<std::unique_ptr<Segment>> Open(std::string_view name);

  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  const std::string& name() const { return name_; }
  uint32_t lease() const { return lease_; }

  // A new block of `bytes` payload bytes (64-byte aligned, uninitialised),
  // held once by this lease.
  Result<BlockRef> Allocate(uint64_t bytes, const BlockMeta& meta);
  // Claims a hold that another lease handed off to this one.
  Result<BlockRef> Adopt(BlockToken token);

  // Drops the holds and inbox entries of leases whose process has exited.
  SweepReport SweepDeadLeases();
  SegmentStats Stats() const;

 private:
  friend class BlockRef;
  struct Impl;
  explicit Segment(std::unique_ptr<Impl> impl, std::string name, uint32_t lease, bool owner);

  Result<void> AddHold(BlockHeader* header);
  void DropHold(BlockHeader* header);
  Result<BlockToken> MoveHold(BlockHeader* header, uint32_t to);

  std::unique_ptr<Impl> impl_;
  std::string name_;
  uint32_t lease_;
  bool owner_;
};

}  // namespace tributary::shm
