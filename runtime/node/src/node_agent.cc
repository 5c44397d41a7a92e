#include "tributary/node/node_agent.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <mutex>
#include <thread>

#include "tributary/aggregator/kernels.h"
#include "tributary/dataplane/descriptor_switch.h"
#include "tributary/dataplane/payload_stream.h"
#include "tributary/function/function_host.h"
#include "tributary/protocol/codec.h"
#include "tributary/v1/node.pb.h"

namespace tributary::node {
namespace {

using dataplane::Descriptor;
using dataplane::MakeDescriptor;
using Clock = std::chrono::steady_clock;

struct HeldUpdate {
  shm::BlockRef block;  // the agent's own hold, until its leaf commits
  uint32_t route_key = 0;
  uint16_t dtype = 0;
  double weight = 0;
};

struct Leaf {
  FunctionInstance f;
  uint64_t task = 0;
  std::vector<uint32_t> keys;  // the route keys it folds
};

// A leaf's result the agent holds until the node's partial is complete.
struct Committed {
  shm::BlockRef partial;
  std::vector<uint32_t> keys;
};

// An accepted update of a personalized round, waiting for the caller's thread.
struct PersonalUpdate {
  std::string client;
  agg::ModelSpec layout;
  double weight = 0;
  shm::BlockRef block;
};

struct Round {
  bool active = false;
  bool personal = false;                 // RunPersonalRound: no tree, updates go to the caller
  std::deque<PersonalUpdate> arrived;    // personal rounds only
  gateway::RoundSpec spec;
  uint32_t fan_in = 1;
  std::vector<uint32_t> keys;          // route keys the current tree expects
  std::map<uint32_t, size_t> leaf_of;  // route key -> leaf
  std::vector<Leaf> leaves;
  // Between leaves and the node-root when there are more than fan-in leaves:
  // intermediate i merges leaves [i * fan_in, (i + 1) * fan_in).
  std::vector<std::pair<FunctionInstance, uint64_t>> intermediates;  // function, task
  FunctionInstance root;
  uint64_t root_task = 0;
  uint64_t node_task = 0;  // what the node-root's result carries
  std::vector<HeldUpdate> held;
  std::vector<Committed> committed;
  bool rebuild = false;
  std::set<uint32_t> died;  // functions that exited since the current tree was planned
  bool deadline_passed = false;
  uint32_t rebuilds = 0;
};

}  // namespace

struct NodeAgent::Impl final : gateway::UpdateSink {
  NodeOptions options;
  std::unique_ptr<shm::Segment> segment;
  std::string dataplane_reason;
  std::unique_ptr<dataplane::DescriptorSwitch> sw;
  std::optional<dataplane::FunctionLink> link;  // fn 1, the agent's own
  std::unique_ptr<Supervisor> supervisor;
  gateway::RoundBook rounds;
  gateway::ModelStore models;
  std::unique_ptr<gateway::Gateway> gateway;
  std::unique_ptr<dataplane::PayloadServer> payload_server;  // serverful transport: node-root results
  std::map<uint32_t, UniqueFd> payload_links;                // serverful transport: fn -> connection
  std::thread receiver;
  std::atomic<bool> stop{false};

  mutable std::mutex mu;  // round state and sends on `link`
  std::condition_variable cv;
  Round round;
  std::deque<std::pair<Descriptor, shm::BlockRef>> results;
  uint64_t next_task = 1;
  uint64_t rounds_completed = 0;
  uint64_t total_rebuilds = 0;
  std::atomic<uint32_t> unswept{0};  // function exits whose leases are not yet reclaimed

  // Reclaims what dead functions held in the segment (a process is only seen
  // dead once it is a zombie, so this is retried until every exit is swept).
  void Sweep() {
    if (unswept.load() == 0) return;
    const shm::SweepReport r = segment->SweepDeadLeases();
    uint32_t left = unswept.load();
    while (!unswept.compare_exchange_weak(left, left - std::min(left, r.dead_leases))) {
    }
  }

  // ---- threads other than the caller's

