// A node agent driven by a controller over ZeroMQ (what `tributary node` runs).
//
// Connects a DEALER to the controller, says NodeHello (again every second, so
// a restarted controller learns the node), and runs each RoundPlan it gets on
// its NodeAgent: the node's tree, then the node's partial aggregate sent back
// in checksummed chunks (NodePartial + NodePartialChunk), or NodeRoundFailed.
// Idle functions are reaped between rounds.
#pragma once

#include <memory>
#include <string>

#include "tributary/core/error.h"
#include "tributary/node/node_agent.h"

namespace tributary::node {

class NodeService {
 public:
  // `metrics_bind` ("127.0.0.1:9400", port 0 for any) serves /healthz and
  // /metrics (Prometheus); empty: no HTTP endpoint.
  static Result<std::unique_ptr<NodeService>> Start(const NodeOptions& options, const std::string& controller,
                                                    const std::string& metrics_bind = "");
  ~NodeService();
  NodeService(const NodeService&) = delete;
  NodeService& operator=(const NodeService&) = delete;

  NodeAgent& agent();
  int metrics_port() const;  // 0 without an HTTP endpoint

 private:
  struct Impl;
  explicit NodeService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::node
