// The chart's key hook against an HTTPS API server stand-in (this machine
// has no Kubernetes): the Secret is POSTed with the service account's token
// to the pod's namespace, created once and kept on a second call, the
// server's certificate verified against the account's CA, refusals typed.
#include "tributary/kubernetes/in_cluster.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

namespace tributary::kubernetes {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A self-signed certificate for 127.0.0.1: DIR/NAME.crt and DIR/NAME.pem (key).
void WriteSelfSignedCertificate(const fs::path& dir, const std::string& name) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  ASSERT_NE(key, nullptr);
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* subject = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(cert, subject);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"}, std::pair{NID_basic_constraints, "CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    ASSERT_NE(ext, nullptr);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  ASSERT_GT(X509_sign(cert, key, EVP_sha256()), 0);
  FILE* crt = std::fopen((dir / (name + ".crt")).c_str(), "w");
  FILE* pem = std::fopen((dir / (name + ".pem")).c_str(), "w");
  ASSERT_TRUE(crt && pem);
  PEM_write_X509(crt, cert);
  PEM_write_PrivateKey(pem, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(crt);
  std::fclose(pem);
  X509_free(cert);
  EVP_PKEY_free(key);
}

// The secrets endpoint of one namespace, as the API server answers it.
class FakeApiServer {
 public:
  FakeApiServer(const fs::path& dir, const std::string& cert)
      : server_((dir / (cert + ".crt")).c_str(), (dir / (cert + ".pem")).c_str()) {
    server_.Post(R"(/api/v1/namespaces/([^/]+)/secrets)", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard lock(mu_);
      auto answer = [&](int status, const std::string& reason, const std::string& message) {
        res.status = status;
        res.set_content(json{{"kind", "Status"}, {"status", "Failure"}, {"reason", reason}, {"message", message}}.dump(),
                        "application/json");
      };
      if (req.get_header_value("Authorization") != "Bearer sa-token") return answer(401, "Unauthorized", "Unauthorized");
      const json body = json::parse(req.body);
      const std::string name = body["metadata"]["name"];
      if (body["metadata"]["namespace"] != req.matches[1]) return answer(400, "BadRequest", "namespace mismatch");
      if (!stored_.emplace(name, body).second) {
        return answer(409, "AlreadyExists", "secrets \"" + name + "\" already exists");
      }
      res.status = 201;
      res.set_content(body.dump(), "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ~FakeApiServer() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  std::map<std::string, json> stored() {
    std::lock_guard lock(mu_);
    return stored_;
  }

 private:
  httplib::SSLServer server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, json> stored_;
};

class KubernetesSecretTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tributary-k8s-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_ / "sa");
    WriteSelfSignedCertificate(dir_, "server");
    WriteSelfSignedCertificate(dir_, "stranger");
    fs::copy_file(dir_ / "server.crt", dir_ / "sa" / "ca.crt");
    std::ofstream(dir_ / "sa" / "token") << "sa-token\n";
    std::ofstream(dir_ / "sa" / "namespace") << "fl-prod";
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(KubernetesSecretTest, TheSecretIsCreatedOnceAndKeptAfterwards) {
  FakeApiServer api(dir_, "server");
  const InClusterCredentials credentials = LoadInClusterCredentials((dir_ / "sa").string(), api.url()).value();
  EXPECT_EQ(credentials.namespace_name, "fl-prod");
  const std::map<std::string, std::string> labels = {{"app.kubernetes.io/instance", "fl"}};
  auto first = CreateSecretOnce(credentials, "fl-gateway-keys", {{"gateway.key", "secret\n"}}, labels);
  ASSERT_TRUE(first) << first.error().ToString();
  EXPECT_EQ(first.value(), SecretOutcome::kCreated);
  auto second = CreateSecretOnce(credentials, "fl-gateway-keys", {{"gateway.key", "another\n"}}, labels);
  ASSERT_TRUE(second) << second.error().ToString();
  EXPECT_EQ(second.value(), SecretOutcome::kKept);
  const json stored = api.stored().at("fl-gateway-keys");
  EXPECT_EQ(stored["type"], "Opaque");
  EXPECT_EQ(stored["data"]["gateway.key"], "c2VjcmV0Cg==");  // base64 of "secret\n": the first, not replaced
  EXPECT_EQ(stored["metadata"]["labels"]["app.kubernetes.io/instance"], "fl");
}

TEST_F(KubernetesSecretTest, RefusalsAndAnUnverifiedServerAreTypedErrors) {
  {
    FakeApiServer api(dir_, "server");
    std::ofstream(dir_ / "sa" / "token") << "wrong\n";
    auto refused = CreateSecretOnce(LoadInClusterCredentials((dir_ / "sa").string(), api.url()).value(), "s", {}, {});
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(refused.error().reason.find("HTTP 401"), std::string::npos) << refused.error().reason;
  }
  FakeApiServer impostor(dir_, "stranger");  // its certificate is not the account's CA's
  std::ofstream(dir_ / "sa" / "token") << "sa-token\n";
  auto unverified = CreateSecretOnce(LoadInClusterCredentials((dir_ / "sa").string(), impostor.url()).value(), "s", {}, {});
  ASSERT_FALSE(unverified);
  EXPECT_EQ(unverified.error().code, ErrorCode::kIo) << unverified.error().ToString();
  EXPECT_TRUE(impostor.stored().empty());
}

TEST_F(KubernetesSecretTest, OutsideAPodTheCredentialsAreAConfigError) {
  fs::remove(dir_ / "sa" / "token");
  auto missing = LoadInClusterCredentials((dir_ / "sa").string(), "https://127.0.0.1:1");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kConfig);
  EXPECT_NE(missing.error().reason.find("token"), std::string::npos) << missing.error().reason;
}

}  // namespace
}  // namespace tributary::kubernetes
