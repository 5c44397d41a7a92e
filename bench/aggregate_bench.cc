#include "aggregate_bench.h"
#include "layered_model.h"

#include <nlohmann/json.hpp>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <iomanip>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <sstream>
#include <thread>
#include <vector>

#include "tributary/aggregator/kernels.h"
#include "tributary/aggregator/strategy.h"
#include "tributary/shm/segment.h"

namespace tributary::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// /proc/self/status fields in bytes.
std::map<std::string, uint64_t> ProcStatus() {
  std::ifstream in("/proc/self/status");
  std::map<std::string, uint64_t> out;
  std::string key;
  uint64_t kb;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    if (s >> key >> kb) {
      key.pop_back();  // the colon
      out[key] = kb * 1024;
    }
  }
  return out;
}

// Deterministic, distinct content per update; first touch on the threads that fold.
void Fill(float* x, uint64_t n, uint32_t seed, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
    const uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ (seed * 40503u + 0x9e3779b9u);
    x[i] = static_cast<float>(h >> 8) * (1.0f / 16777216.0f) - 0.5f;
  }
}

// An update in memory. Its start is staggered by `seed` cache lines, as the
// shared-memory store staggers blocks: equal-sized buffers that all start on
// a page boundary would map every input stream to the same cache sets.
struct Buffer {
  std::unique_ptr<float[]> storage;
  float* data;
  uint64_t n;
  std::span<const std::byte> bytes() const { return std::as_bytes(std::span<const float>(data, n)); }
};

Buffer MakeUpdate(uint64_t n, uint32_t seed, int threads) {
  constexpr uint64_t kLineFloats = 16;
  const uint64_t shift = (seed % 64) * kLineFloats;
  Buffer b{std::unique_ptr<float[]>(new float[n + 64 * kLineFloats]), nullptr, n};
  b.data = b.storage.get() + shift;
  Fill(b.data, n, seed, threads);
  return b;
}

double Weight(uint32_t j) { return 100.0 + (j * 37) % 500; }  // sample counts

// One round of the eager aggregator: fold up to `batch` arrived (already
// checked) updates per pass over the accumulator.
double FoldRound(const agg::Strategy& strategy, std::span<const agg::FiniteUpdate> checked, uint32_t batch,
                 std::vector<float>& acc) {
  std::fill(acc.begin(), acc.end(), 0.0f);
  agg::Partial partial{acc, 0, 0};
  const auto t0 = Clock::now();
  for (size_t j = 0; j < checked.size(); j += batch) {
    (void)strategy.Fold(partial, checked.subspan(j, std::min<size_t>(batch, checked.size() - j)));
  }
  return Seconds(t0, Clock::now());
}

// The same element sums computed one by one, in order: the fold must match bit for bit.
bool SpotCheck(const std::vector<float>& acc, const std::vector<Buffer>& updates) {
  const uint64_t n = acc.size();
  for (uint64_t i : {uint64_t{0}, n / 7, n / 3, n / 2, n - 1}) {
    float s = 0.0f;
    for (uint32_t j = 0; j < updates.size(); ++j) {
      const float w = static_cast<float>(Weight(j));
      const float p = w * updates[j].data[i];
      s = s + p;
    }
    if (std::memcmp(&s, &acc[i], sizeof s) != 0) return false;
  }
  return true;
}

// Flower's server: keep every result, scale a copy of each, reduce per layer.
double FlowerStyle(const std::vector<Buffer>& updates, const agg::ModelSpec& spec, uint64_t& peak_rss) {
  const auto t0 = Clock::now();
  std::vector<std::vector<std::vector<float>>> weighted;  // [client][layer]
  double total = 0;
  for (uint32_t j = 0; j < updates.size(); ++j) {
    std::vector<std::vector<float>> layers;
    uint64_t off = 0;
    for (const agg::TensorSpec& t : spec.tensors()) {
      const uint64_t n = t.elements();
      std::vector<float> l(updates[j].data + off, updates[j].data + off + n);
      for (float& v : l) v *= static_cast<float>(Weight(j));
      layers.push_back(std::move(l));
      off += n;
    }
    weighted.push_back(std::move(layers));
    total += Weight(j);
  }
  std::vector<std::vector<float>> average;
  for (size_t l = 0; l < spec.tensors().size(); ++l) {
    std::vector<float> sum = weighted[0][l];
    for (size_t j = 1; j < weighted.size(); ++j) {
      std::vector<float> next(sum.size());  // np.add allocates its result
      for (size_t i = 0; i < sum.size(); ++i) next[i] = sum[i] + weighted[j][l][i];
      sum = std::move(next);
    }
    for (float& v : sum) v = static_cast<float>(v / total);
    average.push_back(std::move(sum));
  }
  peak_rss = ProcStatus()["VmRSS"];
  return Seconds(t0, Clock::now());
}

struct MemoryResult {
  double seconds = 0;
  uint64_t peak_bytes = 0;       // anonymous RSS + segment payload in use
  uint64_t peak_segment = 0;
  uint64_t baseline_anon = 0;    // RSS before the run (binary, libraries)
  uint64_t stalls = 0;           // times the producer waited for space
};

