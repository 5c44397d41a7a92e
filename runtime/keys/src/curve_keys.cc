#include "tributary/keys/curve_keys.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <zmq.h>

namespace tributary::keys {
namespace {

Result<std::string> ReadKey(const std::string& path) {
  std::ifstream in(path);
  std::string key;
  if (!in || !(in >> key)) return MakeError(ErrorCode::kNotFound, "cannot read a key from '" + path + "'");
  if (!IsZ85Key(key)) return MakeError(ErrorCode::kInvalidArgument, "'" + path + "' does not hold a 40-character Z85 key");
  return key;
}

}  // namespace

bool IsZ85Key(const std::string& text) { return text.size() == kZ85KeyChars; }

Result<CurveKeyPair> GenerateKeyPair() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return MakeError(ErrorCode::kInternal, "this libzmq has no CURVE support: " + std::string(zmq_strerror(zmq_errno())));
  }
  return CurveKeyPair{pub, sec};
}

Result<void> WriteKeyPair(const CurveKeyPair& keys, const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  const fs::path secret = fs::path(dir) / (name + ".key"), pub = fs::path(dir) / (name + ".pub");
  if (fs::exists(secret) || fs::exists(pub)) {
    return MakeError(ErrorCode::kInvalidArgument, "keys for '" + name + "' already exist in " + dir);
  }
  {
    const mode_t old = umask(077);  // the secret key is created private
    std::ofstream out(secret);
    umask(old);
    if (!(out << keys.secret_key << "\n")) return MakeError(ErrorCode::kIo, "cannot write " + secret.string());
  }
  std::ofstream out(pub);
  if (!(out << keys.public_key << "\n")) return MakeError(ErrorCode::kIo, "cannot write " + pub.string());
  return Ok();
}

Result<std::string> PublicKeyOf(const std::string& secret_key) {
  char pub[41];
  if (secret_key.size() != 40 || zmq_curve_public(pub, secret_key.c_str()) != 0) {
    return MakeError(ErrorCode::kInvalidArgument, "not a CURVE secret key");
  }
  return std::string(pub);
}

Result<CurveKeyPair> LoadKeyPair(const std::string& secret_key_file) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::string secret, ReadKey(secret_key_file));
  auto pub = PublicKeyOf(secret);
  if (!pub) return MakeError(ErrorCode::kInvalidArgument, "'" + secret_key_file + "' is not a CURVE secret key");
  return CurveKeyPair{pub.value(), secret};
}

Result<std::string> LoadPublicKey(const std::string& public_key_file) { return ReadKey(public_key_file); }

}  // namespace tributary::keys
