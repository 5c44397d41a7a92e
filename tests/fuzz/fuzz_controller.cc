// The controller's control plane as a node on the network drives it: a real
// Controller with one small job, a round in progress most of the time (a
// thread runs rounds for node "n1" back to back, each with a short
// deadline), and each input sent as a sequence of multipart messages
// (messages.h) from a connection whose routing id is "n1": hellos,
// heartbeats, check-ins, partials and their chunks, failures, and anything
// else. The harness plays a node that went bad, not a stranger: it knows the
// plan it was sent, so a plan_id of 1 in a message becomes that plan's id
// (the seeds use 1), and the checks behind the plan id are reached. After the input the controller still takes a hello from n1 (it
// handled every message before it: one connection is in order), and the
// job's model stays finite and of the job's size.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "messages.h"
#include "tributary/controller/controller.h"
#include "tributary/protocol/codec.h"

using namespace tributary;

namespace {

[[noreturn]] void Fail(const std::string& why) {
  std::fprintf(stderr, "fuzz_controller: %s\n", why.c_str());
  std::abort();
}

struct Fixture {
  std::string endpoint = "ipc:///tmp/tributary-fuzz-controller-" + std::to_string(getpid());
  std::unique_ptr<controller::Controller> c;
  zmq::context_t context{1};
  zmq::socket_t node{context, zmq::socket_type::dealer};
  std::atomic<bool> stop{false};
  std::thread rounds;
  uint64_t inputs = 0;
  uint64_t plan_id = 0;  // of the latest RoundPlan the controller sent n1

  Fixture() {
    controller::ControllerOptions options;
    options.bind = endpoint;
    auto started = controller::Controller::Start(options);
    if (!started) Fail(started.error().ToString());
    c = std::move(started).value();
    controller::JobSpec job;
    job.id = "job";
    job.model = agg::ModelSpec::Create({{"w", agg::DType::kF32, {8}}}).value();
    job.initial_model.assign(8, 0.5f);
    job.fan_in = 2;
    job.deadline = std::chrono::milliseconds(200);
    if (auto added = c->AddJob(job); !added) Fail(added.error().ToString());
    node.set(zmq::sockopt::routing_id, "n1");
    node.set(zmq::sockopt::linger, 0);
    node.set(zmq::sockopt::rcvhwm, 0);
    node.connect(endpoint);
    rounds = std::thread([this] {
      while (!stop) {
        // Errors are the point (the fuzzed node rarely delivers): only a crash or a hang is a finding.
        if (!c->RunRound("job", {{"n1", {"c0", "c1"}}})) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }
  ~Fixture() {
    stop = true;
    c->Shutdown();
    rounds.join();
    c.reset();
    unlink(endpoint.substr(6).c_str());
  }
};

Fixture& TheFixture() {
  static Fixture f;
  return f;
}

void SendHello(zmq::socket_t& node, const std::string& version) {
  v1::Envelope e = protocol::NewEnvelope();
  v1::NodeHello& h = *e.mutable_node_hello();
  h.set_node_id("n1");
  h.set_gateway_endpoint("tcp://127.0.0.1:1");
  h.set_version(version);
  h.set_cores(2);
  h.set_segment_bytes(64 << 20);
  h.set_function_limit(8);
  h.set_dataplane("userspace");
  node.send(zmq::buffer(protocol::EncodeEnvelope(e)), zmq::send_flags::none);
}

// Reads what the controller sent n1 (plans, heartbeats): remembers the plan, drops the rest.
void Drain(Fixture& f) {
  std::vector<zmq::message_t> parts;
  while (zmq::recv_multipart(f.node, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
    auto e = protocol::DecodeEnvelope(std::as_bytes(std::span(static_cast<const std::byte*>(parts[0].data()), parts[0].size())), {});
    if (!e) Fail("the controller sent a frame its own codec refuses");
    if (e.value().has_round_plan()) f.plan_id = e.value().round_plan().plan_id();
    parts.clear();
  }
}

// The envelope with the placeholder plan id 1 replaced by the plan n1 was sent.
std::string WithPlan(const std::string& frame, uint64_t plan_id) {
  auto e = protocol::DecodeEnvelope(std::as_bytes(std::span(frame.data(), frame.size())), {});
  if (!e) return frame;
  v1::Envelope& m = e.value();
  bool changed = false;
  auto fix = [&](auto* body) {
    if (body->plan_id() == 1) body->set_plan_id(plan_id), changed = true;
  };
  if (m.has_node_heartbeat()) fix(m.mutable_node_heartbeat());
  if (m.has_node_partial()) fix(m.mutable_node_partial());
  if (m.has_node_partial_chunk()) fix(m.mutable_node_partial_chunk());
  if (m.has_node_round_failed()) fix(m.mutable_node_round_failed());
  return changed ? protocol::EncodeEnvelope(m) : frame;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = TheFixture();
  for (fuzz::Message& m : fuzz::SplitMessages(data, size)) {
    Drain(f);
    m[0] = WithPlan(m[0], f.plan_id);
    for (size_t i = 0; i < m.size(); ++i) {
      f.node.send(zmq::buffer(m[i]), i + 1 < m.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  const std::string version = "sentinel-" + std::to_string(++f.inputs);
  SendHello(f.node, version);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    Drain(f);
    const auto nodes = f.c->NodeDetails();
    if (auto it = nodes.find("n1"); it != nodes.end() && it->second.version == version) break;
    if (std::chrono::steady_clock::now() > give_up) Fail("the controller stopped taking messages");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  auto model = f.c->Model("job");
  if (!model || model.value().size() != 8) Fail("the job's model is gone or resized");
  for (float v : model.value()) {
    if (!std::isfinite(v)) Fail("a node's partial made the model non-finite");
  }
  return 0;
}
