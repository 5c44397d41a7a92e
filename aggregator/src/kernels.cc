#include "tributary/aggregator/kernels.h"

#include <cpuid.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>
#include <vector>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

namespace tributary::agg {
namespace {

// Elements per cache block: 8 KiB of accumulator stays in L1 while k updates
// stream through it.
constexpr uint64_t kBlock = 2048;
// Below this many elements a parallel region costs more than it saves.
constexpr uint64_t kParallelMin = 1 << 16;

// Payload element types with alignment 1: a tensor may start at any byte of
// the payload (an odd-length f16 tensor shifts every tensor after it), and
// x86-64 loads unaligned data at full speed.
typedef float F32In __attribute__((aligned(1), may_alias));
typedef uint32_t U32In __attribute__((aligned(1), may_alias));
typedef uint16_t U16In __attribute__((aligned(1), may_alias));
#if defined(__clang__) && !defined(__FLT16_MAX__)
// Clang before 15 has no x86 _Float16; __fp16 is the same IEEE half as a storage type.
typedef __fp16 F16In __attribute__((aligned(1), may_alias));
#else
typedef _Float16 F16In __attribute__((aligned(1), may_alias));
#endif
// The stream loops' accumulator never aliases the updates: tell GCC. (Clang
// builds are the fuzzers', at -O1: nothing to vectorize there.)
#if defined(__clang__)
#define TRIBUTARY_IVDEP
#else
#define TRIBUTARY_IVDEP _Pragma("GCC ivdep")
#endif
typedef int8_t I8In;

// ---- element loops: one body, compiled for AVX2 and for the x86-64 baseline.

#define TRIBUTARY_KERNELS(ATTR, SUFFIX)                                                              \
  ATTR void AxpyF32##SUFFIX(float* __restrict acc, const F32In* __restrict x, float w, uint64_t n) { \
    for (uint64_t i = 0; i < n; ++i) acc[i] += w * x[i];                                             \
  }                                                                                                  \
  ATTR void AxpyBF16##SUFFIX(float* __restrict acc, const U16In* __restrict x, float w,          \
                             uint64_t n) {                                                           \
    for (uint64_t i = 0; i < n; ++i) {                                                               \
      uint32_t bits = uint32_t{x[i]} << 16;                                                          \
      float v;                                                                                       \
      std::memcpy(&v, &bits, 4);                                                                     \
      acc[i] += w * v;                                                                               \
    }                                                                                                \
  }                                                                                                  \
  ATTR void AxpyF16##SUFFIX(float* __restrict acc, const F16In* __restrict x, float w,           \
                            uint64_t n) {                                                            \
    for (uint64_t i = 0; i < n; ++i) acc[i] += w * static_cast<float>(x[i]);                         \
  }                                                                                                  \
  ATTR void AxpyI8##SUFFIX(float* __restrict acc, const I8In* __restrict x, float w, uint64_t n) {  \
    for (uint64_t i = 0; i < n; ++i) acc[i] += w * static_cast<float>(x[i]);                         \
  }                                                                                                  \
  ATTR bool FiniteU32##SUFFIX(const U32In* __restrict x, uint64_t n, uint32_t exp_mask) {         \
    uint32_t bad = 0;                                                                                \
    for (uint64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>((x[i] & exp_mask) == exp_mask);    \
    return bad == 0;                                                                                 \
  }                                                                                                  \
  ATTR bool FiniteU16##SUFFIX(const U16In* __restrict x, uint64_t n, uint16_t exp_mask) {         \
    uint32_t bad = 0;                                                                                \
    for (uint64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>((x[i] & exp_mask) == exp_mask);    \
    return bad == 0;                                                                                 \
  }

TRIBUTARY_KERNELS(__attribute__((target("avx2,f16c"))), Avx2)
TRIBUTARY_KERNELS(, Base)
#undef TRIBUTARY_KERNELS

// K f32 updates folded in one sweep: acc is read and written once, the K
// inputs stream side by side (long sequential streams keep the prefetchers
// busy, where short per-block bursts would stall on each new stream).
constexpr int kMaxStreams = 16;

