#include "tributary/shm/segment.h"

#include <cstddef>
#include <type_traits>

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <boost/interprocess/managed_shared_memory.hpp>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <optional>
#include <sstream>
#include <vector>

#include "tributary/core/unique_fd.h"

namespace tributary::shm {
namespace bip = boost::interprocess;

namespace {

constexpr uint32_t kSegmentMagic = 0x54524253;  // "TRBS"
constexpr uint32_t kBlockMagic = 0x5452424b;    // "TRBK"
constexpr uint32_t kFreedMagic = 0x46524545;    // "FREE"
constexpr uint16_t kAbiVersion = 2;  // 2: BlockMeta.checked_finite replaced an unused job field
constexpr const char* kHeaderName = "tributary.segment";

struct Hold {
  uint16_t held = 0;   // BlockRefs of this lease
  uint16_t inbox = 0;  // handed to this lease, not yet adopted
  uint32_t total() const { return uint32_t{held} + inbox; }
};

enum class LeaseState : uint32_t { kFree = 0, kLive = 1 };

struct LeaseSlot {
  LeaseState state = LeaseState::kFree;
  int32_t pid = 0;
  uint64_t start_time = 0;  // /proc/<pid>/stat field 22: tells a reused pid apart
};

// Every field a locked operation may change, saved before it changes them.
// A process that dies holding the lock leaves it set; the next locker writes
// the saved values back (undo), so counts are never half-updated.
//   kChange     counts of one block change            undo: write back
//   kRegister   a new block enters the table          undo: write back, free it
//   kAllocated  allocator returned `block`            undo: free it
//   kAllocator  inside Boost's allocator              undo: impossible, poison
enum class JournalOp : uint32_t { kNone, kChange, kRegister, kAllocated, kAllocator };

struct Journal {
  JournalOp op = JournalOp::kNone;
  int32_t pid = 0;  // who wrote it
  uint32_t table_index = 0;
  uint64_t block = 0;  // offset of the block the operation touches
  uint64_t old_table_entry = 0;
  uint64_t old_live_blocks = 0;
  uint64_t old_payload_bytes = 0;
  uint32_t old_block_magic = 0;
  uint32_t old_refs = 0;
  uint32_t lease_a = 0;
  uint32_t lease_b = 0;
  Hold old_a;
  Hold old_b;
};

}  // namespace

struct BlockHeader {
  uint32_t magic;
  uint16_t abi_version;
  uint16_t reserved;
  uint64_t generation;
  uint64_t payload_bytes;
  uint32_t table_index;
  uint32_t refs;  // sum of all leases' held + inbox
  uint32_t color;  // payload starts `color` cache lines after the header
  BlockMeta meta;
  Hold holds[kMaxLeases];
};

namespace {

constexpr uint64_t kPayloadOffset = (sizeof(BlockHeader) + 63) / 64 * 64;
// Payloads are staggered over this many cache lines: folds read many
// equal-sized blocks side by side, and blocks that all started at the same
// offset within a page would compete for the same cache sets.
constexpr uint32_t kColors = 32;

struct SegmentHeader {
  uint32_t magic = kSegmentMagic;
  uint16_t abi_version = kAbiVersion;
  uint32_t max_blocks = 0;
  pthread_mutex_t mutex;
  Journal journal;
  uint64_t next_generation = 1;
  uint64_t live_blocks = 0;
  uint64_t payload_bytes_in_use = 0;
  uint64_t table_offset = 0;  // uint64_t[max_blocks] of block offsets, 0 = empty
  uint32_t table_hint = 0;
  uint64_t lock_recoveries = 0;  // times a locker found the previous holder dead
  uint32_t poisoned_by_pid = 0;  // a process died inside the allocator: its state is unknown
  LeaseSlot leases[kMaxLeases];
};

// Every structure here lives in the shared segment, read by every process
// that maps it: its layout is the segment's ABI (kAbiVersion).
static_assert(std::is_trivially_copyable_v<Hold> && sizeof(Hold) == 4);
static_assert(std::is_trivially_copyable_v<LeaseSlot> && sizeof(LeaseSlot) == 16);
static_assert(std::is_trivially_copyable_v<Journal> && sizeof(Journal) == 72 && offsetof(Journal, block) == 16 &&
              offsetof(Journal, old_a) == 64);
static_assert(std::is_trivially_copyable_v<BlockMeta> && sizeof(BlockMeta) == 32 && offsetof(BlockMeta, round) == 8 &&
              offsetof(BlockMeta, updates) == 24);
static_assert(std::is_standard_layout_v<BlockHeader> && offsetof(BlockHeader, generation) == 8 &&
              offsetof(BlockHeader, meta) == 40 && offsetof(BlockHeader, holds) == 72 &&
              sizeof(BlockHeader) == 72 + 4 * kMaxLeases);
static_assert(std::is_standard_layout_v<SegmentHeader> && offsetof(SegmentHeader, mutex) == 16 &&
              sizeof(pthread_mutex_t) == 40 && offsetof(SegmentHeader, journal) == 56);

std::optional<std::pair<char, uint64_t>> ProcState(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 2));
  char state = '?';
  rest >> state;
  std::string field;
  for (int i = 4; i < 22 && rest >> field; ++i) {
  }
  uint64_t start = 0;
  if (!(rest >> start)) return std::nullopt;
  return std::make_pair(state, start);
}

