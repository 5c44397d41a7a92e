#include "tributary/controller/controller.h"

#include <atomic>
#include <condition_variable>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <set>
#include <filesystem>
#include <mutex>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <spdlog/spdlog.h>

#include <random>

#include "tributary/controller/checkpoint.h"
#include "tributary/controller/safetensors.h"
#include "tributary/keys/allow_list.h"
#include "tributary/protocol/codec.h"
#include "tributary/core/zmq_poll.h"

namespace tributary::controller {
namespace {

using Clock = std::chrono::steady_clock;
struct Job {
  JobSpec spec;
  std::unique_ptr<agg::Strategy> strategy;
  // What a round changes, replaced as a whole once the round's files are written.
  struct State {
    std::vector<float> model;
    std::vector<std::vector<float>> slots;
    uint64_t version = 0;
    uint64_t steps = 0;
  } state;
};

// A node's partial for the round in progress, as its chunks arrive.
struct Incoming {
  v1::NodePartial header;
  std::string bytes;
  bool done = false;
};

// One client's update of a personalized round, complete and checksummed.
struct ClientEvent {
  std::string client;
  double weight = 0;
  std::string bytes;  // f32 values
};

struct Pending {
  std::string job;
  uint64_t round = 0;
  uint64_t plan_id = 0;
  RoundPolicy policy;
  std::set<std::string> nodes;               // the plan's nodes with clients: each sends a partial
  std::set<std::string> steering;            // nodes whose plan only steers their clients away
  std::map<std::string, std::set<std::string>> assigned;  // by node: its selected clients
  std::set<std::string> delivered;           // personalized rounds: clients whose update arrived
  std::map<std::string, Incoming> partials;  // by node
  std::map<std::string, Error> failures;
  std::set<std::string> lost;                // nodes lost while the round ran
  std::map<std::string, uint64_t> accepted;  // by node, from heartbeats
  bool close_sent = false;
  std::deque<ClientEvent> events;  // personalized rounds: updates not yet handed to the function

  bool Settled(const std::string& node) const {
    auto it = partials.find(node);
    return (it != partials.end() && it->second.done) || failures.count(node) || lost.count(node);
  }
};

struct Node {
  NodeInfo info;
  Clock::time_point last_heard;
};

std::string CheckpointPath(const std::string& dir, const std::string& job) { return dir + "/" + job + ".ckpt"; }

std::string ModelPath(const std::string& dir, const std::string& job, uint64_t version) {
  char name[48];
  std::snprintf(name, sizeof(name), "model-%06llu.safetensors", static_cast<unsigned long long>(version));
  return dir + "/" + job + "/" + name;
}

constexpr auto kHeartbeatInterval = std::chrono::milliseconds(500);

}  // namespace

struct Controller::Impl {
  ControllerOptions options;
  zmq::context_t context{1};
  std::unique_ptr<keys::ZapAuthenticator> authenticator;  // before `socket`: handshakes need it
  zmq::socket_t socket{context, zmq::socket_type::router};
  std::string endpoint;
  std::atomic<bool> stop{false};
  std::thread thread;
  const uint64_t instance = std::random_device{}() * 0x100000001ull ^ std::random_device{}();
  std::mt19937_64 plan_ids{instance};

