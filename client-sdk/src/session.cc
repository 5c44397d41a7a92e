#include "tributary/client/session.h"

namespace tributary::client {

Result<std::unique_ptr<Session>> Session::Connect(SessionOptions options, Compression compression) {
  TRIBUTARY_ASSIGN_OR_RETURN(auto transport, GatewaySession::Connect(std::move(options)));
  return std::unique_ptr<Session>(new Session(std::move(transport), compression));
}

Result<TaskPoll> Session::NextTask(const Config& properties) { return transport_->RequestTask(properties); }

Result<Parameters> Session::FetchModel(const Task& task) {
  TRIBUTARY_ASSIGN_OR_RETURN(GlobalModel m, transport_->DownloadModel(task.job));
  if (m.version != task.model_version) {
    return MakeError(ErrorCode::kReplay, "the gateway serves model version " + std::to_string(m.version) +
                                             " of job '" + task.job + "', the task is for version " +
                                             std::to_string(task.model_version));
  }
  return Decode(m.tensors, m.payload);
}

Result<SubmitReceipt> Session::Submit(const Task& task, const FitResult& fit) {
  if (fit.num_examples == 0) return MakeError(ErrorCode::kInvalidArgument, "a fit result needs num_examples > 0");
  TRIBUTARY_ASSIGN_OR_RETURN(EncodedUpdate e, Encode(fit.parameters, compression_));
  UpdateFrame u{task.job, task.round, task.model_version, fit.num_examples, std::move(e.tensors), e.payload,
                fit.metrics};
  TRIBUTARY_ASSIGN_OR_RETURN(UploadReceipt r, transport_->Upload(u));
  return SubmitReceipt{e.payload.size() - r.resumed_from, e.f32_bytes - e.payload.size(), r.resumed_from};
}

}  // namespace tributary::client