bool ProcessAlive(const LeaseSlot& slot) {
  auto st = ProcState(slot.pid);
  return st && st->first != 'Z' && st->first != 'X' && st->second == slot.start_time;
}

}  // namespace

// Boost's allocator without its own (non-robust) mutex: every allocator call
// is made under the segment's robust lock instead, so a process killed there
// cannot stall the others.
using ManagedSegment = bip::basic_managed_shared_memory<char, bip::rbtree_best_fit<bip::null_mutex_family>,
                                                        bip::iset_index>;

struct Segment::Impl {
  ManagedSegment shm;
  SegmentHeader* header = nullptr;
  uint64_t* table = nullptr;
  UniqueFd owner_lock;  // the owner's: its owner file, locked

  BlockHeader* BlockAt(uint64_t offset) {
    return static_cast<BlockHeader*>(shm.get_address_from_handle(static_cast<ManagedSegment::handle_t>(offset)));
  }
  uint64_t OffsetOf(const void* p) { return static_cast<uint64_t>(shm.get_handle_from_address(p)); }

  // The segment lock; undoes a dead holder's half-done operation.
  class Locked {
   public:
    explicit Locked(Impl& impl) : impl_(impl) {
      const int rc = pthread_mutex_lock(&impl_.header->mutex);
      if (rc == EOWNERDEAD) {
        impl_.header->lock_recoveries += 1;
        impl_.Undo();
        pthread_mutex_consistent(&impl_.header->mutex);
      }
    }
    ~Locked() { pthread_mutex_unlock(&impl_.header->mutex); }
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;

   private:
    Impl& impl_;
  };

  // Saves what a locked operation on `block` (and leases a, b) may change.
  void Begin(JournalOp op, BlockHeader* block, uint32_t table_index, uint32_t a, uint32_t b) {
    Journal& j = header->journal;
    j.table_index = table_index;
    j.block = OffsetOf(block);
    j.old_table_entry = table[table_index];
    j.old_live_blocks = header->live_blocks;
    j.old_payload_bytes = header->payload_bytes_in_use;
    j.old_block_magic = block->magic;
    j.old_refs = block->refs;
    j.lease_a = a;
    j.lease_b = b;
    j.old_a = block->holds[a];
    j.old_b = block->holds[b];
    std::atomic_ref(j.op).store(op, std::memory_order_release);
  }
  void Commit() { std::atomic_ref(header->journal.op).store(JournalOp::kNone, std::memory_order_release); }

