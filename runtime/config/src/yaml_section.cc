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

Result<void> ReadPositive(const Section& s, const std::string& key, double& out) {
  if (!s.Has(key)) return Ok();
  TRIBUTARY_ASSIGN_OR_RETURN(double v, s.Number(key));
  if (v < 0) return s.Fail(s.node()[key], key, "must not be negative");
  out = v;
  return Ok();
}

}  // namespace tributary::config
