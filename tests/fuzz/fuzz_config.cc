// The YAML files an operator (or a job submitter) hands the runtime: a node's
// config, the controller's, a deployment job, a strategy section, byte sizes.
// The first byte picks the parser, the rest is the text. Every outcome is a
// value or a typed error.
#include <string>

#include "tributary/config/config.h"
#include "tributary/config/controller_config.h"

using namespace tributary;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 5) {
    case 0: (void)config::ParseNodeConfig(text, "fuzz.yaml"); break;
    case 1: (void)config::ParseControllerConfig(text, "fuzz.yaml"); break;
    case 2: (void)config::ParseDeploymentJob(text, "fuzz.yaml"); break;
    case 3: (void)config::ParseStrategyConfig(text, "fuzz.yaml"); break;
    case 4: (void)config::ParseByteSize(text); break;
  }
  return 0;
}
