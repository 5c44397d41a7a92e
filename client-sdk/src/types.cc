#include "tributary/client/client.h"

namespace tributary::client {
namespace {

template <typename T>
const T* Get(const Config& config, const std::string& key) {
  auto it = config.find(key);
  return it == config.end() ? nullptr : std::get_if<T>(&it->second);
}

}  // namespace

double ConfigDouble(const Config& config, const std::string& key, double fallback) {
  if (const auto* d = Get<double>(config, key)) return *d;
  if (const auto* i = Get<int64_t>(config, key)) return static_cast<double>(*i);
  return fallback;
}

int64_t ConfigInt(const Config& config, const std::string& key, int64_t fallback) {
  const auto* i = Get<int64_t>(config, key);
  return i ? *i : fallback;
}

bool ConfigBool(const Config& config, const std::string& key, bool fallback) {
  const auto* b = Get<bool>(config, key);
  return b ? *b : fallback;
}

std::string ConfigString(const Config& config, const std::string& key, const std::string& fallback) {
  const auto* s = Get<std::string>(config, key);
  return s ? *s : fallback;
}

Result<EvaluateResult> Client::Evaluate(const Parameters&, const Config&) {
  return MakeError(ErrorCode::kInvalidArgument, "this client does not implement Evaluate");
}

}  // namespace tributary::client
