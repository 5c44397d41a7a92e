#include "tributary/kubernetes/in_cluster.h"

#include <httplib.h>
#include <openssl/evp.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace tributary::kubernetes {
namespace {

Result<std::string> ReadTrimmed(const std::string& path) {
  std::ifstream in(path);
  if (!in) return MakeError(ErrorCode::kConfig, "cannot read " + path + " (not running in a Kubernetes pod?)");
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.empty()) return MakeError(ErrorCode::kConfig, path + " is empty");
  return s;
}

std::string Base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace

Result<InClusterCredentials> LoadInClusterCredentials(const std::string& service_account_dir,
                                                      const std::string& server) {
  InClusterCredentials c;
  c.server = server;
  if (c.server.empty()) {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (host == nullptr || port == nullptr) {
      return MakeError(ErrorCode::kConfig, "KUBERNETES_SERVICE_HOST/PORT are not set (not running in a Kubernetes pod?)");
    }
    const std::string h = host;
    c.server = "https://" + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + port;
  }
  TRIBUTARY_ASSIGN_OR_RETURN(c.token, ReadTrimmed(service_account_dir + "/token"));
  TRIBUTARY_ASSIGN_OR_RETURN(c.namespace_name, ReadTrimmed(service_account_dir + "/namespace"));
  c.ca_file = service_account_dir + "/ca.crt";
  TRIBUTARY_TRY(ReadTrimmed(c.ca_file));
  return c;
}

Result<SecretOutcome> CreateSecretOnce(const InClusterCredentials& credentials, const std::string& name,
                                       const std::map<std::string, std::string>& data,
                                       const std::map<std::string, std::string>& labels) {
  nlohmann::json secret = {{"apiVersion", "v1"},
                           {"kind", "Secret"},
                           {"type", "Opaque"},
                           {"metadata", {{"name", name}, {"namespace", credentials.namespace_name}}}};
  for (const auto& [k, v] : labels) secret["metadata"]["labels"][k] = v;
  for (const auto& [k, v] : data) secret["data"][k] = Base64(v);
  httplib::Client client(credentials.server);
  client.set_ca_cert_path(credentials.ca_file);
  client.enable_server_certificate_verification(true);
  client.set_bearer_token_auth(credentials.token);
  client.set_connection_timeout(credentials.timeout);
  client.set_read_timeout(credentials.timeout);
  const std::string path = "/api/v1/namespaces/" + credentials.namespace_name + "/secrets";
  auto response = client.Post(path, secret.dump(), "application/json");
  if (!response) {
    return MakeError(ErrorCode::kIo, "the Kubernetes API server " + credentials.server + " is out of reach: " +
                                         httplib::to_string(response.error()));
  }
  if (response->status == 201) return SecretOutcome::kCreated;
  // The API's Status object says why; AlreadyExists is the one refusal that is an answer.
  const auto status = nlohmann::json::parse(response->body, nullptr, false);
  const std::string reason = status.is_object() ? status.value("reason", "") : "";
  if (response->status == 409 && reason == "AlreadyExists") return SecretOutcome::kKept;
  const std::string message = status.is_object() ? status.value("message", response->body) : response->body;
  return MakeError(ErrorCode::kInvalidArgument, "the Kubernetes API server refused to create Secret '" + name +
                                                    "' (HTTP " + std::to_string(response->status) + "): " + message);
}

}  // namespace tributary::kubernetes
