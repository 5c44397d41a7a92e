// Descriptors in C++: the 64-byte struct of ebpf/include/tributary/ebpf/abi.h
// with constructors and accessors. A descriptor names a block of the node's
// shared-memory segment by offset and generation; it never carries data.
#pragma once

#include <cstdint>
#include <cstring>

#include "tributary/ebpf/abi.h"

namespace tributary::dataplane {

using Descriptor = trb_descriptor;

struct DescriptorFields {
  trb_kind kind = TRB_KIND_UPDATE;
  uint32_t dest_fn = TRB_NO_FUNCTION;  // or route by route_key
  uint32_t route_key = 0;
  uint64_t job = 0;
  uint64_t round = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t generation = 0;
  double weight = 0;
};

inline Descriptor MakeDescriptor(const DescriptorFields& f) {
  Descriptor d{};
  d.magic = TRB_DESCRIPTOR_MAGIC;
  d.version = TRB_DESCRIPTOR_VERSION;
  d.kind = static_cast<uint8_t>(f.kind);
  d.dest_fn = f.dest_fn;
  d.route_key = f.route_key;
  d.job = f.job;
  d.round = f.round;
  d.offset = f.offset;
  d.length = f.length;
  d.generation = f.generation;
  std::memcpy(&d.weight_bits, &f.weight, sizeof(double));
  return d;
}

inline double WeightOf(const Descriptor& d) {
  double w;
  std::memcpy(&w, &d.weight_bits, sizeof w);
  return w;
}

}  // namespace tributary::dataplane
