#include "tributary/config/controller_config.h"

#include <filesystem>

#include "tributary/config/yaml_section.h"

namespace tributary::config {
namespace {

namespace fs = std::filesystem;

// `path` as written, or against the directory of the file that names it.
std::string Resolve(const std::string& path, const std::string& source) {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  return (fs::path(source).parent_path() / path).lexically_normal().string();
}

Result<void> ReadString(const Section& s, const std::string& key, std::string& out) {
  if (!s.Has(key)) return Ok();
  TRIBUTARY_ASSIGN_OR_RETURN(out, s.String(key));
  return Ok();
}

Result<void> ReadBool(const Section& s, const std::string& key, bool& out) {
  if (!s.Has(key)) return Ok();
  const YAML::Node v = s.node()[key];
  if (!v.IsScalar() || !YAML::convert<bool>::decode(v, out)) return s.Fail(v, key, "expected true or false");
  return Ok();
}

// train: {name: scalar}: bools, integers, numbers and strings, as YAML wrote them.
Result<ConfigMap> ReadScalars(const Section& s) {
  TRIBUTARY_TRY(s.ExpectMap());
  ConfigMap out;
  for (const auto& kv : s.node()) {
    if (!kv.first.IsScalar()) return s.Fail(kv.first, "", "expected a name as the key");
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (!v.IsScalar()) return s.Fail(v, key, "expected a scalar (bool, integer, number or string)");
    bool b = false;
    int64_t i = 0;
    double d = 0;
    const std::string& text = v.Scalar();
    if (v.Tag() == "!") {
      out[key] = text;  // quoted: a string, whatever it looks like
    } else if (YAML::convert<bool>::decode(v, b) && (text == "true" || text == "false")) {
      out[key] = b;
    } else if (text.find_first_not_of("-0123456789") == std::string::npos && YAML::convert<int64_t>::decode(v, i)) {
      out[key] = i;
    } else if (YAML::convert<double>::decode(v, d)) {
      out[key] = d;
    } else {
      out[key] = text;
    }
  }
  return out;
}

Result<void> ReadModel(const Section& m, DeploymentJob& j) {
  TRIBUTARY_TRY(m.ExpectMap());
  TRIBUTARY_TRY(m.OnlyKeys({"file", "layout", "init"}));
  if (m.Has("file") == m.Has("layout")) return m.Fail(m.node(), "", "expected either file or layout");
  if (m.Has("file")) {
    if (m.Has("init")) return m.Fail(m.node()["init"], "init", "only with a layout (a file holds its values)");
    TRIBUTARY_ASSIGN_OR_RETURN(std::string file, m.String("file"));
    j.model_file = Resolve(file, j.source);
    return Ok();
  }
  const YAML::Node layout = m.node()["layout"];
  if (!layout.IsSequence() || layout.size() == 0) return m.Fail(layout, "layout", "expected a list of tensors");
  for (size_t i = 0; i < layout.size(); ++i) {
    Section where = m.Child("layout");
    if (!layout[i].IsMap()) return where.Fail(layout[i], std::to_string(i), "expected {name, shape, dtype}");
    for (const auto& kv : layout[i]) {
      if (!kv.first.IsScalar()) return where.Fail(kv.first, std::to_string(i), "expected a name as the key");
      const std::string key = kv.first.as<std::string>();
      if (key != "name" && key != "shape" && key != "dtype") {
        return where.Fail(kv.first, std::to_string(i) + "." + key, "unknown key (expected one of: dtype, name, shape)");
      }
    }
    agg::TensorSpec spec;
    const YAML::Node name = layout[i]["name"], shape = layout[i]["shape"], dtype = layout[i]["dtype"];
    // A missing key reads as a node yaml-cpp throws on: IsDefined() first.
    if (!name.IsDefined() || !name.IsScalar() || name.Scalar().empty()) {
      return where.Fail(layout[i], std::to_string(i) + ".name", "expected a name");
    }
    spec.name = name.Scalar();
    if (!shape.IsDefined() || !shape.IsSequence()) {
      return where.Fail(layout[i], std::to_string(i) + ".shape", "expected a list of sizes");
    }
    for (const auto& d : shape) {
      int64_t n = 0;
      if (!d.IsScalar() || !YAML::convert<int64_t>::decode(d, n) || n < 0 || n > (int64_t{1} << 40)) {
        return where.Fail(d, std::to_string(i) + ".shape", "expected non-negative sizes");
      }
      spec.shape.push_back(n);
    }
    if (dtype.IsDefined()) {
      auto parsed = dtype.IsScalar() ? agg::ParseDType(dtype.Scalar()) : Result<agg::DType>(MakeError(ErrorCode::kConfig, ""));
      // Clients may send f16, bf16 or i8 (compression); the global model is f32.
      if (!parsed || parsed.value() != agg::DType::kF32) {
        return where.Fail(dtype, std::to_string(i) + ".dtype", "expected f32 (the global model's dtype)");
      }
    }
    j.layout.push_back(std::move(spec));
  }
  if (auto created = agg::ModelSpec::Create(j.layout); !created) return m.Fail(layout, "layout", created.error().reason);
  if (m.Has("init")) {
    Section init = m.Child("init");
    TRIBUTARY_TRY(init.ExpectMap());
    TRIBUTARY_TRY(init.OnlyKeys({"scheme", "scale", "seed"}));
    TRIBUTARY_TRY(ReadChoice(init, "scheme", j.init.scheme, {"zeros", "normal", "uniform"}));
    TRIBUTARY_TRY(ReadPositive(init, "scale", j.init.scale));
    TRIBUTARY_TRY(ReadOne(init, "seed", j.init.seed, 0, UINT64_MAX));
  }
  return Ok();
}

}  // namespace

Result<ControllerConfig> ParseControllerConfig(const std::string& yaml_text, const std::string& source_name) {
  return ReadGuarded(source_name, [&]() -> Result<ControllerConfig> {
    TRIBUTARY_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml_text, source_name));
    Section top(root, source_name, "");
    TRIBUTARY_TRY(top.ExpectMap());
    TRIBUTARY_TRY(top.OnlyKeys({"bind", "http_bind", "state_dir", "node_timeout_ms", "client_ttl_ms", "security", "jobs"}));
    ControllerConfig c;
    TRIBUTARY_TRY(ReadString(top, "bind", c.bind));
    TRIBUTARY_TRY(ReadString(top, "http_bind", c.http_bind));
    if (!top.Has("state_dir")) return top.Fail(root, "state_dir", "missing: where checkpoints and models are kept");
    TRIBUTARY_ASSIGN_OR_RETURN(c.state_dir, top.String("state_dir"));
    c.state_dir = Resolve(c.state_dir, source_name);
    // At least three of the nodes' 500 ms heartbeats.
    TRIBUTARY_TRY(ReadOne(top, "node_timeout_ms", c.node_timeout_ms, 1500, uint64_t{1} << 32));
    TRIBUTARY_TRY(ReadOne(top, "client_ttl_ms", c.client_ttl_ms, 1000, uint64_t{1} << 32));
    TRIBUTARY_ASSIGN_OR_RETURN(auto files, ReadSecurity(top, "security", {"secret_key_file", "node_allow_list"}, c.security));
    if (!files.empty()) {
      c.secret_key_file = Resolve(files[0], source_name);
      c.node_allow_list = Resolve(files[1], source_name);
    }
    if (top.Has("jobs")) {
      const YAML::Node jobs = root["jobs"];
      if (!jobs.IsSequence()) return top.Fail(jobs, "jobs", "expected a list of job files");
      for (const auto& j : jobs) {
        if (!j.IsScalar()) return top.Fail(j, "jobs", "expected a file name");
        c.jobs.push_back(Resolve(j.Scalar(), source_name));
      }
    }
    return c;
  });
}