  mutable std::mutex mu;
  mutable std::condition_variable cv;
  bool shutting_down = false;  // Shutdown(): the round in progress ends, none starts
  bool round_reserved = false;  // a RunRound is in progress (its merge runs without `mu`)
  std::string reserved_for;     // which round, for the refusal of a second one
  std::deque<uint64_t> issued_plans;  // recent plan ids: their late answers are "stale", not "unassigned"
  std::map<std::string, Node> nodes;
  ClientRegistry registry{std::chrono::milliseconds(30'000)};
  ControllerStats stats;
  struct Outgoing {
    std::string node;
    std::string envelope;
    std::string frame;  // empty: none
  };
  std::deque<Outgoing> outbox;
  std::map<std::string, Job> jobs;
  std::optional<Pending> pending;

  void Run() {
    auto last_beat = Clock::time_point{};
    while (!stop.load()) {
      {
        std::lock_guard lock(mu);
        if (Clock::now() - last_beat >= kHeartbeatInterval) {
          last_beat = Clock::now();
          Beat();
        }
        while (!outbox.empty()) {
          Outgoing o = std::move(outbox.front());
          outbox.pop_front();
          socket.send(zmq::buffer(o.node), zmq::send_flags::sndmore);
          socket.send(zmq::buffer(o.envelope), o.frame.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore);
          if (!o.frame.empty()) socket.send(zmq::buffer(o.frame), zmq::send_flags::none);
        }
      }
      zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
      (void)PollUnlessInterrupted(&item, 1, std::chrono::milliseconds(20));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      for (int burst = 0; burst < 64; ++burst) {
        std::vector<zmq::message_t> parts;
        if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
        if (parts.size() < 2) continue;
        const std::string from = parts[0].to_string();
        auto e = protocol::DecodeEnvelope(std::span(static_cast<const std::byte*>(parts[1].data()), parts[1].size()),
                                          protocol::Limits{});
        std::lock_guard lock(mu);
        if (!e) {
          Refuse("malformed", from, e.error().reason);
          continue;
        }
        // With CURVE, the node id the allow-list binds to this connection's key.
        if (authenticator && !keys::IdAuthorized(parts[1].gets("User-Id"), from)) {
          Refuse("impersonation", from, "its key belongs to node '" + std::string(parts[1].gets("User-Id")) + "'");
          continue;
        }
        Handle(from, e.value(), parts.size() > 2 ? &parts[2] : nullptr);
      }
    }
  }

  // Counted by reason and logged; the message goes no further.
  void Refuse(const std::string& reason, const std::string& from, const std::string& why) {
    const uint64_t n = ++stats.refused[reason];
    // Logged at 1, 2, 4, 8...: a flood of bad messages must not flood the log.
    if ((n & (n - 1)) == 0) {
      spdlog::warn("controller: refused a message from node '{}' ({}, {} so far): {}", from, reason, n, why);
    }
  }

  // Heartbeats to connected nodes; nodes silent past the timeout are lost (under `mu`).
  void Beat() {
    const auto now = Clock::now();
    for (auto& [id, n] : nodes) {
      if (!n.info.connected) continue;
      if (now - n.last_heard > options.node_timeout) {
        n.info.connected = false;
        stats.node_losses += 1;
        spdlog::warn("controller: node '{}' lost: silent for {} ms", id,
                     std::chrono::duration_cast<std::chrono::milliseconds>(now - n.last_heard).count());
        if (pending && pending->nodes.count(id) && !pending->Settled(id)) {
          pending->lost.insert(id);
          pending->accepted.erase(id);
        }
        cv.notify_all();
        continue;
      }
      SendHeartbeat(id, true);
    }
    registry.Expire(now);
  }

  void SendHeartbeat(const std::string& node, bool known) {
    v1::Envelope e = protocol::NewEnvelope();
    e.mutable_controller_heartbeat()->set_instance(instance);
    e.mutable_controller_heartbeat()->set_known(known);
    outbox.push_back({node, protocol::EncodeEnvelope(e), {}});
  }

  // Every message carries a node id; it must be the sender's (under `mu`).
  void Handle(const std::string& from, const v1::Envelope& e, const zmq::message_t* frame) {
    std::string claimed;
    switch (e.body_case()) {
      case v1::Envelope::kNodeHello: claimed = e.node_hello().node_id(); break;
      case v1::Envelope::kNodeHeartbeat: claimed = e.node_heartbeat().node_id(); break;
      case v1::Envelope::kNodeCheckIns: claimed = e.node_check_ins().node_id(); break;
      case v1::Envelope::kNodePartial: claimed = e.node_partial().node_id(); break;
      case v1::Envelope::kNodePartialChunk: claimed = e.node_partial_chunk().node_id(); break;
      case v1::Envelope::kNodeRoundFailed: claimed = e.node_round_failed().node_id(); break;
      default: return Refuse("malformed", from, "the controller does not take this message");
    }
    if (claimed != from) return Refuse("impersonation", from, "it claims to be node '" + claimed + "'");
    if (e.has_node_hello()) return OnHello(from, e.node_hello());
    auto known = nodes.find(from);
    if (known == nodes.end() || !known->second.info.connected) {
      // A node we do not know (we restarted, or lost it): it says hello first.
      if (e.has_node_heartbeat()) SendHeartbeat(from, false);
      return;
    }
    known->second.last_heard = Clock::now();
    if (e.has_node_heartbeat()) return OnHeartbeat(from, known->second, e.node_heartbeat());
    if (e.has_node_check_ins()) {
      const auto now = Clock::now();
      uint64_t refused = 0;
      for (const v1::ClientCheckIn& c : e.node_check_ins().clients()) {
        refused += c.client_id().empty() ||
                   !registry.CheckIn(c.client_id(), from,
                                     now - std::chrono::milliseconds(std::min<uint64_t>(c.age_ms(), 3'600'000)));
      }
      if (refused > 0) Refuse("bad_check_in", from, std::to_string(refused) + " check-ins with empty or oversized ids, or past the registry's limit");
      return;
    }
    OnRoundMessage(from, e, frame);
  }

  void OnHello(const std::string& from, const v1::NodeHello& h) {
    // A node of the open plan saying hello again has lost its part (a new
    // process, or it had lost us): what it held for the round is gone.
    if (pending && pending->nodes.count(from) && !pending->Settled(from)) {
      spdlog::warn("controller: node '{}' said hello mid-round: its part of round {} is lost", from, pending->round);
      pending->lost.insert(from);
      pending->accepted.erase(from);
      cv.notify_all();
    }
    Node& n = nodes[from];
    const bool rejoined = !n.info.connected;
    n.info.gateway = h.gateway_endpoint();
    n.info.gateway_public_key = h.gateway_public_key();
    n.info.version = h.version();
    n.info.cores = h.cores();
    n.info.segment_bytes = h.segment_bytes();
    n.info.function_limit = h.function_limit();
    n.info.fold_bytes_per_s = h.fold_bytes_per_s();
    n.info.function_fold_bytes_per_s = h.function_fold_bytes_per_s();
    n.info.dataplane = h.dataplane();
    n.info.connected = true;
    n.last_heard = Clock::now();
    if (rejoined) n.info.segment_free_bytes = h.segment_bytes();  // until its first heartbeat says
    if (rejoined) {
      spdlog::info("controller: node '{}' joined (gateway {}, {} cores, {} segment bytes, data plane {}, version {})",
                   from, h.gateway_endpoint(), h.cores(), h.segment_bytes(), h.dataplane(), h.version());
    }
    SendHeartbeat(from, true);
    cv.notify_all();
  }

  void OnHeartbeat(const std::string& from, Node& n, const v1::NodeHeartbeat& h) {
    n.info.segment_free_bytes = h.segment_free_bytes();
    n.info.functions_live = h.functions_live();
    n.info.functions_idle = h.functions_idle();
    n.info.peak_arrivals_per_s = h.peak_arrivals_per_s();
    if (!pending || !pending->nodes.count(from) || pending->lost.count(from) || h.plan_id() != pending->plan_id) return;
    pending->accepted[from] = h.round_accepted();
    uint64_t total = 0;
    for (const auto& [node, count] : pending->accepted) total += count;
    if (pending->policy.close_at > 0 && total >= pending->policy.close_at && !pending->close_sent) CloseAt(*pending);
  }

  // RoundClose to the plan's nodes: fold what was accepted and answer now (under `mu`).
  void CloseAt(Pending& p) {
    if (p.close_sent) return;
    p.close_sent = true;
    std::set<std::string> to = p.nodes;
    to.insert(p.steering.begin(), p.steering.end());
    for (const std::string& node : to) {
      v1::Envelope e = protocol::NewEnvelope();
      e.mutable_round_close()->set_job_id(p.job);
      e.mutable_round_close()->set_round(p.round);
      e.mutable_round_close()->set_plan_id(p.plan_id);
      outbox.push_back({node, protocol::EncodeEnvelope(e), {}});
    }
  }

  // Why a partial's claims cannot be taken (empty: they can).
  std::string BadClaims(const std::string& node, const v1::NodePartial& h) const {
    const Job& job = jobs.at(pending->job);
    const std::set<std::string>& mine = pending->assigned.at(node);
    if (job.spec.personalized) {
      if (h.client_id().empty()) return h.payload_bytes() == 0 ? "" : "an end mark with a payload";
      if (!mine.count(h.client_id())) return "an update of client '" + h.client_id() + "', not selected on this node";
      if (pending->delivered.count(h.client_id())) return "a second update of client '" + h.client_id() + "'";
      if (h.payload_bytes() != job.spec.model.elements() * sizeof(float)) return "an update of the wrong size";
      if (!(h.weight() > 0) || !std::isfinite(h.weight())) return "an update without a positive weight";
      return "";
    }
    if (h.payload_bytes() != job.spec.model.elements() * sizeof(float)) {
      return "a partial of " + std::to_string(h.payload_bytes()) + " bytes for a model of " +
             std::to_string(job.spec.model.elements() * sizeof(float));
    }
    if (h.updates() != static_cast<uint64_t>(h.clients_size())) return "a partial whose update count is not its clients'";
    std::set<std::string> seen;
    for (const std::string& c : h.clients()) {
      if (!mine.count(c)) return "a partial that folds client '" + c + "', not selected on this node";
      if (!seen.insert(c).second) return "a partial that folds client '" + c + "' twice";
    }
    if (h.updates() > 0 && (!(h.weight() > 0) || !std::isfinite(h.weight()))) return "a partial without a positive weight";
    return "";
  }

  // A partial, its chunks, or a failure: only for the plan this node was sent.
  void OnRoundMessage(const std::string& from, const v1::Envelope& e, const zmq::message_t* frame) {
    auto ours = [&](const std::string& job, uint64_t round, uint64_t plan_id) {
      if (pending && pending->nodes.count(from) && job == pending->job && round == pending->round &&
          plan_id == pending->plan_id && !pending->lost.count(from)) {
        return true;
      }
      // A late answer to an earlier plan of ours (the node was lost, the round
      // ended) is stale; anything else was never asked for.
      const bool earlier = std::find(issued_plans.begin(), issued_plans.end(), plan_id) != issued_plans.end();
      Refuse(earlier ? "stale" : "unassigned_round", from,
             "an answer for round " + std::to_string(round) + " of job '" + job + "' " +
                 (earlier ? "after its node's part ended" : "it was not given"));
      return false;
    };
    if (e.has_node_partial()) {
      const auto& h = e.node_partial();
      if (!ours(h.job_id(), h.round(), h.plan_id())) return;
      // Nothing is reserved or counted before the claims check out (the size
      // is the model's); a node whose claims do not has failed its part.
      if (const std::string bad = BadClaims(from, h); !bad.empty()) {
        Refuse("bad_partial", from, bad);
        pending->failures[from] = MakeError(ErrorCode::kInvalidArgument, "node " + from + " sent " + bad);
        cv.notify_all();
        return;
      }
      if (!h.client_id().empty()) pending->delivered.insert(h.client_id());
      pending->partials[from] = Incoming{h, {}, false};
      pending->partials[from].bytes.reserve(h.payload_bytes());
      Complete(pending->partials[from]);
      TakeClientUpdate(from);
    } else if (e.has_node_partial_chunk() && frame != nullptr) {
      const auto& c = e.node_partial_chunk();
      if (!ours(c.job_id(), c.round(), c.plan_id())) return;
      auto it = pending->partials.find(from);
      if (it == pending->partials.end()) return Refuse("malformed", from, "a chunk without its partial");
      Incoming& in = it->second;
      if (c.offset() != in.bytes.size() || in.bytes.size() + frame->size() > in.header.payload_bytes()) {
        pending->failures[from] = MakeError(ErrorCode::kMalformedFrame, "node " + from + " sent a chunk out of order");
      } else {
        in.bytes.append(static_cast<const char*>(frame->data()), frame->size());
        Complete(in);
        TakeClientUpdate(from);
      }
    } else if (e.has_node_round_failed()) {
      const auto& f = e.node_round_failed();
      if (!ours(f.job_id(), f.round(), f.plan_id())) return;
      pending->failures[from] = protocol::FromErrorReply(f.error());
    } else {
      return Refuse("malformed", from, "a chunk without its frame");
    }
    cv.notify_all();
  }

  // A complete client update (personalized rounds) becomes an event; the
  // node's own partial (no client) stays as its end-of-round mark.
  void TakeClientUpdate(const std::string& node) {
    auto it = pending->partials.find(node);
    if (it == pending->partials.end() || !it->second.done || it->second.header.client_id().empty()) return;
    pending->events.push_back({it->second.header.client_id(), it->second.header.weight(), std::move(it->second.bytes)});
    pending->partials.erase(it);
  }

  // The model a node's gateway serves for `job`: the global one, or (with
  // `client`) that client's personal one.
  void Publish(const std::string& node, const std::string& job, uint64_t version, const agg::ModelSpec& spec,
               const std::vector<float>& values, const std::string& client) {
    const std::string_view bytes(reinterpret_cast<const char*>(values.data()), values.size() * 4);
    v1::Envelope publish = protocol::NewEnvelope();
    auto* mp = publish.mutable_model_publish();
    mp->set_job_id(job);
    mp->set_model_version(version);
    protocol::ToProto(spec, mp->mutable_model());
    mp->set_payload_bytes(bytes.size());
    mp->set_payload_xxh3(protocol::PayloadHasher::Of(std::as_bytes(std::span(bytes.data(), bytes.size()))));
    mp->set_client_id(client);
    outbox.push_back({node, protocol::EncodeEnvelope(publish), {}});
    for (uint64_t off = 0; off < bytes.size(); off += protocol::kControlChunkBytes) {
      v1::Envelope chunk = protocol::NewEnvelope();
      chunk.mutable_model_publish_chunk()->set_job_id(job);
      chunk.mutable_model_publish_chunk()->set_model_version(version);
      chunk.mutable_model_publish_chunk()->set_offset(off);
      outbox.push_back({node, protocol::EncodeEnvelope(chunk), std::string(bytes.substr(off, protocol::kControlChunkBytes))});
    }
  }

  void Complete(Incoming& in) {
    if (in.bytes.size() != in.header.payload_bytes()) return;
    const auto bytes = std::as_bytes(std::span(in.bytes.data(), in.bytes.size()));
    if (protocol::PayloadHasher::Of(bytes) != in.header.payload_xxh3()) {
      pending->failures[in.header.node_id()] =
          MakeError(ErrorCode::kChecksumMismatch, "node " + in.header.node_id() + "'s partial failed its checksum");
      return;
    }
    in.done = true;
  }

  // Resumes `j` from its checkpoint, if it has one (false: none).
  Result<bool> Restore(Job& j) {
    if (options.checkpoint_dir.empty()) return false;
    TRIBUTARY_ASSIGN_OR_RETURN(std::optional<CheckpointState> saved,
                               ReadCheckpoint(CheckpointPath(options.checkpoint_dir, j.spec.id), j.state.model.size(),
                                              j.state.slots.size()));
    if (!saved) return false;
    j.state.version = saved->model_version;
    j.state.steps = saved->steps;
    j.state.model = std::move(saved->model);
    j.state.slots = std::move(saved->slots);
    return true;
  }

  // ---- RunRound's steps, for job `job` and round `round`

  // Each selected client's personal model, from the job's stateful function.
  Result<std::map<std::string, std::vector<float>>> PersonalModels(
      agg::PersonalizedFunction& personal, uint64_t round,
      const std::map<std::string, std::vector<std::string>>& clients_by_node) {
    std::map<std::string, std::vector<float>> out;
    for (const auto& [node, clients] : clients_by_node) {
      for (const std::string& c : clients) {
        TRIBUTARY_ASSIGN_OR_RETURN(out[c], personal.ModelFor(c, round));
        if (out[c].size() != personal.personal_model().elements()) {
          return MakeError(ErrorCode::kShapeMismatch, "the personalized function's model for " + c + " has the wrong size");
        }
      }
    }
    return out;
  }

  // Publishes the models the round starts from and sends each node its plan (under `mu`).
  void SendPlans(const Job& job, uint64_t round, const std::map<std::string, std::vector<std::string>>& clients_by_node,
                 const std::vector<planner::Steer>& steered,
                 const std::map<std::string, std::vector<float>>& personal_models) {
    agg::PersonalizedFunction* personal = job.spec.personalized.get();
    std::map<std::string, std::vector<const planner::Steer*>> away;  // by the node that was asked
    for (const planner::Steer& s : steered) away[s.from].push_back(&s);
    // The nodes that take steered clients first: their plans and models
    // should be there before another gateway sends those clients to them.
    std::set<std::string> receiving;
    for (const planner::Steer& s : steered) receiving.insert(s.to);
    std::vector<std::string> planned(receiving.begin(), receiving.end());
    for (const auto& [node, clients] : clients_by_node) {
      if (!receiving.count(node)) planned.push_back(node);
    }
    for (const auto& [node, moved] : away) {
      if (!clients_by_node.count(node)) planned.push_back(node);
    }
    static const std::vector<std::string> kNone;
    uint32_t key = 1;
    for (const std::string& node : planned) {
      auto own = clients_by_node.find(node);
      const std::vector<std::string>& clients = own == clients_by_node.end() ? kNone : own->second;
      if (personal) {
        for (const std::string& c : clients) {
          Publish(node, job.spec.id, job.state.version, personal->personal_model(), personal_models.at(c), c);
        }
      } else if (!clients.empty()) {
        Publish(node, job.spec.id, job.state.version, job.spec.model, job.state.model, "");
      }
      v1::Envelope e = protocol::NewEnvelope();
      auto* plan = e.mutable_round_plan();
      plan->set_job_id(job.spec.id);
      plan->set_round(round);
      plan->set_model_version(job.state.version);
      protocol::ToProto(job.spec.model, plan->mutable_model());
      for (const std::string& c : clients) (*plan->mutable_clients())[c] = key++;
      for (const planner::Steer* s : away[node]) {
        const NodeInfo& to = nodes.at(s->to).info;
        v1::SteeredClient& out = (*plan->mutable_steered_away())[s->client];
        out.set_gateway(to.gateway);
        out.set_gateway_public_key(to.gateway_public_key);
      }
      auto chosen = pending->policy.fan_in_by_node.find(node);
      const uint32_t fan_in = job.spec.fan_in ? job.spec.fan_in : job.spec.fan_in_min;  // auto, without a choice: the narrowest
      plan->set_fan_in(chosen != pending->policy.fan_in_by_node.end() ? chosen->second : fan_in);
      plan->set_deadline_ms(static_cast<uint64_t>(job.spec.deadline.count()));
      plan->set_reject_non_finite(job.spec.reject_non_finite);
      plan->set_personalized(personal != nullptr);
      plan->set_plan_id(pending->plan_id);
      protocol::ToProto(job.spec.client_config, plan->mutable_client_config());
      (*plan->mutable_client_config())["round"].set_int_value(static_cast<int64_t>(round));
      outbox.push_back({node, protocol::EncodeEnvelope(e), {}});
    }
  }

  // Waits until every node's partial is in, a node failed, or time is up;
  // hands a personalized job's updates to its function as they come (the
  // lock is released meanwhile). False: the nodes did not answer in time.
  Result<bool> Collect(std::unique_lock<std::mutex>& lock, const Job& job, uint64_t round, RoundReport& report) {
    const auto give_up = Clock::now() + job.spec.deadline + std::chrono::seconds(30);
    const bool tolerant = pending->policy.min_updates > 0;
    for (;;) {
      const bool woke = cv.wait_until(lock, give_up, [&] {
        if (shutting_down) return true;
        if (!pending->events.empty()) return true;
        if (!tolerant && (!pending->failures.empty() || !pending->lost.empty())) return true;
        return std::all_of(pending->nodes.begin(), pending->nodes.end(),
                           [&](const std::string& n) { return pending->Settled(n); });
      });
      if (shutting_down) return MakeError(ErrorCode::kRoundClosed, "the controller is shutting down");
      if (!woke || pending->events.empty()) return woke;
      // Events go to the stateful function in arrival order, without the lock.
      ClientEvent ev = std::move(pending->events.front());
      pending->events.pop_front();
      lock.unlock();
      Result<void> applied =
          ev.bytes.size() != job.spec.model.elements() * 4
              ? Result<void>(MakeError(ErrorCode::kShapeMismatch, "client " + ev.client + "'s update has the wrong size"))
              : job.spec.personalized->OnUpdate(
                    ev.client, round, ev.weight,
                    std::span(reinterpret_cast<const float*>(ev.bytes.data()), ev.bytes.size() / 4));
      lock.lock();
      if (!applied) return MakeError(applied.error().code, "round " + std::to_string(round) + ": " + applied.error().reason);
      report.updates += 1;
      report.weight += ev.weight;
    }
  }

  // The root: merges the nodes' partials (in node order: deterministic),
  // finalizes the next model with the job's strategy and writes it, into a
  // copy of the job's state: the caller commits it once everything is
  // written, so a failed write leaves the job as it was. Runs without `mu`
  // (the round's reservation keeps the job's state still).
  Result<Job::State> MergeAtRoot(const Job& job, const Pending& done, RoundReport& report) const {
    std::vector<float> sum(job.state.model.size(), 0.0f);
    agg::Partial total{sum, 0, 0};
    for (const auto& [node, in] : done.partials) {
      if (!in.done) continue;
      report.clients.insert(report.clients.end(), in.header.clients().begin(), in.header.clients().end());
      const agg::PartialView child{std::span(reinterpret_cast<const float*>(in.bytes.data()), in.bytes.size() / 4),
                                   in.header.weight(), in.header.updates()};
      TRIBUTARY_TRY(job.strategy->Merge(total, std::span(&child, 1)));
      report.updates_by_node[node] = in.header.updates();
    }
    Job::State next = job.state;
    agg::ServerState state{next.model, {}, next.steps};
    for (auto& slot : next.slots) state.slots.push_back(slot);
    TRIBUTARY_TRY(job.strategy->Finalize(agg::View(total), state));
    next.steps = state.steps;
    next.version += 1;
    if (!options.checkpoint_dir.empty()) {
      // The model file first: a checkpoint never names a version whose file is missing.
      TRIBUTARY_TRY(WriteSafetensors(ModelPath(options.checkpoint_dir, job.spec.id, next.version), job.spec.model,
                                     next.model,
                                     {{"job", job.spec.id}, {"model_version", std::to_string(next.version)},
                                      {"format", "pt"}, {"producer", "tributary"}}));
      TRIBUTARY_TRY(WriteCheckpoint(CheckpointPath(options.checkpoint_dir, job.spec.id),
                                    {next.version, next.steps, next.model, next.slots}));
    }
    std::sort(report.clients.begin(), report.clients.end());
    report.updates = total.updates;
    report.weight = total.weight;
    return next;
  }
};

Controller::Controller(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Controller>> Controller::Start(const ControllerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->registry = ClientRegistry(options.client_ttl);
  if (!options.checkpoint_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.checkpoint_dir, ec);
    if (ec) return MakeError(ErrorCode::kIo, "cannot create " + options.checkpoint_dir + ": " + ec.message());
  }
  const bool curve = !options.security.secret_key.empty();
  if (curve) {
    if (options.security.node_allow_list.empty()) {
      return MakeError(ErrorCode::kConfig, "CURVE on the control plane needs a node allow-list");
    }
    TRIBUTARY_ASSIGN_OR_RETURN(impl->authenticator, keys::ZapAuthenticator::Start(
                                                        impl->context, options.security.node_allow_list, "controller", "node"));
  }
  try {
    impl->socket.set(zmq::sockopt::linger, 0);
    // ZMTP heartbeats: a node's dead connection goes within seconds, so its
    // reconnect (same routing id) is not ignored for TCP's minutes.
    impl->socket.set(zmq::sockopt::heartbeat_ivl, 1000);
    impl->socket.set(zmq::sockopt::heartbeat_timeout, 3000);
    if (curve) {
      impl->socket.set(zmq::sockopt::curve_server, 1);
      impl->socket.set(zmq::sockopt::curve_secretkey, options.security.secret_key);
      impl->socket.set(zmq::sockopt::zap_domain, "tributary-control");
    }
    impl->socket.bind(options.bind);
    impl->endpoint = impl->socket.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return MakeError(ErrorCode::kIo, "controller cannot bind " + options.bind + ": " + e.what());
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<Controller>(new Controller(std::move(impl)));
}

Controller::~Controller() {
  Shutdown();
  {
    // A RunRound on another thread returns before the state it uses goes.
    std::unique_lock lock(impl_->mu);
    impl_->cv.wait(lock, [&] { return !impl_->round_reserved; });
  }
  impl_->stop = true;
  impl_->thread.join();
}

void Controller::Shutdown() {
  std::lock_guard lock(impl_->mu);
  impl_->shutting_down = true;
  impl_->cv.notify_all();
}

const std::string& Controller::endpoint() const { return impl_->endpoint; }

std::map<std::string, std::string> Controller::Nodes() const {
  std::lock_guard lock(impl_->mu);
  std::map<std::string, std::string> out;
  for (const auto& [id, n] : impl_->nodes) {
    if (n.info.connected) out[id] = n.info.gateway;
  }
  return out;
}

std::map<std::string, NodeInfo> Controller::NodeDetails() const {
  std::lock_guard lock(impl_->mu);
  const auto now = Clock::now();
  const auto checked_in = impl_->registry.CountByNode(now);
  std::map<std::string, NodeInfo> out;
  for (const auto& [id, n] : impl_->nodes) {
    NodeInfo info = n.info;
    info.seconds_since_heard = std::chrono::duration<double>(now - n.last_heard).count();
    auto c = checked_in.find(id);
    info.clients_checked_in = c == checked_in.end() ? 0 : c->second;
    if (impl_->pending && impl_->pending->accepted.count(id)) info.round_accepted = impl_->pending->accepted.at(id);
    out[id] = std::move(info);
  }
  return out;
}

std::vector<AvailableClient> Controller::AvailableClients() const {
  std::lock_guard lock(impl_->mu);
  std::set<std::string> connected;
  for (const auto& [id, n] : impl_->nodes) {
    if (n.info.connected) connected.insert(id);
  }
  return impl_->registry.Available(Clock::now(), connected);
}

ControllerStats Controller::Stats() const {
  std::lock_guard lock(impl_->mu);
  ControllerStats s = impl_->stats;
  if (impl_->authenticator && impl_->authenticator->refused() > 0) {
    s.refused["unknown_key"] = impl_->authenticator->refused();
  }
  std::set<std::string> connected;
  for (const auto& [id, n] : impl_->nodes) {
    if (n.info.connected) connected.insert(id);
  }
  s.clients_available = impl_->registry.Available(Clock::now(), connected).size();
  return s;
}

Result<void> Controller::WaitForNodes(size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mu);
  auto connected = [&] {
    return static_cast<size_t>(std::count_if(impl_->nodes.begin(), impl_->nodes.end(),
                                             [](const auto& kv) { return kv.second.info.connected; }));
  };
  if (!impl_->cv.wait_for(lock, timeout, [&] { return connected() >= count; })) {
    return MakeError(ErrorCode::kIo, std::to_string(connected()) + " of " + std::to_string(count) +
                                         " nodes connected before the timeout");
  }
  return Ok();
}

Result<void> Controller::AddJob(JobSpec spec) {
  if (spec.personalized) {
    if (spec.model.tensors() != spec.personalized->update_model().tensors()) {
      return MakeError(ErrorCode::kShapeMismatch, "a personalized job's model must be its function's update model");
    }
    Job j;
    j.spec = std::move(spec);
    std::lock_guard lock(impl_->mu);
    if (impl_->jobs.count(j.spec.id)) return MakeError(ErrorCode::kInvalidArgument, "job '" + j.spec.id + "' exists");
    impl_->jobs[j.spec.id] = std::move(j);
    return Ok();
  }
  if (spec.initial_model.size() != spec.model.elements()) {
    return MakeError(ErrorCode::kShapeMismatch, "initial model has " + std::to_string(spec.initial_model.size()) +
                                                    " values, the model spec " + std::to_string(spec.model.elements()));
  }
  Job j;
  TRIBUTARY_ASSIGN_OR_RETURN(j.strategy, agg::Strategy::Create(spec.strategy));
  j.state.model = spec.initial_model;
  j.state.slots.assign(static_cast<size_t>(j.strategy->state_slots()), std::vector<float>(j.state.model.size(), 0.0f));
  j.spec = std::move(spec);
  if (!impl_->options.checkpoint_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(impl_->options.checkpoint_dir + "/" + j.spec.id, ec);
    if (ec) return MakeError(ErrorCode::kIo, "cannot create the model directory of job " + j.spec.id + ": " + ec.message());
  }
  std::lock_guard lock(impl_->mu);
  if (impl_->jobs.count(j.spec.id)) return MakeError(ErrorCode::kInvalidArgument, "job '" + j.spec.id + "' exists");
  TRIBUTARY_TRY(impl_->Restore(j));
  impl_->jobs[j.spec.id] = std::move(j);
  return Ok();
}

Result<RoundReport> Controller::RunRound(const std::string& job_id,
                                         const std::map<std::string, std::vector<std::string>>& clients_by_node,
                                         RoundPolicy policy, const std::vector<planner::Steer>& steered) {
  const auto start = Clock::now();
  std::unique_lock lock(impl_->mu);
  auto jit = impl_->jobs.find(job_id);
  if (jit == impl_->jobs.end()) return MakeError(ErrorCode::kUnknownJob, "no job '" + job_id + "'");
  Job& job = jit->second;
  const uint64_t round = job.state.version + 1;
  auto connected = [&](const std::string& node) -> Result<void> {
    auto n = impl_->nodes.find(node);
    if (n == impl_->nodes.end() || !n->second.info.connected) {
      return MakeError(ErrorCode::kNotFound, "node '" + node + "' is not connected");
    }
    return Ok();
  };
  for (const auto& [node, clients] : clients_by_node) TRIBUTARY_TRY(connected(node));
  std::set<std::string> steering, moved;
  for (const planner::Steer& s : steered) {
    TRIBUTARY_TRY(connected(s.from));
    auto to = clients_by_node.find(s.to);
    if (s.from == s.to || to == clients_by_node.end() ||
        std::find(to->second.begin(), to->second.end(), s.client) == to->second.end()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "client '" + s.client + "' is steered to node '" + s.to + "' but not among its clients");
    }
    if (!moved.insert(s.client).second) {
      return MakeError(ErrorCode::kInvalidArgument, "client '" + s.client + "' is steered twice");
    }
    if (auto from = clients_by_node.find(s.from); from != clients_by_node.end() &&
        std::find(from->second.begin(), from->second.end(), s.client) != from->second.end()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "client '" + s.client + "' is steered away from node '" + s.from + "' but also among its clients");
    }
    if (!clients_by_node.count(s.from)) steering.insert(s.from);
  }
  if (impl_->shutting_down) return MakeError(ErrorCode::kRoundClosed, "the controller is shutting down");
  if (impl_->round_reserved) {
    return MakeError(ErrorCode::kInvalidArgument, impl_->reserved_for + " is in progress: one round at a time");
  }
  // Reserved until RunRound returns: the round's function calls, its merge
  // (without the lock) and the nodes' messages belong to it alone.
  impl_->round_reserved = true;
  impl_->reserved_for = "round " + std::to_string(round) + " of job '" + job_id + "'";
  struct Release {  // destroyed before `lock`, which every return holds
    Impl* impl;
    std::unique_lock<std::mutex>& lock;
    ~Release() {
      if (!lock.owns_lock()) lock.lock();
      impl->round_reserved = false;
      impl->cv.notify_all();
    }
  } release{impl_.get(), lock};
  impl_->pending.emplace();
  impl_->pending->job = job_id;
  impl_->pending->round = round;
  impl_->pending->plan_id = impl_->plan_ids();
  impl_->issued_plans.push_back(impl_->pending->plan_id);
  if (impl_->issued_plans.size() > 1024) impl_->issued_plans.pop_front();
  impl_->pending->policy = policy;
  impl_->pending->steering = steering;
  for (const auto& [node, clients] : clients_by_node) {
    impl_->pending->nodes.insert(node);
    impl_->pending->assigned[node] = std::set<std::string>(clients.begin(), clients.end());
  }
  // Personal models are generated before the plans go out, without the lock.
  std::map<std::string, std::vector<float>> personal_models;
  if (job.spec.personalized) {
    lock.unlock();
    auto models = impl_->PersonalModels(*job.spec.personalized, round, clients_by_node);
    lock.lock();
    if (!models) {
      impl_->pending.reset();
      return std::move(models).error();
    }
    personal_models = std::move(models).value();
  }
  impl_->SendPlans(job, round, clients_by_node, steered, personal_models);
  RoundReport report;
  auto collected = impl_->Collect(lock, job, round, report);
  Pending pending = std::move(*impl_->pending);
  impl_->pending.reset();
  auto fail = [&](Error e) {
    impl_->stats.rounds_failed += 1;
    impl_->CloseAt(pending);  // nodes still collecting stop now
    return e;
  };
  if (!collected) return fail(std::move(collected).error());
  const std::string which = "round " + std::to_string(round) + " of job '" + job_id + "'";
  if (policy.min_updates == 0) {
    if (!pending.failures.empty()) {
      const auto& [node, err] = *pending.failures.begin();
      return fail(MakeError(err.code, which + " failed on node " + node + ": " + err.reason));
    }
    if (!pending.lost.empty()) {
      return fail(MakeError(ErrorCode::kRoundClosed, which + ": node " + *pending.lost.begin() + " was lost"));
    }
    if (!collected.value()) return fail(MakeError(ErrorCode::kRoundClosed, which + ": nodes did not answer in time"));
  } else {
    // What did not arrive is lost; what did counts if it is enough.
    for (const std::string& node : pending.nodes) {
      auto in = pending.partials.find(node);
      if (in == pending.partials.end() || !in->second.done) {
        report.lost_nodes.push_back(node);
        if (in != pending.partials.end()) pending.partials.erase(in);
      }
    }
    for (const auto& [node, err] : pending.failures) {
      spdlog::warn("controller: {}: node {} delivered nothing: {}", which, node, err.ToString());
    }
    uint64_t arrived = 0;
    for (const auto& [node, in] : pending.partials) arrived += in.header.updates();
    if (arrived < policy.min_updates) {
      return fail(MakeError(ErrorCode::kRoundClosed, which + ": " + std::to_string(arrived) + " updates, fewer than " +
                                                         std::to_string(policy.min_updates) + " (run it again)"));
    }
  }
  impl_->CloseAt(pending);  // lost nodes that come back must not keep collecting
  report.round = round;
  if (job.spec.personalized) {
    for (const auto& [node, in] : pending.partials) report.updates_by_node[node] = in.header.updates();
    job.state.version += 1;
  } else {
    lock.unlock();
    auto merged = impl_->MergeAtRoot(job, pending, report);
    lock.lock();
    if (!merged) return fail(std::move(merged).error());
    job.state = std::move(merged).value();
    std::set<std::string> folded(report.clients.begin(), report.clients.end());
    for (const auto& [node, clients] : clients_by_node) {
      for (const std::string& c : clients) {
        if (!folded.count(c)) report.missing.push_back(c);
      }
    }
    std::sort(report.missing.begin(), report.missing.end());
  }
  impl_->stats.rounds_completed += 1;
  report.model_version = job.state.version;
  report.seconds = Clock::now() - start;
  return report;
}

Result<std::vector<float>> Controller::Model(const std::string& job) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->jobs.find(job);
  if (it == impl_->jobs.end()) return MakeError(ErrorCode::kUnknownJob, "no job '" + job + "'");
  return it->second.state.model;
}

Result<uint64_t> Controller::ModelVersion(const std::string& job) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->jobs.find(job);
  if (it == impl_->jobs.end()) return MakeError(ErrorCode::kUnknownJob, "no job '" + job + "'");
  return it->second.state.version;
}

}  // namespace tributary::controller
