// A job's checkpoint: the global model, its version, the server optimizer's
// step count and state slots, written atomically after every round.
//
// File format (little-endian): magic "TRBC" u32, format version u32 (1),
// model_version u64, steps u64, elements u64, slots u64, then the model and
// each slot as `elements` f32 values, then the XXH3-64 of everything before
// it. WriteCheckpoint writes a temporary file, fsyncs it, renames it over the
// checkpoint and fsyncs the directory, so a crash leaves the old or the new
// file, never a mix.
//
// Errors: a torn, truncated or corrupted file, or one whose sizes do not
// match the job, is kConfig naming the file and what is wrong; nothing is
// restored from it and the caller decides (the controller refuses the job
// rather than silently restarting it from scratch). A missing file is not
// an error (ReadCheckpoint returns nullopt). I/O failures are kIo.
//
// Thread safety: plain functions and value types.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tributary/core/error.h"

namespace tributary::controller {

struct CheckpointState {
  uint64_t model_version = 0;
  uint64_t steps = 0;
  std::vector<float> model;
  std::vector<std::vector<float>> slots;  // each model.size() values
};

std::string EncodeCheckpoint(const CheckpointState& state);
// `where` names the data in errors; `elements` and `slots` are what the job expects.
Result<CheckpointState> DecodeCheckpoint(std::string_view data, uint64_t elements, uint64_t slots,
                                         const std::string& where);

Result<void> WriteCheckpoint(const std::string& path, const CheckpointState& state);
// `data` as the file at `path`, atomically: a temporary file, fsync, rename
// over `path`, fsync of the directory (kIo on failure; the old file stays).
Result<void> WriteFileAtomically(const std::string& path, std::string_view data);
Result<std::optional<CheckpointState>> ReadCheckpoint(const std::string& path, uint64_t elements, uint64_t slots);

}  // namespace tributary::controller
