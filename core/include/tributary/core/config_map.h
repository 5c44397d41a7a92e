// Configuration a job sends its clients with each task (Flower's Config):
// named scalars such as local_epochs = 2, lr = 0.05, optimizer = "sgd".
//
// Thread safety: plain value types.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>

namespace tributary {

using Scalar = std::variant<bool, int64_t, double, std::string>;
using ConfigMap = std::map<std::string, Scalar>;

}  // namespace tributary
