#include "tributary/protocol/codec.h"

#include <google/protobuf/stubs/logging.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

// libxxhash's dispatching entry points pick the widest vector unit of this
// CPU (AVX2/AVX-512) at run time; the inlined code would be baseline SSE2.
#define XXH_STATIC_LINKING_ONLY
#include <xxh_x86dispatch.h>

namespace tributary::protocol {

namespace {

// libprotobuf logs at ERROR every string field with invalid UTF-8 it parses
// (the parse then fails, and the caller gets kMalformedFrame): a peer could
// fill the log with one line per frame. Below FATAL its messages are dropped;
// FATAL ones still reach stderr (libprotobuf aborts after them).
void QuietProtobufLog(google::protobuf::LogLevel level, const char* file, int line, const std::string& message) {
  if (level == google::protobuf::LOGLEVEL_FATAL) std::fprintf(stderr, "libprotobuf FATAL %s:%d: %s\n", file, line, message.c_str());
}

}  // namespace

Result<v1::Envelope> DecodeEnvelope(std::span<const std::byte> frame, const Limits& limits) {
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(QuietProtobufLog);
    return true;
  }();
  (void)quiet;
  if (frame.size() > limits.max_envelope_bytes) {
    return MakeError(ErrorCode::kTooLarge, "envelope frame of " + std::to_string(frame.size()) +
                                               " bytes exceeds the limit of " +
                                               std::to_string(limits.max_envelope_bytes));
  }
  v1::Envelope envelope;
  if (!envelope.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) {
    return MakeError(ErrorCode::kMalformedFrame, "envelope frame is not a valid protobuf message");
  }
  if (envelope.protocol_version() != kProtocolVersion) {
    return MakeError(ErrorCode::kUnsupportedVersion,
                     "protocol version " + std::to_string(envelope.protocol_version()) + " (this side speaks " +
                         std::to_string(kProtocolVersion) + ")");
  }
  if (envelope.body_case() == v1::Envelope::BODY_NOT_SET) {
    return MakeError(ErrorCode::kMalformedFrame, "envelope has no body");
  }
  return envelope;
}

std::string EncodeEnvelope(const v1::Envelope& envelope) { return envelope.SerializeAsString(); }

v1::Envelope NewEnvelope(uint64_t request_id) {
  v1::Envelope e;
  e.set_protocol_version(kProtocolVersion);
  e.set_request_id(request_id);
  return e;
}

v1::TensorSpec ToProto(const agg::TensorSpec& spec) {
  v1::TensorSpec p;
  p.set_name(spec.name);
  p.set_dtype(static_cast<v1::DType>(spec.dtype));
  for (int64_t d : spec.shape) p.add_shape(d);
  return p;
}

Result<agg::TensorSpec> FromProto(const v1::TensorSpec& p) {
  agg::TensorSpec spec;
  spec.name = p.name();
  switch (p.dtype()) {
    case v1::DTYPE_F32: spec.dtype = agg::DType::kF32; break;
    case v1::DTYPE_F16: spec.dtype = agg::DType::kF16; break;
    case v1::DTYPE_BF16: spec.dtype = agg::DType::kBF16; break;
    case v1::DTYPE_I8: spec.dtype = agg::DType::kI8; break;
    default:
      return MakeError(ErrorCode::kShapeMismatch, "tensor '" + p.name() + "' has an unsupported dtype");
  }
  spec.shape.assign(p.shape().begin(), p.shape().end());
  return spec;
}

Result<std::vector<agg::TensorSpec>> TensorSpecsFromProto(const google::protobuf::RepeatedPtrField<v1::TensorSpec>& specs) {
  std::vector<agg::TensorSpec> out;
  out.reserve(static_cast<size_t>(specs.size()));
  for (const v1::TensorSpec& t : specs) {
    TRIBUTARY_ASSIGN_OR_RETURN(agg::TensorSpec spec, FromProto(t));
    out.push_back(std::move(spec));
  }
  return out;
}

Result<agg::ModelSpec> ModelSpecFromProto(const google::protobuf::RepeatedPtrField<v1::TensorSpec>& specs) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::vector<agg::TensorSpec> tensors, TensorSpecsFromProto(specs));
  return agg::ModelSpec::Create(std::move(tensors));
}

void ToProto(const agg::ModelSpec& model, google::protobuf::RepeatedPtrField<v1::TensorSpec>* out) {
  for (const agg::TensorSpec& t : model.tensors()) *out->Add() = ToProto(t);
}

