#include "tributary/controller/controller.h"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "tributary/controller/checkpoint.h"
#include "tributary/protocol/codec.h"

namespace tributary::controller {
namespace {

using Clock = std::chrono::steady_clock;
struct Job {
  JobSpec spec;
  std::unique_ptr<agg::Strategy> strategy;
  std::vector<float> model;
  std::vector<std::vector<float>> slots;
  uint64_t version = 0;
  uint64_t steps = 0;
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
  std::map<std::string, Incoming> partials;  // by node
  std::map<std::string, Error> failures;
  std::deque<ClientEvent> events;  // personalized rounds: updates not yet handed to the function
};

std::string CheckpointPath(const std::string& dir, const std::string& job) { return dir + "/" + job + ".ckpt"; }

}  // namespace

struct Controller::Impl {
  ControllerOptions options;
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::router};
  std::string endpoint;
  std::atomic<bool> stop{false};
  std::thread thread;

  mutable std::mutex mu;
  mutable std::condition_variable cv;
  std::map<std::string, std::string> nodes;  // id -> gateway endpoint
  struct Outgoing {
    std::string node;
    std::string envelope;
    std::string frame;  // empty: none
  };
  std::deque<Outgoing> outbox;
  std::map<std::string, Job> jobs;
  std::optional<Pending> pending;

