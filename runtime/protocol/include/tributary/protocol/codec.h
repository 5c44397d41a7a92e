// Wire protocol v1: the one place that converts between frames and types.
//
// A request is a ZeroMQ multipart message: one Envelope frame (protobuf),
// then, for an update, the payload frames (raw tensor bytes, in the order of
// the header's tensors). docs/protocol.md is the contract; this file enforces
// it. Decoding never trusts a size the peer claims before checking it against
// Limits.
//
// Thread safety: free functions over values; PayloadHasher is one-thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "tributary/aggregator/tensor.h"
#include "tributary/core/error.h"
#include "tributary/core/config_map.h"
#include "tributary/v1/envelope.pb.h"

namespace tributary::protocol {

inline constexpr uint32_t kProtocolVersion = 1;

struct Limits {
  uint64_t max_envelope_bytes = 4ull << 20;      // the protobuf frame
  uint64_t max_payload_bytes = 64ull << 30;      // one update's tensors
  uint32_t max_tensors = 1u << 16;
};

// Parses and version-checks an Envelope frame: kTooLarge, kMalformedFrame or
// kUnsupportedVersion on failure.
Result<v1::Envelope> DecodeEnvelope(std::span<const std::byte> frame, const Limits& limits);
std::string EncodeEnvelope(const v1::Envelope& envelope);
// An empty envelope of this protocol version, answering `request_id`.
v1::Envelope NewEnvelope(uint64_t request_id = 0);

// The ModelSpec of an update's payload (tensor dtypes as sent) after checking
// the header against the job's model: identity fields present, sample count
// positive, the same tensor names and shapes in the same order, float dtypes,
// payload_bytes equal to what the tensors need, sizes within limits.
Result<agg::ModelSpec> ValidateUpdateHeader(const v1::UpdateHeader& header, const agg::ModelSpec& model,
                                            const Limits& limits);

// Payloads on the control plane (models published to nodes, node partials to
// the controller) travel in frames of this size.
inline constexpr uint64_t kControlChunkBytes = 4ull << 20;

// Conversions of the vocabulary types.
v1::TensorSpec ToProto(const agg::TensorSpec& spec);
Result<agg::TensorSpec> FromProto(const v1::TensorSpec& spec);
// A message's repeated tensor specs, in order, as a validated ModelSpec.
Result<std::vector<agg::TensorSpec>> TensorSpecsFromProto(const google::protobuf::RepeatedPtrField<v1::TensorSpec>& specs);
Result<agg::ModelSpec> ModelSpecFromProto(const google::protobuf::RepeatedPtrField<v1::TensorSpec>& specs);
// Appends every tensor of `model` to a message's repeated tensor specs.
void ToProto(const agg::ModelSpec& model, google::protobuf::RepeatedPtrField<v1::TensorSpec>* out);
void ToProto(const ConfigMap& config, google::protobuf::Map<std::string, v1::Scalar>* out);
ConfigMap FromProto(const google::protobuf::Map<std::string, v1::Scalar>& config);
v1::ErrorReply ToErrorReply(const Error& error);
Error FromErrorReply(const v1::ErrorReply& reply);

// Whether a client may retry the request that got this error unchanged.
bool IsRetryable(ErrorCode code);

// XXH3-64 over payload frames as they arrive.
class PayloadHasher {
 public:
  PayloadHasher();
  ~PayloadHasher();
  PayloadHasher(const PayloadHasher&) = delete;
  PayloadHasher& operator=(const PayloadHasher&) = delete;

  void Update(std::span<const std::byte> bytes);
  // Copies `from` to `to` (from.size() bytes) and hashes the copy, a slice
  // at a time, so the hash reads each slice from L1/L2 right after the copy
  // wrote it: one pass over memory instead of two.
  void CopyAndUpdate(std::byte* to, std::span<const std::byte> from);
  uint64_t Digest() const;

  static constexpr size_t kCacheSlice = 64 << 10;

  static uint64_t Of(std::span<const std::byte> bytes);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tributary::protocol
