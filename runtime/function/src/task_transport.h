// A function's transport: where a task's inputs come from and where its
// result goes. Chosen once when the function starts (FunctionOptions); the
// host above it reads as one path for both.
//
//   SharedMemoryTransport  inputs are blocks named by the descriptors on the
//                          function's link (adopted from its lease's inbox);
//                          the accumulator is a block; the result is handed to
//                          the parent's lease (and, for leaves, committed to
//                          the agent) and named in a PARTIAL descriptor.
//   TcpPayloadTransport    the serverful comparison: inputs arrive as whole
//                          payloads on the function's loopback port, read into
//                          this process's memory; the accumulator is private
//                          memory; the result is written whole to the parent's port.
// Tasks themselves always come as TASK descriptors on the link.
//
// Thread safety: used by the host's thread; TcpPayloadTransport's readers
// hand payloads over under its own lock.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <variant>
#include <vector>

#include "tributary/aggregator/strategy.h"
#include "tributary/core/error.h"
#include "tributary/dataplane/aggregation_transport.h"
#include "tributary/dataplane/descriptor.h"
#include "tributary/dataplane/function_link.h"
#include "tributary/shm/segment.h"
#include "tributary/v1/node.pb.h"

namespace tributary::function {

// One input of a task: an update or a child's partial, with what it holds.
struct Input {
  dataplane::Descriptor d{};
  std::span<const std::byte> bytes;  // valid while `owner` lives
  uint64_t updates = 0;              // client updates it holds (a partial's count)
  bool checked_finite = false;       // the gateway checked every value at arrival
  std::variant<shm::BlockRef, std::vector<std::byte>, std::vector<float>> owner;  // floats: a result kept here
};

// A task's running sum and where its memory lives.
struct Accumulator {
  std::span<float> values;
  std::variant<shm::BlockRef, std::vector<float>> owner;
};

class TaskTransport {
 public:
  virtual ~TaskTransport() = default;

  // The port the hello announces (0: none).
  virtual uint16_t payload_port() const = 0;
  // Readable when inputs arrived outside the link (-1: never).
  virtual int wake_fd() const = 0;
  // The input a descriptor on the link names (nullopt: stale or not ours).
  virtual std::optional<Input> FromDescriptor(const dataplane::Descriptor& d) = 0;
  // Inputs that arrived outside the link since the last call.
  virtual std::vector<Input> TakeArrived() = 0;
  virtual Result<Accumulator> NewAccumulator(const agg::ModelSpec& model, uint64_t round) = 0;
  // Hands a finished leaf's result to the agent too (no-op without the task's agent_lease).
  virtual Result<void> Commit(const v1::FunctionTask& task, const Accumulator& accumulator, const agg::Partial& sum) = 0;
  // Sends the finished task's result to its parent.
  virtual Result<void> SendResult(const v1::FunctionTask& task, Accumulator accumulator, const agg::Partial& sum) = 0;
};

Result<std::unique_ptr<TaskTransport>> MakeTaskTransport(dataplane::AggregationTransport kind, shm::Segment& segment,
                                                         dataplane::FunctionLink& link);

}  // namespace tributary::function