#define TRIBUTARY_MULTI_KERNEL(ATTR, SUFFIX)                                                         \
  template <int K>                                                                                   \
  ATTR void FoldF32Streams##SUFFIX(float* __restrict acc, const F32In* const* xs, const float* ws,   \
                                   uint64_t n) {                                                     \
    const F32In* x[K];                                                                               \
    float w[K];                                                                                      \
    for (int j = 0; j < K; ++j) {                                                                    \
      x[j] = xs[j];                                                                                  \
      w[j] = ws[j];                                                                                  \
    }                                                                                                \
    TRIBUTARY_IVDEP for (uint64_t i = 0; i < n; ++i) {                                               \
      float s = acc[i];                                                                              \
      for (int j = 0; j < K; ++j) s += w[j] * x[j][i];                                               \
      acc[i] = s;                                                                                    \
    }                                                                                                \
  }

TRIBUTARY_MULTI_KERNEL(__attribute__((target("avx2,f16c"))), Avx2)
TRIBUTARY_MULTI_KERNEL(, Base)
#undef TRIBUTARY_MULTI_KERNEL

using StreamsFn = void (*)(float*, const F32In* const*, const float*, uint64_t);

template <int... K>
void FillStreams(bool avx2, StreamsFn* out, std::integer_sequence<int, K...>) {
  ((out[K] = avx2 ? &FoldF32StreamsAvx2<K + 1> : &FoldF32StreamsBase<K + 1>), ...);
}

struct KernelTable {
  void (*axpy_f32)(float*, const F32In*, float, uint64_t);
  void (*axpy_bf16)(float*, const U16In*, float, uint64_t);
  void (*axpy_f16)(float*, const F16In*, float, uint64_t);
  void (*axpy_i8)(float*, const I8In*, float, uint64_t);
  bool (*finite_u32)(const U32In*, uint64_t, uint32_t);
  bool (*finite_u16)(const U16In*, uint64_t, uint16_t);
  StreamsFn fold_streams[kMaxStreams];  // [k-1]: k f32 updates at once
  const char* isa;
};

const KernelTable& Kernels() {
  static const KernelTable table = [] {
    __builtin_cpu_init();
    // F16C from CPUID leaf 1 (clang 14's __builtin_cpu_supports does not know it).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
    const bool avx2 = __builtin_cpu_supports("avx2") && f16c;
    KernelTable t = avx2 ? KernelTable{AxpyF32Avx2, AxpyBF16Avx2, AxpyF16Avx2, AxpyI8Avx2,
                                       FiniteU32Avx2, FiniteU16Avx2, {}, "avx2"}
                         : KernelTable{AxpyF32Base, AxpyBF16Base, AxpyF16Base, AxpyI8Base,
                                       FiniteU32Base, FiniteU16Base, {}, "sse2"};
    FillStreams(avx2, t.fold_streams, std::make_integer_sequence<int, kMaxStreams>{});
    return t;
  }();
  return table;
}

// A slice of one run: its dtype, first byte, and (kI8) its tensor's scale.
struct RunSlice {
  DType dtype;
  const std::byte* src;
  float scale;
};

void AxpyRun(const KernelTable& k, const RunSlice& s, float* acc, float w, uint64_t n) {
  switch (s.dtype) {
    case DType::kF32: k.axpy_f32(acc, reinterpret_cast<const F32In*>(s.src), w, n); break;
    case DType::kBF16: k.axpy_bf16(acc, reinterpret_cast<const U16In*>(s.src), w, n); break;
    case DType::kF16: k.axpy_f16(acc, reinterpret_cast<const F16In*>(s.src), w, n); break;
    case DType::kI8: k.axpy_i8(acc, reinterpret_cast<const I8In*>(s.src), w * s.scale, n); break;
  }
}

bool FiniteRun(const KernelTable& k, const RunSlice& s, uint64_t n) {
  switch (s.dtype) {
    case DType::kF32: return k.finite_u32(reinterpret_cast<const U32In*>(s.src), n, 0x7f800000u);
    case DType::kBF16: return k.finite_u16(reinterpret_cast<const U16In*>(s.src), n, 0x7f80u);
    case DType::kF16: return k.finite_u16(reinterpret_cast<const U16In*>(s.src), n, 0x7c00u);
    case DType::kI8: return std::isfinite(s.scale);  // int8 values are always finite
  }
  return false;
}

