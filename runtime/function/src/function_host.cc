#include "tributary/function/function_host.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "tributary/aggregator/strategy.h"
#include "tributary/dataplane/payload_stream.h"
#include "tributary/protocol/codec.h"
#include "tributary/shm/segment.h"
#include "tributary/v1/node.pb.h"

namespace tributary::function {
namespace {

using dataplane::Descriptor;

// One input of a task: a block in the segment, or (serverful transport) a
// payload read into this process's memory.
struct Input {
  Descriptor d{};
  shm::BlockRef block;
  std::vector<std::byte> heap;
  uint64_t updates = 0;  // for partials

  std::span<const std::byte> bytes() const {
    return block ? std::span<const std::byte>(block.bytes()) : std::span<const std::byte>(heap);
  }
};

// The task in progress: its accumulator, its inputs by slot (the fixed fold
// order), and how many slots are folded.
struct Task {
  v1::FunctionTask spec;
  agg::ModelSpec model;
  shm::BlockRef accumulator;       // shared-memory transport
  std::vector<float> private_sum;  // serverful transport
  agg::Partial partial;
  std::map<uint32_t, uint32_t> slot_of_key;  // leaves: route key -> slot
  std::vector<std::optional<Input>> slots;   // arrived, not yet folded
  uint32_t folded = 0;                       // slots [0, folded) are in the sum

  // The input's place in the fold order, or nullopt if it is not one of ours.
  std::optional<uint32_t> SlotOf(const Input& in) const {
    if (in.d.kind == TRB_KIND_UPDATE) {
      auto it = slot_of_key.find(in.d.route_key);
      return it == slot_of_key.end() ? std::nullopt : std::optional<uint32_t>(it->second);
    }
    return in.d.route_key < slots.size() ? std::optional<uint32_t>(in.d.route_key) : std::nullopt;
  }
};

// Serverful transport: payloads read by the server's threads wait here.
class PayloadInbox {
 public:
  PayloadInbox() : wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

  Result<void> ReadFrame(int fd) {
    TRIBUTARY_ASSIGN_OR_RETURN(dataplane::PayloadHeader h, dataplane::ReadPayloadHeader(fd));
    Input in{h.descriptor, {}, std::vector<std::byte>(h.descriptor.length), h.updates};
    TRIBUTARY_TRY(dataplane::ReadPayloadBytes(fd, in.heap));
    std::lock_guard lock(mu_);
    inputs_.push_back(std::move(in));
    const uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof one);
    return Ok();
  }

  std::vector<Input> Take() {
    uint64_t n;
    (void)!read(wake_.get(), &n, sizeof n);
    std::lock_guard lock(mu_);
    std::vector<Input> out(std::make_move_iterator(inputs_.begin()), std::make_move_iterator(inputs_.end()));
    inputs_.clear();
    return out;
  }

  int wake_fd() const { return wake_.get(); }

 private:
  UniqueFd wake_;
  std::mutex mu_;
  std::deque<Input> inputs_;
};

class Host {
 public:
  Host(std::unique_ptr<shm::Segment> segment, dataplane::FunctionLink link)
      : segment_(std::move(segment)), link_(std::move(link)) {
    agg::StrategyOptions o;  // fold and merge are the same for the whole weighted-mean family
    strategy_ = agg::Strategy::Create(o).value();
  }

  Result<void> ListenForPayloads() {
    inbox_ = std::make_unique<PayloadInbox>();
    PayloadInbox* inbox = inbox_.get();
    TRIBUTARY_ASSIGN_OR_RETURN(payload_server_,
                               dataplane::PayloadServer::Start([inbox](int fd) { return inbox->ReadFrame(fd); }));
    return Ok();
  }

