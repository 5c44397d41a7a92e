#include "tributary/node/node_agent.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <mutex>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>

#include "tributary/aggregator/kernels.h"
#include "tributary/dataplane/descriptor_switch.h"
#include "tributary/function/function_host.h"
#include "tributary/planner/tree_plan.h"
#include "tributary/protocol/codec.h"
#include "tributary/v1/node.pb.h"
#include "update_transport.h"

namespace tributary::node {
namespace {

using dataplane::Descriptor;
using Clock = std::chrono::steady_clock;

// Functions one node runs at once (the supervisor's limit, the planner's
// budget). Each maps the segment and holds one of its leases; the agent and
// tools attaching to it keep the rest.
constexpr uint32_t kMaxFunctions = shm::kMaxLeases - 8;

// A function of the current tree and the task it runs.
struct TreeFunction {
  FunctionInstance f;
  uint64_t task = 0;
};

// A leaf's result the agent holds until the node's partial is complete.
struct Committed {
  shm::BlockRef partial;
  std::vector<uint32_t> keys;
  // Its leaf's place in the current plan: after a failure the result goes to
  // that leaf's parent at the leaf's slot, so the tree's sums stay the same.
  // None: a leaf of a plan the deadline replaced; the node-root takes it after its children.
  std::optional<uint32_t> leaf;
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
  std::vector<uint32_t> keys;            // route keys the current tree expects
  planner::TreePlan plan;                // the current tree
  std::vector<TreeFunction> functions;   // by plan index (fn 0: a committed leaf, no function); node-root last
  std::vector<uint32_t> host;            // by plan index: the place whose process runs it (planner::ReuseHosts)
  bool replan = true;                    // the next Build plans anew (the round's start, the deadline)
  uint64_t node_task = 0;                // what the node-root's result carries
  std::vector<HeldUpdate> held;
  std::vector<Committed> committed;
  bool rebuild = false;
  std::set<uint32_t> died;  // functions that exited since the current tree was planned
  bool deadline_passed = false;
  std::set<std::string> accepted;        // clients whose updates the round folds
  uint32_t rebuilds = 0;

  // The live leaf that folds `route_key`, if any.
  const TreeFunction* LeafFor(uint32_t route_key) const {
    auto it = plan.leaf_of.find(route_key);
    return it == plan.leaf_of.end() || functions[it->second].f.fn == 0 ? nullptr : &functions[it->second];
  }

  bool IsCommitted(uint32_t leaf) const {
    return std::any_of(committed.begin(), committed.end(), [leaf](const Committed& c) { return c.leaf == leaf; });
  }
};

v1::FunctionRole RoleOf(planner::Role role) {
  switch (role) {
    case planner::Role::kLeaf: return v1::ROLE_LEAF;
    case planner::Role::kIntermediate: return v1::ROLE_INTERMEDIATE;
    case planner::Role::kNodeRoot: return v1::ROLE_NODE_ROOT;
  }
  return v1::ROLE_LEAF;
}

}  // namespace

struct NodeAgent::Impl final : gateway::UpdateSink {
  NodeOptions options;
  std::unique_ptr<shm::Segment> segment;
  std::string dataplane_reason;
  std::unique_ptr<dataplane::DescriptorSwitch> sw;
  std::optional<dataplane::FunctionLink> link;  // fn 1, the agent's own
  std::unique_ptr<UpdateTransport> transport;
  std::unique_ptr<Supervisor> supervisor;
  gateway::RoundBook rounds;
  gateway::ModelStore models;
  std::unique_ptr<gateway::Gateway> gateway;
  std::thread receiver;
  std::thread watchdog;  // liveness, apart from `mu`: a function stopped inside the segment's lock must not stop it
  std::thread scaler;    // the autoscaler's decisions, apart from `mu` too (starting functions takes time)
  double fold_bytes_per_s = 0, function_fold_bytes_per_s = 0;
  // What the scaler reads without `mu`: the last planned tree, when, and the update size.
  std::atomic<uint32_t> planned_functions{0};
  std::atomic<int64_t> planned_at_ms{0};
  std::atomic<uint64_t> update_bytes{4ull << 20};
  std::atomic<uint32_t> autoscale_desired{0};
  std::atomic<double> peak_arrivals_per_s{0};
  mutable std::mutex autoscale_mu;
  std::string autoscale_why;
  std::atomic<bool> stop{false};
  std::atomic<bool> stop_scaling{false};
  std::atomic<bool> shutting_down{false};  // Shutdown(): rounds end, none opens