// Calls body(lo, hi) on contiguous, block-aligned slices of [0, n), one per
// thread. The slicing never changes what is computed per element.
template <class Body>
void ParallelSlices(uint64_t n, Parallelism parallelism, Body&& body) {
  const int threads = n < kParallelMin ? 1 : ThreadCount(parallelism);
  if (threads == 1) {
    body(uint64_t{0}, n);
    return;
  }
  const uint64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel num_threads(threads)
  {
    const uint64_t t = static_cast<uint64_t>(omp_get_thread_num());
    const uint64_t nt = static_cast<uint64_t>(omp_get_num_threads());
    const uint64_t lo = std::min(n, blocks * t / nt * kBlock);
    const uint64_t hi = std::min(n, blocks * (t + 1) / nt * kBlock);
    if (lo < hi) body(lo, hi);
  }
}

// Calls fn(slice, first element, count) for the parts of [lo, hi) covered by
// each dtype run of the layout.
template <class Fn>
void ForEachRunSlice(const ModelSpec& layout, const std::byte* payload, uint64_t lo, uint64_t hi, Fn&& fn) {
  for (const DTypeRun& run : layout.runs()) {
    const uint64_t a = std::max(lo, run.first_element);
    const uint64_t b = std::min(hi, run.first_element + run.elements);
    if (a >= b) continue;
    uint64_t values = run.byte_offset;
    float scale = 1.0f;
    if (run.dtype == DType::kI8) {
      std::memcpy(&scale, payload + run.byte_offset, sizeof scale);
      values += sizeof scale;
    }
    fn(RunSlice{run.dtype, payload + values + (a - run.first_element) * DTypeSize(run.dtype), scale}, a, b - a);
  }
}

}  // namespace

double MeasureFoldBytesPerSecond(Parallelism parallelism) {
  constexpr uint64_t kElements = 2ull << 20;  // 8 MiB of f32
  constexpr int kUpdates = 4;
  auto spec = ModelSpec::Create({{"w", DType::kF32, {kElements}}});
  if (!spec) return 0;
  std::vector<float> acc(kElements, 0.0f), values(kElements * kUpdates, 1.0f);
  std::vector<FiniteUpdate> updates;
  for (int k = 0; k < kUpdates; ++k) {
    auto u = FiniteUpdate::Trusted(spec.value(), std::as_bytes(std::span(values).subspan(k * kElements, kElements)), 1.0);
    if (!u) return 0;
    updates.push_back(u.value());
  }
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    FoldUpdates(acc, updates, parallelism);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (rep > 0 && s > 0) best = std::max(best, static_cast<double>(kElements * 4 * kUpdates) / s);
  }
  return best;
}

int ThreadCount(Parallelism parallelism) {
  if (parallelism.threads > 0) return parallelism.threads;
  static const int cores = std::max(1u, std::thread::hardware_concurrency());
  return cores;
}

const char* KernelIsa() { return Kernels().isa; }

bool AllFinite(const ModelSpec& layout, std::span<const std::byte> payload, Parallelism parallelism) {
  const KernelTable& k = Kernels();
  int bad = 0;
  ParallelSlices(layout.elements(), parallelism, [&](uint64_t lo, uint64_t hi) {
    bool ok = true;
    ForEachRunSlice(layout, payload.data(), lo, hi,
                    [&](const RunSlice& s, uint64_t, uint64_t n) { ok = ok && FiniteRun(k, s, n); });
    if (!ok) {
#pragma omp atomic write
      bad = 1;
    }
  });
  return bad == 0;
}

bool FiniteScan::Advance(const ModelSpec& layout, const std::byte* payload, uint64_t received) {
  const KernelTable& k = Kernels();
  const auto& runs = layout.runs();
  for (; run_ < runs.size(); ++run_, checked_ = 0) {
    const DTypeRun& run = runs[run_];
    const uint64_t values = run.byte_offset + (run.dtype == DType::kI8 ? sizeof(float) : 0);
    if (received < values) return true;  // for kI8: its scale is not all here yet
    const uint64_t whole = std::min(run.elements, (received - values) / DTypeSize(run.dtype));
    if (whole > checked_) {
      float scale = 1.0f;
      if (run.dtype == DType::kI8) std::memcpy(&scale, payload + run.byte_offset, sizeof scale);
      const RunSlice slice{run.dtype, payload + values + checked_ * DTypeSize(run.dtype), scale};
      if (!FiniteRun(k, slice, whole - checked_)) return false;
      checked_ = whole;
    }
    if (checked_ < run.elements) return true;
  }
  return true;
}

