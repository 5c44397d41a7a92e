// CURVE key files (ZeroMQ's CurveZMQ: Curve25519 keys, Z85 text of 40
// characters): the one place that reads and writes them, for gateways, node
// agents and clients alike.
//
// `tributary keys generate --name NAME --out DIR` writes DIR/NAME.key (the
// secret key, mode 0600) and DIR/NAME.pub (the public key); each file holds
// one key and a newline. A gateway's allow-list is a directory of
// `<client-id>.pub` files, or one file of `<client-id> <public key>` lines
// (keys/allow_list.h); see docs/client-sdk.md.
//
// Thread safety: plain functions and value types.
#pragma once

#include <string>

#include "tributary/core/error.h"

namespace tributary::keys {

inline constexpr size_t kZ85KeyChars = 40;

struct CurveKeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// True for text that can be a Z85-encoded 32-byte key.
bool IsZ85Key(const std::string& text);

// A fresh keypair (kInternal if this libzmq lacks CURVE).
Result<CurveKeyPair> GenerateKeyPair();
// Writes DIR/NAME.key (0600) and DIR/NAME.pub; kInvalidArgument if they exist.
Result<void> WriteKeyPair(const CurveKeyPair& keys, const std::string& dir, const std::string& name);
// The public key of a Z85 secret key: kInvalidArgument if it is none.
Result<std::string> PublicKeyOf(const std::string& secret_key);
// Reads a secret key file and derives the public key from it: kNotFound for
// an unreadable file, kInvalidArgument for one that holds no secret key.
Result<CurveKeyPair> LoadKeyPair(const std::string& secret_key_file);
// Reads a .pub file (one Z85 key): kNotFound or kInvalidArgument as above.
Result<std::string> LoadPublicKey(const std::string& public_key_file);

}  // namespace tributary::keys
