#include "tributary/simulation/personal_data.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <numbers>

namespace tributary::simulation {
namespace {

constexpr int64_t kSteps = 30, kChannels = 3, kActivities = 6, kPeoplePerServerSet = 8;

// Splits one user's samples into test / train / labelled.
UserData Split(const torch::Tensor& x, const torch::Tensor& y, double label_ratio, torch::Generator& gen,
               std::string style) {
  const int64_t n = x.size(0), test = n / 4, train = n - test;
  const torch::Tensor order = torch::randperm(n, gen, torch::kLong);
  const torch::Tensor test_rows = order.slice(0, 0, test), train_rows = order.slice(0, test, n);
  const int64_t labelled = std::max<int64_t>(1, static_cast<int64_t>(std::lround(label_ratio * static_cast<double>(train))));
  UserData u;
  u.test_x = x.index_select(0, test_rows);
  u.test_y = y.index_select(0, test_rows);
  u.train_x = x.index_select(0, train_rows);
  u.labelled_x = u.train_x.slice(0, 0, labelled);
  u.labelled_y = y.index_select(0, train_rows).slice(0, 0, labelled);
  u.style = std::move(style);
  return u;
}

torch::Tensor Uniform(torch::IntArrayRef shape, double lo, double hi, torch::Generator& gen) {
  return torch::rand(shape, gen) * (hi - lo) + lo;
}

// A rotation by `angle` about a random axis (Rodrigues).
torch::Tensor RandomRotation(double max_angle, torch::Generator& gen) {
  torch::Tensor axis = torch::randn({3}, gen, torch::kDouble);
  axis = axis / axis.norm();
  const double angle = Uniform({1}, 0, max_angle, gen).item<double>();
  const torch::Tensor k = torch::zeros({3, 3}, torch::kDouble);
  const auto a = axis.accessor<double, 1>();
  k[0][1] = -a[2];
  k[0][2] = a[1];
  k[1][0] = a[2];
  k[1][2] = -a[0];
  k[2][0] = -a[1];
  k[2][1] = a[0];
  return (torch::eye(3, torch::kDouble) + std::sin(angle) * k + (1 - std::cos(angle)) * k.mm(k)).to(torch::kFloat);
}

struct Activities {
  torch::Tensor gravity;    // [A, C]
  torch::Tensor amplitude;  // [A, C]
  torch::Tensor cadence;    // [A], cycles per window (0: still)
  torch::Tensor phase;      // [A, C]
};

Activities MakeActivities(torch::Generator& gen) {
  Activities a;
  a.gravity = Uniform({kActivities, kChannels}, -0.45, 0.45, gen);
  a.amplitude = Uniform({kActivities, kChannels}, 0.1, 0.35, gen);
  a.amplitude.slice(0, 4, 6) *= 0.1;  // postures barely move
  a.cadence = torch::tensor({1.0f, 1.6f, 2.2f, 2.8f, 0.0f, 0.0f});
  a.phase = Uniform({kActivities, kChannels}, 0, 2 * std::numbers::pi, gen);
  return a;
}

// `n` windows of one (synthetic) person: [n, steps * channels] and labels.
std::pair<torch::Tensor, torch::Tensor> Windows(const Activities& act, int64_t n, torch::Generator& gen,
                                                std::string* style) {
  const torch::Tensor rotation = RandomRotation(std::numbers::pi / 4, gen);
  const torch::Tensor offset = torch::randn({kChannels}, gen) * 0.15;
  const double gain = Uniform({1}, 0.7, 1.3, gen).item<double>();
  const double noise = Uniform({1}, 0.03, 0.15, gen).item<double>();
  const torch::Tensor y = torch::randint(0, kActivities, {n}, gen, torch::kLong);
  const torch::Tensor t = torch::arange(kSteps, torch::kFloat).view({1, kSteps, 1}) / kSteps;
  const torch::Tensor cadence = act.cadence.index_select(0, y).view({n, 1, 1}) * Uniform({n, 1, 1}, 0.9, 1.1, gen);
  const torch::Tensor shift = Uniform({n, 1, 1}, 0, 2 * std::numbers::pi, gen);
  const torch::Tensor motion = act.amplitude.index_select(0, y).view({n, 1, kChannels}) * Uniform({n, 1, 1}, 0.8, 1.2, gen) *
                               torch::sin(2 * std::numbers::pi * cadence * t + act.phase.index_select(0, y).view({n, 1, kChannels}) + shift);
  torch::Tensor body = act.gravity.index_select(0, y).view({n, 1, kChannels}) + motion;  // [n, T, C]
  torch::Tensor x = gain * body.matmul(rotation.t()) + offset.view({1, 1, kChannels}) +
                    torch::randn({n, kSteps, kChannels}, gen) * noise;
  if (style) {
    *style = "gain " + std::to_string(gain).substr(0, 4) + ", noise " + std::to_string(noise).substr(0, 4);
  }
  return {x.clamp(-1, 1).reshape({n, kSteps * kChannels}), y};
}

}  // namespace

PersonalDataset MakeSyntheticHar(const PersonalDataSpec& spec) {
  auto gen = at::detail::createCPUGenerator(spec.seed * 7 + 3);
  const Activities act = MakeActivities(gen);
  PersonalDataset d;
  d.input = kSteps * kChannels;
  d.classes = kActivities;
  for (uint32_t u = 0; u < spec.users; ++u) {
    std::string style;
    auto [x, y] = Windows(act, spec.samples_per_user, gen, &style);
    d.users.push_back(Split(x, y, spec.label_ratio, gen, style));
  }
  // A server set pools several people, like a public labelled dataset.
  for (uint32_t m = 0; m < spec.server_sets; ++m) {
    std::vector<torch::Tensor> xs, ys;
    for (int64_t p = 0; p < kPeoplePerServerSet; ++p) {
      const int64_t n = spec.server_samples / kPeoplePerServerSet + (p < spec.server_samples % kPeoplePerServerSet);
      auto [x, y] = Windows(act, n, gen, nullptr);
      xs.push_back(x);
      ys.push_back(y);
    }
    d.server_sets.push_back({torch::cat(xs), torch::cat(ys)});
  }
  return d;
}

Result<PersonalDataset> MakeRotatedFashionMnist(const Dataset& fm, const PersonalDataSpec& spec) {
  const int64_t need = static_cast<int64_t>(spec.users) * spec.samples_per_user +
                       static_cast<int64_t>(spec.server_sets) * spec.server_samples;
  if (need > fm.train_x.size(0)) {
    return MakeError(ErrorCode::kConfig, "the users and server sets need " + std::to_string(need) +
                                             " Fashion-MNIST images, there are " + std::to_string(fm.train_x.size(0)));
  }
  auto gen = at::detail::createCPUGenerator(spec.seed * 7 + 5);
  const torch::Tensor order = torch::randperm(fm.train_x.size(0), gen, torch::kLong);
  // Back to [0, 1] pixels (the loader standardized them), so rotation pads with background.
  const double lo = fm.train_x.min().item<double>(), hi = fm.train_x.max().item<double>();
  auto rotated = [&](const torch::Tensor& rows, const torch::Tensor& degrees) {
    const torch::Tensor img = (fm.train_x.index_select(0, rows) - lo) / (hi - lo);
    const torch::Tensor rad = degrees * (std::numbers::pi / 180.0);
    const torch::Tensor c = torch::cos(rad), s = torch::sin(rad), z = torch::zeros_like(rad);
    const torch::Tensor theta = torch::stack({torch::stack({c, -s, z}, 1), torch::stack({s, c, z}, 1)}, 1);
    namespace F = torch::nn::functional;
    const torch::Tensor grid = F::affine_grid(theta, img.sizes(), /*align_corners=*/false);
    const torch::Tensor out = F::grid_sample(img, grid, F::GridSampleFuncOptions().align_corners(false));
    return (out * 2 - 1).reshape({rows.size(0), -1});
  };
  PersonalDataset d;
  d.input = fm.train_x[0].numel();
  d.classes = fm.classes;
  int64_t at = 0;
  for (uint32_t u = 0; u < spec.users; ++u) {
    const torch::Tensor rows = order.slice(0, at, at + spec.samples_per_user);
    at += spec.samples_per_user;
    const int64_t orientation = torch::randint(0, spec.server_sets, {1}, gen).item<int64_t>();
    const double degrees = 360.0 * static_cast<double>(orientation) / spec.server_sets +
                           10.0 * torch::randn({1}, gen).item<double>();
    const torch::Tensor angle = torch::full({rows.size(0)}, degrees, torch::kFloat);
    d.users.push_back(Split(rotated(rows, angle), fm.train_y.index_select(0, rows), spec.label_ratio, gen,
                            "rotated " + std::to_string(static_cast<int>(std::lround(degrees))) + " deg"));
  }
  for (uint32_t m = 0; m < spec.server_sets; ++m) {
    const torch::Tensor rows = order.slice(0, at, at + spec.server_samples);
    at += spec.server_samples;
    const torch::Tensor angle = torch::full({rows.size(0)}, 360.0 * m / spec.server_sets, torch::kFloat);
    d.server_sets.push_back({rotated(rows, angle), fm.train_y.index_select(0, rows)});
  }
  return d;
}

}  // namespace tributary::simulation