  void Undo() {
    Journal& j = header->journal;
    if (j.op == JournalOp::kNone) return;
    if (j.op == JournalOp::kAllocator) {
      // The allocator's free lists may be half-updated: no further allocation
      // is trusted. Live blocks stay readable; the owner must recreate.
      header->poisoned_by_pid = static_cast<uint32_t>(j.pid);
      Commit();
      return;
    }
    BlockHeader* block = BlockAt(j.block);
    if (j.op == JournalOp::kAllocated) {
      if (header->poisoned_by_pid == 0) shm.deallocate(block);
      Commit();
      return;
    }
    table[j.table_index] = j.old_table_entry;
    header->live_blocks = j.old_live_blocks;
    header->payload_bytes_in_use = j.old_payload_bytes;
    block->magic = j.old_block_magic;
    block->refs = j.old_refs;
    block->holds[j.lease_a] = j.old_a;
    block->holds[j.lease_b] = j.old_b;
    // A registration that never finished: its allocation is reachable only here.
    if (j.op == JournalOp::kRegister && header->poisoned_by_pid == 0) shm.deallocate(block);  // under the lock already
    Commit();
  }

  // Drops every hold and inbox entry of `lease`, frees the blocks nobody else
  // holds, and frees the lease slot. Returns {holds dropped, blocks freed}.
  std::pair<uint64_t, uint64_t> DropLease(uint32_t lease) {
    uint64_t holds = 0, freed = 0;
    for (uint32_t i = 0; i < header->max_blocks; ++i) {
      if (table[i] == 0) continue;
      BlockHeader* b = BlockAt(table[i]);
      const uint32_t theirs = b->holds[lease].total();
      if (theirs == 0) continue;
      Begin(JournalOp::kChange, b, i, lease, lease);
      b->refs -= theirs;
      b->holds[lease] = Hold{};
      holds += theirs;
      if (b->refs == 0) {
        Unregister(b);
        FreeLocked(b);
        ++freed;
      } else {
        Commit();
      }
    }
    header->leases[lease].state = LeaseState::kFree;
    return {holds, freed};
  }

  // Allocator calls, made under the lock and journaled (see Undo). A fresh
  // allocation is left journaled as kAllocated: the caller's Begin(kRegister)
  // takes over from there.
  void* AllocateLocked(uint64_t bytes) {
    Journal& j = header->journal;
    j.pid = static_cast<int32_t>(getpid());
    std::atomic_ref(j.op).store(JournalOp::kAllocator, std::memory_order_release);
    void* p = shm.allocate_aligned(bytes, 64, std::nothrow);
    if (p == nullptr) {
      Commit();
      return nullptr;
    }
    j.block = OffsetOf(p);
    std::atomic_ref(j.op).store(JournalOp::kAllocated, std::memory_order_release);
    return p;
  }
  // Frees an unregistered block; called while `block`'s kChange is journaled.
  void FreeLocked(BlockHeader* block) {
    // A poisoned allocator is never entered again: the block leaks with it.
    if (header->poisoned_by_pid != 0) return Commit();
    Journal& j = header->journal;
    j.block = OffsetOf(block);
    j.pid = static_cast<int32_t>(getpid());
    std::atomic_ref(j.op).store(JournalOp::kAllocator, std::memory_order_release);
    shm.deallocate(block);
    Commit();
  }

  // Removes a block whose refs reached zero from the table (under the lock,
  // inside its kChange); the caller then frees it with FreeLocked.
  void Unregister(BlockHeader* block) {
    table[block->table_index] = 0;
    header->live_blocks -= 1;
    header->payload_bytes_in_use -= block->payload_bytes;
    block->magic = kFreedMagic;
  }
};

// ---- BlockRef

BlockRef::BlockRef(BlockRef&& other) noexcept : segment_(other.segment_), header_(other.header_) {
  other.segment_ = nullptr;
  other.header_ = nullptr;
}

BlockRef& BlockRef::operator=(BlockRef&& other) noexcept {
  if (this != &other) {
    Release();
    segment_ = other.segment_;
    header_ = other.header_;
    other.segment_ = nullptr;
    other.header_ = nullptr;
  }
  return *this;
}

