#include "tributary/config/yaml_section.h"

#include <fstream>
#include <sstream>

#include "tributary/config/config.h"

namespace tributary::config {

Result<uint64_t> Section::Bytes(const std::string& key) const {
  YAML::Node v = node_[key];
  if (!v.IsScalar()) return Fail(v.IsDefined() ? v : node_, key, "expected a size like 512MiB");
  auto n = ParseByteSize(v.Scalar());
  if (!n) return Fail(v, key, n.error().reason);
  return n.value();
}

Result<YAML::Node> ParseYaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    std::ostringstream s;
    s << source << ':' << (e.mark.line + 1) << ':' << (e.mark.column + 1) << ": " << e.msg;
    return MakeError(ErrorCode::kConfig, s.str());
  }
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return MakeError(ErrorCode::kConfig, path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Result<void> ReadChoice(const Section& s, const std::string& key, std::string& out,
                        const std::set<std::string>& choices) {
  if (!s.Has(key)) return Ok();
  TRIBUTARY_ASSIGN_OR_RETURN(std::string v, s.String(key));
  if (choices.count(v) == 0) {
    std::string list;
    for (const std::string& c : choices) list += (list.empty() ? "" : ", ") + c;
    return s.Fail(s.node()[key], key, "expected one of: " + list);
  }
  out = v;
  return Ok();
}

Result<std::vector<std::string>> ReadSecurity(const Section& parent, const std::string& key,
                                              const std::vector<std::string>& curve_keys, std::string& mode) {
  std::string listed, needs;
  for (size_t i = 0; i < curve_keys.size(); ++i) {
    listed += (i ? ", " : "") + curve_keys[i];
    needs += (i ? " and " : "") + curve_keys[i];
  }
  if (!parent.Has(key)) {
    return parent.Fail(parent.node(), key, "missing: set mode: curve (" + listed + ") or, knowingly, mode: none");
  }
  const Section sec = parent.Child(key);
  TRIBUTARY_TRY(sec.ExpectMap());
  std::set<std::string> known(curve_keys.begin(), curve_keys.end());
  known.insert("mode");
  TRIBUTARY_TRY(sec.OnlyKeys(known));
  if (!sec.Has("mode")) return sec.Fail(sec.node(), "mode", "missing (curve or none)");
  TRIBUTARY_ASSIGN_OR_RETURN(mode, sec.String("mode"));
  std::vector<std::string> values;
  if (mode == "curve") {
    for (const std::string& k : curve_keys) {
      if (!sec.Has(k)) return sec.Fail(sec.node(), "mode", "curve needs " + needs);
    }
    for (const std::string& k : curve_keys) {
      TRIBUTARY_ASSIGN_OR_RETURN(std::string v, sec.String(k));
      values.push_back(std::move(v));
    }
  } else if (mode == "none") {
    for (const std::string& k : curve_keys) {
      if (sec.Has(k)) return sec.Fail(sec.node(), "mode", "none takes no keys");
    }
  } else {
    return sec.Fail(sec.node()["mode"], "mode", "expected curve or none");
  }
  return values;
}

Result<void> ReadPositive(const Section& s, const std::string& key, double& out) {
  if (!s.Has(key)) return Ok();
  TRIBUTARY_ASSIGN_OR_RETURN(double v, s.Number(key));
  if (v < 0) return s.Fail(s.node()[key], key, "must not be negative");
  out = v;
  return Ok();
}

}  // namespace tributary::config