  mutable std::mutex mu;  // round state and sends on `link`
  std::condition_variable cv;
  Round round;
  std::deque<std::pair<Descriptor, shm::BlockRef>> results;
  uint64_t next_task = 1;
  std::atomic<uint64_t> rounds_completed{0};
  std::atomic<uint64_t> total_rebuilds{0};
  // The open round as the node service reports it, and closes asked for,
  // under their own lock: the service's thread must never wait for `mu`,
  // which a rebuild holds while functions start (its heartbeats would stop).
  mutable std::mutex progress_mu;
  std::optional<RoundProgress> progress;
  std::optional<std::pair<std::string, uint64_t>> close_asked;  // (job, round)

  // Under `mu`: the service's view follows the round. A round that opens
  // drops closes asked before it (the node service asks again for its plan).
  void Report(bool opened = false) {
    std::lock_guard lock(progress_mu);
    if (opened) close_asked.reset();
    if (!round.active) {
      progress.reset();
      close_asked.reset();
      return;
    }
    progress = RoundProgress{round.spec.job, round.spec.round, round.accepted.size()};
  }
  bool CloseAsked() const {
    std::lock_guard lock(progress_mu);
    return close_asked && progress && close_asked->first == progress->job && close_asked->second == progress->round;
  }
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
      if (desc.kind == TRB_KIND_HELLO) {
        supervisor->OnHello(desc.src_fn, desc.lease, static_cast<uint16_t>(desc.payload_port));
        continue;
      }
      if (desc.kind == TRB_KIND_HEARTBEAT) {
        supervisor->OnHeartbeat(desc.src_fn);
        continue;
      }
      auto block = segment->Adopt({desc.offset, desc.generation});
      if (!block || desc.kind != TRB_KIND_PARTIAL) continue;
      OnResult(desc, std::move(block).value());
    }
  }

  // A partial for the agent: the node's result, or a leaf's commit.
  void OnResult(const Descriptor& d, shm::BlockRef block) {
    std::lock_guard lock(mu);
    if (round.active && d.task != round.node_task) {
      Commit(d, std::move(block));  // or an abandoned attempt's result, dropped
      return;
    }
    results.emplace_back(d, std::move(block));
    cv.notify_all();
  }

  void OnFunctionExit(uint32_t fn) {
    supervisor->OnExit(fn);
    unswept += 1;
    std::lock_guard lock(mu);
    if (!round.active) return;
    // Also a function the supervisor handed out for a tree being built right
    // now: Build checks `died` once it has its functions.
    round.died.insert(fn);
    const bool ours = std::any_of(round.functions.begin(), round.functions.end(),
                                  [fn](const TreeFunction& t) { return t.f.fn == fn; });
    if (ours) {
      round.rebuild = true;
      cv.notify_all();
    }
  }

  Result<void> Accept(const gateway::AcceptedUpdate& u, shm::BlockRef block) override {
    std::lock_guard lock(mu);
    // After the deadline the tree folds what it held then: a later update would never be folded.
    if (!round.active || u.admission.job != round.spec.job || u.admission.round != round.spec.round ||
        round.deadline_passed) {
      return MakeError(ErrorCode::kRoundClosed, "the round closed on this node while the update was uploaded");
    }
    round.accepted.insert(u.admission.client);
    Report();
    if (round.personal) {
      round.arrived.push_back({u.admission.client, u.layout, static_cast<double>(u.sample_count), std::move(block)});
      cv.notify_all();
      return Ok();
    }
    HeldUpdate h{std::move(block), u.admission.route_key, static_cast<uint8_t>(u.layout.runs().front().dtype),
                 static_cast<double>(u.sample_count)};
    const TreeFunction* leaf = round.LeafFor(h.route_key);
    // A send that fails leaves the leaf short of an input: the rebuild re-sends every held update.
    if (leaf != nullptr) {
      const Result<void> sent = transport->SendUpdate(h, leaf->f, leaf->task, round.spec.round, /*by_route=*/true);
      if (!sent) {
        (void)Lost(sent, leaf->f.fn);
        round.rebuild = true;
        cv.notify_all();
      }
    }
    if (transport->recovers_failures()) round.held.push_back(std::move(h));
    return Ok();
  }

  // Kills the functions silent past the liveness bound, every 100 ms. Their
  // exits then come from the data plane like any death (OnFunctionExit): a
  // rebuild on the same plan if the current tree used one.
  void Watch() {
    while (!stop.load()) {
      supervisor->KillSilent();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  static int64_t NowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
  }

  // Once a second: the arrivals since the last decision, then the number of
  // live functions the autoscaler wants, started or spared by the supervisor.
  void Scale() {
    planner::AutoscaleState state;
    std::vector<planner::ArrivalSample> arrivals;
    uint64_t accepted = gateway->Stats().accepted;
    const int64_t start = NowMs();
    while (!stop_scaling.load()) {
      for (int i = 0; i < 10 && !stop_scaling.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (stop_scaling.load()) return;
      const double now = static_cast<double>(NowMs() - start) / 1000;
      const uint64_t total = gateway->Stats().accepted;
      arrivals.push_back({now, static_cast<double>(total - accepted)});
      accepted = total;
      std::erase_if(arrivals, [&](const planner::ArrivalSample& a) {
        return a.t_s <= now - options.autoscaling.stable_window_s;
      });
      double peak = 0;
      for (const planner::ArrivalSample& a : arrivals) peak = std::max(peak, a.updates);
      peak_arrivals_per_s = peak;  // per sample, and samples are a second apart
      // FL rounds recur: the last planned tree is expected again within a stable window.
      const bool recent = NowMs() - planned_at_ms.load() <= options.autoscaling.stable_window_s * 1000;
      const planner::AutoscaleInputs in{now, arrivals,
                                        function_fold_bytes_per_s / static_cast<double>(std::max<uint64_t>(update_bytes, 1)),
                                        supervisor->Stats().live, recent ? planned_functions.load() : 0};
      const planner::AutoscaleDecision d = planner::Autoscale(options.autoscaling, state, in);
      state = d.next;
      autoscale_desired = d.desired;
      {
        std::lock_guard lock(autoscale_mu);
        autoscale_why = d.why;
      }
      if (shutting_down.load()) return;  // no new functions for a node going down
      supervisor->ScaleTo(d.desired);
    }
  }

  // ---- under `mu`

  // A leaf of the current tree handed the agent its result: its updates are
  // no longer needed (a leaf of an abandoned tree is ignored).
  void Commit(const Descriptor& d, shm::BlockRef partial) {
    for (uint32_t i = 0; i < round.plan.leaves; ++i) {
      if (round.functions[i].f.fn == 0 || round.functions[i].task != d.task) continue;  // fn 0: committed already
      const std::vector<uint32_t>& leaf_keys = round.plan.functions[i].keys;
      const std::set<uint32_t> keys(leaf_keys.begin(), leaf_keys.end());
      std::erase_if(round.held, [&](const HeldUpdate& h) { return keys.count(h.route_key) != 0; });
      round.committed.push_back(Committed{std::move(partial), leaf_keys, i});
      return;
    }
  }

  // A hand-over that found function `fn`'s lease reclaimed: it died and its
  // exit is not reported yet (the segment's sweep saw it first). A death like
  // any other: the tree is rebuilt, without it.
  bool Lost(const Result<void>& sent, uint32_t fn) {
    if (sent || sent.error().code != ErrorCode::kNotFound) return false;
    supervisor->OnLeaseLost(fn);
    round.rebuild = true;
    return true;
  }

  // Sends the process that runs place `index` of the plan its task, with the
  // tasks of the places it runs next (reuse across levels).
  Result<void> SendTask(uint32_t index) {
    v1::FunctionTask t = TaskFor(index);
    for (uint32_t i = index + 1; i < round.plan.functions.size(); ++i) {
      if (round.host[i] == index) *t.add_then() = TaskFor(i);
    }
    const TreeFunction& self = round.functions[index];
    const std::string wire = t.SerializeAsString();
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef block, segment->Allocate(wire.size(), {.kind = shm::BlockKind::kTask}));
    std::memcpy(block.mutable_bytes().data(), wire.data(), wire.size());
    return HandOver(block, self.f.lease,
                    dataplane::MakeTask({.dest_fn = self.f.fn, .task = self.task, .round = round.spec.round}), *link);
  }

  // Place `index`'s task: what it folds (a leaf's clients in the order of
  // its keys) and where its result goes.
  v1::FunctionTask TaskFor(uint32_t index) const {
    const planner::PlannedFunction& p = round.plan.functions[index];
    const TreeFunction& self = round.functions[index];
    const bool node_root = p.role == planner::Role::kNodeRoot;
    const TreeFunction* parent = node_root ? nullptr : &round.functions[p.parent];
    v1::FunctionTask t;
    t.set_protocol_version(protocol::kProtocolVersion);
    t.set_task_id(self.task);
    t.set_job_id(round.spec.job);
    t.set_round(round.spec.round);
    t.set_role(RoleOf(p.role));
    t.set_fan_in(p.fan_in);
    t.set_parent_fn(node_root ? function::kAgentFn : parent->f.fn);
    t.set_parent_lease(node_root ? segment->lease() : parent->f.lease);
    t.set_parent_task(node_root ? round.node_task : parent->task);
    t.set_parent_payload_port(node_root ? transport->result_port() : parent->f.payload_port);
    t.set_index_in_parent(p.index_in_parent);
    t.set_threads(options.kernel_threads);
    if (p.role == planner::Role::kLeaf && transport->recovers_failures()) t.set_agent_lease(segment->lease());
    for (uint32_t k : p.keys) t.add_input_keys(k);
    protocol::ToProto(round.spec.model, t.mutable_model());
    return t;
  }

  // Sends a committed leaf result to function `to` of the plan as its input `slot`.
  Result<void> SendCommitted(const Committed& c, uint32_t to, uint32_t slot) {
    const TreeFunction& parent = round.functions[to];
    return HandOver(c.partial, parent.f.lease,
                    dataplane::MakePartial({.dest_fn = parent.f.fn,
                                            .src_fn = function::kAgentFn,
                                            .slot = slot,
                                            .task = parent.task,
                                            .round = round.spec.round,
                                            .weight = c.partial.meta().weight}),
                    *link);
  }

  void ReleaseFunctions() {
    transport->Reset();
    for (uint32_t i = 0; i < round.functions.size(); ++i) {
      if (round.host[i] == i) supervisor->Release(round.functions[i].f.fn);
    }
    round.functions.clear();
    round.host.clear();
  }

  // Functions for every place of `plan`, from the supervisor (warm ones
  // first); acquiring may wait for a cold start, so without the lock.
  Result<std::vector<FunctionInstance>> AcquireFunctions(size_t n, std::unique_lock<std::mutex>& lock) {
    lock.unlock();
    std::vector<FunctionInstance> got;
    Result<void> status = Ok();
    while (got.size() < n && status) {
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
      return std::move(status).error();
    }
    return got;
  }

  // (Re)builds the node's tree. At the round's start and at the deadline it
  // plans anew for round.keys (results committed under an earlier plan go to
  // the node-root after its children). After a failure it keeps the plan:
  // replacement functions take the same places, committed leaf results go to
  // their parents at their slots and every update held is sent again, so a
  // failure that loses nothing changes no bit of the node's partial.
  Result<void> Build(std::unique_lock<std::mutex>& lock) {
    ReleaseFunctions();
    round.rebuild = false;
    round.died.clear();
    planner::TreePlan plan = round.plan;
    if (round.replan) {
      std::set<uint32_t> done;
      for (Committed& c : round.committed) {
        done.insert(c.keys.begin(), c.keys.end());
        c.leaf.reset();
      }
      planner::TreeInputs in{{}, static_cast<uint32_t>(round.committed.size()), round.fan_in, kMaxFunctions};
      for (uint32_t k : round.keys) {
        if (done.count(k) == 0) in.expected_keys.push_back(k);
      }
      TRIBUTARY_ASSIGN_OR_RETURN(plan, planner::PlanNodeTree(in));
      if (plan.fan_in != round.fan_in) {
        spdlog::info("node {}: round {}: fan-in {} for {} updates in at most {} functions (the job's is {})",
                     options.node_id, round.spec.round, plan.fan_in, in.expected_keys.size(), kMaxFunctions, round.fan_in);
      }
    }
    round.plan = {};  // no routes while functions are acquired: updates accepted meanwhile are held, sent below
    std::vector<bool> runs(plan.functions.size());  // all but committed leaves
    for (uint32_t i = 0; i < plan.functions.size(); ++i) runs[i] = i >= plan.leaves || !round.IsCommitted(i);
    std::vector<uint32_t> host = planner::ReuseHosts(plan, runs);
    std::vector<uint32_t> places;  // plan indices that need a process of their own
    for (uint32_t i = 0; i < plan.functions.size(); ++i) {
      if (host[i] == i) places.push_back(i);
    }
    if (!round.deadline_passed) {  // the round's tree, not the deadline's tree for what is left
      planned_functions = static_cast<uint32_t>(places.size());
      planned_at_ms = NowMs();
      update_bytes = std::max<uint64_t>(round.spec.model.payload_bytes(), 1);
    }
    TRIBUTARY_ASSIGN_OR_RETURN(std::vector<FunctionInstance> got, AcquireFunctions(places.size(), lock));
    round.functions.assign(plan.functions.size(), TreeFunction{});
    for (size_t k = 0; k < places.size(); ++k) {
      round.rebuild = round.rebuild || round.died.count(got[k].fn) != 0;
      round.functions[places[k]].f = got[k];
    }
    // Task ids grow with the level: a process's next task has a larger id
    // than the one it runs, so its inputs wait as early ones (function_host.cc).
    for (uint32_t i = 0; i < plan.functions.size(); ++i) {
      if (host[i] == planner::kNoProcess) continue;
      round.functions[i] = {round.functions[host[i]].f, next_task++};
    }
    round.node_task = next_task++;
    round.plan = std::move(plan);
    round.host = std::move(host);
    round.replan = false;
    // Parents' processes before their children's: the node-root, intermediates, leaves.
    // A function found dead on the way ends this build: the caller rebuilds.
    for (auto it = places.rbegin(); it != places.rend(); ++it) {
      const Result<void> sent = SendTask(*it);
      if (Lost(sent, round.functions[*it].f.fn)) return Ok();
      TRIBUTARY_TRY(sent);
    }
    uint32_t extra = round.plan.root_children();  // the node-root's inputs after its children
    for (const Committed& c : round.committed) {
      const planner::PlannedFunction* leaf = c.leaf ? &round.plan.functions[*c.leaf] : nullptr;
      const uint32_t to = leaf ? leaf->parent : round.plan.root();
      const Result<void> sent = SendCommitted(c, to, leaf ? leaf->index_in_parent : extra++);
      if (Lost(sent, round.functions[to].f.fn)) return Ok();
      TRIBUTARY_TRY(sent);
    }
    for (const auto& [key, leaf] : round.plan.leaf_of) {
      if (round.functions[leaf].f.fn != 0) TRIBUTARY_TRY(sw->SetRoute(key, round.functions[leaf].f.fn));
    }
    for (const HeldUpdate& h : round.held) {
      if (const TreeFunction* leaf = round.LeafFor(h.route_key)) {
        const Result<void> sent = transport->SendUpdate(h, leaf->f, leaf->task, round.spec.round, /*by_route=*/false);
        if (Lost(sent, leaf->f.fn)) return Ok();
        TRIBUTARY_TRY(sent);
      }
    }
    return Ok();
  }

  void EndRound() {
    if (round.active) planned_at_ms = NowMs();  // its tree is expected again within a stable window from now
    for (const auto& [key, leaf] : round.plan.leaf_of) (void)sw->RemoveRoute(key);
    ReleaseFunctions();
    rounds.CloseRound(round.spec.job);
    round = Round{};
    Report();
  }
};

