// CURVE keys for clients: a client has a keypair and knows its gateway's
// public key. The key files are read and written by runtime/keys (the same
// code the gateway uses); this header gives them the SDK's names. See
// tributary/keys/curve_keys.h for the file format and errors.
#pragma once

#include "tributary/keys/curve_keys.h"

namespace tributary::client {

using keys::CurveKeyPair;
using keys::GenerateKeyPair;
using keys::LoadKeyPair;
using keys::LoadPublicKey;
using keys::WriteKeyPair;

}  // namespace tributary::client
