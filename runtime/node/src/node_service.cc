#include "tributary/node/node_service.h"

#include <httplib.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "tributary/node/metrics.h"
#include "tributary/protocol/codec.h"

namespace tributary::node {

struct NodeService::Impl {
  NodeOptions options;
  std::unique_ptr<NodeAgent> agent;
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::dealer};
  std::atomic<bool> stop{false};
  std::thread thread;
  httplib::Server http;
  int http_port = 0;
  std::thread http_thread;

  void Send(const v1::Envelope& e, const void* frame = nullptr, size_t frame_bytes = 0) {
    const std::string wire = protocol::EncodeEnvelope(e);
    socket.send(zmq::buffer(wire), frame ? zmq::send_flags::sndmore : zmq::send_flags::none);
    if (frame) socket.send(zmq::const_buffer(frame, frame_bytes), zmq::send_flags::none);
  }

  void Hello() {
    v1::Envelope e = protocol::NewEnvelope();
    e.mutable_node_hello()->set_node_id(options.node_id);
    e.mutable_node_hello()->set_gateway_endpoint(agent->gateway_endpoint());
    Send(e);
  }

  void Run() {
    auto last_hello = std::chrono::steady_clock::time_point{};
    while (!stop.load()) {
      if (std::chrono::steady_clock::now() - last_hello > std::chrono::seconds(1)) {
        Hello();
        last_hello = std::chrono::steady_clock::now();
      }
      zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
      agent->ReapIdleFunctions();
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait) || parts.empty()) continue;
      auto e = protocol::DecodeEnvelope(std::span(static_cast<const std::byte*>(parts[0].data()), parts[0].size()),
                                        protocol::Limits{});
      if (!e) continue;
      if (e.value().has_model_publish()) {
        StartModel(e.value().model_publish());
      } else if (e.value().has_model_publish_chunk() && parts.size() == 2) {
        ModelChunk(e.value().model_publish_chunk(), parts[1]);
      } else if (e.value().has_round_plan()) {
        RunRound(e.value().round_plan());
      }
    }
  }

  // A global model arriving from the controller, assembled in shared memory.
  struct IncomingModel {
    v1::ModelPublish header;
    agg::ModelSpec spec;
    shm::BlockRef block;
    uint64_t received = 0;
  };
  std::optional<IncomingModel> incoming;

  void StartModel(const v1::ModelPublish& m) {
    incoming.reset();
    auto spec = protocol::ModelSpecFromProto(m.model());
    if (!spec || spec.value().payload_bytes() != m.payload_bytes()) return;
    auto block = agent->segment().Allocate(m.payload_bytes(), {.kind = shm::BlockKind::kModel, .round = m.model_version()});
    if (!block) return;  // the round's clients will find no model: NOT_FOUND, retryable at their end
    incoming.emplace(IncomingModel{m, std::move(spec).value(), std::move(block).value(), 0});
  }

  void ModelChunk(const v1::ModelPublishChunk& c, const zmq::message_t& frame) {
    if (!incoming || c.model_version() != incoming->header.model_version() || c.offset() != incoming->received ||
        frame.size() > incoming->header.payload_bytes() - incoming->received) {
      incoming.reset();
      return;
    }
    std::memcpy(incoming->block.mutable_bytes().data() + incoming->received, frame.data(), frame.size());
    incoming->received += frame.size();
    if (incoming->received < incoming->header.payload_bytes()) return;
    if (protocol::PayloadHasher::Of(incoming->block.bytes()) == incoming->header.payload_xxh3()) {
      agent->models().Publish(incoming->header.job_id(),
                              gateway::PublishedModel{incoming->header.model_version(), std::move(incoming->spec),
                                                      incoming->header.payload_xxh3(), std::move(incoming->block)},
                              incoming->header.client_id());
    }
    incoming.reset();
  }

  void RunRound(const v1::RoundPlan& plan) {
    auto result = Execute(plan);
    if (result) return;
    v1::Envelope e = protocol::NewEnvelope();
    auto* f = e.mutable_node_round_failed();
    f->set_job_id(plan.job_id());
    f->set_round(plan.round());
    f->set_node_id(options.node_id);
    *f->mutable_error() = protocol::ToErrorReply(result.error());
    Send(e);
  }

  Result<void> Execute(const v1::RoundPlan& plan) {
    gateway::RoundSpec spec;
    spec.job = plan.job_id();
    spec.round = plan.round();
    spec.model_version = plan.model_version();
    spec.reject_non_finite = plan.reject_non_finite();
    spec.client_config = protocol::FromProto(plan.client_config());
    TRIBUTARY_ASSIGN_OR_RETURN(spec.model, protocol::ModelSpecFromProto(plan.model()));
    for (const auto& [client, key] : plan.clients()) spec.selected[client] = key;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(plan.deadline_ms());
    if (plan.personalized()) {
      agent->models().DropPersonalBefore(plan.job_id(), plan.model_version());
      TRIBUTARY_ASSIGN_OR_RETURN(
          const uint64_t updates, agent->RunPersonalRound(std::move(spec), deadline, [&](ClientUpdate u) -> Result<void> {
            SendPartial(plan, u.client, u.weight, 1, std::as_bytes(std::span(u.values)));
            return Ok();
          }));
      SendPartial(plan, "", 0, updates, {});  // the node's round is over
      return Ok();
    }
    TRIBUTARY_TRY(agent->OpenRound(std::move(spec), plan.fan_in()));
    TRIBUTARY_ASSIGN_OR_RETURN(NodeRoundResult result, agent->WaitRound(deadline));
    SendPartial(plan, "", result.partial.meta().weight, result.partial.meta().updates, result.partial.bytes());
    return Ok();
  }

  // A NodePartial and its chunks: the node's aggregate, or (with `client`)
  // one client's update of a personalized round.
  void SendPartial(const v1::RoundPlan& plan, const std::string& client, double weight, uint64_t updates,
                   std::span<const std::byte> bytes) {
    v1::Envelope head = protocol::NewEnvelope();
    auto* p = head.mutable_node_partial();
    p->set_job_id(plan.job_id());
    p->set_round(plan.round());
    p->set_node_id(options.node_id);
    p->set_client_id(client);
    p->set_weight(weight);
    p->set_updates(updates);
    p->set_payload_bytes(bytes.size());
    p->set_payload_xxh3(protocol::PayloadHasher::Of(bytes));
    Send(head);
    for (uint64_t off = 0; off < bytes.size(); off += protocol::kControlChunkBytes) {
      v1::Envelope c = protocol::NewEnvelope();
      auto* chunk = c.mutable_node_partial_chunk();
      chunk->set_job_id(plan.job_id());
      chunk->set_round(plan.round());
      chunk->set_node_id(options.node_id);
      chunk->set_offset(off);
      Send(c, bytes.data() + off, std::min<uint64_t>(protocol::kControlChunkBytes, bytes.size() - off));
    }
  }
};

