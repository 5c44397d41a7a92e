// One aggregator function: the body of `tributary function`.
//
// A function is a separate process started by the node agent's supervisor. It
// maps the node's segment (its own lease), registers its data socket with the
// descriptor switch, says hello to the agent (a HELLO descriptor carrying its
// lease), and then sleeps on its socket: every descriptor is an event.
//
// Descriptors inside a node (see docs/node.md and dataplane/descriptor.h):
//   TASK     a FunctionTask in a block handed to this function: what to fold,
//            how many inputs (fan-in), where the result goes.
//   UPDATE   a client update block for task `task`; `dtype` its transport
//            dtype; `route_key` its client, which fixes its place in the fold.
//   PARTIAL  a child's partial aggregate block for task `task`; `slot` its
//            place in the fold.
//   HEARTBEAT (to the agent) every kHeartbeatInterval from the loop, between
//            batches, busy or idle: the agent's supervisor kills and replaces
//            a function silent for longer than its liveness bound.
// Inputs are folded eagerly as they arrive, several at once when several are
// queued, in the task's fixed order. With fan-in inputs folded, the result
// goes to the parent (a PARTIAL). Inputs for a task this function does not
// hold (an older attempt) are released unused. Updates the gateway marked
// checked are not scanned for NaN/Inf again.
//
// Leaves also hand their result to the agent (a commit, PARTIAL with the
// leaf's own task id): the agent can then drop its copies of their updates.
//
// The transport (dataplane/aggregation_transport.h) is chosen at start: with
// kTcp the inputs arrive as whole payloads on a loopback port (the hello's
// `payload_port`) and the result is written whole to the parent's port
// (src/task_transport.h). Tasks still come as TASK descriptors.
//
// Errors: Run() returns when the agent goes away (normal end) or on an error
// it cannot recover from (the agent then replaces the process).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "tributary/core/error.h"
#include "tributary/dataplane/aggregation_transport.h"
#include "tributary/dataplane/function_link.h"

namespace tributary::function {

// The agent's own link in the data plane: hellos and node results go there.
inline constexpr uint32_t kAgentFn = TRB_AGENT_FN;
inline constexpr std::chrono::milliseconds kHeartbeatInterval{250};

struct FunctionOptions {
  uint32_t fn = 0;
  std::string segment;               // the node's shared-memory segment
  dataplane::SwitchAddress switch_address;
  std::chrono::milliseconds idle_exit{0};  // 0: wait for the agent forever
  dataplane::AggregationTransport transport = dataplane::AggregationTransport::kSharedMemory;
};

Result<void> RunFunction(const FunctionOptions& options);

}  // namespace tributary::function
