#include "tributary/function/function_host.h"

#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "tributary/aggregator/strategy.h"
#include "tributary/protocol/codec.h"
#include "tributary/shm/segment.h"
#include "tributary/v1/node.pb.h"

namespace tributary::function {
namespace {

using dataplane::Descriptor;

// The task in progress: its accumulator and what has been folded.
struct Task {
  v1::FunctionTask spec;
  agg::ModelSpec model;
  shm::BlockRef accumulator;
  agg::Partial partial;
  uint32_t folded = 0;
};

class Host {
 public:
  Host(std::unique_ptr<shm::Segment> segment, dataplane::FunctionLink link)
      : segment_(std::move(segment)), link_(std::move(link)) {
    agg::StrategyOptions o;  // fold and merge are the same for the whole weighted-mean family
    strategy_ = agg::Strategy::Create(o).value();
  }

  Result<void> Run(std::chrono::milliseconds idle_exit) {
    // Hello: job = this function's id, route_key = its lease.
    TRIBUTARY_TRY(link_.Send(dataplane::MakeDescriptor(
        {TRB_KIND_CONTROL, kAgentFn, segment_->lease(), link_.fn(), 0, 0, 0, 0, 0})));
    const auto wait = idle_exit.count() > 0 ? idle_exit : std::chrono::milliseconds(3'600'000);
    for (;;) {
      auto first = link_.Receive(wait);
      if (!first) return Ok();  // the agent closed the socket: done
      if (!first.value()) {
        if (idle_exit.count() > 0) return Ok();
        continue;
      }
      // Eager: take everything already queued, then fold it in one pass.
      std::vector<Descriptor> batch{*first.value()};
      while (batch.size() < 64) {
        auto more = link_.Receive(std::chrono::milliseconds(0));
        if (!more || !more.value()) break;
        batch.push_back(*more.value());
      }
      TRIBUTARY_TRY(Handle(batch));
    }
  }

 private:
  Result<void> Handle(const std::vector<Descriptor>& batch) {
    std::vector<std::pair<Descriptor, shm::BlockRef>> inputs;
    for (const Descriptor& d : batch) {
      auto block = segment_->Adopt(shm::BlockToken{d.offset, d.generation});
      if (!block) continue;  // stale: the agent re-dispatches what matters
      if (d.kind == TRB_KIND_CONTROL) {
        TRIBUTARY_TRY(FoldInputs(inputs));
        inputs.clear();
        TRIBUTARY_TRY(StartTask(block.value()));
      } else {
        inputs.emplace_back(d, std::move(block).value());
      }
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
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef acc, segment_->Allocate(model.accumulator_bytes(),
                                                                      {shm::BlockKind::kPartial, 0, spec.round()}));
    std::span<float> sum(reinterpret_cast<float*>(acc.bytes().data()), model.elements());
    std::fill(sum.begin(), sum.end(), 0.0f);
    task_.emplace(Task{std::move(spec), std::move(model), std::move(acc), agg::Partial{sum, 0, 0}, 0});
    // Inputs that arrived before their task.
    std::vector<std::pair<Descriptor, shm::BlockRef>> early;
    for (auto it = early_.begin(); it != early_.end();) {
      if (it->first.job == task_->spec.task_id()) {
        early.push_back(std::move(*it));
        it = early_.erase(it);
      } else {
        ++it;
      }
    }
    return FoldInputs(early);
  }

  Result<void> FoldInputs(std::vector<std::pair<Descriptor, shm::BlockRef>>& inputs) {
    if (inputs.empty()) return Ok();
    std::vector<agg::FiniteUpdate> updates;
    std::vector<agg::PartialView> partials;
    std::vector<agg::ModelSpec> layouts;  // kept alive for the FiniteUpdates
    layouts.reserve(inputs.size());
    for (auto& [d, block] : inputs) {
      if (!task_ || d.job != task_->spec.task_id()) {
        if (early_.size() < 4096 && (!task_ || d.job > task_->spec.task_id())) early_.emplace_back(d, std::move(block));
        continue;  // an older task's input is released here
      }
      if (d.kind == TRB_KIND_UPDATE) {
        const auto dtype = static_cast<agg::DType>(d.flags & 0x3);
        layouts.push_back(task_->model.WithDType(dtype == agg::DType{} ? agg::DType::kF32 : dtype));
        TRIBUTARY_ASSIGN_OR_RETURN(agg::FiniteUpdate u,
                                   agg::FiniteUpdate::Check(layouts.back(), block.bytes(), dataplane::WeightOf(d),
                                                            {static_cast<int>(task_->spec.threads())}));
        updates.push_back(u);
      } else if (d.kind == TRB_KIND_PARTIAL) {
        partials.push_back(agg::PartialView{
            std::span<const float>(reinterpret_cast<const float*>(block.bytes().data()), block.bytes().size() / 4),
            block.meta().weight, block.meta().updates});
      }
    }
    if (!task_) return Ok();
    TRIBUTARY_TRY(strategy_->Fold(task_->partial, updates));
    TRIBUTARY_TRY(strategy_->Merge(task_->partial, partials));
    task_->folded += static_cast<uint32_t>(updates.size() + partials.size());
    inputs.clear();  // release the inputs: folded
    if (task_->folded >= task_->spec.fan_in()) return SendResult();
    return Ok();
  }

  Result<void> SendResult() {
    Task& t = *task_;
    shm::BlockMeta& meta = t.accumulator.meta();
    meta.weight = t.partial.weight;
    meta.updates = t.partial.updates;
    meta.round = t.spec.round();
    const uint64_t bytes = t.accumulator.bytes().size();
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockToken token, t.accumulator.HandOff(t.spec.parent_lease()));
    const Descriptor d = dataplane::MakeDescriptor({TRB_KIND_PARTIAL, t.spec.parent_fn(), 0, t.spec.parent_task(),
                                                    t.spec.round(), token.offset, bytes, token.generation,
                                                    t.partial.weight});
    task_.reset();
    return link_.Send(d);
  }

  std::unique_ptr<shm::Segment> segment_;
  dataplane::FunctionLink link_;
  std::unique_ptr<agg::Strategy> strategy_;
  std::optional<Task> task_;
  std::deque<std::pair<Descriptor, shm::BlockRef>> early_;
};

}  // namespace

Result<void> RunFunction(const FunctionOptions& options) {
  TRIBUTARY_ASSIGN_OR_RETURN(auto segment, shm::Segment::Open(options.segment));
  TRIBUTARY_ASSIGN_OR_RETURN(auto link, dataplane::FunctionLink::Connect(options.switch_address, options.fn));
  Host host(std::move(segment), std::move(link));
  return host.Run(options.idle_exit);
}

}  // namespace tributary::function