NodeService::NodeService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<NodeService>> NodeService::Start(const NodeOptions& options, const std::string& controller,
                                                        const std::string& metrics_bind) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  TRIBUTARY_ASSIGN_OR_RETURN(impl->agent, NodeAgent::Start(options));
  try {
    impl->socket.set(zmq::sockopt::linger, 1000);
    impl->socket.set(zmq::sockopt::routing_id, options.node_id);
    impl->socket.connect(controller);
  } catch (const zmq::error_t& e) {
    return MakeError(ErrorCode::kIo, "cannot connect to the controller at " + controller + ": " + e.what());
  }
  Impl* raw = impl.get();
  if (!metrics_bind.empty()) {
    const size_t colon = metrics_bind.rfind(':');
    if (colon == std::string::npos) return MakeError(ErrorCode::kConfig, "metrics_bind must be host:port");
    const std::string host = metrics_bind.substr(0, colon);
    const int port = std::atoi(metrics_bind.c_str() + colon + 1);
    impl->http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
    impl->http.Get("/metrics", [raw](const httplib::Request&, httplib::Response& res) {
      res.set_content(RenderPrometheus(raw->options.node_id, raw->agent->Stats()), "text/plain; version=0.0.4");
    });
    impl->http_port = port == 0 ? impl->http.bind_to_any_port(host) : (impl->http.bind_to_port(host, port) ? port : -1);
    if (impl->http_port <= 0) return MakeError(ErrorCode::kIo, "cannot serve metrics on " + metrics_bind);
    impl->http_thread = std::thread([raw] { raw->http.listen_after_bind(); });
  }
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<NodeService>(new NodeService(std::move(impl)));
}

NodeService::~NodeService() {
  impl_->stop = true;
  impl_->agent->Shutdown();  // a round in progress ends now
  impl_->thread.join();
  impl_->incoming.reset();
  if (impl_->http_thread.joinable()) {
    impl_->http.stop();
    impl_->http_thread.join();
  }
}

int NodeService::metrics_port() const { return impl_->http_port; }

NodeAgent& NodeService::agent() { return *impl_->agent; }

}  // namespace tributary::node
