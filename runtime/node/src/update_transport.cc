#include "update_transport.h"

#include <map>

#include "tributary/dataplane/payload_stream.h"

namespace tributary::node {
namespace {

using dataplane::Descriptor;

class SharedMemoryUpdates final : public UpdateTransport {
 public:
  explicit SharedMemoryUpdates(dataplane::FunctionLink& link) : link_(link) {}

  bool recovers_failures() const override { return true; }
  uint16_t result_port() const override { return 0; }

  Result<void> SendUpdate(const HeldUpdate& u, const FunctionInstance& leaf, uint64_t task, uint64_t round,
                          bool by_route) override {
    return HandOver(u.block, leaf.lease,
                    dataplane::MakeUpdate({.dest_fn = by_route ? TRB_NO_FUNCTION : leaf.fn,
                                           .route_key = u.route_key,
                                           .task = task,
                                           .round = round,
                                           .dtype = u.dtype,
                                           .weight = u.weight}),
                    link_);
  }

  void Reset() override {}

 private:
  dataplane::FunctionLink& link_;
};

class TcpPayloadUpdates final : public UpdateTransport {
 public:
  TcpPayloadUpdates(shm::Segment& segment, ResultSink on_result) : segment_(segment), on_result_(std::move(on_result)) {}
  ~TcpPayloadUpdates() override { server_.reset(); }  // its readers use this object

  Result<void> Listen() {
    TRIBUTARY_ASSIGN_OR_RETURN(server_, dataplane::PayloadServer::Start([this](int fd) { return ReadResult(fd); }));
    return Ok();
  }

  bool recovers_failures() const override { return false; }
  uint16_t result_port() const override { return server_->port(); }

  Result<void> SendUpdate(const HeldUpdate& u, const FunctionInstance& leaf, uint64_t task, uint64_t round,
                          bool) override {
    auto conn = leaves_.find(leaf.fn);
    if (conn == leaves_.end()) {
      TRIBUTARY_ASSIGN_OR_RETURN(UniqueFd fd, dataplane::ConnectPayload(leaf.payload_port));
      conn = leaves_.emplace(leaf.fn, std::move(fd)).first;
    }
    const dataplane::PayloadHeader header{dataplane::MakeUpdate({.dest_fn = leaf.fn,
                                                                 .route_key = u.route_key,
                                                                 .task = task,
                                                                 .round = round,
                                                                 .dtype = u.dtype,
                                                                 .weight = u.weight,
                                                                 .block = {.length = u.block.bytes().size()}}),
                                          1, u.block.meta().checked_finite};
    auto written = dataplane::WritePayload(conn->second.get(), header, u.block.bytes());
    if (!written) leaves_.erase(conn);
    return written;
  }

  void Reset() override { leaves_.clear(); }

 private:
  // The node-root's whole result, read into a block of the segment.
  Result<void> ReadResult(int fd) {
    TRIBUTARY_ASSIGN_OR_RETURN(dataplane::PayloadHeader h, dataplane::ReadPayloadHeader(fd));
    TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef block,
                               segment_.Allocate(h.descriptor.length,
                                                 {.kind = shm::BlockKind::kPartial, .round = h.descriptor.round}));
    TRIBUTARY_TRY(dataplane::ReadPayloadBytes(fd, block.mutable_bytes()));
    block.mutable_meta().weight = dataplane::WeightOf(h.descriptor);
    block.mutable_meta().updates = h.updates;
    on_result_(h.descriptor, std::move(block));
    return Ok();
  }

  shm::Segment& segment_;
  ResultSink on_result_;
  std::map<uint32_t, UniqueFd> leaves_;  // by function id
  std::unique_ptr<dataplane::PayloadServer> server_;
};

}  // namespace

Result<void> HandOver(const shm::BlockRef& block, uint32_t lease, const Descriptor& d, dataplane::FunctionLink& link) {
  TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockRef copy, block.Clone());
  const uint64_t length = copy.bytes().size();
  TRIBUTARY_ASSIGN_OR_RETURN(shm::BlockToken token, copy.HandOff(lease));
  return link.Send(dataplane::WithBlock(d, {token.offset, length, token.generation}));
}

Result<std::unique_ptr<UpdateTransport>> MakeUpdateTransport(dataplane::AggregationTransport kind,
                                                             shm::Segment& segment, dataplane::FunctionLink& link,
                                                             UpdateTransport::ResultSink on_result) {
  if (kind == dataplane::AggregationTransport::kSharedMemory) {
    return std::unique_ptr<UpdateTransport>(std::make_unique<SharedMemoryUpdates>(link));
  }
  auto tcp = std::make_unique<TcpPayloadUpdates>(segment, std::move(on_result));
  TRIBUTARY_TRY(tcp->Listen());
  return std::unique_ptr<UpdateTransport>(std::move(tcp));
}

}  // namespace tributary::node
