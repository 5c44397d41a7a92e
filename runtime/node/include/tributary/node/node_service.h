// A node agent driven by a controller over ZeroMQ (what `tributary node` runs).
//
// Connects a DEALER to the controller (CURVE when the link has keys: the
// controller's public key and the node's own pair, which the controller's
// allow-list binds to this node id), says NodeHello with its capacity, and
// then every 500 ms a NodeHeartbeat with its load and the open round's
// accepted updates (also at once when that count changes, for the
// controller's over-selection), and every 500 ms the clients that asked its
// gateway for work (NodeCheckIns). It says hello again whenever a
// ControllerHeartbeat shows a controller that does not know it (restarted,
// or it declared the node lost). libzmq reconnects by itself, with backoff
// from 100-200 ms (jittered per node) doubling up to 5 s.
//
// Each RoundPlan runs on a worker thread on the NodeAgent: the node's tree,
// then the node's partial aggregate sent back in checksummed chunks
// (NodePartial + NodePartialChunk), or NodeRoundFailed, each carrying the
// plan's id. A plan arriving while another runs closes the running one
// first (its answer is refused by a controller that moved on). RoundClose
// ends the running round early. Idle functions are reaped between rounds.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tributary/core/error.h"
#include "tributary/node/node_agent.h"

namespace tributary::node {

// Where the controller is, and how to authenticate to it. No keys: plaintext
// (only where the controller runs without security: loopback tests).
struct ControllerLink {
  std::string endpoint;
  std::string controller_public_key;  // Z85
  std::string public_key;             // the node's own pair, Z85
  std::string secret_key;
  // The gateway endpoint the controller steers other nodes' clients to;
  // empty: the endpoint the gateway bound.
  std::string advertised_gateway;
};

class NodeService {
 public:
  // `metrics_bind` ("127.0.0.1:9400", port 0 for any) serves /healthz and
  // /metrics (Prometheus); empty: no HTTP endpoint.
  static Result<std::unique_ptr<NodeService>> Start(const NodeOptions& options, const ControllerLink& controller,
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