Result<agg::ModelSpec> ValidateUpdateHeader(const v1::UpdateHeader& h, const agg::ModelSpec& model,
                                            const Limits& limits) {
  if (h.job_id().empty()) return MakeError(ErrorCode::kMalformedFrame, "update header has no job_id");
  if (h.client_id().empty()) return MakeError(ErrorCode::kMalformedFrame, "update header has no client_id");
  if (h.sample_count() == 0) return MakeError(ErrorCode::kInvalidArgument, "sample_count must be positive");
  if (static_cast<uint64_t>(h.tensors_size()) > limits.max_tensors) {
    return MakeError(ErrorCode::kTooLarge, std::to_string(h.tensors_size()) + " tensors exceed the limit of " +
                                               std::to_string(limits.max_tensors));
  }
  if (h.payload_bytes() > limits.max_payload_bytes) {
    return MakeError(ErrorCode::kTooLarge, "payload of " + std::to_string(h.payload_bytes()) +
                                               " bytes exceeds the limit of " +
                                               std::to_string(limits.max_payload_bytes));
  }
  if (static_cast<size_t>(h.tensors_size()) != model.tensors().size()) {
    return MakeError(ErrorCode::kShapeMismatch, "update has " + std::to_string(h.tensors_size()) +
                                                    " tensors, the model " +
                                                    std::to_string(model.tensors().size()));
  }
  std::vector<agg::TensorSpec> specs;
  specs.reserve(model.tensors().size());
  for (int i = 0; i < h.tensors_size(); ++i) {
    TRIBUTARY_ASSIGN_OR_RETURN(agg::TensorSpec spec, FromProto(h.tensors(i)));
    const agg::TensorSpec& want = model.tensors()[static_cast<size_t>(i)];
    if (spec.name != want.name || spec.shape != want.shape) {
      return MakeError(ErrorCode::kShapeMismatch, "tensor " + std::to_string(i) + " is '" + spec.name +
                                                      "', the model expects '" + want.name +
                                                      "' with the model's shape");
    }
    // Descriptors carry one transport dtype per update (docs/protocol.md).
    if (!specs.empty() && spec.dtype != specs.front().dtype) {
      return MakeError(ErrorCode::kInvalidArgument, "tensor '" + spec.name + "' is " +
                                                        std::string(agg::DTypeName(spec.dtype)) + ", tensor '" +
                                                        specs.front().name + "' " +
                                                        std::string(agg::DTypeName(specs.front().dtype)) +
                                                        ": an update's tensors share one transport dtype");
    }
    specs.push_back(std::move(spec));
  }
  TRIBUTARY_ASSIGN_OR_RETURN(agg::ModelSpec layout, agg::ModelSpec::Create(std::move(specs)));
  if (layout.payload_bytes() != h.payload_bytes()) {
    return MakeError(ErrorCode::kShapeMismatch, "payload_bytes is " + std::to_string(h.payload_bytes()) +
                                                    ", the tensors need " + std::to_string(layout.payload_bytes()));
  }
  return layout;
}

bool IsRetryable(ErrorCode code) {
  switch (code) {
    case ErrorCode::kResourceExhausted:
    case ErrorCode::kIo:
    case ErrorCode::kChecksumMismatch:  // corrupted in transit: send again
    case ErrorCode::kUploadInProgress:  // the other upload finishes or is dropped
      return true;
    default:
      return false;
  }
}

void ToProto(const ConfigMap& config, google::protobuf::Map<std::string, v1::Scalar>* out) {
  for (const auto& [key, value] : config) {
    v1::Scalar& s = (*out)[key];
    std::visit(
        [&s](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, bool>) s.set_bool_value(v);
          if constexpr (std::is_same_v<T, int64_t>) s.set_int_value(v);
          if constexpr (std::is_same_v<T, double>) s.set_double_value(v);
          if constexpr (std::is_same_v<T, std::string>) s.set_string_value(v);
        },
        value);
  }
}

ConfigMap FromProto(const google::protobuf::Map<std::string, v1::Scalar>& config) {
  ConfigMap out;
  for (const auto& [key, s] : config) {
    switch (s.value_case()) {
      case v1::Scalar::kBoolValue: out[key] = s.bool_value(); break;
      case v1::Scalar::kIntValue: out[key] = s.int_value(); break;
      case v1::Scalar::kDoubleValue: out[key] = s.double_value(); break;
      case v1::Scalar::kStringValue: out[key] = s.string_value(); break;
      case v1::Scalar::VALUE_NOT_SET: break;  // an empty value carries nothing
    }
  }
  return out;
}

v1::ErrorReply ToErrorReply(const Error& error) {
  v1::ErrorReply r;
  r.set_code(static_cast<v1::ErrorCode>(error.code));
  r.set_reason(error.reason);
  r.set_retryable(IsRetryable(error.code));
  return r;
}

Error FromErrorReply(const v1::ErrorReply& reply) {
  const auto code = static_cast<ErrorCode>(reply.code());
  const bool known = ErrorCodeName(code) != "UNKNOWN" && code != ErrorCode::kOk;
  return Error{known ? code : ErrorCode::kInternal, reply.reason()};
}

struct PayloadHasher::State {
  XXH3_state_t xxh;
};

PayloadHasher::PayloadHasher() : state_(std::make_unique<State>()) { XXH3_64bits_reset(&state_->xxh); }
PayloadHasher::~PayloadHasher() = default;

void PayloadHasher::Update(std::span<const std::byte> bytes) {
  XXH3_64bits_update_dispatch(&state_->xxh, bytes.data(), bytes.size());
}

void PayloadHasher::CopyAndUpdate(std::byte* to, std::span<const std::byte> from) {
  for (size_t at = 0; at < from.size(); at += kCacheSlice) {
    const size_t n = std::min(kCacheSlice, from.size() - at);
    std::memcpy(to + at, from.data() + at, n);
    Update({to + at, n});
  }
}

uint64_t PayloadHasher::Digest() const { return XXH3_64bits_digest(&state_->xxh); }

uint64_t PayloadHasher::Of(std::span<const std::byte> bytes) { return XXH3_64bits_dispatch(bytes.data(), bytes.size()); }

}  // namespace tributary::protocol