  void Receive() {
    while (!stop.load()) {
      auto d = link->Receive(std::chrono::milliseconds(100));
      if (!d) return;
      if (!d.value()) continue;
      const Descriptor& desc = *d.value();
      if (desc.kind == TRB_KIND_CONTROL) {
        supervisor->OnHello(static_cast<uint32_t>(desc.job), desc.route_key, static_cast<uint16_t>(desc.length));
        continue;
      }
      auto block = segment->Adopt({desc.offset, desc.generation});
      if (!block || desc.kind != TRB_KIND_PARTIAL) continue;
      std::lock_guard lock(mu);
      if (round.active && desc.job != round.node_task) {
        Commit(desc, std::move(block).value());  // or an abandoned attempt's result, dropped
        continue;
      }
      results.emplace_back(desc, std::move(block).value());
      cv.notify_all();
    }
  }

  // Serverful transport: the node-root's whole result, read into a block.
  Result<void> ReadNodeResult(int fd) {
    TRIBUTARY_ASSIGN_OR_RETURN(dataplane::PayloadHeader h, dataplane::ReadPayloadHeader(fd));
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef block,
                               segment->Allocate(h.descriptor.length, {shm::BlockKind::kPartial, 0, h.descriptor.round}));
    TRIBUTARY_TRY(dataplane::ReadPayloadBytes(fd, block.bytes()));
    block.meta().weight = dataplane::WeightOf(h.descriptor);
    block.meta().updates = h.updates;
    std::lock_guard lock(mu);
    results.emplace_back(h.descriptor, std::move(block));
    cv.notify_all();
    return Ok();
  }

  bool serverful() const { return options.transport == AggregationTransport::kTcp; }

  void OnFunctionExit(uint32_t fn) {
    supervisor->OnExit(fn);
    unswept += 1;
    std::lock_guard lock(mu);
    if (!round.active) return;
    // Also a function the supervisor handed out for a tree being built right
    // now: Build checks `died` once it has its functions.
    round.died.insert(fn);
    bool ours = round.root.fn == fn;
    for (const Leaf& l : round.leaves) ours = ours || l.f.fn == fn;
    for (const auto& [f, task] : round.intermediates) ours = ours || f.fn == fn;
    if (ours) {
      round.rebuild = true;
      cv.notify_all();
    }
  }

  void Accept(const gateway::AcceptedUpdate& u, shm::BlockRef block) override {
    std::lock_guard lock(mu);
    if (!round.active || u.admission.job != round.spec.job || u.admission.round != round.spec.round) return;
    if (round.personal) {
      round.arrived.push_back({u.admission.client, u.layout, static_cast<double>(u.sample_count), std::move(block)});
      cv.notify_all();
      return;
    }
    HeldUpdate h{std::move(block), u.admission.route_key, static_cast<uint16_t>(u.layout.runs().front().dtype),
                 static_cast<double>(u.sample_count)};
    auto leaf = round.leaf_of.find(h.route_key);
    // A send that fails leaves the leaf short of an input: the rebuild re-sends every held update.
    if (leaf != round.leaf_of.end() && !SendUpdate(h, round.leaves[leaf->second], /*by_route=*/true)) {
      round.rebuild = true;
      cv.notify_all();
    }
    if (!serverful()) round.held.push_back(std::move(h));
  }

  // ---- under `mu`

