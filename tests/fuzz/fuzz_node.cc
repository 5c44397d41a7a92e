// The node agent's control plane as the network drives it: a real NodeService
// (gateway, shared-memory segment, userspace data plane, supervisor) whose
// controller is this harness, a ROUTER it dials. Each input is a sequence of
// multipart messages (messages.h) sent to the node as if from its
// controller: round plans, model publications and their chunks, round
// closes, heartbeats. Functions are started from /bin/false, so every round
// the node runs meets functions that die at once (its failure path). After
// the input a model publication of a new version must land in the node's
// model store (the node handled everything before it: one connection is in
// order), and the node keeps answering.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "messages.h"
#include "tributary/node/node_service.h"
#include "tributary/protocol/codec.h"

using namespace tributary;

namespace {

[[noreturn]] void Fail(const std::string& why) {
  std::fprintf(stderr, "fuzz_node: %s\n", why.c_str());
  std::abort();
}

constexpr const char* kNodeId = "fuzz-node";

struct Fixture {
  std::string endpoint = "ipc:///tmp/tributary-fuzz-node-" + std::to_string(getpid());
  zmq::context_t context{1};
  zmq::socket_t controller{context, zmq::socket_type::router};
  std::unique_ptr<node::NodeService> service;
  uint64_t inputs = 0;

  Fixture() {
    controller.set(zmq::sockopt::linger, 0);
    controller.set(zmq::sockopt::sndhwm, 0);
    controller.bind(endpoint);
    node::NodeOptions o;
    o.node_id = kNodeId;
    o.store = {"tributary.fuzz-node-" + std::to_string(getpid()), 32ull << 20, 1024};
    o.gateway.bind = "ipc:///tmp/tributary-fuzz-node-gateway-" + std::to_string(getpid());
    o.binary = "/bin/false";
    o.dataplane = dataplane::DataPlaneMode::kUserspace;
    o.autoscale = false;
    auto started = node::NodeService::Start(o, {.endpoint = endpoint});
    if (!started) Fail(started.error().ToString());
    service = std::move(started).value();
  }
  ~Fixture() {
    service.reset();
    unlink(endpoint.substr(6).c_str());
  }
};

Fixture& TheFixture() {
  static Fixture f;
  return f;
}

void Send(zmq::socket_t& s, const fuzz::Message& m) {
  s.send(zmq::buffer(std::string(kNodeId)), zmq::send_flags::sndmore);
  for (size_t i = 0; i < m.size(); ++i) {
    s.send(zmq::buffer(m[i]), i + 1 < m.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

// Version `version` of job "fuzz-sentinel": one f32, published in one chunk.
void PublishSentinel(zmq::socket_t& s, uint64_t version) {
  const float value = 1.0f;
  const std::string payload(reinterpret_cast<const char*>(&value), sizeof value);
  v1::Envelope m = protocol::NewEnvelope();
  v1::ModelPublish& p = *m.mutable_model_publish();
  p.set_job_id("fuzz-sentinel");
  p.set_model_version(version);
  protocol::ToProto(agg::ModelSpec::Create({{"w", agg::DType::kF32, {1}}}).value(), p.mutable_model());
  p.set_payload_bytes(payload.size());
  p.set_payload_xxh3(protocol::PayloadHasher::Of(std::as_bytes(std::span(payload))));
  Send(s, {protocol::EncodeEnvelope(m)});
  v1::Envelope c = protocol::NewEnvelope();
  c.mutable_model_publish_chunk()->set_job_id("fuzz-sentinel");
  c.mutable_model_publish_chunk()->set_model_version(version);
  c.mutable_model_publish_chunk()->set_offset(0);
  Send(s, {protocol::EncodeEnvelope(c), payload});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = TheFixture();
  // The node connects (and says hello) asynchronously: wait for its first message once.
  if (f.inputs == 0) {
    f.controller.set(zmq::sockopt::rcvtimeo, 10'000);
    std::vector<zmq::message_t> hello;
    if (!fuzz::Receive(f.controller, hello)) Fail("the node never said hello");
  }
  for (const fuzz::Message& m : fuzz::SplitMessages(data, size)) Send(f.controller, m);
  const uint64_t version = ++f.inputs;
  PublishSentinel(f.controller, version);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    // What the node sends (hellos, heartbeats, partials, failures) is read and dropped.
    std::vector<zmq::message_t> parts;
    while (zmq::recv_multipart(f.controller, std::back_inserter(parts), zmq::recv_flags::dontwait)) parts.clear();
    auto model = f.service->agent().models().Get("fuzz-sentinel");
    if (model && model.value().version == version) break;
    if (std::chrono::steady_clock::now() > give_up) Fail("the node stopped taking its controller's messages");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return 0;
}