  void Run() {
    while (!stop.load()) {
      {
        std::lock_guard lock(mu);
        while (!outbox.empty()) {
          Outgoing o = std::move(outbox.front());
          outbox.pop_front();
          socket.send(zmq::buffer(o.node), zmq::send_flags::sndmore);
          socket.send(zmq::buffer(o.envelope), o.frame.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore);
          if (!o.frame.empty()) socket.send(zmq::buffer(o.frame), zmq::send_flags::none);
        }
      }
      zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(20));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      for (int burst = 0; burst < 64; ++burst) {
        std::vector<zmq::message_t> parts;
        if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
        if (parts.size() < 2) continue;
        auto e = protocol::DecodeEnvelope(std::span(static_cast<const std::byte*>(parts[1].data()), parts[1].size()),
                                          protocol::Limits{});
        if (e) Handle(parts[0].to_string(), e.value(), parts.size() > 2 ? &parts[2] : nullptr);
      }
    }
  }

  void Handle(const std::string& from, const v1::Envelope& e, const zmq::message_t* frame) {
    std::lock_guard lock(mu);
    if (e.has_node_hello()) {
      nodes[e.node_hello().node_id()] = e.node_hello().gateway_endpoint();
      cv.notify_all();
      return;
    }
    if (!pending) return;
    if (e.has_node_partial()) {
      const auto& h = e.node_partial();
      if (h.job_id() != pending->job || h.round() != pending->round || h.node_id() != from) return;
      pending->partials[from] = Incoming{h, {}, false};
      pending->partials[from].bytes.reserve(h.payload_bytes());
      Complete(pending->partials[from]);
      TakeClientUpdate(from);
    } else if (e.has_node_partial_chunk() && frame != nullptr) {
      const auto& c = e.node_partial_chunk();
      auto it = pending->partials.find(from);
      if (c.job_id() != pending->job || c.round() != pending->round || it == pending->partials.end()) return;
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
      if (f.job_id() == pending->job && f.round() == pending->round) pending->failures[from] = protocol::FromErrorReply(f.error());
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

  Result<void> Checkpoint(const Job& j) {
    if (options.checkpoint_dir.empty()) return Ok();
    return WriteCheckpoint(CheckpointPath(options.checkpoint_dir, j.spec.id), {j.version, j.steps, j.model, j.slots});
  }

  // Resumes `j` from its checkpoint, if it has one (false: none).
  Result<bool> Restore(Job& j) {
    if (options.checkpoint_dir.empty()) return false;
    TRIBUTARY_ASSIGN_OR_RETURN(std::optional<CheckpointState> saved,
                               ReadCheckpoint(CheckpointPath(options.checkpoint_dir, j.spec.id), j.model.size(),
                                              j.slots.size()));
    if (!saved) return false;
    j.version = saved->model_version;
    j.steps = saved->steps;
    j.model = std::move(saved->model);
    j.slots = std::move(saved->slots);
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
                 const std::map<std::string, std::vector<float>>& personal_models) {
    agg::PersonalizedFunction* personal = job.spec.personalized.get();
    uint32_t key = 1;
    for (const auto& [node, clients] : clients_by_node) {
      if (personal) {
        for (const std::string& c : clients) {
          Publish(node, job.spec.id, job.version, personal->personal_model(), personal_models.at(c), c);
        }
      } else {
        Publish(node, job.spec.id, job.version, job.spec.model, job.model, "");
      }
      v1::Envelope e = protocol::NewEnvelope();
      auto* plan = e.mutable_round_plan();
      plan->set_job_id(job.spec.id);
      plan->set_round(round);
      plan->set_model_version(job.version);
      protocol::ToProto(job.spec.model, plan->mutable_model());
      for (const std::string& c : clients) (*plan->mutable_clients())[c] = key++;
      plan->set_fan_in(job.spec.fan_in);
      plan->set_deadline_ms(static_cast<uint64_t>(job.spec.deadline.count()));
      plan->set_reject_non_finite(job.spec.reject_non_finite);
      plan->set_personalized(personal != nullptr);
      protocol::ToProto(job.spec.client_config, plan->mutable_client_config());
      (*plan->mutable_client_config())["round"].set_int_value(static_cast<int64_t>(round));
      outbox.push_back({node, protocol::EncodeEnvelope(e), {}});
    }
  }

  // Waits until every node's partial is in, a node failed, or time is up;
  // hands a personalized job's updates to its function as they come (the
  // lock is released meanwhile). False: the nodes did not answer in time.
  Result<bool> Collect(std::unique_lock<std::mutex>& lock, const Job& job, uint64_t round, size_t node_count,
                       RoundReport& report) {
    const auto give_up = Clock::now() + job.spec.deadline + std::chrono::seconds(30);
    for (;;) {
      const bool woke = cv.wait_until(lock, give_up, [&] {
        size_t done = 0;
        for (const auto& [node, in] : pending->partials) done += in.done;
        return !pending->failures.empty() || !pending->events.empty() || done == node_count;
      });
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

  // The root: merges the nodes' partials (in node order: deterministic) and
  // finalizes the next model with the job's strategy.
  Result<void> MergeAtRoot(Job& job, const Pending& done, RoundReport& report) {
    std::vector<float> sum(job.model.size(), 0.0f);
    agg::Partial total{sum, 0, 0};
    for (const auto& [node, in] : done.partials) {
      const agg::PartialView child{std::span(reinterpret_cast<const float*>(in.bytes.data()), in.bytes.size() / 4),
                                   in.header.weight(), in.header.updates()};
      TRIBUTARY_TRY(job.strategy->Merge(total, std::span(&child, 1)));
      report.updates_by_node[node] = in.header.updates();
    }
    agg::ServerState state{job.model, {}, job.steps};
    for (auto& s : job.slots) state.slots.push_back(s);
    TRIBUTARY_TRY(job.strategy->Finalize(agg::View(total), state));
    job.steps = state.steps;
    job.version += 1;
    TRIBUTARY_TRY(Checkpoint(job));
    report.updates = total.updates;
    report.weight = total.weight;
    return Ok();
  }
};

Controller::Controller(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Controller>> Controller::Start(const ControllerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (!options.checkpoint_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.checkpoint_dir, ec);
    if (ec) return MakeError(ErrorCode::kIo, "cannot create " + options.checkpoint_dir + ": " + ec.message());
  }
  try {
    impl->socket.set(zmq::sockopt::linger, 0);
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
  impl_->stop = true;
  impl_->thread.join();
}

const std::string& Controller::endpoint() const { return impl_->endpoint; }

std::map<std::string, std::string> Controller::Nodes() const {
  std::lock_guard lock(impl_->mu);
  return impl_->nodes;
}

Result<void> Controller::WaitForNodes(size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mu);
  if (!impl_->cv.wait_for(lock, timeout, [&] { return impl_->nodes.size() >= count; })) {
    return MakeError(ErrorCode::kIo, std::to_string(impl_->nodes.size()) + " of " + std::to_string(count) +
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
    impl_->jobs[j.spec.id] = std::move(j);
    return Ok();
  }
  if (spec.initial_model.size() != spec.model.elements()) {
    return MakeError(ErrorCode::kShapeMismatch, "initial model has " + std::to_string(spec.initial_model.size()) +
                                                    " values, the model spec " + std::to_string(spec.model.elements()));
  }
  Job j;
  TRIBUTARY_ASSIGN_OR_RETURN(j.strategy, agg::Strategy::Create(spec.strategy));
  j.model = spec.initial_model;
  j.slots.assign(static_cast<size_t>(j.strategy->state_slots()), std::vector<float>(j.model.size(), 0.0f));
  j.spec = std::move(spec);
  std::lock_guard lock(impl_->mu);
  TRIBUTARY_TRY(impl_->Restore(j));
  impl_->jobs[j.spec.id] = std::move(j);
  return Ok();
}

Result<RoundReport> Controller::RunRound(const std::string& job_id,
                                         const std::map<std::string, std::vector<std::string>>& clients_by_node) {
  const auto start = Clock::now();
  std::unique_lock lock(impl_->mu);
  auto jit = impl_->jobs.find(job_id);
  if (jit == impl_->jobs.end()) return MakeError(ErrorCode::kUnknownJob, "no job '" + job_id + "'");
  Job& job = jit->second;
  const uint64_t round = job.version + 1;
  for (const auto& [node, clients] : clients_by_node) {
    if (impl_->nodes.count(node) == 0) return MakeError(ErrorCode::kNotFound, "node '" + node + "' is not connected");
  }
  if (impl_->pending) {
    return MakeError(ErrorCode::kInvalidArgument, "round " + std::to_string(impl_->pending->round) + " of job '" +
                                                      impl_->pending->job + "' is in progress: one round at a time");
  }
  // Reserved before anything else: the round's function calls and the nodes'
  // messages belong to it alone. Nodes' messages for it are taken from here on.
  impl_->pending = Pending{job_id, round, {}, {}, {}};
  // Personal models are generated before the plans go out, without the lock
  // (the reservation keeps every other round out meanwhile).
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
  impl_->SendPlans(job, round, clients_by_node, personal_models);
  RoundReport report;
  auto collected = impl_->Collect(lock, job, round, clients_by_node.size(), report);
  Pending pending = std::move(*impl_->pending);
  impl_->pending.reset();
  if (!collected) return std::move(collected).error();
  if (!pending.failures.empty()) {
    const auto& [node, err] = *pending.failures.begin();
    return MakeError(err.code, "round " + std::to_string(round) + " failed on node " + node + ": " + err.reason);
  }
  if (!collected.value()) {
    return MakeError(ErrorCode::kRoundClosed, "round " + std::to_string(round) + ": nodes did not answer in time");
  }
  report.round = round;
  if (job.spec.personalized) {
    for (const auto& [node, in] : pending.partials) report.updates_by_node[node] = in.header.updates();
    job.version += 1;
  } else {
    TRIBUTARY_TRY(impl_->MergeAtRoot(job, pending, report));
  }
  report.model_version = job.version;
  report.seconds = Clock::now() - start;
  return report;
}

Result<std::vector<float>> Controller::Model(const std::string& job) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->jobs.find(job);
  if (it == impl_->jobs.end()) return MakeError(ErrorCode::kUnknownJob, "no job '" + job + "'");
  return it->second.model;
}

Result<uint64_t> Controller::ModelVersion(const std::string& job) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->jobs.find(job);
  if (it == impl_->jobs.end()) return MakeError(ErrorCode::kUnknownJob, "no job '" + job + "'");
  return it->second.version;
}

}  // namespace tributary::controller
