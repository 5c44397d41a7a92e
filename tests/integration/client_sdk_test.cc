// The client SDK against a real node agent (gateway, functions, data plane):
// rounds through Run(), compression, resumed uploads, typed rejections, CURVE
// authentication, and a client that vanishes mid-round.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "support/tcp_proxy.h"
#include "support/upload_client.h"
#include "tributary/client/run.h"
#include "tributary/node/node_agent.h"

namespace tributary::client {
namespace {

using Clock = std::chrono::steady_clock;

agg::ModelSpec Model() {
  return agg::ModelSpec::Create({{"w", agg::DType::kF32, {64, 32}}, {"b", agg::DType::kF32, {32}}}).value();
}

// A client whose update is global + offset * (i + 1) per element i, trained
// on `examples` samples; it records the config it was given.
class OffsetClient : public Client {
 public:
  OffsetClient(float offset, uint64_t examples) : offset_(offset), examples_(examples) {}

  Parameters GetParameters() override {
    Parameters p;
    const agg::ModelSpec m = Model();
    for (const auto& t : m.tensors()) p.push_back({t.name, t.shape, std::vector<float>(t.elements())});
    return p;
  }

  Result<FitResult> Fit(const Parameters& global, const Config& config) override {
    lr_seen = ConfigDouble(config, "lr", -1);
    FitResult r{global, examples_, {{"loss", 0.5}}};
    size_t i = 0;
    for (Tensor& t : r.parameters) {
      for (float& x : t.values) x += offset_ * static_cast<float>(++i % 97) * static_cast<float>(lr_seen);
    }
    return r;
  }

  Result<EvaluateResult> Evaluate(const Parameters&, const Config&) override { return EvaluateResult{1.5, 10, {}}; }

  double lr_seen = 0;

 private:
  float offset_;
  uint64_t examples_;
};

class ClientSdkTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({}); }

  void Start(gateway::GatewaySecurity security) {
    agent_.reset();
    node::NodeOptions o;
    o.node_id = "sdk-" + std::to_string(getpid());
    o.store = {"tributary." + o.node_id, 256ull << 20, 4096};
    o.binary = TRIBUTARY_BINARY;
    o.gateway.security = std::move(security);
    o.gateway.task_poll_interval = std::chrono::milliseconds(20);
    auto agent = node::NodeAgent::Start(o);
    ASSERT_TRUE(agent) << agent.error().ToString();
    agent_ = std::move(agent).value();
  }

  // Publishes `values` as version `version` of job "job".
  void Publish(uint64_t version, const std::vector<float>& values) {
    const agg::ModelSpec m = Model();
    auto block = agent_->segment().Allocate(m.payload_bytes(), {shm::BlockKind::kModel});
    ASSERT_TRUE(block);
    std::memcpy(block.value().mutable_bytes().data(), values.data(), values.size() * 4);
    const uint64_t xxh3 = protocol::PayloadHasher::Of(block.value().bytes());
    agent_->models().Publish("job", gateway::PublishedModel{version, m, xxh3, std::move(block).value()});
  }

  gateway::RoundSpec Spec(uint64_t round, uint64_t version, const std::vector<std::string>& clients) {
    gateway::RoundSpec s;
    s.job = "job";
    s.round = round;
    s.model_version = version;
    s.model = Model();
    s.client_config = {{"lr", 2.0}, {"evaluate", true}};
    for (size_t i = 0; i < clients.size(); ++i) s.selected[clients[i]] = static_cast<uint32_t>(100 + i);
    return s;
  }

  SessionOptions Options(const std::string& client) {
    SessionOptions o;
    o.endpoint = agent_->gateway_endpoint();
    o.client_id = client;
    o.request_timeout = std::chrono::milliseconds(2000);
    o.retry.attempts = 4;
    return o;
  }