Result<ControllerConfig> LoadControllerConfig(const std::string& path) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseControllerConfig(text, path);
}

Result<DeploymentJob> ParseDeploymentJob(const std::string& yaml_text, const std::string& source_name) {
  return ReadGuarded(source_name, [&]() -> Result<DeploymentJob> {
    TRIBUTARY_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml_text, source_name));
    Section top(root, source_name, "");
    TRIBUTARY_TRY(top.ExpectMap());
    TRIBUTARY_TRY(top.OnlyKeys({"name", "rounds", "clients_per_round", "min_clients", "over_selection", "deadline_s",
                                "start_after", "seed", "model", "strategy", "train", "fan_in", "fan_in_min", "fan_in_max", "fan_in_tail_ms", "placement",
                                "reject_non_finite"}));
    DeploymentJob j;
    j.source = source_name;
    if (!top.Has("name")) return top.Fail(root, "name", "missing");
    TRIBUTARY_ASSIGN_OR_RETURN(j.name, top.String("name"));
    if (j.name.empty() || j.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                              std::string::npos || j.name.front() == '.') {
      return top.Fail(root["name"], "name", "expected letters, digits, '.', '_' or '-' (it names files)");
    }
    TRIBUTARY_TRY(ReadOne(top, "rounds", j.rounds, 0, uint64_t{1} << 40));
    if (!top.Has("clients_per_round")) return top.Fail(root, "clients_per_round", "missing");
    TRIBUTARY_TRY(ReadOne(top, "clients_per_round", j.clients_per_round, 1, 1'000'000));
    j.min_clients = j.clients_per_round;
    TRIBUTARY_TRY(ReadOne(top, "min_clients", j.min_clients, 1, j.clients_per_round));
    if (top.Has("over_selection")) {
      TRIBUTARY_ASSIGN_OR_RETURN(j.over_selection, top.Number("over_selection"));
      if (j.over_selection < 1.0 || j.over_selection > 10.0) {
        return top.Fail(root["over_selection"], "over_selection", "expected a factor in [1, 10]");
      }
    }
    TRIBUTARY_TRY(ReadOne(top, "deadline_s", j.deadline_s, 1, 86'400));
    j.start_after = j.min_clients;
    TRIBUTARY_TRY(ReadOne(top, "start_after", j.start_after, 1, 100'000'000));
    TRIBUTARY_TRY(ReadOne(top, "seed", j.seed, 0, UINT64_MAX));
    if (!top.Has("model")) return top.Fail(root, "model", "missing: {file: init.safetensors} or {layout: [...]}");
    TRIBUTARY_TRY(ReadModel(top.Child("model"), j));
    if (top.Has("strategy")) {
      TRIBUTARY_ASSIGN_OR_RETURN(j.strategy, ReadStrategy(top.Child("strategy")));
    }
    if (top.Has("train")) {
      TRIBUTARY_ASSIGN_OR_RETURN(j.train, ReadScalars(top.Child("train")));
      if (j.train.count("round")) return top.Fail(root["train"], "train.round", "reserved: the controller sets it");
    }
    if (top.Has("fan_in") && root["fan_in"].IsScalar() && root["fan_in"].Scalar() == "auto") {
      j.fan_in = 0;
      TRIBUTARY_TRY(ReadOne(top, "fan_in_min", j.fan_in_min, 1, 4096));
      TRIBUTARY_TRY(ReadOne(top, "fan_in_max", j.fan_in_max, j.fan_in_min, 4096));
      TRIBUTARY_TRY(ReadOne(top, "fan_in_tail_ms", j.fan_in_tail_ms, 1, 600'000));
    } else {
      TRIBUTARY_TRY(ReadOne(top, "fan_in", j.fan_in, 1, 4096));
      for (const char* bound : {"fan_in_min", "fan_in_max", "fan_in_tail_ms"}) {
        if (top.Has(bound)) return top.Fail(root[bound], bound, "only with fan_in: auto");
      }
    }
    TRIBUTARY_TRY(ReadBool(top, "reject_non_finite", j.reject_non_finite));
    if (top.Has("placement")) {
      TRIBUTARY_ASSIGN_OR_RETURN(j.placement, top.String("placement"));
      if (j.placement != "locality" && j.placement != "round_robin" && j.placement != "random") {
        return top.Fail(root["placement"], "placement", "expected locality, round_robin or random");
      }
    }
    return j;
  });
}

Result<DeploymentJob> LoadDeploymentJob(const std::string& path) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseDeploymentJob(text, path);
}

}  // namespace tributary::config
