#include "tributary/dataplane/kernel_router.h"

#include "tributary/ebpf/bpf_router.h"

namespace tributary::dataplane {
namespace {

class BpfKernelRouter final : public KernelRouter {
 public:
  explicit BpfKernelRouter(std::unique_ptr<ebpf::BpfRouter> bpf) : bpf_(std::move(bpf)) {}
  Result<void> AddSocket(uint32_t fn, int fd) override { return bpf_->AddSocket(fn, fd); }
  Result<void> RemoveSocket(uint32_t fn) override { return bpf_->RemoveSocket(fn); }
  Result<void> SetRoute(uint32_t key, uint32_t fn) override { return bpf_->SetRoute(key, fn); }
  Result<void> RemoveRoute(uint32_t key) override { return bpf_->RemoveRoute(key); }
  Result<std::vector<trb_counters>> ReadCounters() const override { return bpf_->ReadCounters(); }
  std::string Describe() const override {
    return "sk_msg program id " + std::to_string(bpf_->program_id()) + ", sockhash map id " +
           std::to_string(bpf_->sockets_map_id()) + ", routes map id " + std::to_string(bpf_->routes_map_id()) +
           ", counters map id " + std::to_string(bpf_->counters_map_id());
  }

 private:
  std::unique_ptr<ebpf::BpfRouter> bpf_;
};

}  // namespace

Result<DataPlaneMode> ParseDataPlaneMode(const std::string& text) {
  if (text == "auto") return DataPlaneMode::kAuto;
  if (text == "ebpf") return DataPlaneMode::kEbpf;
  if (text == "userspace") return DataPlaneMode::kUserspace;
  return MakeError(ErrorCode::kConfig, "data plane '" + text + "' (auto, ebpf, userspace)");
}

Result<std::unique_ptr<KernelRouter>> OpenKernelRouter(DataPlaneMode mode, std::string* why) {
  if (mode == DataPlaneMode::kUserspace) {
    if (why) *why = "userspace relay requested";
    return std::unique_ptr<KernelRouter>();
  }
  auto bpf = ebpf::BpfRouter::Load();
  if (!bpf) {
    if (mode == DataPlaneMode::kEbpf) return std::move(bpf).error();
    if (why) *why = "userspace relay: " + bpf.error().reason;
    return std::unique_ptr<KernelRouter>();
  }
  auto router = std::make_unique<BpfKernelRouter>(std::move(bpf).value());
  if (why) *why = "eBPF sk_msg router (" + router->Describe() + ")";
  return std::unique_ptr<KernelRouter>(std::move(router));
}

}  // namespace tributary::dataplane
