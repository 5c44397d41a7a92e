#include "tributary/controller/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <iterator>

#include "tributary/controller/checkpoint.h"

namespace tributary::controller {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit

}  // namespace

Result<std::string> EncodeSafetensors(const agg::ModelSpec& spec, std::span<const float> values,
                                      const std::map<std::string, std::string>& metadata) {
  if (values.size() != spec.elements()) {
    return MakeError(ErrorCode::kShapeMismatch, std::to_string(values.size()) + " values for a model of " +
                                                    std::to_string(spec.elements()) + " elements");
  }
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t at = 0;
  for (const agg::TensorSpec& t : spec.tensors()) {
    const uint64_t bytes = t.elements() * sizeof(float);
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {at, at + bytes}}};
    at += bytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  out += json;
  out.append(reinterpret_cast<const char*>(values.data()), values.size_bytes());
  return out;
}

Result<SafetensorsModel> DecodeSafetensors(std::string_view data, const std::string& where) {
  auto bad = [&](const std::string& what) { return MakeError(ErrorCode::kConfig, where + ": " + what); };
  if (data.size() < 8) return bad("shorter than the 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, data.data(), 8);
  if (n > kMaxHeaderBytes || n > data.size() - 8) return bad("header length " + std::to_string(n) + " runs past the file");
  const nlohmann::json header = nlohmann::json::parse(data.substr(8, n), nullptr, /*allow_exceptions=*/false);
  if (!header.is_object()) return bad("the header is not a JSON object");
  const std::string_view body = data.substr(8 + n);

  struct Entry {
    uint64_t begin, end;
    agg::TensorSpec spec;
  };
  std::vector<Entry> entries;
  SafetensorsModel out;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return bad("__metadata__ is not an object");
      for (const auto& [k, m] : v.items()) {
        if (!m.is_string()) return bad("__metadata__." + k + " is not a string");
        out.metadata[k] = m.get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
      return bad("tensor '" + name + "' needs dtype, shape and data_offsets");
    }
    if (!v["dtype"].is_string() || v["dtype"].get<std::string>() != "F32") {
      return bad("tensor '" + name + "': only F32 tensors are read, not " + v["dtype"].dump());
    }
    Entry e{0, 0, {name, agg::DType::kF32, {}}};
    if (!v["shape"].is_array()) return bad("tensor '" + name + "': shape is not an array");
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 40)) {
        return bad("tensor '" + name + "': shape holds " + d.dump());
      }
      e.spec.shape.push_back(d.get<int64_t>());
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return bad("tensor '" + name + "': data_offsets is not [begin, end]");
    }
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.begin > e.end || e.end > body.size()) return bad("tensor '" + name + "': data_offsets run past the file");
    if (e.end - e.begin != e.spec.elements() * sizeof(float)) {
      return bad("tensor '" + name + "': data_offsets cover " + std::to_string(e.end - e.begin) +
                 " bytes, its shape needs " + std::to_string(e.spec.elements() * sizeof(float)));
    }
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t at = 0;
  std::vector<agg::TensorSpec> tensors;
  for (Entry& e : entries) {
    if (e.begin != at) return bad("tensor '" + e.spec.name + "' does not start where the one before it ends");
    at = e.end;
    tensors.push_back(std::move(e.spec));
  }
  if (at != body.size()) return bad("bytes after the last tensor");
  auto spec = agg::ModelSpec::Create(std::move(tensors));
  if (!spec) return bad(spec.error().reason);
  out.spec = std::move(spec).value();
  out.values.resize(out.spec.elements());
  std::memcpy(out.values.data(), body.data(), body.size());
  return out;
}

Result<void> WriteSafetensors(const std::string& path, const agg::ModelSpec& spec, std::span<const float> values,
                              const std::map<std::string, std::string>& metadata) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::string data, EncodeSafetensors(spec, values, metadata));
  return WriteFileAtomically(path, data);
}

Result<SafetensorsModel> ReadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kIo, "cannot read " + path);
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return DecodeSafetensors(data, path);
}

}  // namespace tributary::controller
