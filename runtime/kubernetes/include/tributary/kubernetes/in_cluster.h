// Talking to the Kubernetes API server from inside a pod, for the one thing
// Tributary needs from it: the Helm chart's key hook creates each CURVE key
// Secret once, at install, and never replaces it (an upgrade must not change
// the keys clients and nodes hold).
//
// Credentials are the pod's service account, as Kubernetes mounts them:
// <dir>/token (bearer token), <dir>/ca.crt (the API server's CA, verified),
// <dir>/namespace. The server is https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
// The account needs only `create` on secrets in its namespace.
//
// Thread safety: plain functions and value types.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "tributary/core/error.h"

namespace tributary::kubernetes {

inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

struct InClusterCredentials {
  std::string server;     // https://host:port
  std::string token;
  std::string ca_file;    // PEM
  std::string namespace_name;
  std::chrono::seconds timeout{10};
};

// From the service account directory and the environment; `server` non-empty
// overrides the environment's. kConfig if anything is missing (not in a pod).
Result<InClusterCredentials> LoadInClusterCredentials(const std::string& service_account_dir = kServiceAccountDir,
                                                      const std::string& server = "");

enum class SecretOutcome { kCreated, kKept };

// Creates an Opaque Secret `name` with `data` (raw bytes per key, base64 on
// the wire) and `labels`, unless one of that name exists: then it is kept
// untouched (kKept). kIo for a server out of reach or a certificate that does
// not verify; kInvalidArgument for any other refusal, with the API server's
// status and message.
Result<SecretOutcome> CreateSecretOnce(const InClusterCredentials& credentials, const std::string& name,
                                       const std::map<std::string, std::string>& data,
                                       const std::map<std::string, std::string>& labels);

}  // namespace tributary::kubernetes