Result<FiniteUpdate> FiniteUpdate::Check(const ModelSpec& layout, std::span<const std::byte> payload, double weight,
                                         Parallelism parallelism) {
  TRIBUTARY_ASSIGN_OR_RETURN(FiniteUpdate u, Trusted(layout, payload, weight));
  if (!AllFinite(layout, payload, parallelism)) {
    return MakeError(ErrorCode::kNonFinite, "update contains NaN or Inf");
  }
  return u;
}

Result<FiniteUpdate> FiniteUpdate::Trusted(const ModelSpec& layout, std::span<const std::byte> payload, double weight) {
  if (payload.size() != layout.payload_bytes()) {
    return MakeError(ErrorCode::kShapeMismatch, "payload has " + std::to_string(payload.size()) +
                                                    " bytes, the model spec needs " +
                                                    std::to_string(layout.payload_bytes()));
  }
  if (!(weight > 0.0) || weight > 1e15) {
    return MakeError(ErrorCode::kInvalidArgument, "update weight must be positive and finite");
  }
  return FiniteUpdate(&layout, payload, weight);
}

namespace {

bool SingleF32Run(const FiniteUpdate& u) {
  return u.layout().runs().size() == 1 && u.layout().runs()[0].dtype == DType::kF32;
}

// Updates of any dtype mix: per cache block, each update's runs in turn.
void FoldBlocked(const KernelTable& k, float* acc, std::span<const FiniteUpdate> updates, uint64_t lo, uint64_t hi) {
  for (uint64_t b = lo; b < hi; b += kBlock) {
    const uint64_t e = std::min(hi, b + kBlock);
    for (const FiniteUpdate& u : updates) {
      const float w = static_cast<float>(u.weight());
      ForEachRunSlice(u.layout(), u.payload().data(), b, e,
                      [&](const RunSlice& s, uint64_t first, uint64_t n) { AxpyRun(k, s, acc + first, w, n); });
    }
  }
}

}  // namespace

void FoldUpdates(std::span<float> acc, std::span<const FiniteUpdate> updates, Parallelism parallelism) {
  if (updates.empty()) return;
  const KernelTable& k = Kernels();
  const bool all_f32 = std::all_of(updates.begin(), updates.end(), SingleF32Run);
  ParallelSlices(acc.size(), parallelism, [&](uint64_t lo, uint64_t hi) {
    if (!all_f32) {
      FoldBlocked(k, acc.data(), updates, lo, hi);
      return;
    }
    for (size_t g = 0; g < updates.size(); g += kMaxStreams) {
      const size_t count = std::min<size_t>(kMaxStreams, updates.size() - g);
      const F32In* xs[kMaxStreams];
      float ws[kMaxStreams];
      for (size_t j = 0; j < count; ++j) {
        xs[j] = reinterpret_cast<const F32In*>(updates[g + j].payload().data()) + lo;
        ws[j] = static_cast<float>(updates[g + j].weight());
      }
      k.fold_streams[count - 1](acc.data() + lo, xs, ws, hi - lo);
    }
  });
}

void FoldPartials(std::span<float> acc, std::span<const std::span<const float>> partials, Parallelism parallelism) {
  if (partials.empty()) return;
  const KernelTable& k = Kernels();
  ParallelSlices(acc.size(), parallelism, [&](uint64_t lo, uint64_t hi) {
    for (uint64_t b = lo; b < hi; b += kBlock) {
      const uint64_t e = std::min(hi, b + kBlock);
      for (std::span<const float> p : partials) k.axpy_f32(acc.data() + b, p.data() + b, 1.0f, e - b);
    }
  });
}

void Axpy(std::span<float> acc, std::span<const float> x, float w, Parallelism parallelism) {
  const KernelTable& k = Kernels();
  ParallelSlices(acc.size(), parallelism,
                 [&](uint64_t lo, uint64_t hi) { k.axpy_f32(acc.data() + lo, x.data() + lo, w, hi - lo); });
}

}  // namespace tributary::agg
