// One aggregator function: the body of `tributary function`.
//
// A function is a separate process started by the node agent's supervisor. It
// maps the node's segment (its own lease), registers its data socket with the
// descriptor switch, says hello to the agent (a CONTROL descriptor carrying its
// lease), and then sleeps on its socket: every descriptor is an event.
//
// Descriptors inside a node (see docs/node.md):
//   CONTROL  a FunctionTask in a block handed to this function: what to fold,
//            how many inputs (fan-in), where the result goes.
//   UPDATE   a client update block; flags = its transport dtype; job = task id.
//   PARTIAL  a child's partial aggregate block; job = task id.
// Inputs are folded eagerly as they arrive, several at once when several are
// queued. With fan-in inputs folded, the accumulator block is handed to the
// parent's lease and a PARTIAL descriptor goes to the parent. Inputs for a
// task this function does not hold (an older attempt) are released unused.
//
// Leaves also hand their result to the agent (a commit, PARTIAL with the
// leaf's own task id): the agent can then drop its copies of their updates.
//
// With `payload_over_tcp` (the serverful comparison transport, see
// dataplane/payload_stream.h), the function also listens on a loopback port
// (its hello's `length`), UPDATE and PARTIAL inputs arrive there as whole
// payloads read into this process's memory, the accumulator is private
// memory, and the result is written whole to the parent's port. Tasks still
// come as CONTROL descriptors.
//
// Errors: Run() returns when the agent goes away (normal end) or on an error
// it cannot recover from (the agent then replaces the process).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "tributary/core/error.h"
#include "tributary/dataplane/function_link.h"

namespace tributary::function {

// The agent's own link in the data plane: hellos and node results go there.
inline constexpr uint32_t kAgentFn = 1;

struct FunctionOptions {
  uint32_t fn = 0;
  std::string segment;               // the node's shared-memory segment
  dataplane::SwitchAddress switch_address;
  std::chrono::milliseconds idle_exit{0};  // 0: wait for the agent forever
  bool payload_over_tcp = false;
};

Result<void> RunFunction(const FunctionOptions& options);

}  // namespace tributary::function