  // sum_k w_k * (global + offset_k * pattern): the node's partial for OffsetClients.
  static std::vector<double> Expected(const std::vector<float>& global, const std::vector<std::pair<float, uint64_t>>& clients,
                                      double lr) {
    std::vector<double> sum(global.size(), 0.0);
    for (const auto& [offset, w] : clients) {
      for (size_t i = 0; i < sum.size(); ++i) {
        sum[i] += static_cast<double>(w) * (global[i] + offset * static_cast<double>((i + 1) % 97) * lr);
      }
    }
    return sum;
  }

  static double MaxAbsError(const shm::BlockRef& partial, const std::vector<double>& want) {
    const float* got = reinterpret_cast<const float*>(partial.bytes().data());
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
    return worst;
  }

  std::unique_ptr<node::NodeAgent> agent_;
};

TEST_F(ClientSdkTest, RunDrivesRoundsAndPassesTheConfig) {
  const std::vector<std::string> ids = {"c0", "c1", "c2", "c3", "c4", "c5"};
  std::vector<OffsetClient> clients;
  for (size_t k = 0; k < ids.size(); ++k) clients.emplace_back(0.01f * static_cast<float>(k + 1), 10 + k);
  std::vector<float> global(Model().elements(), 0.25f);
  Publish(0, global);
  std::vector<std::thread> threads;
  std::vector<Result<RunSummary>> summaries(ids.size(), MakeError(ErrorCode::kInternal, "not run"));
  for (size_t k = 0; k < ids.size(); ++k) {
    threads.emplace_back([&, k] {
      RunOptions o;
      o.session = Options(ids[k]);
      o.max_rounds = 2;
      o.max_idle = std::chrono::seconds(30);
      summaries[k] = client::Run(clients[k], o);
    });
  }
  for (uint64_t round = 1; round <= 2; ++round) {
    ASSERT_TRUE(agent_->OpenRound(Spec(round, round - 1, ids), 4));
    auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
    ASSERT_TRUE(result) << result.error().ToString();
    ASSERT_EQ(result.value().partial.meta().updates, ids.size());
    std::vector<std::pair<float, uint64_t>> weights;
    for (size_t k = 0; k < ids.size(); ++k) weights.emplace_back(0.01f * static_cast<float>(k + 1), 10 + k);
    EXPECT_LT(MaxAbsError(result.value().partial, Expected(global, weights, 2.0)), 1e-3) << "round " << round;
    // The next round trains from the new model.
    for (float& x : global) x += 1.0f;
    Publish(round, global);
  }
  for (auto& t : threads) t.join();
  for (size_t k = 0; k < ids.size(); ++k) {
    ASSERT_TRUE(summaries[k]) << summaries[k].error().ToString();
    EXPECT_EQ(summaries[k].value().rounds, 2u);
    EXPECT_EQ(clients[k].lr_seen, 2.0);
  }
  EXPECT_EQ(agent_->Stats().gateway.clients_seen, ids.size());
}

// Each compression decodes before folding; the bytes saved are reported.
TEST_F(ClientSdkTest, CompressedUpdatesFoldWithinTheirPrecision) {
  const std::vector<float> global(Model().elements(), 0.5f);
  Publish(0, global);
  struct Case {
    Compression c;
    double tolerance;    // per element, for weight 10 and offsets up to 0.96
    uint64_t bytes_per;  // per value on the wire
  };
  uint64_t round = 1;
  for (const Case& c : {Case{Compression::kF16, 10 * 2e-3, 2}, Case{Compression::kBF16, 10 * 1e-2, 2},
                        Case{Compression::kInt8, 10 * 1.5 / 127, 1}}) {
    ASSERT_TRUE(agent_->OpenRound(Spec(round, 0, {"z"}), 4));
    auto s = Session::Connect(Options("z"), c.c);
    ASSERT_TRUE(s);
    auto poll = s.value()->NextTask();
    ASSERT_TRUE(poll && poll.value().task);
    auto params = s.value()->FetchModel(*poll.value().task);
    ASSERT_TRUE(params) << params.error().ToString();
    OffsetClient client(0.01f, 10);
    auto fit = client.Fit(params.value(), poll.value().task->config);
    auto sent = s.value()->Submit(*poll.value().task, fit.value());
    ASSERT_TRUE(sent) << sent.error().ToString();
    EXPECT_LE(sent.value().bytes_sent, Model().elements() * c.bytes_per + 8);
    EXPECT_GE(sent.value().bytes_saved + 8, Model().elements() * (4 - c.bytes_per));  // int8: two 4-byte scales
    auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
    ASSERT_TRUE(result) << result.error().ToString();
    EXPECT_LT(MaxAbsError(result.value().partial, Expected(global, {{0.01f, 10}}, 2.0)), c.tolerance)
        << "compression " << static_cast<int>(c.c);
    ++round;
  }
}

