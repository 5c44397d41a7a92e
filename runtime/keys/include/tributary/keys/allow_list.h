// Client authentication at the gateway: ZeroMQ CURVE with an allow-list.
//
// The allow-list binds each client id to one CURVE public key. It is either a
// directory of `<client-id>.pub` files (each one Z85 key, as `tributary keys
// generate` writes them) or one file of `<client-id> <public key>` lines (a
// word starting with '#' starts a comment; '#' inside a key is part of it). It is re-read when it changes (checked at most once a
// second, on a connection's handshake), so clients are added or revoked
// without a restart; an existing connection keeps the id it was given.
//
// An id ending in '*' binds its key to every id with that prefix ("edge-*":
// edge-1, edge-kiosk...; "*" alone: any id): one key for a fleet that shares
// it, such as the node agents of one Kubernetes node pool, each with its own
// id. Whoever holds such a key may speak as any id of the prefix.
//
// ZapAuthenticator answers ZeroMQ's ZAP requests for a server's context: a
// known key is accepted with its id (or prefix entry) as the connection's
// User-Id; an unknown key is refused (status 400), so its handshake fails.
// The server then checks each message's id with IdAuthorized.
#pragma once

#include <filesystem>
#include <map>
#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "tributary/core/error.h"

namespace zmq {
class context_t;
}

namespace tributary::keys {

// True if a connection whose key is bound to `bound` (an id, or a prefix
// entry ending in '*') may speak as `claimed`.
bool IdAuthorized(const std::string& bound, const std::string& claimed);

class AllowList {
 public:
  // kNotFound if the path does not exist; kConfig for a malformed entry
  // (with the file and line: a bad key, an empty id, a '*' before the id's
  // end) or a key listed for two ids.
  static Result<AllowList> Load(const std::filesystem::path& path);

  // The id (or prefix entry) bound to the key.
  std::optional<std::string> ClientOf(const std::string& z85_key) const;
  size_t size() const { return client_of_.size(); }

 private:
  std::map<std::string, std::string> client_of_;  // public key -> id
};

class ZapAuthenticator {
 public:
  // Binds the context's ZAP endpoint; must run before the server's socket
  // binds. `role` ("gateway", "controller") and `peers` ("client", "node")
  // name the log lines.
  static Result<std::unique_ptr<ZapAuthenticator>> Start(zmq::context_t& context, std::filesystem::path allow_list,
                                                         std::string role, std::string peers);
  ~ZapAuthenticator();
  ZapAuthenticator(const ZapAuthenticator&) = delete;
  ZapAuthenticator& operator=(const ZapAuthenticator&) = delete;

  // Handshakes refused for a key not on the list, since the start.
  uint64_t refused() const;

 private:
  struct Impl;
  explicit ZapAuthenticator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::keys