NodeAgent::NodeAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<NodeAgent>> NodeAgent::Start(const NodeOptions& options) {
  auto impl = std::make_unique<Impl>();
  Impl* self = impl.get();
  impl->options = options;
  // What agents killed on this machine left behind (their owner files say so).
  for (const std::string& name : shm::RemoveAbandonedSegments("tributary.")) {
    spdlog::warn("node {}: removed shared-memory segment {}, abandoned by a process that is gone", options.node_id,
                 name);
  }
  TRIBUTARY_ASSIGN_OR_RETURN(impl->segment, shm::Segment::Create(options.store));
  TRIBUTARY_ASSIGN_OR_RETURN(auto kernel, dataplane::OpenKernelRouter(options.dataplane, &impl->dataplane_reason));
  dataplane::SwitchCallbacks cb;
  cb.on_function_exit = [self](uint32_t fn) { self->OnFunctionExit(fn); };
  // Undeliverable descriptors need no action: every update is held by the
  // agent and re-sent when the tree is rebuilt.
  TRIBUTARY_ASSIGN_OR_RETURN(impl->sw, dataplane::DescriptorSwitch::Start(options.node_id, std::move(kernel), cb));
  TRIBUTARY_ASSIGN_OR_RETURN(auto link, dataplane::FunctionLink::Connect(impl->sw->address(), function::kAgentFn));
  impl->link.emplace(std::move(link));
  SupervisorOptions so;
  so.binary = options.binary;
  so.segment = options.store.name;
  so.switch_address = impl->sw->address();
  so.keep_alive = options.keep_alive;
  so.liveness_timeout = options.function_liveness;
  so.max_functions = kMaxFunctions;
  so.transport = options.transport;
  impl->supervisor = std::make_unique<Supervisor>(std::move(so));
  // The capacity unit of the autoscaler; the node's, for the controller (in
  // the hello), counts one function per core: an upper bound where memory
  // bandwidth binds first (the segment usually bounds a node's room before).
  impl->function_fold_bytes_per_s =
      agg::MeasureFoldBytesPerSecond({static_cast<int>(std::max<uint32_t>(options.kernel_threads, 1))});
  const uint32_t per_function_threads = std::max<uint32_t>(options.kernel_threads, 1);
  impl->fold_bytes_per_s = impl->function_fold_bytes_per_s *
                           std::max(1u, std::thread::hardware_concurrency() / per_function_threads);
  TRIBUTARY_ASSIGN_OR_RETURN(
      impl->transport,
      MakeUpdateTransport(options.transport, *impl->segment, *impl->link,
                          [self](const Descriptor& d, shm::BlockRef block) { self->OnResult(d, std::move(block)); }));
  TRIBUTARY_ASSIGN_OR_RETURN(impl->gateway, gateway::Gateway::Start(options.gateway, *impl->segment, impl->rounds, *impl,
                                                                                   impl->models));
  // Last: nothing can fail after them (a joinable thread must not be destroyed).
  impl->receiver = std::thread([self] { self->Receive(); });
  impl->watchdog = std::thread([self] { self->Watch(); });
  if (options.autoscale) impl->scaler = std::thread([self] { self->Scale(); });
  return std::unique_ptr<NodeAgent>(new NodeAgent(std::move(impl)));
}