// Downloading into the same GlobalModel again reuses its storage and brings
// the newer version whole, in several chunks.
TEST_F(ClientSdkTest, ADownloadIntoAModelReusesItsBuffer) {
  std::vector<float> values(Model().elements());
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.25f;
  Publish(3, values);
  SessionOptions o = Options("d");
  o.chunk_bytes = 1000;  // 9 chunks, more than the window of requests in flight
  auto s = GatewaySession::Connect(o);
  ASSERT_TRUE(s);
  GlobalModel m;
  ASSERT_TRUE(s.value()->DownloadModel("job", m));
  ASSERT_EQ(m.payload.size(), values.size() * 4);
  EXPECT_EQ(m.version, 3u);
  EXPECT_EQ(std::memcmp(m.payload.data(), values.data(), m.payload.size()), 0);
  const std::byte* buffer = m.payload.data();

  for (float& v : values) v = -v - 1.0f;
  Publish(4, values);
  ASSERT_TRUE(s.value()->DownloadModel("job", m));
  EXPECT_EQ(m.version, 4u);
  EXPECT_EQ(m.payload.data(), buffer);
  EXPECT_EQ(std::memcmp(m.payload.data(), values.data(), m.payload.size()), 0);
  ASSERT_EQ(m.tensors.size(), 2u);
  EXPECT_EQ(m.tensors[0].name, "w");
}

// Sessions sharing one context (a process with many clients) each download
// on their own connection, and the context outlives a session released first.
TEST_F(ClientSdkTest, SessionsShareAContext) {
  EXPECT_EQ(SharedContext::Create(0, 8).error().code, ErrorCode::kInvalidArgument);
  std::vector<float> values(Model().elements(), 1.5f);
  Publish(2, values);
  auto context = SharedContext::Create(1, 64);
  ASSERT_TRUE(context) << context.error().ToString();
  std::vector<std::unique_ptr<GatewaySession>> sessions;
  for (const char* id : {"s1", "s2", "s3"}) {
    SessionOptions o = Options(id);
    o.context = context.value();
    auto s = GatewaySession::Connect(o);
    ASSERT_TRUE(s) << s.error().ToString();
    sessions.push_back(std::move(s).value());
  }
  context.value().reset();  // the sessions hold it
  sessions.front().reset();
  for (size_t i = 1; i < sessions.size(); ++i) {
    auto m = sessions[i]->DownloadModel("job");
    ASSERT_TRUE(m) << m.error().ToString();
    EXPECT_EQ(m.value().version, 2u);
    EXPECT_EQ(std::memcmp(m.value().payload.data(), values.data(), m.value().payload.size()), 0);
  }
}

