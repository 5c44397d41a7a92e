// The gateway's request handling as a client on the network drives it: a
// real Gateway on a real ROUTER socket, fed each input as a sequence of
// multipart messages (messages.h) over one connection: envelopes through
// header validation and admission, chunk sequences for the uploads they
// open, model and task requests. Each input gets a fresh gateway and round
// (so upload ids start at 1, as the seeds expect) in one long-lived segment.
// After the input: the gateway still answers, every block it took is either
// an accepted update (the sink drops it) or an upload in progress, and
// stopping it leaves only the published model in the segment.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fuzz_fixture.h"
#include "messages.h"
#include "tributary/gateway/gateway.h"

using namespace tributary;

namespace {

struct DroppingSink final : gateway::UpdateSink {
  Result<void> Accept(const gateway::AcceptedUpdate&, shm::BlockRef) override { return Ok(); }
};

struct Fixture {
  std::unique_ptr<shm::Segment> segment =
      shm::Segment::Create({"tributary.fuzz-gateway-" + std::to_string(getpid()), 16ull << 20, 4096}).value();
  gateway::ModelStore models;
  DroppingSink sink;
  zmq::context_t context{1};
  std::string endpoint = "ipc:///tmp/tributary-fuzz-gateway-" + std::to_string(getpid());

  Fixture() {
    const agg::ModelSpec spec = fuzz::GatewayModel();
    auto block = segment->Allocate(spec.payload_bytes(), {.kind = shm::BlockKind::kModel});
    const std::string payload = fuzz::GatewayPayload(1.0f);
    std::memcpy(block.value().mutable_bytes().data(), payload.data(), payload.size());
    models.Publish(fuzz::kGatewayJob, {fuzz::kGatewayModelVersion, spec,
                                       protocol::PayloadHasher::Of(std::as_bytes(std::span(payload))),
                                       std::move(block).value()});
  }
  ~Fixture() {
    models.Clear();
    unlink(endpoint.substr(6).c_str());
  }
};

Fixture& TheFixture() {
  static Fixture f;
  return f;
}

[[noreturn]] void Fail(const char* why) {
  std::fprintf(stderr, "fuzz_gateway: %s\n", why);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = TheFixture();
  gateway::RoundBook rounds;
  rounds.OpenRound(fuzz::GatewayRound());
  gateway::GatewayOptions options;
  options.bind = f.endpoint;
  options.max_chunk_bytes = fuzz::kGatewayChunkBytes;
  options.limits.max_envelope_bytes = 1 << 16;
  options.max_uploads = 8;
  auto started = gateway::Gateway::Start(options, *f.segment, rounds, f.sink, f.models);
  if (!started) Fail(started.error().ToString().c_str());
  std::unique_ptr<gateway::Gateway> g = std::move(started).value();

  zmq::socket_t client(f.context, zmq::socket_type::dealer);
  client.set(zmq::sockopt::linger, 0);
  client.set(zmq::sockopt::rcvhwm, 0);
  client.set(zmq::sockopt::sndhwm, 0);
  client.connect(g->endpoint());
  for (const fuzz::Message& m : fuzz::SplitMessages(data, size)) {
    for (size_t i = 0; i < m.size(); ++i) {
      client.send(zmq::buffer(m[i]), i + 1 < m.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  // Answered in order on one connection: once this is, every message before it was handled.
  v1::Envelope sentinel = protocol::NewEnvelope(fuzz::kSentinelRequest);
  sentinel.mutable_task_request()->set_client_id("fuzz-sentinel");
  client.send(zmq::buffer(protocol::EncodeEnvelope(sentinel)), zmq::send_flags::none);
  client.set(zmq::sockopt::rcvtimeo, 10'000);
  for (;;) {
    std::vector<zmq::message_t> parts;
    if (!fuzz::Receive(client, parts)) Fail("the gateway stopped answering");
    auto reply = protocol::DecodeEnvelope(std::as_bytes(std::span(static_cast<const std::byte*>(parts[0].data()), parts[0].size())), {});
    if (!reply) Fail("the gateway sent a frame its own codec refuses");
    if (reply.value().request_id() == fuzz::kSentinelRequest) break;
  }
  (void)g->TakeCheckIns(1 << 20);  // as the node agent does, so check-ins do not pile up
  const gateway::GatewayStats stats = g->Stats();
  if (f.segment->Stats().live_blocks != 1 + stats.uploads_in_progress) Fail("a block outlived its upload");
  g.reset();
  if (f.segment->Stats().live_blocks != 1) Fail("a stopped gateway left a block behind");
  return 0;
}
