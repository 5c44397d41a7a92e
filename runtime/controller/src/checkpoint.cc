#include "tributary/controller/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tributary/core/unique_fd.h"
#include "tributary/protocol/codec.h"

namespace tributary::controller {
namespace {

constexpr uint32_t kCheckpointMagic = 0x43425254;  // "TRBC"
constexpr uint32_t kCheckpointVersion = 1;

template <class T>
void Put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <class T>
bool Get(std::string_view& in, T& v) {
  if (in.size() < sizeof v) return false;
  std::memcpy(&v, in.data(), sizeof v);
  in.remove_prefix(sizeof v);
  return true;
}

uint64_t HashOf(std::string_view bytes) {
  return protocol::PayloadHasher::Of(std::as_bytes(std::span(bytes.data(), bytes.size())));
}

Result<void> WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return MakeError(ErrorCode::kIo, "cannot write " + path + ": " + std::strerror(errno));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Ok();
}

}  // namespace

std::string EncodeCheckpoint(const CheckpointState& s) {
  std::string out;
  Put(out, kCheckpointMagic);
  Put(out, kCheckpointVersion);
  Put(out, s.model_version);
  Put(out, s.steps);
  Put(out, static_cast<uint64_t>(s.model.size()));
  Put(out, static_cast<uint64_t>(s.slots.size()));
  out.append(reinterpret_cast<const char*>(s.model.data()), s.model.size() * 4);
  for (const auto& slot : s.slots) out.append(reinterpret_cast<const char*>(slot.data()), slot.size() * 4);
  Put(out, HashOf(out));
  return out;
}

Result<CheckpointState> DecodeCheckpoint(std::string_view data, uint64_t elements, uint64_t slots,
                                         const std::string& where) {
  auto bad = [&](const std::string& why) { return MakeError(ErrorCode::kConfig, where + " is unusable: " + why); };
  if (data.size() < 8) return bad("truncated");
  uint64_t sum;
  std::memcpy(&sum, data.data() + data.size() - 8, 8);
  if (HashOf(data.substr(0, data.size() - 8)) != sum) return bad("checksum mismatch (torn or corrupted)");
  std::string_view v = data.substr(0, data.size() - 8);
  uint32_t magic, version;
  uint64_t n, k;
  CheckpointState s;
  if (!Get(v, magic) || !Get(v, version) || !Get(v, s.model_version) || !Get(v, s.steps) || !Get(v, n) ||
      !Get(v, k) || magic != kCheckpointMagic || version != kCheckpointVersion) {
    return bad("not a version-1 checkpoint header");
  }
  if (n != elements || k != slots || v.size() != (1 + k) * n * 4) {
    return bad("its sizes do not match the job's model and strategy");
  }
  s.model.resize(n);
  std::memcpy(s.model.data(), v.data(), n * 4);
  s.slots.assign(k, std::vector<float>(n));
  for (uint64_t i = 0; i < k; ++i) std::memcpy(s.slots[i].data(), v.data() + (1 + i) * n * 4, n * 4);
  return s;
}

Result<void> WriteCheckpoint(const std::string& path, const CheckpointState& state) {
  return WriteFileAtomically(path, EncodeCheckpoint(state));
}

Result<void> WriteFileAtomically(const std::string& path, std::string_view data) {
  const std::string tmp = path + ".tmp";
  auto failed = [&](const std::string& what) {
    const Error e = MakeError(ErrorCode::kIo, what + ": " + std::strerror(errno));
    ::unlink(tmp.c_str());  // the old checkpoint stays as it was
    return e;
  };
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) return MakeError(ErrorCode::kIo, "cannot write " + tmp + ": " + std::strerror(errno));
    if (auto written = WriteAll(fd.get(), data, tmp); !written) return failed("cannot write " + tmp);
    if (::fsync(fd.get()) != 0) return failed("cannot sync " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return failed("cannot replace " + path);
  // The rename itself is durable once the directory is.
  const std::string dir = std::filesystem::path(path).parent_path().string();
  UniqueFd d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d || ::fsync(d.get()) != 0) return MakeError(ErrorCode::kIo, "cannot sync " + dir + ": " + std::strerror(errno));
  return Ok();
}

Result<std::optional<CheckpointState>> ReadCheckpoint(const std::string& path, uint64_t elements, uint64_t slots) {
  std::error_code ec;
  const bool present = std::filesystem::exists(path, ec);
  // Only a file that is really absent means "no checkpoint": any other failure
  // must not turn into a silent fresh start.
  if (ec) return MakeError(ErrorCode::kIo, "cannot look for checkpoint " + path + ": " + ec.message());
  if (!present) return std::optional<CheckpointState>();
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kIo, "cannot read " + path);
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TRIBUTARY_ASSIGN_OR_RETURN(CheckpointState s, DecodeCheckpoint(data, elements, slots, "checkpoint " + path));
  return std::optional<CheckpointState>(std::move(s));
}

}  // namespace tributary::controller
