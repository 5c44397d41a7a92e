// Aggregation kernels: the memory-bandwidth-bound inner loops.
//
// Contract:
// - Accumulation is in f32; f16/bf16 inputs are widened on the fly.
// - FoldUpdates(acc, {u1..uk}) computes acc += w1*x1, then += w2*x2, ... per
//   element, in the given order, rounding after every multiply and add (no
//   FMA contraction). Folding k updates in one pass therefore gives the same
//   bits as k single folds, on every x86-64 CPU, at any thread count; folding
//   k at once reads the accumulator once instead of k times.
// - Only a FiniteUpdate can be folded: NaN/Inf are rejected before any fold.
// - Work is split across `threads` OpenMP threads (0: all cores) into
//   contiguous element ranges; small inputs run on the calling thread.
//
// Thread safety: the functions are reentrant; callers must not fold into the
// same accumulator from two threads at once.
#pragma once

#include <cstddef>
#include <span>

#include "tributary/aggregator/tensor.h"
#include "tributary/core/error.h"

namespace tributary::agg {

struct Parallelism {
  int threads = 0;  // 0: one per core
};

// A payload that matches its layout and holds no NaN or Inf, with the weight
// it is folded with (normally the client's sample count). It refers to the
// payload and layout; both must outlive it.
class FiniteUpdate {
 public:
  static Result<FiniteUpdate> Check(const ModelSpec& layout, std::span<const std::byte> payload, double weight,
                                    Parallelism parallelism = {});
  // For a payload whose every value was already checked where it entered the
  // system (the gateway refuses NaN/Inf at arrival and marks the block):
  // checks the size and weight only. The caller vouches for the values.
  static Result<FiniteUpdate> Trusted(const ModelSpec& layout, std::span<const std::byte> payload, double weight);

  const ModelSpec& layout() const { return *layout_; }
  std::span<const std::byte> payload() const { return payload_; }
  double weight() const { return weight_; }

 private:
  FiniteUpdate(const ModelSpec* layout, std::span<const std::byte> payload, double weight)
      : layout_(layout), payload_(payload), weight_(weight) {}

  const ModelSpec* layout_;
  std::span<const std::byte> payload_;
  double weight_;
};

// True when no element of the payload is NaN or Inf. The payload must be
// layout.payload_bytes() long.
bool AllFinite(const ModelSpec& layout, std::span<const std::byte> payload, Parallelism parallelism = {});

// AllFinite for a payload that arrives in order, a piece at a time, so that
// each piece is checked while it is still in cache. Advance(received) checks
// every element whose bytes lie within the first `received` bytes and were
// not checked before; an element split across pieces is checked once whole.
// Once every byte arrived, "no Advance returned false" equals AllFinite.
class FiniteScan {
 public:
  // False if a NaN or Inf was found among the newly checked elements.
  // `layout` is the same at every call, `received` never decreases and is at
  // most layout.payload_bytes(); `payload` is the payload's first byte.
  bool Advance(const ModelSpec& layout, const std::byte* payload, uint64_t received);

 private:
  size_t run_ = 0;        // the first run not checked to its end
  uint64_t checked_ = 0;  // elements of that run checked
};

// acc += sum of w_j * x_j, in order. acc.size() must equal each layout's
// elements() (checked by the callers that take untrusted input).
void FoldUpdates(std::span<float> acc, std::span<const FiniteUpdate> updates, Parallelism parallelism = {});

// acc += sum of partials, in order (each partial is an f32 accumulator).
void FoldPartials(std::span<float> acc, std::span<const std::span<const float>> partials,
                  Parallelism parallelism = {});

// acc += w * x over f32: the STREAM-style reference the benchmark compares with.
void Axpy(std::span<float> acc, std::span<const float> x, float w, Parallelism parallelism = {});

// Update bytes this machine folds per second with `parallelism`: FoldUpdates
// of four 8 MiB f32 updates (larger than the caches, as a round's are),
// best of three after a warm-up; about 20 ms. The capacity unit of the
// node's autoscaler and of the controller's placement.
double MeasureFoldBytesPerSecond(Parallelism parallelism = {});

// The resolved thread count for a Parallelism value.
int ThreadCount(Parallelism parallelism);

// Which vector code path the kernels use on this CPU ("avx2" or "sse2").
const char* KernelIsa();

}  // namespace tributary::agg
