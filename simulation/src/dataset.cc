#include "tributary/simulation/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

namespace tributary::simulation {
namespace {

namespace fs = std::filesystem;

// Decompresses `gz` into cache/name once; returns the decompressed path.
Result<fs::path> Cached(const fs::path& gz, const fs::path& cache) {
  const fs::path out = cache / gz.stem();  // drops ".gz"
  std::error_code ec;
  if (fs::exists(out, ec)) return out;
  fs::create_directories(cache, ec);
  gzFile in = gzopen(gz.c_str(), "rb");
  if (in == nullptr) {
    return MakeError(ErrorCode::kNotFound, "cannot open " + gz.string() +
                                               " (install the Debian package dataset-fashion-mnist: scripts/setup)");
  }
  const fs::path tmp = out.string() + ".tmp" + std::to_string(getpid());
  std::ofstream o(tmp, std::ios::binary);
  std::vector<char> buf(1 << 20);
  int n;
  while ((n = gzread(in, buf.data(), static_cast<unsigned>(buf.size()))) > 0) o.write(buf.data(), n);
  const bool ok = n == 0 && static_cast<bool>(o);
  gzclose(in);
  o.close();
  if (!ok) {
    fs::remove(tmp, ec);
    return MakeError(ErrorCode::kIo, "cannot decompress " + gz.string());
  }
  fs::rename(tmp, out, ec);
  if (ec) return MakeError(ErrorCode::kIo, "cannot write " + out.string() + ": " + ec.message());
  return out;
}

uint32_t BigEndian(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// An IDX file (magic 0x0000 08 D, then D big-endian dimensions, then u8 data).
Result<torch::Tensor> ReadIdx(const fs::path& path, int dims) {
  std::ifstream in(path, std::ios::binary);
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t header = 4 + 4 * static_cast<size_t>(dims);
  if (bytes.size() < header || bytes[2] != 0x08 || bytes[3] != dims) {
    return MakeError(ErrorCode::kMalformedFrame, path.string() + " is not an IDX file of " + std::to_string(dims) +
                                                     " dimensions");
  }
  std::vector<int64_t> shape;
  int64_t count = 1;
  for (int d = 0; d < dims; ++d) {
    shape.push_back(BigEndian(bytes.data() + 4 + 4 * d));
    count *= shape.back();
  }
  if (bytes.size() != header + static_cast<size_t>(count)) {
    return MakeError(ErrorCode::kMalformedFrame, path.string() + " is truncated");
  }
  return torch::from_blob(bytes.data() + header, shape, torch::kUInt8).clone();
}

Result<std::pair<torch::Tensor, torch::Tensor>> ReadSplit(const fs::path& dir, const fs::path& cache,
                                                           const std::string& prefix) {
  TRIBUTARY_ASSIGN_OR_RETURN(fs::path images, Cached(dir / (prefix + "-images-idx3-ubyte.gz"), cache));
  TRIBUTARY_ASSIGN_OR_RETURN(fs::path labels, Cached(dir / (prefix + "-labels-idx1-ubyte.gz"), cache));
  TRIBUTARY_ASSIGN_OR_RETURN(torch::Tensor x, ReadIdx(images, 3));
  TRIBUTARY_ASSIGN_OR_RETURN(torch::Tensor y, ReadIdx(labels, 1));
  if (x.size(0) != y.size(0)) return MakeError(ErrorCode::kMalformedFrame, prefix + ": images and labels differ in count");
  return std::make_pair(x.unsqueeze(1).to(torch::kFloat).div_(255.0), y.to(torch::kLong));
}

}  // namespace

std::string DefaultCacheDir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    return std::string(xdg) + "/tributary";
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "/tmp") + "/.cache/tributary";
}

Result<Dataset> LoadFashionMnist(const std::string& dir, const std::string& cache_dir) {
  const fs::path cache = fs::path(cache_dir) / "fashion-mnist";
  TRIBUTARY_ASSIGN_OR_RETURN(auto train, ReadSplit(dir, cache, "train"));
  TRIBUTARY_ASSIGN_OR_RETURN(auto test, ReadSplit(dir, cache, "t10k"));
  const torch::Tensor mean = train.first.mean(), std = train.first.std();
  Dataset d;
  d.train_x = (train.first - mean) / std;
  d.train_y = train.second;
  d.test_x = (test.first - mean) / std;
  d.test_y = test.second;
  return d;
}