// The connection breaks mid-upload: the retry resumes from what the gateway
// holds, and the update is folded exactly once.
TEST_F(ClientSdkTest, AnInterruptedUploadResumes) {
  std::vector<float> global(Model().elements(), 0.0f);
  Publish(0, global);
  ASSERT_TRUE(agent_->OpenRound(Spec(1, 0, {"r"}), 4));
  const uint16_t port = static_cast<uint16_t>(std::stoi(agent_->gateway_endpoint().substr(agent_->gateway_endpoint().rfind(':') + 1)));
  testing::TcpProxy proxy(port, 4000);  // cut after a few chunks
  SessionOptions o = Options("r");
  o.endpoint = proxy.endpoint();
  o.chunk_bytes = 1024;
  // Long enough for the first connection to reach the cut even under a
  // sanitizer: a timeout before it would retry on a connection never cut.
  o.request_timeout = std::chrono::milliseconds(1500);
  auto s = GatewaySession::Connect(o);
  ASSERT_TRUE(s);
  std::vector<float> payload(Model().elements(), 3.0f);
  UpdateFrame u{"job", 1, 0, 7, Model().tensors(), std::as_bytes(std::span<const float>(payload)), {}};
  auto receipt = s.value()->Upload(u);
  ASSERT_TRUE(receipt) << receipt.error().ToString();
  EXPECT_TRUE(proxy.cut());
  EXPECT_GT(receipt.value().resumed_from, 0u);
  EXPECT_GE(receipt.value().attempts, 2u);
  auto result = agent_->WaitRound(Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_EQ(result.value().partial.meta().updates, 1u);
  EXPECT_EQ(reinterpret_cast<const float*>(result.value().partial.bytes().data())[5], 21.0f);
}

// Permanent errors come back typed and are not retried.
TEST_F(ClientSdkTest, RejectionsSurfaceAsTypedErrors) {
  std::vector<float> global(Model().elements(), 0.0f);
  Publish(0, global);
  ASSERT_TRUE(agent_->OpenRound(Spec(1, 0, {"good", "dup"}), 4));
  std::vector<float> payload(Model().elements(), 1.0f);
  auto upload = [&](const std::string& client, const std::string& job, uint64_t round, uint64_t version,
                    std::vector<agg::TensorSpec> tensors) -> ErrorCode {
    auto s = GatewaySession::Connect(Options(client));
    auto r = s.value()->Upload(
        UpdateFrame{job, round, version, 5, std::move(tensors), std::as_bytes(std::span<const float>(payload)), {}});
    return r ? ErrorCode::kOk : r.error().code;
  };
  auto wrong = Model().tensors();
  std::swap(wrong[0].shape[0], wrong[0].shape[1]);
  EXPECT_EQ(upload("stranger", "job", 1, 0, Model().tensors()), ErrorCode::kNotSelected);
  EXPECT_EQ(upload("good", "nojob", 1, 0, Model().tensors()), ErrorCode::kUnknownJob);
  EXPECT_EQ(upload("good", "job", 2, 0, Model().tensors()), ErrorCode::kRoundClosed);
  EXPECT_EQ(upload("good", "job", 1, 7, Model().tensors()), ErrorCode::kReplay);
  EXPECT_EQ(upload("good", "job", 1, 0, wrong), ErrorCode::kShapeMismatch);
  EXPECT_EQ(upload("dup", "job", 1, 0, Model().tensors()), ErrorCode::kOk);
  EXPECT_EQ(upload("dup", "job", 1, 0, Model().tensors()), ErrorCode::kDuplicateUpdate);
  // NaN never leaves the client.
  auto s = Session::Connect(Options("good"));
  Parameters nan = OffsetClient(0, 1).GetParameters();
  nan[1].values[3] = std::nanf("");
  auto sent = s.value()->Submit(Task{"job", 1, 0, {}}, FitResult{nan, 5, {}});
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code, ErrorCode::kNonFinite);
  // One rejection per attempt above: none was retried.
  uint64_t rejected = 0;
  for (const auto& [code, n] : agent_->Stats().gateway.rejected) rejected += n;
  EXPECT_EQ(rejected, 6u);
}

