// Client authentication at the gateway: ZeroMQ CURVE with an allow-list.
//
// The allow-list binds each client id to one CURVE public key. It is either a
// directory of `<client-id>.pub` files (each one Z85 key, as `tributary keys
// generate` writes them) or one file of `<client-id> <public key>` lines (a
// word starting with '#' starts a comment; '#' inside a key is part of it). It is re-read when it changes (checked at most once a
// second, on a connection's handshake), so clients are added or revoked
// without a restart; an existing connection keeps the id it was given.
//
// ClientAuthenticator answers ZeroMQ's ZAP requests for the gateway's context:
// a known key is accepted with its client id as the connection's User-Id; an
// unknown key is refused (status 400), so its handshake fails. The gateway
// then checks that every message's client id equals the connection's User-Id.
//
// Thread safety: ClientAuthenticator runs its own thread; AllowList is a value.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "tributary/core/error.h"

namespace zmq {
class context_t;
}

namespace tributary::gateway {

class AllowList {
 public:
  // kNotFound if the path does not exist; kConfig for a malformed entry
  // (with the file and line) or a key listed for two clients.
  static Result<AllowList> Load(const std::filesystem::path& path);

  std::optional<std::string> ClientOf(const std::string& z85_key) const;
  size_t size() const { return client_of_.size(); }

 private:
  std::map<std::string, std::string> client_of_;  // public key -> client id
};

class ClientAuthenticator {
 public:
  // Binds the context's ZAP endpoint; must run before the gateway's socket binds.
  static Result<std::unique_ptr<ClientAuthenticator>> Start(zmq::context_t& context, std::filesystem::path allow_list);
  ~ClientAuthenticator();
  ClientAuthenticator(const ClientAuthenticator&) = delete;
  ClientAuthenticator& operator=(const ClientAuthenticator&) = delete;

 private:
  struct Impl;
  explicit ClientAuthenticator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::gateway