Dataset MakeSynthetic(int64_t train_samples, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const torch::Tensor prototypes = torch::randn({10, 1, 28, 28}, gen);
  auto draw = [&](int64_t n) {
    const torch::Tensor y = torch::randint(0, 10, {n}, gen, torch::kLong);
    const torch::Tensor x = prototypes.index_select(0, y) * 0.6 + torch::randn({n, 1, 28, 28}, gen);
    return std::make_pair(x, y);
  };
  Dataset d;
  std::tie(d.train_x, d.train_y) = draw(train_samples);
  std::tie(d.test_x, d.test_y) = draw(std::max<int64_t>(train_samples / 6, 100));
  return d;
}

Result<std::vector<std::vector<int64_t>>> Partition(const torch::Tensor& labels, int64_t classes, uint32_t clients,
                                                    const PartitionSpec& spec, uint64_t seed) {
  const int64_t n = labels.size(0);
  if (spec.samples_per_client > 0 && spec.kind != "iid") {
    return MakeError(ErrorCode::kInvalidArgument, "samples_per_client is for partition iid, not " + spec.kind);
  }
  if (n < clients && spec.samples_per_client == 0) {
    return MakeError(ErrorCode::kInvalidArgument, std::to_string(clients) + " clients for " + std::to_string(n) + " samples");
  }
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> out(clients);
  const torch::Tensor y = labels.contiguous();
  const int64_t* label = y.data_ptr<int64_t>();
  if (spec.kind == "iid" && spec.samples_per_client > 0) {
    const size_t k = spec.samples_per_client;
    if (k > static_cast<size_t>(n)) {
      return MakeError(ErrorCode::kInvalidArgument, std::to_string(k) + " samples per client, the set has " + std::to_string(n));
    }
    std::vector<int64_t> pass(static_cast<size_t>(n));
    std::iota(pass.begin(), pass.end(), 0);
    size_t at = pass.size();  // the next sample of the current pass
    for (auto& mine : out) {
      // A client never straddles two passes, so its samples are distinct.
      if (pass.size() - at < k) {
        std::shuffle(pass.begin(), pass.end(), rng);
        at = 0;
      }
      mine.assign(pass.begin() + static_cast<int64_t>(at), pass.begin() + static_cast<int64_t>(at + k));
      at += k;
    }
  } else if (spec.kind == "iid") {
    std::vector<int64_t> all(static_cast<size_t>(n));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i % clients)].push_back(all[static_cast<size_t>(i)]);
  } else if (spec.kind == "dirichlet") {
    std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(classes));
    for (int64_t i = 0; i < n; ++i) by_class[static_cast<size_t>(label[i])].push_back(i);
    std::gamma_distribution<double> gamma(spec.alpha, 1.0);
    for (auto& members : by_class) {
      std::shuffle(members.begin(), members.end(), rng);
      std::vector<double> share(clients);
      double total = 0;
      for (double& s : share) total += (s = gamma(rng));
      size_t at = 0;
      double cumulative = 0;
      for (uint32_t c = 0; c < clients; ++c) {
        cumulative += share[c] / total;
        const size_t end = c + 1 == clients ? members.size() : static_cast<size_t>(cumulative * members.size());
        for (; at < std::min(end, members.size()); ++at) out[c].push_back(members[at]);
      }
    }
    // Every client trains on something: an empty one takes a sample from the largest.
    for (auto& mine : out) {
      if (!mine.empty()) continue;
      auto largest = std::max_element(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.size() < b.size(); });
      mine.push_back(largest->back());
      largest->pop_back();
    }
  } else if (spec.kind == "shards") {
    std::vector<int64_t> sorted(static_cast<size_t>(n));
    std::iota(sorted.begin(), sorted.end(), 0);
    std::stable_sort(sorted.begin(), sorted.end(), [&](int64_t a, int64_t b) { return label[a] < label[b]; });
    const size_t shards = static_cast<size_t>(clients) * spec.shards_per_client;
    if (shards > static_cast<size_t>(n)) return MakeError(ErrorCode::kInvalidArgument, "more shards than samples");
    std::vector<size_t> order(shards);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t s = 0; s < shards; ++s) {
      const size_t shard = order[s], lo = shard * static_cast<size_t>(n) / shards, hi = (shard + 1) * static_cast<size_t>(n) / shards;
      auto& mine = out[s / spec.shards_per_client];
      mine.insert(mine.end(), sorted.begin() + static_cast<int64_t>(lo), sorted.begin() + static_cast<int64_t>(hi));
    }
  } else {
    return MakeError(ErrorCode::kInvalidArgument, "unknown partition '" + spec.kind + "'");
  }
  for (auto& mine : out) std::sort(mine.begin(), mine.end());
  return out;
}

}  // namespace tributary::simulation
