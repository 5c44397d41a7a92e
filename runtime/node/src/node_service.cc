#include "tributary/node/node_service.h"

#include <httplib.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "tributary/node/metrics.h"
#include "tributary/protocol/codec.h"
#include "tributary/core/zmq_poll.h"

namespace tributary::node {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kBeatInterval = std::chrono::milliseconds(500);
constexpr size_t kCheckInsPerMessage = 10'000;  // per collection from the gateway
constexpr size_t kCheckInMessageBytes = 1 << 20;
constexpr size_t kMaxCheckInBytes = 4096;

// A message for the controller, queued by the round worker for the socket's thread.
struct Outgoing {
  std::string envelope;
  std::string frame;  // empty: none
};

}  // namespace

struct NodeService::Impl {
  NodeOptions options;
  std::string advertised_gateway;  // ControllerLink::advertised_gateway
  std::unique_ptr<NodeAgent> agent;
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::dealer};
  std::atomic<bool> stop{false};
  std::thread thread;
  httplib::Server http;
  int http_port = 0;
  std::thread http_thread;

  // Controller state, on the socket's thread.
  std::optional<uint64_t> controller_instance;
  Clock::time_point last_beat{}, last_check_ins{};
  std::optional<RoundProgress> reported;

  // The round worker: plans in, messages out.
  std::mutex mu;
  std::condition_variable wake;
  std::deque<v1::RoundPlan> plans;
  std::optional<v1::RoundPlan> running;
  std::set<uint64_t> closed;  // plans the controller closed (RoundClose)
  std::deque<Outgoing> outbox;
  std::thread worker;

  void Send(const std::string& wire, const std::string& frame = {}) {
    // A controller out of reach for long loses what does not fit its queue
    // (a heartbeat, a partial it would refuse anyway); the thread must not block.
    try {
      if (!socket.send(zmq::buffer(wire), (frame.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore) |
                                              zmq::send_flags::dontwait)) {
        return;
      }
      if (!frame.empty()) (void)socket.send(zmq::buffer(frame), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      spdlog::warn("node {}: send to the controller failed: {}", options.node_id, e.what());
    }
  }
  void Send(const v1::Envelope& e) { Send(protocol::EncodeEnvelope(e)); }

  void Hello() {
    v1::Envelope e = protocol::NewEnvelope();
    auto* h = e.mutable_node_hello();
    h->set_node_id(options.node_id);
    h->set_gateway_endpoint(advertised_gateway.empty() ? agent->gateway_endpoint() : advertised_gateway);
    h->set_gateway_public_key(agent->gateway_public_key());
    h->set_fold_bytes_per_s(agent->Stats().fold_bytes_per_s);
    h->set_function_fold_bytes_per_s(agent->Stats().function_fold_bytes_per_s);
    h->set_version(TRIBUTARY_VERSION);
    h->set_cores(std::max(1u, std::thread::hardware_concurrency()));
    h->set_segment_bytes(options.store.bytes);
    const NodeStats stats = agent->Stats();
    h->set_function_limit(stats.function_limit);
    h->set_dataplane(stats.dataplane);
    Send(e);
  }

  void Heartbeat() {
    v1::Envelope e = protocol::NewEnvelope();
    auto* h = e.mutable_node_heartbeat();
    h->set_node_id(options.node_id);
    const NodeStats stats = agent->Stats();
    h->set_segment_free_bytes(stats.store.capacity_bytes - std::min(stats.store.capacity_bytes,
                                                                    stats.store.allocator_bytes_in_use));
    h->set_functions_live(stats.functions.live);
    h->set_functions_idle(stats.functions.idle);
    h->set_peak_arrivals_per_s(stats.peak_arrivals_per_s);
    if (reported) {
      h->set_job_id(reported->job);
      h->set_round(reported->round);
      h->set_round_accepted(reported->accepted);
      std::lock_guard lock(mu);
      if (running && running->job_id() == reported->job && running->round() == reported->round) {
        h->set_plan_id(running->plan_id());
      }
    }
    Send(e);
  }

  // In messages of at most ~1 MiB (the control plane's envelope limit is 4 MiB).
  void ReportCheckIns() {
    std::vector<gateway::CheckIn> batch = agent->TakeCheckIns(kCheckInsPerMessage);
    const auto now = Clock::now();
    v1::Envelope e = protocol::NewEnvelope();
    e.mutable_node_check_ins()->set_node_id(options.node_id);
    for (gateway::CheckIn& in : batch) {
      auto* client = e.mutable_node_check_ins()->add_clients();
      client->set_client_id(in.client);
      protocol::ToProto(in.properties, client->mutable_properties());
      // Properties the controller cannot use must not crowd out other clients.
      if (client->ByteSizeLong() > kMaxCheckInBytes) client->clear_properties();
      client->set_age_ms(static_cast<uint64_t>(
          std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(now - in.at).count())));
      if (e.ByteSizeLong() > kCheckInMessageBytes) {
        Send(e);
        e.mutable_node_check_ins()->clear_clients();
      }
    }
    if (e.node_check_ins().clients_size() > 0) Send(e);
  }

  void Run() {
    Hello();
    while (!stop.load()) {
      const auto now = Clock::now();
      const std::optional<RoundProgress> progress = agent->Progress();
      const bool moved = progress.has_value() != reported.has_value() ||
                         (progress && (progress->accepted != reported->accepted || progress->round != reported->round ||
                                       progress->job != reported->job));
      reported = progress;
      if (moved || now - last_beat >= kBeatInterval) {
        last_beat = now;
        Heartbeat();
      }
      if (now - last_check_ins >= kBeatInterval) {
        last_check_ins = now;
        ReportCheckIns();
      }
      for (;;) {
        std::unique_lock lock(mu);
        if (outbox.empty()) break;
        Outgoing o = std::move(outbox.front());
        outbox.pop_front();
        lock.unlock();
        Send(o.envelope, o.frame);
      }
      zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
      (void)PollUnlessInterrupted(&item, 1, std::chrono::milliseconds(50));
      agent->ReapIdleFunctions();
      if (!(item.revents & ZMQ_POLLIN)) continue;
      for (int burst = 0; burst < 64; ++burst) {
        std::vector<zmq::message_t> parts;
        if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
        if (parts.empty()) continue;
        auto e = protocol::DecodeEnvelope(std::span(static_cast<const std::byte*>(parts[0].data()), parts[0].size()),
                                          protocol::Limits{});
        if (!e) continue;
        Handle(e.value(), parts);
      }
    }
  }

  void Handle(const v1::Envelope& e, const std::vector<zmq::message_t>& parts) {
    if (e.has_controller_heartbeat()) {
      // Hello again only for a controller that does not know this node: one
      // that says so, or a new process. (A hello mid-round tells the
      // controller this node lost its part, so none is sent without cause.)
      const auto& h = e.controller_heartbeat();
      const bool restarted = controller_instance && *controller_instance != h.instance();
      if (restarted) spdlog::info("node {}: the controller restarted; saying hello", options.node_id);
      controller_instance = h.instance();
      if (!h.known() || restarted) Hello();
    } else if (e.has_model_publish()) {
      StartModel(e.model_publish());
    } else if (e.has_model_publish_chunk() && parts.size() == 2) {
      ModelChunk(e.model_publish_chunk(), parts[1]);
    } else if (e.has_round_plan()) {
      // The controller runs one round at a time: the newest plan supersedes
      // the running one and any still queued.
      std::lock_guard lock(mu);
      if (running) agent->CloseRound(running->job_id(), running->round());
      plans.clear();
      plans.push_back(e.round_plan());
      wake.notify_all();
    } else if (e.has_round_close()) {
      std::lock_guard lock(mu);
      const auto& c = e.round_close();
      closed.insert(c.plan_id());  // also when its round has not opened yet (Execute looks)
      wake.notify_all();
      if (running && running->plan_id() == c.plan_id()) agent->CloseRound(c.job_id(), c.round());
    }
  }

  void Work() {
    for (;;) {
      std::unique_lock lock(mu);
      wake.wait(lock, [&] { return stop.load() || !plans.empty(); });
      if (stop.load()) return;
      running = std::move(plans.front());
      plans.pop_front();
      const v1::RoundPlan plan = *running;
      lock.unlock();
      RunRound(plan);
      lock.lock();
      running.reset();
      closed.clear();  // closes are for the plan that ran or earlier ones
    }
  }

  void Queue(const v1::Envelope& e, std::string frame = {}) {
    std::lock_guard lock(mu);
    outbox.push_back({protocol::EncodeEnvelope(e), std::move(frame)});
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

  // The node's part of a plan; then, whatever became of it, the clients
  // steered away are pointed at their node until the whole round ends.
  void RunRound(const v1::RoundPlan& plan) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(plan.deadline_ms());
    auto spec = SpecOf(plan);
    if (spec && !plan.clients().empty()) {
      auto result = Execute(plan, spec.value(), deadline);
      if (!result) ReportFailure(plan, result.error());
    } else if (!spec) {
      ReportFailure(plan, spec.error());
      return;
    }
    // Only steering (no clients here): no partial, the controller expects none.
    if (plan.steered_away().empty()) return;
    gateway::RoundSpec steering = std::move(spec).value();
    steering.selected.clear();
    agent->SteerOnly(std::move(steering));
    {
      std::unique_lock lock(mu);
      wake.wait_until(lock, deadline, [&] { return stop.load() || !plans.empty() || closed.count(plan.plan_id()); });
    }
    agent->EndSteering(plan.job_id());
  }

  void ReportFailure(const v1::RoundPlan& plan, const Error& error) {
    v1::Envelope e = protocol::NewEnvelope();
    auto* f = e.mutable_node_round_failed();
    f->set_job_id(plan.job_id());
    f->set_round(plan.round());
    f->set_node_id(options.node_id);
    f->set_plan_id(plan.plan_id());
    *f->mutable_error() = protocol::ToErrorReply(error);
    Queue(e);
  }

  static Result<gateway::RoundSpec> SpecOf(const v1::RoundPlan& plan) {
    gateway::RoundSpec spec;
    spec.job = plan.job_id();
    spec.round = plan.round();
    spec.model_version = plan.model_version();
    spec.reject_non_finite = plan.reject_non_finite();
    spec.client_config = protocol::FromProto(plan.client_config());
    TRIBUTARY_ASSIGN_OR_RETURN(spec.model, protocol::ModelSpecFromProto(plan.model()));
    for (const auto& [client, key] : plan.clients()) spec.selected[client] = key;
    for (const auto& [client, to] : plan.steered_away()) {
      spec.steered_away[client] = gateway::UploadGateway{to.gateway(), to.gateway_public_key()};
    }
    return spec;
  }

  Result<void> Execute(const v1::RoundPlan& plan, gateway::RoundSpec spec,
                       std::chrono::steady_clock::time_point deadline) {
    if (plan.personalized()) {
      agent->models().DropPersonalBefore(plan.job_id(), plan.model_version());
      TRIBUTARY_ASSIGN_OR_RETURN(
          const uint64_t updates, agent->RunPersonalRound(std::move(spec), deadline, [&](ClientUpdate u) -> Result<void> {
            SendPartial(plan, u.client, u.weight, 1, std::as_bytes(std::span(u.values)), {});
            return Ok();
          }));
      SendPartial(plan, "", 0, updates, {}, {});  // the node's round is over
      return Ok();
    }
    TRIBUTARY_TRY(agent->OpenRound(std::move(spec), plan.fan_in()));
    {
      // A close that came before the round opened.
      std::lock_guard lock(mu);
      if (closed.count(plan.plan_id())) agent->CloseRound(plan.job_id(), plan.round());
    }
    TRIBUTARY_ASSIGN_OR_RETURN(NodeRoundResult result, agent->WaitRound(deadline));
    SendPartial(plan, "", result.partial.meta().weight, result.partial.meta().updates, result.partial.bytes(),
                result.clients);
    return Ok();
  }

  // A NodePartial and its chunks: the node's aggregate, or (with `client`)
  // one client's update of a personalized round.
  void SendPartial(const v1::RoundPlan& plan, const std::string& client, double weight, uint64_t updates,
                   std::span<const std::byte> bytes, const std::vector<std::string>& folded) {
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
    p->set_plan_id(plan.plan_id());
    for (const std::string& c : folded) p->add_clients(c);
    Queue(head);
    for (uint64_t off = 0; off < bytes.size(); off += protocol::kControlChunkBytes) {
      v1::Envelope c = protocol::NewEnvelope();
      auto* chunk = c.mutable_node_partial_chunk();
      chunk->set_job_id(plan.job_id());
      chunk->set_round(plan.round());
      chunk->set_node_id(options.node_id);
      chunk->set_offset(off);
      chunk->set_plan_id(plan.plan_id());
      Queue(c, std::string(reinterpret_cast<const char*>(bytes.data()) + off,
                           std::min<uint64_t>(protocol::kControlChunkBytes, bytes.size() - off)));
    }
  }
};