// N updates stream through the shared-memory store: a producer thread writes
// each into a block (as the gateway would), the folder folds what has arrived
// and releases it. The segment has room for the accumulator and two updates,
// so a full segment is backpressure, not a crash.
Result<MemoryResult> StreamThroughStore(const agg::Strategy& strategy, const agg::ModelSpec& spec, uint32_t n_updates,
                                        uint32_t batch, int threads) {
  const uint64_t model_bytes = spec.payload_bytes();
  shm::SegmentOptions so;
  so.name = "tributary.bench." + std::to_string(getpid());
  so.bytes = 3 * model_bytes + (8u << 20);
  so.max_blocks = 64;
  TRIBUTARY_ASSIGN_OR_RETURN(auto segment, shm::Segment::Create(so));
  MemoryResult r;
  r.baseline_anon = ProcStatus()["RssAnon"];
  TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef acc_block, segment->Allocate(spec.accumulator_bytes(), {shm::BlockKind::kPartial}));
  std::span<float> acc(reinterpret_cast<float*>(acc_block.mutable_bytes().data()), spec.elements());
  std::fill(acc.begin(), acc.end(), 0.0f);
  agg::Partial partial{acc, 0, 0};

  std::mutex mu;
  std::condition_variable cv;
  std::deque<shm::BlockRef> arrived;
  uint64_t stalls = 0;
  std::thread producer([&] {
    for (uint32_t j = 0; j < n_updates; ++j) {
      Result<shm::BlockRef> block = segment->Allocate(model_bytes, {.kind = shm::BlockKind::kUpdate, .round = 1, .weight = Weight(j), .updates = 1});
      while (!block) {  // full: wait for the folder to release one
        ++stalls;
        std::unique_lock lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(1));
        lock.unlock();
        block = segment->Allocate(model_bytes, {.kind = shm::BlockKind::kUpdate, .round = 1, .weight = Weight(j), .updates = 1});
      }
      Fill(reinterpret_cast<float*>(block.value().mutable_bytes().data()), spec.elements(), j, 1);
      std::lock_guard lock(mu);
      arrived.push_back(std::move(block).value());
      cv.notify_all();
    }
  });

  const auto t0 = Clock::now();
  uint32_t folded = 0;
  Result<void> status = Ok();
  while (folded < n_updates && status) {
    std::vector<shm::BlockRef> take;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return !arrived.empty(); });
      while (!arrived.empty() && take.size() < batch) {
        take.push_back(std::move(arrived.front()));
        arrived.pop_front();
      }
    }
    std::vector<agg::FiniteUpdate> checked;
    for (const shm::BlockRef& b : take) {
      auto u = agg::FiniteUpdate::Check(spec, b.bytes(), b.meta().weight, {threads});
      if (!u) {
        status = std::move(u).error();
        break;
      }
      checked.push_back(u.value());
    }
    if (status) status = strategy.Fold(partial, checked);
    const uint64_t seg = segment->Stats().payload_bytes_in_use;
    const uint64_t anon = ProcStatus()["RssAnon"];
    r.peak_segment = std::max(r.peak_segment, seg);
    r.peak_bytes = std::max(r.peak_bytes, seg + (anon > r.baseline_anon ? anon - r.baseline_anon : 0));
    folded += static_cast<uint32_t>(take.size());
    take.clear();  // release the blocks
    cv.notify_all();
  }
  producer.join();
  r.seconds = Seconds(t0, Clock::now());
  r.stalls = stalls;
  TRIBUTARY_TRY(status);
  return r;
}

std::string Gb(double bytes) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << bytes / 1e9;
  return s.str();
}

}  // namespace