std::span<std::byte> BlockRef::mutable_bytes() {
  return {reinterpret_cast<std::byte*>(header_) + kPayloadOffset + header_->color * 64, header_->payload_bytes};
}

std::span<const std::byte> BlockRef::bytes() const {
  return {reinterpret_cast<const std::byte*>(header_) + kPayloadOffset + header_->color * 64, header_->payload_bytes};
}

BlockMeta& BlockRef::mutable_meta() { return header_->meta; }
const BlockMeta& BlockRef::meta() const { return header_->meta; }

BlockToken BlockRef::token() const { return BlockToken{segment_->impl_->OffsetOf(header_), header_->generation}; }

Result<BlockRef> BlockRef::Clone() const {
  TRIBUTARY_TRY(segment_->AddHold(header_));
  return BlockRef(segment_, header_);
}

Result<BlockToken> BlockRef::HandOff(uint32_t to) {
  TRIBUTARY_ASSIGN_OR_RETURN(auto token, segment_->MoveHold(header_, to));
  segment_ = nullptr;
  header_ = nullptr;
  return token;
}

void BlockRef::Release() {
  if (header_ == nullptr) return;
  segment_->DropHold(header_);
  segment_ = nullptr;
  header_ = nullptr;
}

// ---- Owner files

namespace {

// POSIX shared memory objects live here on Linux (shm_open, Boost's too).
constexpr const char* kShmDir = "/dev/shm/";
constexpr std::string_view kOwnerSuffix = ".owner";

std::string OwnerPath(const std::string& segment) { return kShmDir + segment + std::string(kOwnerSuffix); }

// Becomes the owner of segment `name`: a new owner file, locked, then renamed
// into place, so the file at the owner path is always locked while its
// creator lives. Refused while a live process owns the name.
Result<UniqueFd> TakeOwnership(const std::string& name) {
  const std::string path = OwnerPath(name), fresh = path + "." + std::to_string(getpid());
  UniqueFd fd(open(fresh.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600));
  if (!fd || flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    return MakeError(ErrorCode::kIo, "cannot create the owner file " + fresh + ": " + std::strerror(errno));
  }
  if (UniqueFd previous(open(path.c_str(), O_RDONLY | O_CLOEXEC)); previous) {
    if (flock(previous.get(), LOCK_SH | LOCK_NB) != 0) {
      char pid[32] = {};
      (void)!read(previous.get(), pid, sizeof pid - 1);
      unlink(fresh.c_str());
      return MakeError(ErrorCode::kConfig, "shared-memory segment '" + name + "' belongs to a running process (pid " +
                                               std::string(pid) + "): segment names must be unique on a machine");
    }
  }
  const std::string pid = std::to_string(getpid());
  if (write(fd.get(), pid.data(), pid.size()) != static_cast<ssize_t>(pid.size()) ||
      rename(fresh.c_str(), path.c_str()) != 0) {
    unlink(fresh.c_str());
    return MakeError(ErrorCode::kIo, "cannot write the owner file " + path + ": " + std::strerror(errno));
  }
  return fd;
}

}  // namespace

