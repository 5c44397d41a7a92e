#include "tributary/config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <limits>
#include <sstream>
#include <tuple>

#include "tributary/config/yaml_section.h"

namespace tributary::config {

Result<agg::StrategyOptions> ReadStrategy(const Section& s) {
  TRIBUTARY_TRY(s.ExpectMap());
  TRIBUTARY_TRY(s.OnlyKeys({"name", "server_lr", "momentum", "beta1", "beta2", "tau", "threads"}));
  agg::StrategyOptions o;
  if (s.Has("name")) {
    TRIBUTARY_ASSIGN_OR_RETURN(o.name, s.String("name"));
  }
  for (auto [key, field] : {std::pair{"server_lr", &o.server_lr}, std::pair{"momentum", &o.momentum},
                            std::pair{"beta1", &o.beta1}, std::pair{"beta2", &o.beta2}, std::pair{"tau", &o.tau}}) {
    if (s.Has(key)) {
      TRIBUTARY_ASSIGN_OR_RETURN(double v, s.Number(key));
      *field = v;
    }
  }
  if (s.Has("threads")) {
    TRIBUTARY_ASSIGN_OR_RETURN(uint64_t t, s.Integer("threads", 0, 1024));
    o.parallelism.threads = static_cast<int>(t);
  }
  // The strategy validates names and ranges; point its complaint at the section.
  auto created = agg::Strategy::Create(o);
  if (!created) return s.Fail(s.node(), "", created.error().reason);
  return o;
}

Result<uint64_t> ParseByteSize(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 19) return MakeError(ErrorCode::kConfig, "expected a size like 512MiB, got '" + text + "'");
  const uint64_t n = std::stoull(text.substr(0, i));
  std::string unit = text.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  uint64_t mult = 1;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "KiB") {
    mult = 1ull << 10;
  } else if (unit == "MiB") {
    mult = 1ull << 20;
  } else if (unit == "GiB") {
    mult = 1ull << 30;
  } else if (unit == "TiB") {
    mult = 1ull << 40;
  } else {
    return MakeError(ErrorCode::kConfig, "unknown size unit '" + unit + "' (B, KiB, MiB, GiB, TiB)");
  }
  if (n > std::numeric_limits<uint64_t>::max() / mult) return MakeError(ErrorCode::kConfig, "size overflows");
  return n * mult;
}