  // Hands a hold on `block` to `lease` and sends `d` (whose block fields are
  // filled in here) pointing at it; the agent keeps its own hold.
  Result<void> HandOver(const shm::BlockRef& block, uint32_t lease, Descriptor d) {
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef copy, block.Clone());
    d.length = copy.bytes().size();
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockToken token, copy.HandOff(lease));
    d.offset = token.offset;
    d.generation = token.generation;
    return link->Send(d);
  }

  Result<void> SendUpdate(const HeldUpdate& h, const Leaf& leaf, bool by_route) {
    if (serverful()) return WriteUpdate(h, leaf);
    Descriptor d = MakeDescriptor({TRB_KIND_UPDATE, by_route ? TRB_NO_FUNCTION : leaf.f.fn, h.route_key, leaf.task,
                                   round.spec.round, 0, 0, 0, h.weight});
    d.flags = h.dtype;
    return HandOver(h.block, leaf.f.lease, d);
  }

  // Serverful transport: the whole update to the leaf's port.
  Result<void> WriteUpdate(const HeldUpdate& h, const Leaf& leaf) {
    auto conn = payload_links.find(leaf.f.fn);
    if (conn == payload_links.end()) {
      TRIBUTARY_ASSIGN_OR_RETURN(UniqueFd fd, dataplane::ConnectPayload(leaf.f.payload_port));
      conn = payload_links.emplace(leaf.f.fn, std::move(fd)).first;
    }
    dataplane::PayloadHeader header{MakeDescriptor({TRB_KIND_UPDATE, leaf.f.fn, h.route_key, leaf.task,
                                                    round.spec.round, 0, h.block.bytes().size(), 0, h.weight}),
                                    1};
    header.descriptor.flags = h.dtype;
    auto written = dataplane::WritePayload(conn->second.get(), header, h.block.bytes());
    if (!written) payload_links.erase(conn);
    return written;
  }

  // Sends a committed leaf result to the (new) node-root as its input `index`.
  Result<void> SendCommitted(const Committed& c, uint32_t index) {
    return HandOver(c.partial, round.root.lease,
                    MakeDescriptor({TRB_KIND_PARTIAL, round.root.fn, index, round.root_task, round.spec.round, 0, 0, 0,
                                    c.partial.meta().weight}));
  }

  // A leaf of the current tree handed the agent its result: its updates are
  // no longer needed (a leaf of an abandoned tree is ignored).
  void Commit(const Descriptor& d, shm::BlockRef partial) {
    for (const Leaf& l : round.leaves) {
      if (l.task != d.job) continue;
      const std::set<uint32_t> keys(l.keys.begin(), l.keys.end());
      std::erase_if(round.held, [&](const HeldUpdate& h) { return keys.count(h.route_key) != 0; });
      round.committed.push_back(Committed{std::move(partial), l.keys});
      return;
    }
  }

  // `index` is the task's place in its parent's fold order; a leaf folds its
  // clients in the order of `keys`.
  Result<void> SendTask(const FunctionInstance& f, uint64_t task, v1::FunctionRole role, uint32_t fan_in,
                        uint32_t parent_fn, uint32_t parent_lease, uint64_t parent_task, uint16_t parent_port,
                        uint32_t index, const std::vector<uint32_t>& keys = {}) {
    v1::FunctionTask t;
    t.set_protocol_version(protocol::kProtocolVersion);
    t.set_task_id(task);
    t.set_job_id(round.spec.job);
    t.set_round(round.spec.round);
    t.set_role(role);
    t.set_fan_in(fan_in);
    t.set_parent_fn(parent_fn);
    t.set_parent_lease(parent_lease);
    t.set_parent_task(parent_task);
    t.set_threads(options.kernel_threads);
    if (role == v1::ROLE_LEAF && !serverful()) t.set_agent_lease(segment->lease());
    t.set_parent_payload_port(parent_port);
    t.set_index_in_parent(index);
    for (uint32_t k : keys) t.add_input_keys(k);
    for (const auto& spec : round.spec.model.tensors()) *t.add_model() = protocol::ToProto(spec);
    const std::string wire = t.SerializeAsString();
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef block, segment->Allocate(wire.size(), {shm::BlockKind::kModel}));
    std::memcpy(block.bytes().data(), wire.data(), wire.size());
    return HandOver(block, f.lease, MakeDescriptor({TRB_KIND_CONTROL, f.fn, 0, task, round.spec.round, 0, 0, 0, 0}));
  }

  void ReleaseFunctions() {
    payload_links.clear();
    for (const Leaf& l : round.leaves) supervisor->Release(l.f.fn);
    for (const auto& [f, task] : round.intermediates) supervisor->Release(f.fn);
    if (round.root.fn != 0) supervisor->Release(round.root.fn);
    round.leaves.clear();
    round.intermediates.clear();
    round.root = {};
  }

  // (Re)builds the node's tree for round.keys: fresh tasks, functions from the
  // supervisor, routes, every committed leaf result and every update held so
  // far sent again. Keys whose leaf committed get no new leaf.
  Result<void> Build(std::unique_lock<std::mutex>& lock) {
    ReleaseFunctions();
    round.leaf_of.clear();  // updates accepted meanwhile are held, and sent below
    round.rebuild = false;
    round.died.clear();
    std::set<uint32_t> done;
    for (const Committed& c : round.committed) done.insert(c.keys.begin(), c.keys.end());
    std::vector<uint32_t> pending;
    for (uint32_t k : round.keys) {
      if (done.count(k) == 0) pending.push_back(k);
    }
    std::sort(pending.begin(), pending.end());
    const size_t n_leaves = (pending.size() + round.fan_in - 1) / round.fan_in;
    const size_t n_mid = n_leaves > round.fan_in ? (n_leaves + round.fan_in - 1) / round.fan_in : 0;
    // Acquiring may wait for a cold start; the lock is not needed meanwhile.
    lock.unlock();
    std::vector<FunctionInstance> got;
    Result<void> status = Ok();
    for (size_t i = 0; i < n_leaves + n_mid + 1 && status; ++i) {
      auto f = supervisor->Acquire();
      if (f) {
        got.push_back(f.value());
      } else {
        status = std::move(f).error();
      }
    }
    lock.lock();
    if (!status) {
      for (const FunctionInstance& f : got) supervisor->Release(f.fn);
      return status;
    }
    for (const FunctionInstance& f : got) round.rebuild = round.rebuild || round.died.count(f.fn) != 0;
    round.root = got.back();
    round.root_task = next_task++;
    round.node_task = next_task++;
    for (size_t i = 0; i < n_leaves; ++i) {
      Leaf l{got[i], next_task++, {}};
      for (size_t k = i * round.fan_in; k < std::min(pending.size(), (i + 1) * round.fan_in); ++k) {
        round.leaf_of[pending[k]] = i;
        l.keys.push_back(pending[k]);
      }
      round.leaves.push_back(l);
    }
    for (size_t i = 0; i < n_mid; ++i) round.intermediates.emplace_back(got[n_leaves + i], next_task++);
    const uint32_t root_inputs = static_cast<uint32_t>((n_mid ? n_mid : n_leaves) + round.committed.size());
    TRIBUTARY_TRY(SendTask(round.root, round.root_task, v1::ROLE_NODE_ROOT, root_inputs, function::kAgentFn,
                           segment->lease(), round.node_task, payload_server ? payload_server->port() : 0, 0));
    for (size_t i = 0; i < n_mid; ++i) {
      const auto& [f, task] = round.intermediates[i];
      const size_t children = std::min(n_leaves, (i + 1) * round.fan_in) - i * round.fan_in;
      TRIBUTARY_TRY(SendTask(f, task, v1::ROLE_INTERMEDIATE, static_cast<uint32_t>(children), round.root.fn,
                             round.root.lease, round.root_task, round.root.payload_port, static_cast<uint32_t>(i)));
    }
    for (size_t i = 0; i < n_leaves; ++i) {
      const Leaf& l = round.leaves[i];
      const FunctionInstance& parent = n_mid ? round.intermediates[i / round.fan_in].first : round.root;
      const uint64_t parent_task = n_mid ? round.intermediates[i / round.fan_in].second : round.root_task;
      const uint32_t index = static_cast<uint32_t>(n_mid ? i % round.fan_in : i);
      TRIBUTARY_TRY(SendTask(l.f, l.task, v1::ROLE_LEAF, static_cast<uint32_t>(l.keys.size()), parent.fn,
                             parent.lease, parent_task, parent.payload_port, index, l.keys));
    }
    // The node-root's inputs: its children first, then the committed results.
    for (size_t k = 0; k < round.committed.size(); ++k) {
      TRIBUTARY_TRY(SendCommitted(round.committed[k], static_cast<uint32_t>((n_mid ? n_mid : n_leaves) + k)));
    }
    for (const auto& [key, leaf] : round.leaf_of) TRIBUTARY_TRY(sw->SetRoute(key, round.leaves[leaf].f.fn));
    for (const HeldUpdate& h : round.held) {
      auto leaf = round.leaf_of.find(h.route_key);
      if (leaf != round.leaf_of.end()) TRIBUTARY_TRY(SendUpdate(h, round.leaves[leaf->second], false));
    }
    return Ok();
  }

  void EndRound() {
    for (const auto& [key, leaf] : round.leaf_of) (void)sw->RemoveRoute(key);
    ReleaseFunctions();
    rounds.CloseRound(round.spec.job);
    round = Round{};
  }
};