std::vector<std::string> RemoveAbandonedSegments(std::string_view prefix) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(kShmDir, ec)) {
    const std::string file = entry.path().filename().string();
    const size_t owner = file.find(kOwnerSuffix);
    if (!file.starts_with(prefix) || owner == std::string::npos) continue;
    UniqueFd fd(open(entry.path().c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // gone, or its owner lives
    // Still the file at that path? A new owner may have renamed its own over it meanwhile.
    struct stat locked {}, now {};
    if (fstat(fd.get(), &locked) != 0 || stat(entry.path().c_str(), &now) != 0 || locked.st_ino != now.st_ino ||
        locked.st_dev != now.st_dev) {
      continue;
    }
    // "<name>.owner.<pid>": its creator died before the rename, so before it made a segment.
    if (owner + kOwnerSuffix.size() == file.size()) {
      const std::string segment = file.substr(0, owner);
      bip::shared_memory_object::remove(segment.c_str());  // before the owner file: its name is ours until then
      removed.push_back(segment);
    }
    unlink(entry.path().c_str());
  }
  return removed;
}

// ---- Segment

Segment::Segment(std::unique_ptr<Impl> impl, std::string name, uint32_t lease, bool owner)
    : impl_(std::move(impl)), name_(std::move(name)), lease_(lease), owner_(owner) {}

namespace {

Result<uint32_t> TakeLease(SegmentHeader* header) {
  const int pid = static_cast<int>(getpid());
  auto self = ProcState(pid);
  if (!self) return MakeError(ErrorCode::kIo, "cannot read /proc/self/stat");
  for (uint32_t i = 0; i < kMaxLeases; ++i) {
    LeaseSlot& slot = header->leases[i];
    if (slot.state != LeaseState::kFree) continue;
    slot.pid = pid;
    slot.start_time = self->second;
    std::atomic_ref(slot.state).store(LeaseState::kLive, std::memory_order_release);
    return i;
  }
  return MakeError(ErrorCode::kResourceExhausted,
                   "lease table full: " + std::to_string(kMaxLeases) + " processes already map this segment");
}

}  // namespace

Result<std::unique_ptr<Segment>> Segment::Create(const SegmentOptions& options) {
  if (options.name.empty() || options.name.find('/') != std::string::npos) {
    return MakeError(ErrorCode::kConfig, "segment name must be non-empty and contain no '/'");
  }
  if (options.max_blocks == 0) return MakeError(ErrorCode::kConfig, "max_blocks must be positive");
  const uint64_t overhead = sizeof(SegmentHeader) + uint64_t{options.max_blocks} * 8 + (64u << 10);
  if (options.bytes < overhead) {
    return MakeError(ErrorCode::kConfig, "segment of " + std::to_string(options.bytes) +
                                             " bytes is too small (needs at least " + std::to_string(overhead) + ")");
  }
  auto impl = std::make_unique<Impl>();
  TRIBUTARY_ASSIGN_OR_RETURN(impl->owner_lock, TakeOwnership(options.name));
  try {
    bip::shared_memory_object::remove(options.name.c_str());  // a dead owner's: we hold its name now
    impl->shm = ManagedSegment(bip::create_only, options.name.c_str(), options.bytes);
    impl->header = impl->shm.construct<SegmentHeader>(kHeaderName)();
    void* table = impl->shm.allocate(uint64_t{options.max_blocks} * 8);
    std::memset(table, 0, uint64_t{options.max_blocks} * 8);
    impl->table = static_cast<uint64_t*>(table);
  } catch (const bip::interprocess_exception& e) {
    unlink(OwnerPath(options.name).c_str());
    return MakeError(ErrorCode::kIo, "cannot create shared-memory segment '" + options.name + "': " + e.what());
  }
  SegmentHeader* h = impl->header;
  h->max_blocks = options.max_blocks;
  h->table_offset = impl->OffsetOf(impl->table);
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&h->mutex, &attr);
  pthread_mutexattr_destroy(&attr);
  uint32_t lease;
  {
    Impl::Locked lock(*impl);
    auto taken = TakeLease(h);
    if (!taken) {
      bip::shared_memory_object::remove(options.name.c_str());
      unlink(OwnerPath(options.name).c_str());
      return std::move(taken).error();
    }
    lease = taken.value();
  }
  return std::unique_ptr<Segment>(new Segment(std::move(impl), options.name, lease, true));
}

