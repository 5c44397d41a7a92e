// Error vocabulary of every Tributary library.
//
// Fallible functions return Result<T>: a value, or an Error with a typed code
// and a human reason. Errors are values; libraries do not throw across their
// public interfaces. ErrorCode numbers are the wire protocol's
// (runtime/proto/tributary/v1/error.proto): a test keeps the two in step, so an
// error can be sent to a client as it is.
//
// Thread safety: plain value types.
#pragma once

#include <boost/outcome/result.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace tributary {

enum class ErrorCode : uint16_t {
  kOk = 0,
  // Client input (the wire protocol's rejection reasons).
  kMalformedFrame = 1,       // unparsable header, wrong frame count
  kUnsupportedVersion = 2,   // protocol version this side does not speak
  kUnknownJob = 3,
  kRoundClosed = 4,          // round not open, or already finished
  kNotSelected = 5,          // client not selected for this round
  kUnknownClient = 6,        // not authenticated / not registered
  kDuplicateUpdate = 7,      // the client's update for this round was already accepted
  kReplay = 8,               // stale model version or old round
  kShapeMismatch = 9,        // tensor specs differ from the model spec
  kTooLarge = 10,            // claimed or actual size over the limits
  kChecksumMismatch = 11,
  kNonFinite = 12,           // NaN or Inf in an update
  kInvalidArgument = 13,     // any other bad request
  kUploadInProgress = 14,    // the client's upload is still admitted (RoundBook): retry later; never "accepted"
  // Node-side conditions.
  kResourceExhausted = 20,   // shared-memory segment or lease table full
  kStaleReference = 21,      // descriptor to a block that no longer exists
  kNotFound = 22,
  kIo = 23,                  // an OS call failed
  kConfig = 24,              // invalid configuration
  kInternal = 25,            // a bug: an invariant did not hold
};

std::string_view ErrorCodeName(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string reason;

  // "SHAPE_MISMATCH: tensor 'fc.weight' ..." for logs and CLI messages.
  std::string ToString() const;
};

template <class T>
using Result = boost::outcome_v2::result<T, Error, boost::outcome_v2::policy::terminate>;

inline Error MakeError(ErrorCode code, std::string reason) { return Error{code, std::move(reason)}; }

inline auto Ok() { return boost::outcome_v2::success(); }

// TRIBUTARY_TRY(Expr()): return Expr's error, if any, from the calling function.
#define TRIBUTARY_TRY(expr)                                  \
  do {                                                       \
    auto tributary_try_result_ = (expr);                     \
    if (!tributary_try_result_) return std::move(tributary_try_result_).error(); \
  } while (0)

// TRIBUTARY_ASSIGN_OR_RETURN(auto x, Expr()) or (existing, Expr()): the value,
// or return the error.
#define TRIBUTARY_ASSIGN_OR_RETURN(lhs, expr) \
  TRIBUTARY_ASSIGN_OR_RETURN_IMPL_(TRIBUTARY_CONCAT_(tributary_result_, __LINE__), lhs, expr)
#define TRIBUTARY_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  if (!tmp) return std::move(tmp).error();               \
  lhs = std::move(tmp).value()
#define TRIBUTARY_CONCAT_(a, b) TRIBUTARY_CONCAT_INNER_(a, b)
#define TRIBUTARY_CONCAT_INNER_(a, b) a##b

inline std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "OK";
    case ErrorCode::kMalformedFrame: return "MALFORMED_FRAME";
    case ErrorCode::kUnsupportedVersion: return "UNSUPPORTED_VERSION";
    case ErrorCode::kUnknownJob: return "UNKNOWN_JOB";
    case ErrorCode::kRoundClosed: return "ROUND_CLOSED";
    case ErrorCode::kNotSelected: return "NOT_SELECTED";
    case ErrorCode::kUnknownClient: return "UNKNOWN_CLIENT";
    case ErrorCode::kDuplicateUpdate: return "DUPLICATE_UPDATE";
    case ErrorCode::kReplay: return "REPLAY";
    case ErrorCode::kShapeMismatch: return "SHAPE_MISMATCH";
    case ErrorCode::kTooLarge: return "TOO_LARGE";
    case ErrorCode::kChecksumMismatch: return "CHECKSUM_MISMATCH";
    case ErrorCode::kNonFinite: return "NON_FINITE";
    case ErrorCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case ErrorCode::kUploadInProgress: return "UPLOAD_IN_PROGRESS";
    case ErrorCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case ErrorCode::kStaleReference: return "STALE_REFERENCE";
    case ErrorCode::kNotFound: return "NOT_FOUND";
    case ErrorCode::kIo: return "IO";
    case ErrorCode::kConfig: return "CONFIG";
    case ErrorCode::kInternal: return "INTERNAL";
  }
  return "UNKNOWN";
}

inline std::string Error::ToString() const {
  std::string s(ErrorCodeName(code));
  s += ": ";
  s += reason;
  return s;
}

}  // namespace tributary