NodeAgent::NodeAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<NodeAgent>> NodeAgent::Start(const NodeOptions& options) {
  auto impl = std::make_unique<Impl>();
  Impl* self = impl.get();
  impl->options = options;
  TRIBUTARY_ASSIGN_OR_RETURN(impl->segment, shm::Segment::Create(options.store));
  TRIBUTARY_ASSIGN_OR_RETURN(auto kernel, dataplane::OpenKernelRouter(options.dataplane, &impl->dataplane_reason));
  dataplane::SwitchCallbacks cb;
  cb.on_function_exit = [self](uint32_t fn) { self->OnFunctionExit(fn); };
  // Undeliverable descriptors need no action: every update is held by the
  // agent and re-sent when the tree is rebuilt.
  TRIBUTARY_ASSIGN_OR_RETURN(impl->sw, dataplane::DescriptorSwitch::Start(options.node_id, std::move(kernel), cb));
  TRIBUTARY_ASSIGN_OR_RETURN(auto link, dataplane::FunctionLink::Connect(impl->sw->address(), function::kAgentFn));
  impl->link.emplace(std::move(link));
  impl->supervisor = std::make_unique<Supervisor>(SupervisorOptions{
      options.binary, options.store.name, impl->sw->address(), options.keep_alive, std::chrono::milliseconds(10'000), 256,
      options.transport == AggregationTransport::kTcp});
  if (options.transport == AggregationTransport::kTcp) {
    TRIBUTARY_ASSIGN_OR_RETURN(impl->payload_server,
                               dataplane::PayloadServer::Start([self](int fd) { return self->ReadNodeResult(fd); }));
  }
  impl->receiver = std::thread([self] { self->Receive(); });
  TRIBUTARY_ASSIGN_OR_RETURN(impl->gateway, gateway::Gateway::Start(options.gateway, *impl->segment, impl->rounds, *impl,
                                                                                   impl->models));
  return std::unique_ptr<NodeAgent>(new NodeAgent(std::move(impl)));
}

NodeAgent::~NodeAgent() {
  impl_->gateway.reset();
  impl_->models.Clear();  // its blocks go before the segment
  impl_->stop = true;
  impl_->receiver.join();
  {
    std::lock_guard lock(impl_->mu);
    impl_->round = Round{};
    impl_->results.clear();
  }
  impl_->payload_server.reset();
  impl_->sw.reset();  // no more callbacks from here on
  impl_->link.reset();
  impl_->supervisor.reset();
}

const std::string& NodeAgent::gateway_endpoint() const { return impl_->gateway->endpoint(); }
const std::string& NodeAgent::dataplane_reason() const { return impl_->dataplane_reason; }
shm::Segment& NodeAgent::segment() { return *impl_->segment; }
gateway::ModelStore& NodeAgent::models() { return impl_->models; }

Result<void> NodeAgent::OpenRound(gateway::RoundSpec spec, uint32_t fan_in) {
  if (fan_in == 0) return MakeError(ErrorCode::kInvalidArgument, "fan-in must be positive");
  if (spec.selected.empty()) return MakeError(ErrorCode::kInvalidArgument, "no clients selected");
  std::unique_lock lock(impl_->mu);
  if (impl_->round.active) return MakeError(ErrorCode::kInvalidArgument, "a round is already open on this node");
  Round& r = impl_->round;
  r.active = true;
  r.spec = spec;
  r.fan_in = fan_in;
  for (const auto& [client, key] : spec.selected) r.keys.push_back(key);
  auto built = impl_->Build(lock);
  if (!built) {
    impl_->EndRound();
    return built;
  }
  impl_->rounds.OpenRound(std::move(spec));
  return Ok();
}

Result<NodeRoundResult> NodeAgent::WaitRound(Clock::time_point deadline) {
  std::unique_lock lock(impl_->mu);
  Round& r = impl_->round;
  if (!r.active) return MakeError(ErrorCode::kRoundClosed, "no round is open on this node");
  for (;;) {
    impl_->Sweep();
    while (!impl_->results.empty()) {
      auto [d, block] = std::move(impl_->results.front());
      impl_->results.pop_front();
      if (d.job != r.node_task) continue;  // an abandoned attempt's result
      NodeRoundResult out{std::move(block), r.rebuilds};
      impl_->rounds_completed += 1;
      impl_->EndRound();
      return out;
    }
    if (impl_->serverful() && (r.rebuild || Clock::now() >= deadline)) {
      impl_->EndRound();
      return MakeError(ErrorCode::kInternal,
                       "the serverful comparison transport does not re-dispatch: a function died or the deadline passed");
    }
    if (r.rebuild) {
      r.rebuilds += 1;
      impl_->total_rebuilds += 1;
      auto built = impl_->Build(lock);
      if (!built) {
        impl_->EndRound();
        return std::move(built).error();
      }
      continue;
    }
    if (!r.deadline_passed && Clock::now() >= deadline) {
      // Close the gateway for this round, then fold what arrived.
      r.deadline_passed = true;
      impl_->rounds.CloseRound(r.spec.job);
      r.keys.clear();
      for (const HeldUpdate& h : r.held) r.keys.push_back(h.route_key);
      if (r.keys.empty() && r.committed.empty()) {
        impl_->EndRound();
        return MakeError(ErrorCode::kRoundClosed, "no update arrived before the deadline");
      }
      r.rebuild = true;  // a tree for what arrived (also unsticks one waiting on the lost)
      continue;
    }
    impl_->cv.wait_until(lock, r.deadline_passed ? Clock::now() + std::chrono::milliseconds(100)
                                                 : std::min(deadline, Clock::now() + std::chrono::milliseconds(100)));
  }
}

Result<uint64_t> NodeAgent::RunPersonalRound(gateway::RoundSpec spec, Clock::time_point deadline,
                                             const std::function<Result<void>(ClientUpdate)>& on_update) {
  if (spec.selected.empty()) return MakeError(ErrorCode::kInvalidArgument, "no clients selected");
  const size_t expected = spec.selected.size();
  std::unique_lock lock(impl_->mu);
  Round& r = impl_->round;
  if (r.active) return MakeError(ErrorCode::kInvalidArgument, "a round is already open on this node");
  r.active = true;
  r.personal = true;
  r.spec = spec;
  impl_->rounds.OpenRound(std::move(spec));
  uint64_t handled = 0, delivered = 0;  // a non-finite update (if the job admits them) is handled, not delivered
  Result<void> outcome = Ok();
  while (outcome && handled < expected) {
    if (r.arrived.empty()) {
      if (Clock::now() >= deadline) break;
      impl_->cv.wait_until(lock, deadline);
      continue;
    }
    PersonalUpdate u = std::move(r.arrived.front());
    r.arrived.pop_front();
    lock.unlock();
    // Decoded to f32 by folding it once into zeros: the kernels read every transport dtype.
    ClientUpdate out{u.client, u.weight, std::vector<float>(u.layout.elements(), 0.0f)};
    auto finite = agg::FiniteUpdate::Check(u.layout, u.block.bytes(), 1.0, {1});
    if (finite) {
      agg::FoldUpdates(out.values, std::span(&finite.value(), 1), {1});
      outcome = on_update(std::move(out));
      delivered += 1;
    }
    handled += 1;
    u.block = {};
    lock.lock();
  }
  impl_->rounds.CloseRound(r.spec.job);
  r = Round{};
  if (!outcome) return std::move(outcome).error();
  if (delivered == 0) return MakeError(ErrorCode::kRoundClosed, "no update arrived before the deadline");
  impl_->rounds_completed += 1;
  return delivered;
}

std::vector<FunctionInstance> NodeAgent::RoundFunctions() const {
  std::lock_guard lock(impl_->mu);
  std::vector<FunctionInstance> out;
  for (const Leaf& l : impl_->round.leaves) out.push_back(l.f);
  for (const auto& [f, task] : impl_->round.intermediates) out.push_back(f);
  if (impl_->round.root.fn != 0) out.push_back(impl_->round.root);
  return out;
}

uint32_t NodeAgent::ReapIdleFunctions() {
  impl_->Sweep();
  return impl_->supervisor->Reap();
}

NodeStats NodeAgent::Stats() const {
  NodeStats s;
  s.gateway = impl_->gateway->Stats();
  s.functions = impl_->supervisor->Stats();
  s.store = impl_->segment->Stats();
  s.dataplane = impl_->sw->dataplane();
  std::lock_guard lock(impl_->mu);
  s.rounds_completed = impl_->rounds_completed;
  s.rebuilds = impl_->total_rebuilds;
  return s;
}

}  // namespace tributary::node