NodeService::NodeService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<NodeService>> NodeService::Start(const NodeOptions& options, const ControllerLink& controller,
                                                        const std::string& metrics_bind) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->advertised_gateway = controller.advertised_gateway;
  const bool curve = !controller.secret_key.empty();
  if (curve && (controller.controller_public_key.empty() || controller.public_key.empty())) {
    return MakeError(ErrorCode::kConfig, "CURVE to the controller needs its public key and the node's key pair");
  }
  TRIBUTARY_ASSIGN_OR_RETURN(impl->agent, NodeAgent::Start(options));
  try {
    impl->socket.set(zmq::sockopt::linger, 1000);
    impl->socket.set(zmq::sockopt::routing_id, options.node_id);
    // Reconnect backoff: 100-200 ms (jittered, so nodes cut off together do
    // not come back together), doubling up to 5 s.
    impl->socket.set(zmq::sockopt::reconnect_ivl, 100 + static_cast<int>(std::random_device{}() % 100));
    impl->socket.set(zmq::sockopt::reconnect_ivl_max, 5000);
    // Nothing queues for a connection that is not up: a restarted controller
    // gets no stale messages, and sends never block.
    impl->socket.set(zmq::sockopt::immediate, 1);
    // ZMTP heartbeats: a dead connection is dropped within seconds, not TCP's minutes.
    impl->socket.set(zmq::sockopt::heartbeat_ivl, 1000);
    impl->socket.set(zmq::sockopt::heartbeat_timeout, 3000);
    if (curve) {
      impl->socket.set(zmq::sockopt::curve_serverkey, controller.controller_public_key);
      impl->socket.set(zmq::sockopt::curve_publickey, controller.public_key);
      impl->socket.set(zmq::sockopt::curve_secretkey, controller.secret_key);
    }
    impl->socket.connect(controller.endpoint);
  } catch (const zmq::error_t& e) {
    return MakeError(ErrorCode::kIo, "cannot connect to the controller at " + controller.endpoint + ": " + e.what());
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
  impl->worker = std::thread([raw] { raw->Work(); });
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<NodeService>(new NodeService(std::move(impl)));
}

NodeService::~NodeService() {
  impl_->stop = true;
  impl_->agent->Shutdown();  // a round in progress ends now
  {
    std::lock_guard lock(impl_->mu);
    impl_->wake.notify_all();
  }
  impl_->worker.join();
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