Result<NodeConfig> ParseNodeConfig(const std::string& yaml_text, const std::string& source_name) {
  return ReadGuarded(source_name, [&]() -> Result<NodeConfig> {
    TRIBUTARY_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml_text, source_name));
    Section top(root, source_name, "");
    TRIBUTARY_TRY(top.ExpectMap());
    TRIBUTARY_TRY(top.OnlyKeys({"node_id", "store", "gateway_bind", "gateway_advertise", "dataplane", "keep_alive_ms",
                                   "function_liveness_ms", "autoscale", "metrics_bind",
                                   "aggregation_transport", "gateway_security", "controller", "controller_security"}));
    NodeConfig c;
    if (top.Has("node_id")) {
      TRIBUTARY_ASSIGN_OR_RETURN(c.node_id, top.String("node_id"));
      if (auto valid = ValidNodeId(c.node_id); !valid) return top.Fail(root["node_id"], "node_id", valid.error().reason);
    }
    c.store.name = "tributary." + c.node_id;
    if (top.Has("gateway_bind")) {
      TRIBUTARY_ASSIGN_OR_RETURN(c.gateway_bind, top.String("gateway_bind"));
    }
    if (top.Has("gateway_advertise")) {
      TRIBUTARY_ASSIGN_OR_RETURN(c.gateway_advertise, top.String("gateway_advertise"));
      if (auto valid = ValidAdvertisedEndpoint(c.gateway_advertise); !valid) {
        return top.Fail(root["gateway_advertise"], "gateway_advertise", valid.error().reason);
      }
    }
    if (top.Has("dataplane")) {
      TRIBUTARY_ASSIGN_OR_RETURN(c.dataplane, top.String("dataplane"));
      if (c.dataplane != "auto" && c.dataplane != "ebpf" && c.dataplane != "userspace") {
        return top.Fail(root["dataplane"], "dataplane", "expected auto, ebpf or userspace");
      }
    }
    if (top.Has("aggregation_transport")) {
      TRIBUTARY_ASSIGN_OR_RETURN(c.aggregation_transport, top.String("aggregation_transport"));
      if (c.aggregation_transport != "shared-memory" && c.aggregation_transport != "tcp") {
        return top.Fail(root["aggregation_transport"], "aggregation_transport", "expected shared-memory or tcp");
      }
    }
    if (top.Has("metrics_bind")) {
      TRIBUTARY_ASSIGN_OR_RETURN(c.metrics_bind, top.String("metrics_bind"));
    }
    if (top.Has("keep_alive_ms")) {
      TRIBUTARY_ASSIGN_OR_RETURN(c.keep_alive_ms, top.Integer("keep_alive_ms", 0, uint64_t{1} << 40));
    }
    if (top.Has("function_liveness_ms")) {
      // At least 4 heartbeats: a shorter bound would kill functions that are merely busy.
      TRIBUTARY_ASSIGN_OR_RETURN(c.function_liveness_ms, top.Integer("function_liveness_ms", 1000, uint64_t{1} << 40));
    }
    if (top.Has("autoscale")) {
      Section a = top.Child("autoscale");
      TRIBUTARY_TRY(a.ExpectMap());
      TRIBUTARY_TRY(a.OnlyKeys({"enabled", "stable_window_s", "panic_window_s", "panic_threshold", "max_scale_up_rate",
                                "max_scale_down_rate", "target_utilization", "scale_to_zero_grace_s", "max_functions"}));
      if (a.Has("enabled")) {
        const YAML::Node v = a.node()["enabled"];
        if (!v.IsScalar() || !YAML::convert<bool>::decode(v, c.autoscale)) {
          return a.Fail(v, "enabled", "expected true or false");
        }
      }
      planner::AutoscaleOptions& o = c.autoscaling;
      const std::pair<const char*, std::tuple<double*, double, double>> numbers[] = {
          {"stable_window_s", {&o.stable_window_s, 1, 3600}},       {"panic_window_s", {&o.panic_window_s, 1, 3600}},
          {"panic_threshold", {&o.panic_threshold, 1, 100}},        {"max_scale_up_rate", {&o.max_scale_up_rate, 1, 1e6}},
          {"max_scale_down_rate", {&o.max_scale_down_rate, 1, 1e6}}, {"target_utilization", {&o.target_utilization, 0.01, 1}},
          {"scale_to_zero_grace_s", {&o.scale_to_zero_grace_s, 0, 86400}}};
      for (const auto& [key, spec] : numbers) {
        if (!a.Has(key)) continue;
        const auto [out, lo, hi] = spec;
        TRIBUTARY_ASSIGN_OR_RETURN(*out, a.Number(key));
        if (*out < lo || *out > hi) {
          return a.Fail(a.node()[key], key, "expected a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        }
      }
      if (o.panic_window_s > o.stable_window_s) {
        return a.Fail(a.node()["panic_window_s"], "panic_window_s", "the panic window must not exceed the stable window");
      }
      if (a.Has("max_functions")) {
        // At most the node agent's limit: its segment's 128 leases less 8.
        TRIBUTARY_ASSIGN_OR_RETURN(uint64_t m, a.Integer("max_functions", 1, 120));
        o.max_functions = static_cast<uint32_t>(m);
      }
    }
    if (top.Has("store")) {
      Section store = top.Child("store");
      TRIBUTARY_TRY(store.ExpectMap());
      TRIBUTARY_TRY(store.OnlyKeys({"segment_name", "segment_bytes", "max_blocks"}));
      if (store.Has("segment_name")) {
        TRIBUTARY_ASSIGN_OR_RETURN(c.store.name, store.String("segment_name"));
        c.segment_name_given = true;
      }
      if (store.Has("segment_bytes")) {
        TRIBUTARY_ASSIGN_OR_RETURN(c.store.bytes, store.Bytes("segment_bytes"));
      }
      if (store.Has("max_blocks")) {
        TRIBUTARY_ASSIGN_OR_RETURN(uint64_t m, store.Integer("max_blocks", 1, 1u << 24));
        c.store.max_blocks = static_cast<uint32_t>(m);
      }
    }
    {
      TRIBUTARY_ASSIGN_OR_RETURN(auto files,
                                 ReadSecurity(top, "gateway_security", {"secret_key_file", "allow_list"}, c.gateway_security));
      if (!files.empty()) {
        c.gateway_secret_key_file = files[0];
        c.gateway_allow_list = files[1];
      }
    }
    if (top.Has("controller")) {
      TRIBUTARY_ASSIGN_OR_RETURN(c.controller_endpoint, top.String("controller"));
    }
    TRIBUTARY_ASSIGN_OR_RETURN(auto files, ReadSecurity(top, "controller_security",
                                                        {"controller_public_key_file", "secret_key_file"},
                                                        c.controller_security));
    if (!files.empty()) {
      c.controller_public_key_file = files[0];
      c.controller_secret_key_file = files[1];
    }
    return c;
  });
}

