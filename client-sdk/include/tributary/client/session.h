// Session: the client's rounds step by step, in SDK types. Run() (run.h) is
// these steps in a loop; call them yourself to drive rounds differently.
//
//   auto s = Session::Connect(options).value();
//   auto poll = s->NextTask();                 // selected for a round?
//   auto global = s->FetchModel(*poll.task);   // the round's global model
//   ... train ...
//   auto sent = s->Submit(*poll.task, fit);    // compressed, chunked, resumable
//
// Errors are those of GatewaySession (gateway_session.h), plus kReplay when
// the gateway already serves a newer model than the task's (the round moved
// on), and kShapeMismatch for parameters that do not fit the model.
//
// Thread safety: one thread at a time per session.
#pragma once

#include <memory>

#include "tributary/client/compression.h"
#include "tributary/client/gateway_session.h"
#include "tributary/client/types.h"

namespace tributary::client {

struct SubmitReceipt {
  uint64_t bytes_sent = 0;    // payload bytes on the wire (compressed)
  uint64_t bytes_saved = 0;   // against f32
  uint64_t resumed_from = 0;  // bytes a resumed upload did not send again
};

class Session {
 public:
  static Result<std::unique_ptr<Session>> Connect(SessionOptions options, Compression compression = Compression::kNone);

  Result<TaskPoll> NextTask(const Config& properties = {});
  Result<Parameters> FetchModel(const Task& task);
  Result<SubmitReceipt> Submit(const Task& task, const FitResult& fit);

  GatewaySession& transport() { return *transport_; }

 private:
  Session(std::unique_ptr<GatewaySession> transport, Compression compression)
      : transport_(std::move(transport)), compression_(compression) {}
  std::unique_ptr<GatewaySession> transport_;
  Compression compression_;
};

}  // namespace tributary::client
