// Descriptors in C++: the struct of ebpf/include/tributary/ebpf/abi.h with one
// named builder per kind. A descriptor names a block of the node's
// shared-memory segment by offset and generation; it never carries data.
//
// Builders take designated initializers, so every field is named where a
// descriptor is made:
//   MakeUpdate({.route_key = key, .task = leaf_task, .round = r, .dtype = dt, .weight = w})
// Fields a kind does not use stay 0. The block's address (offset, length,
// generation) is filled in by whoever hands the block over (WithBlock).
#pragma once

#include <cstdint>
#include <cstring>

#include "tributary/ebpf/abi.h"

namespace tributary::dataplane {

using Descriptor = trb_descriptor;

// Where a block lives in the node's segment.
struct BlockAddress {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t generation = 0;
};

// A client update for a leaf: by route key (dest_fn 0) or to a named function.
struct UpdateFields {
  uint32_t dest_fn = TRB_NO_FUNCTION;
  uint32_t route_key = 0;
  uint64_t task = 0;
  uint64_t round = 0;
  uint8_t dtype = 0;  // agg::DType of the payload
  double weight = 0;
  BlockAddress block;
};

// A partial aggregate for a parent (slot: its place in the parent's fold order).
struct PartialFields {
  uint32_t dest_fn = TRB_NO_FUNCTION;
  uint32_t src_fn = TRB_NO_FUNCTION;
  uint32_t slot = 0;
  uint64_t task = 0;  // the receiver's task
  uint64_t round = 0;
  double weight = 0;
  BlockAddress block;
};

// A FunctionTask block for a function.
struct TaskFields {
  uint32_t dest_fn = TRB_NO_FUNCTION;
  uint64_t task = 0;
  uint64_t round = 0;
  BlockAddress block;
};

// A function's announcement to the agent.
struct HelloFields {
  uint32_t src_fn = TRB_NO_FUNCTION;
  uint32_t lease = 0;
  uint16_t payload_port = 0;  // serverful transport only
};

namespace internal {
inline Descriptor Blank(trb_kind kind) {
  Descriptor d{};
  d.magic = TRB_DESCRIPTOR_MAGIC;
  d.version = TRB_DESCRIPTOR_VERSION;
  d.kind = static_cast<uint8_t>(kind);
  return d;
}
inline void SetWeight(Descriptor& d, double w) { std::memcpy(&d.weight_bits, &w, sizeof w); }
}  // namespace internal

inline Descriptor WithBlock(Descriptor d, const BlockAddress& b) {
  d.offset = b.offset;
  d.length = b.length;
  d.generation = b.generation;
  return d;
}

inline Descriptor MakeUpdate(const UpdateFields& f) {
  Descriptor d = internal::Blank(TRB_KIND_UPDATE);
  d.dest_fn = f.dest_fn;
  d.src_fn = TRB_AGENT_FN;
  d.route_key = f.route_key;
  d.task = f.task;
  d.round = f.round;
  d.dtype = f.dtype;
  internal::SetWeight(d, f.weight);
  return WithBlock(d, f.block);
}

inline Descriptor MakePartial(const PartialFields& f) {
  Descriptor d = internal::Blank(TRB_KIND_PARTIAL);
  d.dest_fn = f.dest_fn;
  d.src_fn = f.src_fn;
  d.slot = f.slot;
  d.task = f.task;
  d.round = f.round;
  internal::SetWeight(d, f.weight);
  return WithBlock(d, f.block);
}

inline Descriptor MakeTask(const TaskFields& f) {
  Descriptor d = internal::Blank(TRB_KIND_TASK);
  d.dest_fn = f.dest_fn;
  d.src_fn = TRB_AGENT_FN;
  d.task = f.task;
  d.round = f.round;
  return WithBlock(d, f.block);
}

inline Descriptor MakeHello(const HelloFields& f) {
  Descriptor d = internal::Blank(TRB_KIND_HELLO);
  d.dest_fn = TRB_AGENT_FN;
  d.src_fn = f.src_fn;
  d.lease = f.lease;
  d.payload_port = f.payload_port;
  return d;
}

// A function's sign of life for the agent (function_host.h: kHeartbeatInterval).
inline Descriptor MakeHeartbeat(uint32_t src_fn) {
  Descriptor d = internal::Blank(TRB_KIND_HEARTBEAT);
  d.dest_fn = TRB_AGENT_FN;
  d.src_fn = src_fn;
  return d;
}

inline double WeightOf(const Descriptor& d) {
  double w;
  std::memcpy(&w, &d.weight_bits, sizeof w);
  return w;
}

inline BlockAddress BlockOf(const Descriptor& d) { return {d.offset, d.length, d.generation}; }

}  // namespace tributary::dataplane
