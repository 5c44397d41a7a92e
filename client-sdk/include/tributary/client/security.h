// CURVE keys (ZeroMQ's CurveZMQ: Curve25519 keys, Z85 text of 40 characters).
//
// Every client has a keypair and knows its gateway's public key; the gateway
// keeps an allow-list of client public keys, each bound to one client id.
// `tributary keys generate --name NAME --out DIR` writes DIR/NAME.key (the
// secret key, mode 0600) and DIR/NAME.pub (the public key). A gateway's
// allow-list is a directory of `<client-id>.pub` files, or one file of
// `<client-id> <public key>` lines; see docs/client-sdk.md.
#pragma once

#include <string>

#include "tributary/core/error.h"

namespace tributary::client {

struct CurveKeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// A fresh keypair (kInternal if this libzmq lacks CURVE).
Result<CurveKeyPair> GenerateKeyPair();
// Writes DIR/NAME.key (0600) and DIR/NAME.pub; kInvalidArgument if they exist.
Result<void> WriteKeyPair(const CurveKeyPair& keys, const std::string& dir, const std::string& name);
// Reads DIR/NAME.key and derives the public key from it.
Result<CurveKeyPair> LoadKeyPair(const std::string& secret_key_file);
// Reads a .pub file (one Z85 key).
Result<std::string> LoadPublicKey(const std::string& public_key_file);

}  // namespace tributary::client