Result<void> RunAggregateBench(const AggregateBenchOptions& o, std::ostream& out) {
  if (o.params == 0 || o.updates == 0 || o.batch == 0 || o.repetitions <= 0) {
    return MakeError(ErrorCode::kInvalidArgument, "params, updates, batch and repetitions must be positive");
  }
  const int threads = agg::ThreadCount({o.threads});
  const agg::ModelSpec spec = LayeredSpec(o.params);
  agg::StrategyOptions so;
  so.parallelism.threads = threads;
  TRIBUTARY_ASSIGN_OR_RETURN(auto strategy, agg::Strategy::Create(so));
  const double update_bytes = static_cast<double>(spec.payload_bytes()) * o.updates;
  nlohmann::json j;
  j["params"] = o.params;
  j["updates"] = o.updates;
  j["batch"] = o.batch;
  j["threads"] = threads;
  j["isa"] = agg::KernelIsa();

  std::vector<Buffer> updates;
  for (uint32_t k = 0; k < o.updates; ++k) updates.push_back(MakeUpdate(spec.elements(), k, threads));
  std::vector<float> acc(spec.elements());

  // Arrival check (NaN/Inf), done once per update by the gateway.
  std::vector<agg::FiniteUpdate> checked;
  auto tc = Clock::now();
  for (uint32_t k = 0; k < o.updates; ++k) {
    TRIBUTARY_ASSIGN_OR_RETURN(auto u, agg::FiniteUpdate::Check(spec, updates[k].bytes(), Weight(k), {threads}));
    checked.push_back(u);
  }
  const double check_s = Seconds(tc, Clock::now());

  // Best of `repetitions`, the three interleaved so drift hits all alike.
  double stream_s = 1e30, fold_s = 1e30, fold1_s = 1e30;
  for (int rep = 0; rep < o.repetitions; ++rep) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    auto t0 = Clock::now();
    for (uint32_t k = 0; k < o.updates; ++k) {
      agg::Axpy(acc, std::span<const float>(updates[k].data, spec.elements()), static_cast<float>(Weight(k)),
                {threads});
    }
    stream_s = std::min(stream_s, Seconds(t0, Clock::now()));
    fold1_s = std::min(fold1_s, FoldRound(*strategy, checked, 1, acc));
    fold_s = std::min(fold_s, FoldRound(*strategy, checked, o.batch, acc));
  }
  const bool exact = SpotCheck(acc, updates);
  const double stream_bw = 12.0 * spec.elements() * o.updates / stream_s;  // read x, read+write acc
  const double fold_tp = update_bytes / fold_s;
  const double fold1_tp = update_bytes / fold1_s;

  out << "tributary bench aggregate: " << o.updates << " updates x " << o.params << " f32 params ("
      << std::fixed << std::setprecision(1) << spec.payload_bytes() / 1e6 << " MB each), " << threads << " threads, " << agg::KernelIsa() << " kernels\n\n";
  out << "1. fold throughput (GB/s of update data)\n";
  out << "   memory bandwidth, STREAM-style acc += w*x      " << Gb(stream_bw) << " GB/s\n";
  out << "   fold, one update per pass                     " << Gb(fold1_tp) << " GB/s  ratio "
      << std::setprecision(2) << std::fixed << fold1_tp / stream_bw << "\n";
  out << "   fold, up to " << std::setw(2) << o.batch << " arrived updates per pass      " << Gb(fold_tp)
      << " GB/s  ratio " << fold_tp / stream_bw << "  (target >= 0.80)\n";
  out << "   NaN/Inf check on arrival                      " << Gb(update_bytes / check_s) << " GB/s\n";
  out << "   result equals element-wise sums bit for bit:  " << (exact ? "yes" : "NO") << "\n\n";
  j["stream_gbps"] = stream_bw / 1e9;
  j["fold_single_gbps"] = fold1_tp / 1e9;
  j["fold_batched_gbps"] = fold_tp / 1e9;
  j["fold_ratio"] = fold_tp / stream_bw;
  j["check_gbps"] = update_bytes / check_s / 1e9;
  j["bit_exact"] = exact;

  out << "2. round wall time, " << o.updates << " updates\n";
  out << "   tributary (eager, batched fold)               " << std::setprecision(3) << fold_s
      << " s  (target < 0.5 s)\n";
  j["round_seconds"] = fold_s;
  if (o.flower_baseline) {
    const uint64_t rss_before = ProcStatus()["VmRSS"];
    uint64_t flower_rss = 0;
    const double flower_s = FlowerStyle(updates, spec, flower_rss);
    out << "   Flower-style (hold all, scale copies, per-layer reduce)  " << flower_s << " s, +"
        << Gb(static_cast<double>(flower_rss - std::min(flower_rss, rss_before))) << " GB RSS  -> "
        << std::setprecision(1) << flower_s / fold_s << "x faster\n";
    j["flower_seconds"] = flower_s;
    j["flower_extra_rss_gb"] = (flower_rss - std::min(flower_rss, rss_before)) / 1e9;
  }
  out << "\n";
  updates.clear();
  checked.clear();
  acc = {};

  TRIBUTARY_ASSIGN_OR_RETURN(MemoryResult m, StreamThroughStore(*strategy, spec, o.memory_updates, o.batch, threads));
  const double model = static_cast<double>(spec.payload_bytes());
  out << "3. peak memory, " << o.memory_updates << " updates streamed through the shared-memory store\n";
  out << "   peak anonymous RSS + segment bytes in use      " << Gb(m.peak_bytes) << " GB = " << std::setprecision(2)
      << m.peak_bytes / model << " x model size  (target <= 4; Flower-style: " << o.memory_updates
      << " x and more)\n";
  out << "   of which segment                              " << Gb(m.peak_segment) << " GB; " << m.seconds
      << " s, producer waited for space " << m.stalls << " times\n";
  j["memory_updates"] = o.memory_updates;
  j["memory_peak_model_multiple"] = m.peak_bytes / model;
  j["memory_seconds"] = m.seconds;
  if (o.json) out << j.dump(2) << "\n";
  if (!exact) return MakeError(ErrorCode::kInternal, "fold result differs from element-wise sums");
  return Ok();
}

}  // namespace tributary::bench
