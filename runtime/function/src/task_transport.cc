#include "task_transport.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <deque>
#include <map>
#include <mutex>

#include "tributary/dataplane/payload_stream.h"

namespace tributary::function {
namespace {

using dataplane::Descriptor;

class SharedMemoryTransport final : public TaskTransport {
 public:
  SharedMemoryTransport(shm::Segment& segment, dataplane::FunctionLink& link) : segment_(segment), link_(link) {}

  uint16_t payload_port() const override { return 0; }
  int wake_fd() const override { return -1; }

  std::optional<Input> FromDescriptor(const Descriptor& d) override {
    auto block = segment_.Adopt({d.offset, d.generation});
    if (!block) return std::nullopt;  // stale: the agent re-sends what matters
    const shm::BlockRef& b = block.value();
    Input in{d, b.bytes(), b.meta().updates, b.meta().checked_finite, {}};
    in.owner = std::move(block).value();
    return in;
  }

  std::vector<Input> TakeArrived() override { return {}; }

  Result<Accumulator> NewAccumulator(const agg::ModelSpec& model, uint64_t round) override {
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef block,
                               segment_.Allocate(model.accumulator_bytes(), {.kind = shm::BlockKind::kPartial, .round = round}));
    const std::span<std::byte> bytes = block.mutable_bytes();
    std::span<float> values(reinterpret_cast<float*>(bytes.data()), model.elements());
    std::fill(values.begin(), values.end(), 0.0f);
    return Accumulator{values, std::move(block)};
  }

  // The commit: the agent keeps the result instead of the leaf's updates.
  Result<void> Commit(const v1::FunctionTask& t, const Accumulator& acc, const agg::Partial& sum) override {
    if (!t.has_agent_lease()) return Ok();
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef copy, std::get<shm::BlockRef>(acc.owner).Clone());
    return HandResult(copy, t, sum, t.agent_lease(), TRB_AGENT_FN, 0, t.task_id());
  }

  Result<void> SendResult(const v1::FunctionTask& t, Accumulator acc, const agg::Partial& sum) override {
    return HandResult(std::get<shm::BlockRef>(acc.owner), t, sum, t.parent_lease(), t.parent_fn(), t.index_in_parent(),
                      t.parent_task());
  }

 private:
  // Stamps `block` with the result's weight, count and round, hands it to
  // `lease` and names it to `dest_fn` as input `slot` of `task`.
  Result<void> HandResult(shm::BlockRef& block, const v1::FunctionTask& t, const agg::Partial& sum, uint32_t lease,
                          uint32_t dest_fn, uint32_t slot, uint64_t task) {
    shm::BlockMeta& meta = block.mutable_meta();
    meta.weight = sum.weight;
    meta.updates = sum.updates;
    meta.round = t.round();
    const uint64_t length = block.bytes().size();
    auto handed = block.HandOff(lease);
    // The receiver is gone (killed for silence, or exited): the node agent
    // rebuilds its part of the tree, so this result has no reader. It is
    // released with `block`; the function lives on for its next task.
    if (!handed && handed.error().code == ErrorCode::kNotFound) return Ok();
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockToken token, std::move(handed));
    return link_.Send(dataplane::MakePartial({.dest_fn = dest_fn,
                                              .src_fn = link_.fn(),
                                              .slot = slot,
                                              .task = task,
                                              .round = t.round(),
                                              .weight = sum.weight,
                                              .block = {token.offset, length, token.generation}}));
  }

  shm::Segment& segment_;
  dataplane::FunctionLink& link_;
};

class TcpPayloadTransport final : public TaskTransport {
 public:
  explicit TcpPayloadTransport(dataplane::FunctionLink& link)
      : link_(link), wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

  Result<void> Listen() {
    TRIBUTARY_ASSIGN_OR_RETURN(server_, dataplane::PayloadServer::Start([this](int fd) { return ReadFrame(fd); }));
    return Ok();
  }

  ~TcpPayloadTransport() override { server_.reset(); }  // its readers use this object

  uint16_t payload_port() const override { return server_->port(); }
  int wake_fd() const override { return wake_.get(); }
  std::optional<Input> FromDescriptor(const Descriptor&) override { return std::nullopt; }

  std::vector<Input> TakeArrived() override {
    uint64_t n;
    (void)!read(wake_.get(), &n, sizeof n);
    std::lock_guard lock(mu_);
    std::vector<Input> out(std::make_move_iterator(arrived_.begin()), std::make_move_iterator(arrived_.end()));
    arrived_.clear();
    return out;
  }

  Result<Accumulator> NewAccumulator(const agg::ModelSpec& model, uint64_t) override {
    Accumulator acc{{}, std::vector<float>(model.elements(), 0.0f)};
    acc.values = std::get<std::vector<float>>(acc.owner);
    return acc;
  }

  Result<void> Commit(const v1::FunctionTask&, const Accumulator&, const agg::Partial&) override {
    return Ok();  // this transport has no commits: the agent does not recover its functions' failures
  }

  Result<void> SendResult(const v1::FunctionTask& t, Accumulator acc, const agg::Partial& sum) override {
    const uint16_t port = static_cast<uint16_t>(t.parent_payload_port());
    auto conn = parents_.find(port);
    if (conn == parents_.end()) {
      TRIBUTARY_ASSIGN_OR_RETURN(UniqueFd fd, dataplane::ConnectPayload(port));
      conn = parents_.emplace(port, std::move(fd)).first;
    }
    const std::span<const std::byte> bytes = std::as_bytes(std::span<const float>(acc.values));
    const dataplane::PayloadHeader h{dataplane::MakePartial({.dest_fn = t.parent_fn(),
                                                             .src_fn = link_.fn(),
                                                             .slot = t.index_in_parent(),
                                                             .task = t.parent_task(),
                                                             .round = t.round(),
                                                             .weight = sum.weight,
                                                             .block = {.length = bytes.size()}}),
                                     sum.updates, false};
    auto written = dataplane::WritePayload(conn->second.get(), h, bytes);
    if (!written) parents_.erase(conn);
    return written;
  }

 private:
  Result<void> ReadFrame(int fd) {
    TRIBUTARY_ASSIGN_OR_RETURN(dataplane::PayloadHeader h, dataplane::ReadPayloadHeader(fd));
    std::vector<std::byte> heap(h.descriptor.length);
    TRIBUTARY_TRY(dataplane::ReadPayloadBytes(fd, heap));
    Input in{h.descriptor, heap, h.updates, h.checked_finite, {}};
    in.owner = std::move(heap);  // the vector's buffer, and so `bytes`, stays put
    std::lock_guard lock(mu_);
    arrived_.push_back(std::move(in));
    const uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof one);
    return Ok();
  }

  dataplane::FunctionLink& link_;
  UniqueFd wake_;
  std::mutex mu_;
  std::deque<Input> arrived_;
  std::map<uint16_t, UniqueFd> parents_;  // by the parent's port
  std::unique_ptr<dataplane::PayloadServer> server_;
};

}  // namespace

Result<std::unique_ptr<TaskTransport>> MakeTaskTransport(dataplane::AggregationTransport kind, shm::Segment& segment,
                                                         dataplane::FunctionLink& link) {
  if (kind == dataplane::AggregationTransport::kSharedMemory) {
    return std::unique_ptr<TaskTransport>(std::make_unique<SharedMemoryTransport>(segment, link));
  }
  auto tcp = std::make_unique<TcpPayloadTransport>(link);
  TRIBUTARY_TRY(tcp->Listen());
  return std::unique_ptr<TaskTransport>(std::move(tcp));
}

}  // namespace tributary::function