NodeAgent::~NodeAgent() {
  impl_->stop_scaling = true;  // first: it reads the gateway and the supervisor
  if (impl_->scaler.joinable()) impl_->scaler.join();
  impl_->gateway.reset();
  impl_->models.Clear();  // its blocks go before the segment
  impl_->stop = true;
  impl_->receiver.join();
  impl_->watchdog.join();
  {
    std::lock_guard lock(impl_->mu);
    impl_->round = Round{};
    impl_->results.clear();
  }
  impl_->transport.reset();
  impl_->sw.reset();  // no more callbacks from here on
  impl_->link.reset();
  impl_->supervisor.reset();
}

const std::string& NodeAgent::gateway_endpoint() const { return impl_->gateway->endpoint(); }
const std::string& NodeAgent::gateway_public_key() const { return impl_->gateway->public_key(); }
const std::string& NodeAgent::dataplane_reason() const { return impl_->dataplane_reason; }
shm::Segment& NodeAgent::segment() { return *impl_->segment; }
gateway::ModelStore& NodeAgent::models() { return impl_->models; }

Result<void> NodeAgent::OpenRound(gateway::RoundSpec spec, uint32_t fan_in) {
  if (fan_in == 0) return MakeError(ErrorCode::kInvalidArgument, "fan-in must be positive");
  if (spec.selected.empty()) return MakeError(ErrorCode::kInvalidArgument, "no clients selected");
  std::unique_lock lock(impl_->mu);
  if (impl_->round.active) return MakeError(ErrorCode::kInvalidArgument, "a round is already open on this node");
  if (impl_->shutting_down.load()) return MakeError(ErrorCode::kRoundClosed, "the node is shutting down");
  Round& r = impl_->round;
  r.active = true;
  r.spec = spec;
  r.fan_in = fan_in;
  for (const auto& [client, key] : spec.selected) r.keys.push_back(key);
  // A function found dead while the tree was handed out: built again before
  // the round opens to uploads (their routes are set by a complete build).
  auto built = impl_->Build(lock);
  while (built && r.rebuild) {
    r.rebuilds += 1;
    impl_->total_rebuilds += 1;
    built = impl_->Build(lock);
  }
  if (!built) {
    impl_->EndRound();
    return built;
  }
  impl_->rounds.OpenRound(std::move(spec));
  impl_->Report(/*opened=*/true);
  return Ok();
}