Result<std::unique_ptr<Segment>> Segment::Open(std::string_view name) {
  auto impl = std::make_unique<Impl>();
  const std::string n(name);
  try {
    impl->shm = ManagedSegment(bip::open_only, n.c_str());
    impl->header = impl->shm.find<SegmentHeader>(kHeaderName).first;
  } catch (const bip::interprocess_exception& e) {
    return MakeError(ErrorCode::kNotFound, "cannot open shared-memory segment '" + n + "': " + e.what());
  }
  SegmentHeader* h = impl->header;
  if (h == nullptr || h->magic != kSegmentMagic) {
    return MakeError(ErrorCode::kInternal, "'" + n + "' is not a Tributary segment");
  }
  if (h->abi_version != kAbiVersion) {
    return MakeError(ErrorCode::kUnsupportedVersion, "segment '" + n + "' has ABI version " +
                                                         std::to_string(h->abi_version) + ", this build speaks " +
                                                         std::to_string(kAbiVersion));
  }
  impl->table = static_cast<uint64_t*>(impl->shm.get_address_from_handle(h->table_offset));
  uint32_t lease;
  {
    Impl::Locked lock(*impl);
    TRIBUTARY_ASSIGN_OR_RETURN(lease, TakeLease(h));
  }
  return std::unique_ptr<Segment>(new Segment(std::move(impl), n, lease, false));
}

Segment::~Segment() {
  // Whatever this process still holds (a bug in the caller, or hand-offs never
  // adopted) is dropped with the lease, exactly as if it had died.
  {
    Impl::Locked lock(*impl_);
    impl_->DropLease(lease_);
  }
  if (owner_) {
    bip::shared_memory_object::remove(name_.c_str());
    unlink(OwnerPath(name_).c_str());  // then the lock goes with impl_
  }
}

Result<BlockRef> Segment::Allocate(uint64_t bytes, const BlockMeta& meta) {
  if (bytes > impl_->shm.get_size()) {
    return MakeError(ErrorCode::kResourceExhausted,
                     "block of " + std::to_string(bytes) + " bytes is larger than the segment");
  }
  Impl::Locked lock(*impl_);
  SegmentHeader* h = impl_->header;
  if (h->poisoned_by_pid != 0) {
    return MakeError(ErrorCode::kInternal, "segment '" + name_ + "' is unusable: process " +
                                               std::to_string(h->poisoned_by_pid) +
                                               " died inside its allocator; the node agent must recreate it");
  }
  uint32_t slot = h->max_blocks;
  for (uint32_t k = 0; k < h->max_blocks && slot == h->max_blocks; ++k) {
    const uint32_t i = (h->table_hint + k) % h->max_blocks;
    if (impl_->table[i] == 0) slot = i;
  }
  if (slot == h->max_blocks) {
    return MakeError(ErrorCode::kResourceExhausted,
                     "segment '" + name_ + "' has no free block slot (max_blocks = " + std::to_string(h->max_blocks) + ")");
  }
  void* p = impl_->AllocateLocked(kPayloadOffset + (kColors - 1) * 64 + bytes);
  if (p == nullptr) {
    return MakeError(ErrorCode::kResourceExhausted, "segment '" + name_ + "' is full (" + std::to_string(bytes) +
                                                        " bytes requested, " +
                                                        std::to_string(impl_->shm.get_free_memory()) + " free)");
  }
  auto* b = static_cast<BlockHeader*>(p);
  std::memset(static_cast<void*>(b), 0, sizeof(BlockHeader));
  impl_->Begin(JournalOp::kRegister, b, slot, lease_, lease_);
  b->abi_version = kAbiVersion;
  b->payload_bytes = bytes;
  b->meta = meta;
  b->generation = h->next_generation++;
  b->color = static_cast<uint32_t>(b->generation % kColors);
  b->table_index = slot;
  b->refs = 1;
  b->holds[lease_].held = 1;
  b->magic = kBlockMagic;
  impl_->table[slot] = impl_->OffsetOf(b);
  h->table_hint = (slot + 1) % h->max_blocks;
  h->live_blocks += 1;
  h->payload_bytes_in_use += bytes;
  impl_->Commit();
  return BlockRef(this, b);
}

