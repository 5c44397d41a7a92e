// The smallest Tributary client: a linear model y = w.x + b fitted by
// gradient descent on local data. Usage: minimal-client GATEWAY CLIENT_ID
#include <tributary/client/run.h>

#include <iostream>

using namespace tributary;

class LinearClient : public client::Client {
 public:
  client::Parameters GetParameters() override { return {{"w", {2}, {0, 0}}, {"b", {1}, {0}}}; }

  Result<client::FitResult> Fit(const client::Parameters& global, const client::Config& config) override {
    std::vector<float> w = global[0].values;
    float b = global[1].values[0];
    const double lr = client::ConfigDouble(config, "lr", 0.1);
    for (int step = 0; step < 20; ++step) {
      float gw0 = 0, gw1 = 0, gb = 0;
      for (const auto& [x0, x1, y] : data_) {
        const float err = w[0] * x0 + w[1] * x1 + b - y;
        gw0 += err * x0;
        gw1 += err * x1;
        gb += err;
      }
      const float scale = static_cast<float>(lr) / data_.size();
      w[0] -= scale * gw0;
      w[1] -= scale * gw1;
      b -= scale * gb;
    }
    return client::FitResult{{{"w", {2}, w}, {"b", {1}, {b}}}, data_.size(), {}};
  }

 private:
  std::vector<std::tuple<float, float, float>> data_ = {{1, 0, 3}, {0, 1, -1}, {1, 1, 2}, {2, 1, 5}};
};

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: minimal-client GATEWAY CLIENT_ID\n";
    return 2;
  }
  LinearClient model;
  client::RunOptions options;
  options.session.endpoint = argv[1];  // e.g. tcp://127.0.0.1:7600
  options.session.client_id = argv[2];
  options.max_rounds = 1;
  auto summary = client::Run(model, options);
  if (!summary) {
    std::cerr << summary.error().ToString() << "\n";
    return 1;
  }
  std::cout << "rounds: " << summary.value().rounds << "\n";
  return 0;
}
