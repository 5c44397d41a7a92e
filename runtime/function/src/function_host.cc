#include "tributary/function/function_host.h"

#include <poll.h>

#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "task_transport.h"
#include "tributary/protocol/codec.h"

namespace tributary::function {
namespace {

using dataplane::Descriptor;
using Clock = std::chrono::steady_clock;

// The task in progress: its accumulator, its inputs by slot (the fixed fold
// order), and how many slots are folded.
struct Task {
  v1::FunctionTask spec;
  agg::ModelSpec model;
  Accumulator accumulator;
  agg::Partial partial;
  std::map<uint32_t, uint32_t> slot_of_key;  // leaves: route key -> slot
  std::vector<std::optional<Input>> slots;   // arrived, not yet folded
  uint32_t folded = 0;                       // slots [0, folded) are in the sum
  std::deque<v1::FunctionTask> then;         // reuse: the tasks this process runs next

  // The input's place in the fold order, or nullopt if it is not one of ours.
  std::optional<uint32_t> SlotOf(const Input& in) const {
    if (in.d.kind == TRB_KIND_UPDATE) {
      auto it = slot_of_key.find(in.d.route_key);
      return it == slot_of_key.end() ? std::nullopt : std::optional<uint32_t>(it->second);
    }
    return in.d.slot < slots.size() ? std::optional<uint32_t>(in.d.slot) : std::nullopt;
  }
};

class Host {
 public:
  Host(std::unique_ptr<shm::Segment> segment, dataplane::FunctionLink link)
      : segment_(std::move(segment)), link_(std::move(link)) {
    agg::StrategyOptions o;  // fold and merge are the same for the whole weighted-mean family
    strategy_ = agg::Strategy::Create(o).value();
  }

  Result<void> Run(dataplane::AggregationTransport kind, std::chrono::milliseconds idle_exit) {
    TRIBUTARY_ASSIGN_OR_RETURN(transport_, MakeTaskTransport(kind, *segment_, link_));
    TRIBUTARY_TRY(link_.Send(dataplane::MakeHello(
        {.src_fn = link_.fn(), .lease = segment_->lease(), .payload_port = transport_->payload_port()})));
    // The loop says it is alive between batches, busy or idle: a process
    // that stops (SIGSTOP, a wedged fold) falls silent and the agent replaces it.
    auto last_work = Clock::now(), last_beat = Clock::now();
    for (;;) {
      const auto now = Clock::now();
      if (now - last_beat >= kHeartbeatInterval) {
        TRIBUTARY_TRY(link_.Send(dataplane::MakeHeartbeat(link_.fn())));
        last_beat = now;
      }
      if (idle_exit.count() > 0 && now - last_work >= idle_exit) return Ok();
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(last_beat + kHeartbeatInterval - now);
      if (idle_exit.count() > 0) {
        wait = std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(last_work + idle_exit - now));
      }
      TRIBUTARY_ASSIGN_OR_RETURN(bool woke, WaitForWork(std::max(wait, std::chrono::milliseconds(1))));
      if (!woke) continue;
      last_work = Clock::now();
      // Eager: take everything already queued, then fold it in one pass.
      std::vector<Descriptor> batch;
      while (batch.size() < 64) {
        auto more = link_.Receive(std::chrono::milliseconds(0));
        if (!more) return Ok();  // the agent closed the socket: done
        if (!more.value()) break;
        batch.push_back(*more.value());
      }
      TRIBUTARY_TRY(Handle(batch));
    }
  }