  Result<void> Run(std::chrono::milliseconds idle_exit) {
    // Hello: job = this function's id, route_key = its lease, length = its payload port (serverful only).
    TRIBUTARY_TRY(link_.Send(dataplane::MakeDescriptor({TRB_KIND_CONTROL, kAgentFn, segment_->lease(), link_.fn(), 0,
                                                        0, payload_server_ ? payload_server_->port() : 0u, 0, 0})));
    const auto wait = idle_exit.count() > 0 ? idle_exit : std::chrono::milliseconds(3'600'000);
    for (;;) {
      TRIBUTARY_ASSIGN_OR_RETURN(bool woke, WaitForWork(wait));
      if (!woke) {
        if (idle_exit.count() > 0) return Ok();
        continue;
      }
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
  // Waits until the link (or the payload inbox) has something; false on timeout.
  Result<bool> WaitForWork(std::chrono::milliseconds wait) {
    pollfd fds[2] = {{link_.data_fd(), POLLIN, 0}, {inbox_ ? inbox_->wake_fd() : -1, POLLIN, 0}};
    for (;;) {
      const int ready = poll(fds, inbox_ ? 2 : 1, static_cast<int>(wait.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) return MakeError(ErrorCode::kIo, "poll");
      return ready > 0;
    }
  }

  Result<void> Handle(const std::vector<Descriptor>& batch) {
    std::vector<Input> inputs;
    for (const Descriptor& d : batch) {
      auto block = segment_->Adopt(shm::BlockToken{d.offset, d.generation});
      if (!block) continue;  // stale: the agent re-dispatches what matters
      if (d.kind == TRB_KIND_CONTROL) {
        TRIBUTARY_TRY(FoldInputs(inputs));
        inputs.clear();
        TRIBUTARY_TRY(StartTask(block.value()));
      } else {
        const uint64_t updates = block.value().meta().updates;
        inputs.push_back(Input{d, std::move(block).value(), {}, updates});
      }
    }
    if (inbox_) {
      for (Input& in : inbox_->Take()) inputs.push_back(std::move(in));
    }
    return FoldInputs(inputs);
  }

  Result<void> StartTask(const shm::BlockRef& block) {
    v1::FunctionTask spec;
    if (!spec.ParseFromArray(block.bytes().data(), static_cast<int>(block.bytes().size()))) {
      return MakeError(ErrorCode::kMalformedFrame, "unparsable function task");
    }
    std::vector<agg::TensorSpec> tensors;
    for (const auto& t : spec.model()) {
      TRIBUTARY_ASSIGN_OR_RETURN(agg::TensorSpec ts, protocol::FromProto(t));
      tensors.push_back(std::move(ts));
    }
    TRIBUTARY_ASSIGN_OR_RETURN(agg::ModelSpec model, agg::ModelSpec::Create(std::move(tensors)));
    Task t{std::move(spec), std::move(model), {}, {}, {}, {}, {}, 0};
    t.slots.resize(t.spec.fan_in());
    for (int i = 0; i < t.spec.input_keys_size(); ++i) t.slot_of_key[t.spec.input_keys(i)] = static_cast<uint32_t>(i);
    std::span<float> sum;
    if (t.spec.parent_payload_port() != 0) {
      t.private_sum.assign(t.model.elements(), 0.0f);
      sum = t.private_sum;
    } else {
      TRIBUTARY_ASSIGN_OR_RETURN(t.accumulator, segment_->Allocate(t.model.accumulator_bytes(),
                                                                   {shm::BlockKind::kPartial, 0, t.spec.round()}));
      sum = std::span<float>(reinterpret_cast<float*>(t.accumulator.bytes().data()), t.model.elements());
      std::fill(sum.begin(), sum.end(), 0.0f);
    }
    t.partial = agg::Partial{sum, 0, 0};
    task_.emplace(std::move(t));
    // Inputs that arrived before their task.
    std::vector<Input> early;
    for (auto it = early_.begin(); it != early_.end();) {
      if (it->d.job == task_->spec.task_id()) {
        early.push_back(std::move(*it));
        it = early_.erase(it);
      } else {
        ++it;
      }
    }
    return FoldInputs(early);
  }

  Result<void> FoldInputs(std::vector<Input>& inputs) {
    if (inputs.empty()) return Ok();
    std::vector<agg::FiniteUpdate> updates;
    std::vector<agg::PartialView> partials;
    std::vector<agg::ModelSpec> layouts;  // kept alive for the FiniteUpdates: reserved below, never reallocated
    for (Input& in : inputs) {
      if (!task_ || in.d.job != task_->spec.task_id()) {
        if (early_.size() < 4096 && (!task_ || in.d.job > task_->spec.task_id())) early_.push_back(std::move(in));
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
    layouts.reserve(folding.size());
    for (const Input& in : folding) {
      if (in.d.kind == TRB_KIND_UPDATE) {
        const auto dtype = static_cast<agg::DType>(in.d.flags & 0x7);
        layouts.push_back(task_->model.WithDType(dtype == agg::DType{} ? agg::DType::kF32 : dtype));
        TRIBUTARY_ASSIGN_OR_RETURN(agg::FiniteUpdate u,
                                   agg::FiniteUpdate::Check(layouts.back(), in.bytes(), dataplane::WeightOf(in.d),
                                                            {static_cast<int>(task_->spec.threads())}));
        updates.push_back(u);
      } else if (in.d.kind == TRB_KIND_PARTIAL) {
        const std::span<const std::byte> b = in.bytes();
        partials.push_back(agg::PartialView{
            std::span<const float>(reinterpret_cast<const float*>(b.data()), b.size() / 4),
            in.block ? in.block.meta().weight : dataplane::WeightOf(in.d), in.updates});
      }
    }
    TRIBUTARY_TRY(strategy_->Fold(task_->partial, updates));
    TRIBUTARY_TRY(strategy_->Merge(task_->partial, partials));
    task_->folded += static_cast<uint32_t>(folding.size());
    if (task_->folded >= task_->spec.fan_in()) return SendResult();
    return Ok();  // `folding` goes here: inputs released once folded
  }

  Result<void> SendResult() {
    Task& t = *task_;
    if (t.spec.parent_payload_port() != 0) return WriteResult(t);
    shm::BlockMeta& meta = t.accumulator.meta();
    meta.weight = t.partial.weight;
    meta.updates = t.partial.updates;
    meta.round = t.spec.round();
    const uint64_t bytes = t.accumulator.bytes().size();
    if (t.spec.has_agent_lease()) {
      // The commit: the agent keeps the result instead of the leaf's updates.
      TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef copy, t.accumulator.Clone());
      TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockToken token, copy.HandOff(t.spec.agent_lease()));
      TRIBUTARY_TRY(link_.Send(dataplane::MakeDescriptor({TRB_KIND_PARTIAL, kAgentFn, 0, t.spec.task_id(),
                                                          t.spec.round(), token.offset, bytes, token.generation,
                                                          t.partial.weight})));
    }
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockToken token, t.accumulator.HandOff(t.spec.parent_lease()));
    const Descriptor d = dataplane::MakeDescriptor({TRB_KIND_PARTIAL, t.spec.parent_fn(), t.spec.index_in_parent(),
                                                    t.spec.parent_task(),
                                                    t.spec.round(), token.offset, bytes, token.generation,
                                                    t.partial.weight});
    task_.reset();
    return link_.Send(d);
  }

  // Serverful transport: the whole accumulator goes to the parent over TCP.
  Result<void> WriteResult(Task& t) {
    const uint16_t port = static_cast<uint16_t>(t.spec.parent_payload_port());
    auto conn = parents_.find(port);
    if (conn == parents_.end()) {
      TRIBUTARY_ASSIGN_OR_RETURN(UniqueFd fd, dataplane::ConnectPayload(port));
      conn = parents_.emplace(port, std::move(fd)).first;
    }
    const std::span<const std::byte> bytes = std::as_bytes(std::span<const float>(t.private_sum));
    dataplane::PayloadHeader h{dataplane::MakeDescriptor({TRB_KIND_PARTIAL, t.spec.parent_fn(), t.spec.index_in_parent(),
                                                          t.spec.parent_task(), t.spec.round(), 0, bytes.size(), 0,
                                                          t.partial.weight}),
                               t.partial.updates};
    auto written = dataplane::WritePayload(conn->second.get(), h, bytes);
    if (!written) parents_.erase(conn);
    task_.reset();
    return written;
  }

  std::unique_ptr<shm::Segment> segment_;
  dataplane::FunctionLink link_;
  std::unique_ptr<agg::Strategy> strategy_;
  std::optional<Task> task_;
  std::deque<Input> early_;
  std::unique_ptr<PayloadInbox> inbox_;
  std::unique_ptr<dataplane::PayloadServer> payload_server_;  // after inbox_: its threads use it
  std::map<uint16_t, UniqueFd> parents_;
};

}  // namespace

Result<void> RunFunction(const FunctionOptions& options) {
  TRIBUTARY_ASSIGN_OR_RETURN(auto segment, shm::Segment::Open(options.segment));
  TRIBUTARY_ASSIGN_OR_RETURN(auto link, dataplane::FunctionLink::Connect(options.switch_address, options.fn));
  Host host(std::move(segment), std::move(link));
  if (options.payload_over_tcp) TRIBUTARY_TRY(host.ListenForPayloads());
  return host.Run(options.idle_exit);
}

}  // namespace tributary::function
