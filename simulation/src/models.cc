#include "tributary/simulation/models.h"

namespace tributary::simulation {

Result<torch::nn::Sequential> MakeModel(const std::string& name, uint64_t seed) {
  torch::manual_seed(seed);  // before the workers start: no other thread draws yet
  namespace nn = torch::nn;
  if (name == "mlp") {
    return nn::Sequential(nn::Flatten(), nn::Linear(784, 200), nn::ReLU(), nn::Linear(200, 10));
  }
  if (name == "cnn") {
    return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 8, 5).padding(2)), nn::ReLU(), nn::MaxPool2d(2),
                          nn::Conv2d(nn::Conv2dOptions(8, 16, 5).padding(2)), nn::ReLU(), nn::MaxPool2d(2),
                          nn::Flatten(), nn::Linear(16 * 7 * 7, 64), nn::ReLU(), nn::Linear(64, 10));
  }
  return MakeError(ErrorCode::kInvalidArgument, "unknown model '" + name + "' (mlp, cnn)");
}

}  // namespace tributary::simulation