Result<NodeRoundResult> NodeAgent::WaitRound(Clock::time_point deadline) {
  std::unique_lock lock(impl_->mu);
  Round& r = impl_->round;
  if (!r.active) return MakeError(ErrorCode::kRoundClosed, "no round is open on this node");
  for (;;) {
    impl_->Sweep();
    if (impl_->shutting_down.load()) {
      impl_->EndRound();
      return MakeError(ErrorCode::kRoundClosed, "the node is shutting down");
    }
    while (!impl_->results.empty()) {
      auto [d, block] = std::move(impl_->results.front());
      impl_->results.pop_front();
      if (d.task != r.node_task) continue;  // an abandoned attempt's result
      NodeRoundResult out{std::move(block), r.rebuilds, {r.accepted.begin(), r.accepted.end()}};
      impl_->rounds_completed += 1;
      impl_->EndRound();
      return out;
    }
    if (!impl_->transport->recovers_failures() && (r.rebuild || Clock::now() >= deadline)) {
      impl_->EndRound();
      return MakeError(ErrorCode::kInternal,
                       "the tcp transport does not re-dispatch: a function died or the deadline passed");
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
    if (!r.deadline_passed && (impl_->CloseAsked() || Clock::now() >= deadline)) {
      // Close the gateway for this round, then fold what arrived.
      r.deadline_passed = true;
      impl_->rounds.CloseRound(r.spec.job);
      r.keys.clear();
      for (const HeldUpdate& h : r.held) r.keys.push_back(h.route_key);
      if (r.keys.empty() && r.committed.empty()) {
        impl_->EndRound();
        return MakeError(ErrorCode::kRoundClosed, "no update arrived before the deadline");
      }
      r.replan = true;   // a tree for what arrived (also unsticks one waiting on the lost)
      r.rebuild = true;
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
  if (impl_->shutting_down.load()) return MakeError(ErrorCode::kRoundClosed, "the node is shutting down");
  r.active = true;
  r.personal = true;
  r.spec = spec;
  impl_->rounds.OpenRound(std::move(spec));
  impl_->Report(/*opened=*/true);
  uint64_t handled = 0, delivered = 0;  // a non-finite update (if the job admits them) is handled, not delivered
  Result<void> outcome = Ok();
  while (outcome && handled < expected && !impl_->shutting_down.load()) {
    if (r.arrived.empty()) {
      if (impl_->CloseAsked() || Clock::now() >= deadline) break;
      impl_->cv.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(100)));
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
  impl_->Report();
  if (!outcome) return std::move(outcome).error();
  if (delivered == 0) return MakeError(ErrorCode::kRoundClosed, "no update arrived before the deadline");
  impl_->rounds_completed += 1;
  return delivered;
}

std::vector<FunctionInstance> NodeAgent::RoundFunctions() const {
  std::lock_guard lock(impl_->mu);
  std::vector<FunctionInstance> out;
  for (uint32_t i = 0; i < impl_->round.functions.size(); ++i) {
    if (impl_->round.host[i] == i) out.push_back(impl_->round.functions[i].f);
  }
  return out;
}

void NodeAgent::SteerOnly(gateway::RoundSpec spec) { impl_->rounds.OpenRound(std::move(spec)); }
void NodeAgent::EndSteering(const std::string& job) { impl_->rounds.CloseRound(job); }

void NodeAgent::CloseRound(const std::string& job, uint64_t round) {
  // Without `mu` (see progress_mu): the waiting round sees it within 100 ms.
  {
    std::lock_guard lock(impl_->progress_mu);
    impl_->close_asked = std::pair{job, round};
  }
  impl_->cv.notify_all();
}

std::optional<RoundProgress> NodeAgent::Progress() const {
  std::lock_guard lock(impl_->progress_mu);
  return impl_->progress;
}

std::vector<gateway::CheckIn> NodeAgent::TakeCheckIns(size_t max) { return impl_->gateway->TakeCheckIns(max); }

void NodeAgent::Shutdown() {
  // Not under `mu`, which a stalled call may hold: waiters look at the flag at least every 100 ms.
  impl_->shutting_down = true;
  impl_->cv.notify_all();
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
  s.rounds_completed = impl_->rounds_completed.load();
  s.rebuilds = impl_->total_rebuilds.load();
  s.function_limit = kMaxFunctions;
  s.fold_bytes_per_s = impl_->fold_bytes_per_s;
  s.function_fold_bytes_per_s = impl_->function_fold_bytes_per_s;
  s.autoscale_desired = impl_->autoscale_desired.load();
  s.peak_arrivals_per_s = impl_->peak_arrivals_per_s.load();
  std::lock_guard lock(impl_->autoscale_mu);
  s.autoscale_why = impl_->autoscale_why;
  return s;
}

}  // namespace tributary::node
