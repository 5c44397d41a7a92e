// The node agent's metrics in the Prometheus text format (version 0.0.4),
// served on /metrics by `tributary node`.
#pragma once

#include <string>

#include "tributary/node/node_agent.h"

namespace tributary::node {

std::string RenderPrometheus(const std::string& node_id, const NodeStats& stats);

}  // namespace tributary::node
