// The registration handshake between a function and the descriptor switch,
// over a Unix SOCK_SEQPACKET socket: one request carrying the function's data
// socket as SCM_RIGHTS, one reply. The function keeps the registration socket
// open for its lifetime; its closing tells the switch the function is gone.
#pragma once

#include <cstdint>

namespace tributary::dataplane::internal {

inline constexpr uint32_t kRegistrationMagic = 0x52425254;  // "TRBR"
inline constexpr uint32_t kRegistrationVersion = 1;

struct RegistrationRequest {
  uint32_t magic = kRegistrationMagic;
  uint32_t version = kRegistrationVersion;
  uint32_t fn = 0;
  uint32_t reserved = 0;
};

struct RegistrationReply {
  uint32_t magic = kRegistrationMagic;
  uint32_t code = 0;  // tributary::ErrorCode
  char reason[120] = {};
};

}  // namespace tributary::dataplane::internal
