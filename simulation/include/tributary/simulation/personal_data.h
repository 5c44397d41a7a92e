// Per-user datasets for personalized, semi-supervised federations (SemiPFL).
//
// Each user holds `samples_per_user` samples in [-1, 1], flattened: a
// quarter is its test set, the rest its training set, of which a
// `label_ratio` fraction (at least one sample) is labelled; the unlabelled
// rest keeps no labels anywhere a client sees. The server holds
// `server_sets` labelled sets of `server_samples` each, one per base model.
//
// MakeSyntheticHar: windows in the shape of human-activity recognition
//   (30 steps x 3 accelerometer channels, 6 activities). An activity is a
//   per-channel gravity level plus a periodic motion (4 moving activities at
//   different cadences, 2 still postures); each sample jitters phase,
//   cadence and amplitude. Users differ for real: each has its own device
//   orientation (a rotation of the three channels, up to 45 degrees), sensor
//   offset, gain and noise. Each server set pools 8 further people drawn
//   the same way, like a public labelled dataset.
// MakeRotatedFashionMnist: Fashion-MNIST images whose users hold their
//   camera at one of `server_sets` orientations (360/M degrees apart) plus
//   their own tilt (normal, 10 degrees); server set m is drawn at exactly
//   orientation m. User, server and test samples are disjoint images.
//
// Both are pure functions of their seed.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tributary/core/error.h"
#include "tributary/semipfl/server.h"
#include "tributary/simulation/dataset.h"

namespace tributary::simulation {

struct UserData {
  torch::Tensor train_x;                 // [N, input]; labels not available to the user
  torch::Tensor labelled_x, labelled_y;  // the labelled part of train_x
  torch::Tensor test_x, test_y;
  std::string style;                     // what makes this user different, for the per-user table
};

struct PersonalDataset {
  int64_t input = 0;
  int64_t classes = 0;
  std::vector<UserData> users;
  std::vector<semipfl::LabelledSet> server_sets;
};

struct PersonalDataSpec {
  uint32_t users = 20;
  uint32_t samples_per_user = 400;
  double label_ratio = 0.05;
  uint32_t server_sets = 4;
  uint32_t server_samples = 600;
  uint64_t seed = 1;
};

PersonalDataset MakeSyntheticHar(const PersonalDataSpec& spec);
Result<PersonalDataset> MakeRotatedFashionMnist(const Dataset& fashion_mnist, const PersonalDataSpec& spec);

}  // namespace tributary::simulation
