// `tributary status`: a controller's /v1/status, for people.
#pragma once

#include <ostream>
#include <string>

#include "tributary/core/error.h"

namespace tributary::cli {

// Fetches `url`/v1/status (url: http://host:port) and prints it as tables,
// or as the JSON it is with `json`. kIo if the controller does not answer.
Result<void> PrintStatus(const std::string& url, bool json, std::ostream& out);

// The rounds `job` has completed, from `url`/v1/status: kIo as above,
// kUnknownJob if the controller has no such job.
Result<uint64_t> JobRoundsDone(const std::string& url, const std::string& job);

}  // namespace tributary::cli
