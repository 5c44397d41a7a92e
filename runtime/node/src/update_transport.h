// The node agent's transport: how it moves an accepted update to its leaf
// and how the node-root's result comes back. Chosen once when the agent
// starts (NodeOptions::transport); the agent above it reads as one path.
//
//   shared memory  an update is a hold on its block handed to the leaf's lease
//                  and a descriptor sent by route key; the agent keeps its
//                  own hold until the leaf commits, so a failed function's
//                  inputs can be sent again to its replacement. The
//                  node-root's result arrives on the agent's link.
//   kTcp           the serverful comparison: the whole update is written to
//                  the leaf's loopback port and the agent keeps nothing; the
//                  node-root writes its result whole to the agent's port. No
//                  recovery: a failure fails the round.
//
// Thread safety: called under the agent's lock; the kTcp result reader
// runs on its own thread and hands results to `on_result`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "tributary/core/error.h"
#include "tributary/dataplane/aggregation_transport.h"
#include "tributary/dataplane/descriptor.h"
#include "tributary/dataplane/function_link.h"
#include "tributary/node/supervisor.h"
#include "tributary/shm/segment.h"

namespace tributary::node {

// An accepted update as the agent keeps it until its leaf commits.
struct HeldUpdate {
  shm::BlockRef block;
  uint32_t route_key = 0;
  uint8_t dtype = 0;  // agg::DType of the payload
  double weight = 0;
};

// Gives `lease` a hold on `block` and sends `d`, with the block's address
// filled in, over `link`; the caller keeps its own hold.
Result<void> HandOver(const shm::BlockRef& block, uint32_t lease, const dataplane::Descriptor& d,
                      dataplane::FunctionLink& link);

class UpdateTransport {
 public:
  using ResultSink = std::function<void(const dataplane::Descriptor&, shm::BlockRef)>;
  virtual ~UpdateTransport() = default;

  // True when the agent keeps every update until its leaf commits, so a tree
  // can be rebuilt after a failure or at the deadline.
  virtual bool recovers_failures() const = 0;
  // Where the node-root writes its result (0: it hands a block to the agent).
  virtual uint16_t result_port() const = 0;
  // Sends `u` to `leaf` for task `task`: by route key, or (`by_route` false) to the leaf itself.
  virtual Result<void> SendUpdate(const HeldUpdate& u, const FunctionInstance& leaf, uint64_t task, uint64_t round,
                                  bool by_route) = 0;
  // The round's functions were released: drop what was kept per function.
  virtual void Reset() = 0;
};

// `on_result` receives the node-root's results that do not come over the link.
Result<std::unique_ptr<UpdateTransport>> MakeUpdateTransport(dataplane::AggregationTransport kind,
                                                             shm::Segment& segment, dataplane::FunctionLink& link,
                                                             UpdateTransport::ResultSink on_result);

}  // namespace tributary::node
