// Datasets and partitions for simulated federations.
//
// LoadFashionMnist reads the Debian package's IDX files (dataset-fashion-mnist,
// /usr/share/datasets/fashion-mnist/*.gz), decompressed once into
// `cache_dir` (written to a temporary name, then renamed). Images are
// [N, 1, 28, 28] floats, standardized with the training set's mean and std;
// labels are int64 classes 0..9.
// MakeSynthetic draws a dataset of the same shape for fast tests: each class
// is a fixed random prototype image plus noise, so it is learnable but not
// trivially so.
// Partition gives each client a list of training-set indices:
//   iid        a shuffled even split; with samples_per_client k, each client
//              k samples dealt from successive shuffles of the training set,
//              so clients * k may exceed it (a sample is then shared by
//              several clients, never twice by one)
//   dirichlet  per class, shares drawn from Dirichlet(alpha) over clients
//              (Hsu et al. 2019); small alpha = more skew; every client gets
//              at least one sample
//   shards     sorted by label, cut into clients * shards_per_client shards,
//              each client gets shards_per_client random shards
// Everything is a pure function of its seed.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "tributary/core/error.h"

namespace tributary::simulation {

struct Dataset {
  torch::Tensor train_x, train_y, test_x, test_y;
  int64_t classes = 10;
};

Result<Dataset> LoadFashionMnist(const std::string& dir, const std::string& cache_dir);
Dataset MakeSynthetic(int64_t train_samples, uint64_t seed);

struct PartitionSpec {
  std::string kind = "iid";
  double alpha = 0.5;
  uint32_t shards_per_client = 2;
  uint32_t samples_per_client = 0;  // iid only; 0: the even split
};

Result<std::vector<std::vector<int64_t>>> Partition(const torch::Tensor& labels, int64_t classes, uint32_t clients,
                                                    const PartitionSpec& spec, uint64_t seed);

// The default cache: $XDG_CACHE_HOME/tributary, else $HOME/.cache/tributary.
std::string DefaultCacheDir();

}  // namespace tributary::simulation
