#include "tributary/ebpf/bpf_router.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "router.skel.h"

namespace tributary::ebpf {

namespace {

Error OsError(const std::string& what, int err) {
  std::string reason = what + ": " + std::strerror(err);
  if (err == EPERM || err == EACCES) reason += " (loading BPF needs root: CAP_BPF and CAP_NET_ADMIN)";
  return MakeError(ErrorCode::kIo, reason);
}

uint32_t IdOf(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

}  // namespace

Result<std::unique_ptr<BpfRouter>> BpfRouter::Load() {
  libbpf_set_print(nullptr);  // errors come back as values, not stderr noise
  router_bpf* skel = router_bpf__open_and_load();
  if (skel == nullptr) return OsError("loading the sk_msg router", errno);
  const int err = bpf_prog_attach(bpf_program__fd(skel->progs.trb_route), bpf_map__fd(skel->maps.trb_sockets),
                                  BPF_SK_MSG_VERDICT, 0);
  if (err != 0) {
    const int e = errno;
    router_bpf__destroy(skel);
    return OsError("attaching the sk_msg verdict program to the socket hash", e);
  }
  return std::unique_ptr<BpfRouter>(new BpfRouter(skel));
}

BpfRouter::~BpfRouter() {
  bpf_prog_detach2(bpf_program__fd(skel_->progs.trb_route), bpf_map__fd(skel_->maps.trb_sockets),
                   BPF_SK_MSG_VERDICT);
  router_bpf__destroy(skel_);
}

Result<void> BpfRouter::AddSocket(uint32_t fn, int fd) {
  if (fn == TRB_NO_FUNCTION || fn >= TRB_MAX_FUNCTIONS) {
    return MakeError(ErrorCode::kInvalidArgument, "function id " + std::to_string(fn) + " out of range");
  }
  uint64_t value = static_cast<uint64_t>(fd);
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.trb_sockets), &fn, &value, BPF_ANY) != 0) {
    return OsError("adding the socket of function " + std::to_string(fn), errno);
  }
  return Ok();
}

Result<void> BpfRouter::RemoveSocket(uint32_t fn) {
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.trb_sockets), &fn) != 0) {
    if (errno == ENOENT) return MakeError(ErrorCode::kNotFound, "no socket for function " + std::to_string(fn));
    return OsError("removing the socket of function " + std::to_string(fn), errno);
  }
  return Ok();
}

Result<void> BpfRouter::SetRoute(uint32_t route_key, uint32_t fn) {
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.trb_routes), &route_key, &fn, BPF_ANY) != 0) {
    return OsError("setting route " + std::to_string(route_key), errno);
  }
  return Ok();
}

Result<void> BpfRouter::RemoveRoute(uint32_t route_key) {
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.trb_routes), &route_key) != 0 && errno != ENOENT) {
    return OsError("removing route " + std::to_string(route_key), errno);
  }
  return Ok();
}

Result<std::vector<trb_counters>> BpfRouter::ReadCounters() const {
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return OsError("counting CPUs", -cpus);
  std::vector<trb_counters> per_cpu(static_cast<size_t>(cpus));
  std::vector<trb_counters> out(TRB_MAX_FUNCTIONS);
  const int fd = bpf_map__fd(skel_->maps.trb_counters);
  for (uint32_t fn = 0; fn < TRB_MAX_FUNCTIONS; ++fn) {
    if (bpf_map_lookup_elem(fd, &fn, per_cpu.data()) != 0) return OsError("reading counters", errno);
    for (const trb_counters& c : per_cpu) {
      out[fn].messages += c.messages;
      out[fn].bytes += c.bytes;
      out[fn].undelivered += c.undelivered;
      out[fn].drops += c.drops;
    }
  }
  return out;
}

uint32_t BpfRouter::sockets_map_id() const { return IdOf(bpf_map__fd(skel_->maps.trb_sockets)); }
uint32_t BpfRouter::routes_map_id() const { return IdOf(bpf_map__fd(skel_->maps.trb_routes)); }
uint32_t BpfRouter::counters_map_id() const { return IdOf(bpf_map__fd(skel_->maps.trb_counters)); }
uint32_t BpfRouter::program_id() const {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(bpf_program__fd(skel_->progs.trb_route), &info, &len) == 0 ? info.id : 0;
}

}  // namespace tributary::ebpf