Result<NodeConfig> LoadNodeConfig(const std::string& path) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseNodeConfig(text, path);
}

Result<void> ValidNodeId(const std::string& id) {
  constexpr size_t kMaxChars = 240;
  const auto allowed = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-'; };
  if (id.empty() || id.size() > kMaxChars || !std::isalnum(static_cast<unsigned char>(id.front())) ||
      !std::all_of(id.begin(), id.end(), allowed)) {
    return MakeError(ErrorCode::kConfig, "node id '" + id + "': expected 1 to " + std::to_string(kMaxChars) +
                                             " letters, digits, '.', '_' or '-', starting with a letter or digit");
  }
  return Ok();
}

Result<void> SetNodeId(NodeConfig& config, const std::string& id) {
  TRIBUTARY_TRY(ValidNodeId(id));
  config.node_id = id;
  if (!config.segment_name_given) config.store.name = "tributary." + id;
  return Ok();
}

Result<void> ValidAdvertisedEndpoint(const std::string& endpoint) {
  const std::string scheme = "tcp://";
  const size_t colon = endpoint.rfind(':');
  // Checked before any substr: the scheme's own colon must not count as the port's.
  const bool shaped = endpoint.starts_with(scheme) && colon != std::string::npos && colon > scheme.size();
  const std::string host = shaped ? endpoint.substr(scheme.size(), colon - scheme.size()) : "";
  const std::string port = shaped ? endpoint.substr(colon + 1) : "";
  const bool digits = !port.empty() && port.size() <= 5 && std::all_of(port.begin(), port.end(), ::isdigit);
  const bool numeric_port = digits && std::stoul(port) >= 1 && std::stoul(port) <= 65535;
  if (host.empty() || host == "*" || host == "0.0.0.0" || host == "[::]" || !numeric_port) {
    return MakeError(ErrorCode::kConfig, "'" + endpoint + "': expected tcp://HOST:PORT with a host clients can reach "
                                         "(not a wildcard) and a port in [1, 65535]");
  }
  return Ok();
}

Result<agg::StrategyOptions> ParseStrategyConfig(const std::string& yaml_text, const std::string& source_name) {
  return ReadGuarded(source_name, [&]() -> Result<agg::StrategyOptions> {
    TRIBUTARY_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml_text, source_name));
    Section top(root, source_name, "");
    TRIBUTARY_TRY(top.ExpectMap());
    TRIBUTARY_TRY(top.OnlyKeys({"strategy"}));
    if (!top.Has("strategy")) return top.Fail(root, "strategy", "missing");
    return ReadStrategy(top.Child("strategy"));
  });
}

}  // namespace tributary::config