Result<BlockRef> Segment::Adopt(BlockToken token) {
  Impl::Locked lock(*impl_);
  const SegmentHeader* h = impl_->header;
  // Compared without adding to the offset: a forged one near 2^64 would wrap (a fuzzer found it).
  if (token.offset % 64 != 0 || token.offset < sizeof(SegmentHeader) ||
      token.offset > impl_->shm.get_size() - kPayloadOffset) {
    return MakeError(ErrorCode::kStaleReference, "block offset out of range");
  }
  // A forged offset inside the segment reads garbage, never outside memory;
  // the table entry it names must point back at it to be believed.
  BlockHeader* b = impl_->BlockAt(token.offset);
  if (b->table_index >= h->max_blocks || impl_->table[b->table_index] != token.offset ||
      b->magic != kBlockMagic || b->generation != token.generation) {
    return MakeError(ErrorCode::kStaleReference, "no live block with that offset and generation");
  }
  Hold& mine = b->holds[lease_];
  if (mine.inbox == 0) {
    return MakeError(ErrorCode::kStaleReference, "block was not handed to this process");
  }
  impl_->Begin(JournalOp::kChange, b, b->table_index, lease_, lease_);
  mine.inbox -= 1;
  mine.held += 1;
  impl_->Commit();
  return BlockRef(this, b);
}

Result<void> Segment::AddHold(BlockHeader* b) {
  Impl::Locked lock(*impl_);
  Hold& mine = b->holds[lease_];
  if (mine.held == UINT16_MAX) {
    return MakeError(ErrorCode::kResourceExhausted, "too many references to one block in one process");
  }
  impl_->Begin(JournalOp::kChange, b, b->table_index, lease_, lease_);
  mine.held += 1;
  b->refs += 1;
  impl_->Commit();
  return Ok();
}

void Segment::DropHold(BlockHeader* b) {
  Impl::Locked lock(*impl_);
  impl_->Begin(JournalOp::kChange, b, b->table_index, lease_, lease_);
  b->holds[lease_].held -= 1;
  b->refs -= 1;
  if (b->refs == 0) {
    impl_->Unregister(b);
    impl_->FreeLocked(b);
  } else {
    impl_->Commit();
  }
}

Result<BlockToken> Segment::MoveHold(BlockHeader* b, uint32_t to) {
  Impl::Locked lock(*impl_);
  if (to >= kMaxLeases || impl_->header->leases[to].state != LeaseState::kLive) {
    return MakeError(ErrorCode::kNotFound, "lease " + std::to_string(to) + " is not live");
  }
  Hold& theirs = b->holds[to];
  if (theirs.inbox == UINT16_MAX) {
    return MakeError(ErrorCode::kResourceExhausted, "too many references handed to one process");
  }
  impl_->Begin(JournalOp::kChange, b, b->table_index, lease_, to);
  b->holds[lease_].held -= 1;
  theirs.inbox += 1;
  impl_->Commit();
  return BlockToken{impl_->OffsetOf(b), b->generation};
}

SweepReport Segment::SweepDeadLeases() {
  SweepReport report;
  Impl::Locked lock(*impl_);
  for (uint32_t l = 0; l < kMaxLeases; ++l) {
    const LeaseSlot& slot = impl_->header->leases[l];
    if (slot.state != LeaseState::kLive || ProcessAlive(slot)) continue;
    report.dead_leases += 1;
    const auto [holds, freed] = impl_->DropLease(l);
    report.holds_dropped += holds;
    report.blocks_freed += freed;
  }
  return report;
}

SegmentStats Segment::Stats() const {
  Impl::Locked lock(*impl_);
  const SegmentHeader* h = impl_->header;
  SegmentStats s;
  s.capacity_bytes = impl_->shm.get_size();
  s.allocator_bytes_in_use = impl_->shm.get_size() - impl_->shm.get_free_memory();
  s.payload_bytes_in_use = h->payload_bytes_in_use;
  s.live_blocks = h->live_blocks;
  s.lock_recoveries = h->lock_recoveries;
  s.poisoned = h->poisoned_by_pid != 0;
  for (const LeaseSlot& slot : h->leases) s.live_leases += slot.state == LeaseState::kLive;
  return s;
}

}  // namespace tributary::shm
