// Reading YAML configuration with errors that say where: the section reader
// every Tributary configuration file is parsed with (node agents here, the
// simulator's job files in simulation/).
//
// Every error is kConfig and names the file, the line and column, and the
// dotted key path:
//   node.yaml:7:3: key 'store.segment_bytes': expected a size like 512MiB
// Unknown keys are errors (OnlyKeys): a typo must not fall back to a default.
//
// Thread safety: plain functions and value types.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tributary/aggregator/strategy.h"
#include "tributary/core/error.h"

namespace tributary::config {

// Reads one mapping, remembering where it is, so every error can say so.
class Section {
 public:
  Section(YAML::Node node, std::string source, std::string path)
      : node_(std::move(node)), source_(std::move(source)), path_(std::move(path)) {}

  Result<void> ExpectMap() const {
    if (node_.IsMap()) return Ok();
    return Fail(node_, "", "expected a mapping");
  }

  // Rejects keys not in `known`.
  Result<void> OnlyKeys(const std::set<std::string>& known) const {
    for (const auto& kv : node_) {
      if (!kv.first.IsScalar()) return Fail(kv.first, "", "expected a name as the key");
      const std::string key = kv.first.as<std::string>();
      if (known.count(key) == 0) {
        std::string list;
        for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
        return Fail(kv.first, key, "unknown key (expected one of: " + list + ")");
      }
    }
    return Ok();
  }

  bool Has(const std::string& key) const { return node_[key].IsDefined() && !node_[key].IsNull(); }

  Section Child(const std::string& key) const { return Section(node_[key], source_, Join(key)); }

  Result<std::string> String(const std::string& key) const {
    YAML::Node v = node_[key];
    if (!v.IsScalar()) return Fail(v.IsDefined() ? v : node_, key, "expected a string");
    return v.Scalar();
  }

  Result<double> Number(const std::string& key) const {
    YAML::Node v = node_[key];
    double d = 0;
    if (!v.IsScalar() || !YAML::convert<double>::decode(v, d) || !std::isfinite(d)) {
      return Fail(v.IsDefined() ? v : node_, key, "expected a finite number");
    }
    return d;
  }

  Result<uint64_t> Integer(const std::string& key, uint64_t lo, uint64_t hi) const {
    YAML::Node v = node_[key];
    uint64_t n = 0;
    if (!v.IsScalar() || v.Scalar().find_first_not_of("0123456789") != std::string::npos ||
        !YAML::convert<uint64_t>::decode(v, n) || n < lo || n > hi) {
      return Fail(v.IsDefined() ? v : node_, key,
                  "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return n;
  }

  Result<uint64_t> Bytes(const std::string& key) const;

  Error Fail(const YAML::Node& at, const std::string& key, const std::string& what) const {
    const YAML::Mark m = at.Mark();
    std::ostringstream s;
    s << source_;
    if (!m.is_null()) s << ':' << (m.line + 1) << ':' << (m.column + 1);
    s << ": key '" << Join(key) << "': " << what;
    return MakeError(ErrorCode::kConfig, s.str());
  }

  const YAML::Node& node() const { return node_; }

 private:
  std::string Join(const std::string& key) const {
    if (key.empty()) return path_.empty() ? "<root>" : path_;
    return path_.empty() ? key : path_ + "." + key;
  }

  YAML::Node node_;
  std::string source_;
  std::string path_;
};

// The document in `text`; a syntax error names `source` and the position.
Result<YAML::Node> ParseYaml(const std::string& text, const std::string& source);

// Runs `read` (which walks a parsed document); a yaml-cpp exception from it
// (a key looked up in a node of the wrong kind: yaml-cpp throws there, a
// fuzzer found it) becomes kConfig naming `source` and the place.
template <typename F>
auto ReadGuarded(const std::string& source, F&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const YAML::Exception& e) {
    return MakeError(ErrorCode::kConfig, source + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
}
// The whole file (kConfig if it cannot be opened).
Result<std::string> ReadFile(const std::string& path);

// Optional keys: each leaves `out` as it is when the key is absent.
template <typename T>
Result<void> ReadOne(const Section& s, const std::string& key, T& out, uint64_t lo, uint64_t hi) {
  if (!s.Has(key)) return Ok();
  TRIBUTARY_ASSIGN_OR_RETURN(uint64_t v, s.Integer(key, lo, hi));
  out = static_cast<T>(v);
  return Ok();
}
Result<void> ReadChoice(const Section& s, const std::string& key, std::string& out,
                        const std::set<std::string>& choices);
// A number that must not be negative.
Result<void> ReadPositive(const Section& s, const std::string& key, double& out);

// A security section `key`, required: {mode: curve, <each of curve_keys>} or,
// explicitly, {mode: none} with no keys. Sets `mode`; returns the curve keys'
// values in `curve_keys` order (empty for none).
Result<std::vector<std::string>> ReadSecurity(const Section& parent, const std::string& key,
                                              const std::vector<std::string>& curve_keys, std::string& mode);

// A strategy section: {name: fedadam, server_lr: 0.01, beta1, beta2, tau, momentum, threads}.
Result<agg::StrategyOptions> ReadStrategy(const Section& s);

}  // namespace tributary::config
