// The protocol codec on any bytes as an Envelope frame: decoding never
// crashes and never trusts a size; what decodes re-encodes to an equal
// message; every header, tensor spec, config map and error reply in it goes
// through the validation the gateway, node agent and controller apply.
#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstdlib>
#include <span>

#include "tributary/protocol/codec.h"

namespace {

using namespace tributary;

const agg::ModelSpec& JobModel() {
  static const agg::ModelSpec model =
      agg::ModelSpec::Create({{"w", agg::DType::kF32, {16, 4}}, {"b", agg::DType::kF32, {4}}}).value();
  return model;
}

void Check(bool ok) {
  if (!ok) std::abort();
}

void Exercise(const v1::Envelope& e, const protocol::Limits& limits) {
  if (e.has_update()) {
    auto layout = protocol::ValidateUpdateHeader(e.update(), JobModel(), limits);
    // What passes has the job's tensors and exactly the bytes they need.
    if (layout) {
      Check(layout.value().elements() == JobModel().elements());
      Check(layout.value().payload_bytes() == e.update().payload_bytes());
    }
    (void)protocol::ModelSpecFromProto(e.update().tensors());
  }
  if (e.has_round_plan()) {
    (void)protocol::ModelSpecFromProto(e.round_plan().model());
    (void)protocol::FromProto(e.round_plan().client_config());
  }
  if (e.has_model_publish()) (void)protocol::ModelSpecFromProto(e.model_publish().model());
  if (e.has_task_request()) (void)protocol::FromProto(e.task_request().properties());
  if (e.has_task_assignment()) (void)protocol::FromProto(e.task_assignment().config());
  if (e.has_error()) {
    const Error error = protocol::FromErrorReply(e.error());
    (void)protocol::IsRetryable(error.code);
    // Any code a peer sends (known or not) survives the trip back to the wire.
    Check(protocol::FromErrorReply(protocol::ToErrorReply(error)).code == error.code);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  protocol::Limits limits;
  limits.max_envelope_bytes = 1 << 16;
  limits.max_payload_bytes = 1 << 20;
  limits.max_tensors = 64;
  auto decoded = protocol::DecodeEnvelope(std::as_bytes(std::span(data, size)), limits);
  if (!decoded) return 0;
  Exercise(decoded.value(), limits);
  const std::string wire = protocol::EncodeEnvelope(decoded.value());
  auto again = protocol::DecodeEnvelope(std::as_bytes(std::span(wire.data(), wire.size())), limits);
  // What decoded encodes again to an equal message (unknown fields kept).
  if (wire.size() <= limits.max_envelope_bytes) {
    Check(again.has_value());
    // A NaN a peer sent (a config value, a weight) is the same NaN after the trip.
    google::protobuf::util::DefaultFieldComparator same_nan;
    same_nan.set_treat_nan_as_equal(true);
    google::protobuf::util::MessageDifferencer differ;
    differ.set_field_comparator(&same_nan);
    Check(differ.Compare(decoded.value(), again.value()));
  }
  return 0;
}