 private:
  // Waits until the link (or the transport) has something; false on timeout.
  Result<bool> WaitForWork(std::chrono::milliseconds wait) {
    pollfd fds[2] = {{link_.data_fd(), POLLIN, 0}, {transport_->wake_fd(), POLLIN, 0}};
    for (;;) {
      const int ready = poll(fds, transport_->wake_fd() >= 0 ? 2 : 1, static_cast<int>(wait.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) return MakeError(ErrorCode::kIo, "poll");
      return ready > 0;
    }
  }

  Result<void> Handle(const std::vector<Descriptor>& batch) {
    std::vector<Input> inputs;
    for (const Descriptor& d : batch) {
      if (d.kind == TRB_KIND_TASK) {
        auto block = segment_->Adopt(shm::BlockToken{d.offset, d.generation});
        if (!block) continue;  // stale: an abandoned attempt's task
        TRIBUTARY_TRY(FoldInputs(inputs));
        inputs.clear();
        v1::FunctionTask spec;
        if (!spec.ParseFromArray(block.value().bytes().data(), static_cast<int>(block.value().bytes().size()))) {
          return MakeError(ErrorCode::kMalformedFrame, "unparsable function task");
        }
        TRIBUTARY_TRY(StartTask(std::move(spec)));
      } else if (auto in = transport_->FromDescriptor(d)) {
        inputs.push_back(std::move(*in));
      }
    }
    for (Input& in : transport_->TakeArrived()) inputs.push_back(std::move(in));
    return FoldInputs(inputs);
  }

  // A new task replaces the one in progress and what was to follow it (an
  // abandoned attempt's).
  Result<void> StartTask(v1::FunctionTask spec) {
    TRIBUTARY_ASSIGN_OR_RETURN(agg::ModelSpec model, protocol::ModelSpecFromProto(spec.model()));
    TRIBUTARY_ASSIGN_OR_RETURN(Accumulator acc, transport_->NewAccumulator(model, spec.round()));
    std::deque<v1::FunctionTask> then(std::make_move_iterator(spec.mutable_then()->begin()),
                                      std::make_move_iterator(spec.mutable_then()->end()));
    spec.clear_then();
    Task t{std::move(spec), std::move(model), std::move(acc), {}, {}, {}, 0, std::move(then)};
    t.slots.resize(t.spec.fan_in());
    for (int i = 0; i < t.spec.input_keys_size(); ++i) t.slot_of_key[t.spec.input_keys(i)] = static_cast<uint32_t>(i);
    t.partial = agg::Partial{t.accumulator.values, 0, 0};
    task_.emplace(std::move(t));
    started_ = task_->spec.task_id();
    // Inputs that arrived before their task. Those of lower ids belong to
    // tasks replaced or done (ids only grow): released here, or an abandoned
    // chain's inputs would pin their blocks while this process stays warm.
    std::vector<Input> early;
    for (auto it = early_.begin(); it != early_.end();) {
      if (it->d.task == started_) {
        early.push_back(std::move(*it));
        it = early_.erase(it);
      } else if (it->d.task < started_) {
        it = early_.erase(it);
      } else {
        ++it;
      }
    }
    return FoldInputs(early);
  }

  Result<void> FoldInputs(std::vector<Input>& inputs) {
    if (inputs.empty()) return Ok();
    for (Input& in : inputs) {
      if (!task_ || in.d.task != task_->spec.task_id()) {
        if (early_.size() < 4096 && in.d.task > started_) early_.push_back(std::move(in));
        continue;  // an older task's input is released here
      }
      const auto slot = task_->SlotOf(in);
      if (slot && *slot >= task_->folded && !task_->slots[*slot]) task_->slots[*slot] = std::move(in);
      // else: not ours, or a duplicate: released here
    }
    inputs.clear();
    if (!task_) return Ok();
    // Eager, in order: fold the arrived inputs that continue the fixed order.
    std::vector<Input> folding;
    while (task_->folded + folding.size() < task_->slots.size() && task_->slots[task_->folded + folding.size()]) {
      folding.push_back(std::move(*task_->slots[task_->folded + folding.size()]));
      task_->slots[task_->folded + folding.size() - 1].reset();
    }
    std::vector<agg::FiniteUpdate> updates;
    std::vector<agg::PartialView> partials;
    std::vector<agg::ModelSpec> layouts;  // kept alive for the FiniteUpdates: reserved below, never reallocated
    layouts.reserve(folding.size());
    const agg::Parallelism threads{static_cast<int>(task_->spec.threads())};
    for (const Input& in : folding) {
      const double weight = dataplane::WeightOf(in.d);
      if (in.d.kind == TRB_KIND_UPDATE) {
        const auto dtype = in.d.dtype == 0 ? agg::DType::kF32 : static_cast<agg::DType>(in.d.dtype);
        layouts.push_back(task_->model.WithDType(dtype));
        // NaN/Inf are refused once, at arrival: a block the gateway checked is not scanned again.
        TRIBUTARY_ASSIGN_OR_RETURN(agg::FiniteUpdate u,
                                   in.checked_finite ? agg::FiniteUpdate::Trusted(layouts.back(), in.bytes, weight)
                                                     : agg::FiniteUpdate::Check(layouts.back(), in.bytes, weight, threads));
        updates.push_back(u);
      } else if (in.d.kind == TRB_KIND_PARTIAL) {
        partials.push_back(agg::PartialView{
            std::span<const float>(reinterpret_cast<const float*>(in.bytes.data()), in.bytes.size() / 4), weight,
            in.updates});
      }
    }
    TRIBUTARY_TRY(strategy_->Fold(task_->partial, updates));
    TRIBUTARY_TRY(strategy_->Merge(task_->partial, partials));
    task_->folded += static_cast<uint32_t>(folding.size());
    if (task_->folded < task_->spec.fan_in()) return Ok();  // `folding` goes here: inputs released once folded
    Task done = std::move(*task_);
    task_.reset();
    TRIBUTARY_TRY(transport_->Commit(done.spec, done.accumulator, done.partial));
    if (done.then.empty()) return transport_->SendResult(done.spec, std::move(done.accumulator), done.partial);
    // Reuse: the result stays here as the next task's input, no hand-over.
    early_.push_back(KeptResult(done));
    v1::FunctionTask next = std::move(done.then.front());
    done.then.pop_front();
    for (v1::FunctionTask& later : done.then) *next.add_then() = std::move(later);
    return StartTask(std::move(next));
  }

  // A finished task's result as an input of the task that follows it here.
  Input KeptResult(Task& done) const {
    Input in{dataplane::MakePartial({.dest_fn = link_.fn(),
                                     .src_fn = link_.fn(),
                                     .slot = done.spec.index_in_parent(),
                                     .task = done.spec.parent_task(),
                                     .round = done.spec.round(),
                                     .weight = done.partial.weight,
                                     .block = {.length = done.accumulator.values.size_bytes()}}),
             std::as_bytes(done.accumulator.values), done.partial.updates, false, {}};
    std::visit([&in](auto& owner) { in.owner = std::move(owner); }, done.accumulator.owner);
    return in;
  }

  std::unique_ptr<shm::Segment> segment_;
  dataplane::FunctionLink link_;
  std::unique_ptr<agg::Strategy> strategy_;
  std::unique_ptr<TaskTransport> transport_;
  std::optional<Task> task_;
  uint64_t started_ = 0;     // the last task started: inputs of tasks up to it are never folded here again
  std::deque<Input> early_;  // inputs of tasks not started yet
};

}  // namespace

Result<void> RunFunction(const FunctionOptions& options) {
  TRIBUTARY_ASSIGN_OR_RETURN(auto segment, shm::Segment::Open(options.segment));
  TRIBUTARY_ASSIGN_OR_RETURN(auto link, dataplane::FunctionLink::Connect(options.switch_address, options.fn));
  Host host(std::move(segment), std::move(link));
  return host.Run(options.transport, options.idle_exit);
}

}  // namespace tributary::function