// A client that starts an upload and vanishes does not hold the round past its deadline.
TEST_F(ClientSdkTest, AVanishedClientDoesNotBlockTheRound) {
  std::vector<float> global(Model().elements(), 0.0f);
  Publish(0, global);
  ASSERT_TRUE(agent_->OpenRound(Spec(1, 0, {"stays", "leaves"}), 4));
  {
    testing::UploadClient raw(agent_->gateway_endpoint());
    v1::UpdateHeader h;
    h.set_job_id("job");
    h.set_round(1);
    h.set_client_id("leaves");
    h.set_sample_count(3);
    const agg::ModelSpec m = Model();
    for (const auto& t : m.tensors()) *h.add_tensors() = protocol::ToProto(t);
    h.set_payload_bytes(Model().payload_bytes());
    h.set_payload_xxh3(1);
    auto ready = raw.Header(h);
    ASSERT_TRUE(ready);
    ASSERT_TRUE(raw.Chunk(ready.value().upload_ready().upload_id(), 0, std::string(4096, '\0')));
  }  // gone, mid-upload
  OffsetClient stays(0.5f, 4);
  auto s = Session::Connect(Options("stays"));
  auto task = s.value()->NextTask();
  ASSERT_TRUE(task && task.value().task);
  auto fit = stays.Fit(s.value()->FetchModel(*task.value().task).value(), task.value().task->config);
  ASSERT_TRUE(s.value()->Submit(*task.value().task, fit.value()));
  const auto t0 = Clock::now();
  auto result = agent_->WaitRound(t0 + std::chrono::milliseconds(500));
  ASSERT_TRUE(result) << result.error().ToString();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(result.value().partial.meta().updates, 1u);
}

class CurveTest : public ClientSdkTest {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/curve-" + std::to_string(getpid());
    std::filesystem::remove_all(dir_);
    gateway_ = GenerateKeyPair().value();
    alice_ = GenerateKeyPair().value();
    bob_ = GenerateKeyPair().value();
    ASSERT_TRUE(WriteKeyPair(alice_, dir_ + "/clients", "alice"));
    std::filesystem::remove(dir_ + "/clients/alice.key");  // the gateway holds public keys only
    Start({gateway_.secret_key, dir_ + "/clients"});
    Publish(0, std::vector<float>(Model().elements(), 0.0f));
    ASSERT_TRUE(agent_->OpenRound(Spec(1, 0, {"alice", "bob"}), 4));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Result<TaskPoll> Ask(const std::string& id, const CurveKeyPair& keys) {
    SessionOptions o = Options(id);
    o.curve = CurveOptions{gateway_.public_key, keys};
    auto s = GatewaySession::Connect(o);
    if (!s) return std::move(s).error();
    return s.value()->RequestTask();
  }

  std::string dir_;
  CurveKeyPair gateway_, alice_, bob_;
};

TEST_F(CurveTest, AKnownKeyIsServed) {
  auto poll = Ask("alice", alice_);
  ASSERT_TRUE(poll) << poll.error().ToString();
  ASSERT_TRUE(poll.value().task);
  EXPECT_EQ(poll.value().task->round, 1u);
}

TEST_F(CurveTest, AnUnknownKeyIsRefusedAtOnce) {
  const auto t0 = Clock::now();
  auto poll = Ask("bob", bob_);
  ASSERT_FALSE(poll);
  EXPECT_EQ(poll.error().code, ErrorCode::kUnknownClient) << poll.error().ToString();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(1)) << "refused, not timed out";
}

TEST_F(CurveTest, AKeyCannotSpeakForAnotherClient) {
  auto poll = Ask("bob", alice_);
  ASSERT_FALSE(poll);
  EXPECT_EQ(poll.error().code, ErrorCode::kUnknownClient);
  EXPECT_NE(poll.error().reason.find("belongs to client 'alice'"), std::string::npos) << poll.error().reason;
}

TEST_F(CurveTest, TheAllowListReloadsWithoutARestart) {
  ASSERT_FALSE(Ask("bob", bob_));
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // the list is checked at most once a second
  std::ofstream(dir_ + "/clients/bob.pub") << bob_.public_key << "\n";
  auto poll = Ask("bob", bob_);
  ASSERT_TRUE(poll) << poll.error().ToString();
  EXPECT_TRUE(poll.value().task);
}

TEST_F(CurveTest, APlaintextClientGetsNoAnswer) {
  SessionOptions o = Options("alice");
  o.request_timeout = std::chrono::milliseconds(300);
  o.retry.attempts = 1;
  auto s = GatewaySession::Connect(o);
  auto poll = s.value()->RequestTask();
  ASSERT_FALSE(poll);
  EXPECT_TRUE(poll.error().code == ErrorCode::kIo || poll.error().code == ErrorCode::kUnknownClient)
      << poll.error().ToString();
}

}  // namespace
}  // namespace tributary::client
