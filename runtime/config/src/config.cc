#include "tributary/config/config.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace tributary::config {
namespace {

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

  Result<uint64_t> Bytes(const std::string& key) const {
    YAML::Node v = node_[key];
    if (!v.IsScalar()) return Fail(v.IsDefined() ? v : node_, key, "expected a size like 512MiB");
    auto n = ParseByteSize(v.Scalar());
    if (!n) return Fail(v, key, n.error().reason);
    return n.value();
  }

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

}  // namespace

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
  TRIBUTARY_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml_text, source_name));
  Section top(root, source_name, "");
  TRIBUTARY_TRY(top.ExpectMap());
  TRIBUTARY_TRY(top.OnlyKeys({"node_id", "store", "gateway_bind", "dataplane", "keep_alive_ms", "metrics_bind",
                                 "aggregation_transport", "gateway_security"}));
  NodeConfig c;
  if (top.Has("node_id")) {
    TRIBUTARY_ASSIGN_OR_RETURN(c.node_id, top.String("node_id"));
  }
  c.store.name = "tributary." + c.node_id;
  if (top.Has("gateway_bind")) {
    TRIBUTARY_ASSIGN_OR_RETURN(c.gateway_bind, top.String("gateway_bind"));
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
  if (top.Has("store")) {
    Section store = top.Child("store");
    TRIBUTARY_TRY(store.ExpectMap());
    TRIBUTARY_TRY(store.OnlyKeys({"segment_name", "segment_bytes", "max_blocks"}));
    if (store.Has("segment_name")) {
      TRIBUTARY_ASSIGN_OR_RETURN(c.store.name, store.String("segment_name"));
    }
    if (store.Has("segment_bytes")) {
      TRIBUTARY_ASSIGN_OR_RETURN(c.store.bytes, store.Bytes("segment_bytes"));
    }
    if (store.Has("max_blocks")) {
      TRIBUTARY_ASSIGN_OR_RETURN(uint64_t m, store.Integer("max_blocks", 1, 1u << 24));
      c.store.max_blocks = static_cast<uint32_t>(m);
    }
  }
  if (!top.Has("gateway_security")) {
    return top.Fail(root, "gateway_security",
                    "missing: set mode: curve (secret_key_file, allow_list) or, knowingly, mode: none");
  }
  {
    Section sec = top.Child("gateway_security");
    TRIBUTARY_TRY(sec.ExpectMap());
    TRIBUTARY_TRY(sec.OnlyKeys({"mode", "secret_key_file", "allow_list"}));
    if (!sec.Has("mode")) return sec.Fail(root["gateway_security"], "mode", "missing (curve or none)");
    TRIBUTARY_ASSIGN_OR_RETURN(c.gateway_security, sec.String("mode"));
    if (c.gateway_security == "curve") {
      if (!sec.Has("secret_key_file") || !sec.Has("allow_list")) {
        return sec.Fail(root["gateway_security"], "mode", "curve needs secret_key_file and allow_list");
      }
      TRIBUTARY_ASSIGN_OR_RETURN(c.gateway_secret_key_file, sec.String("secret_key_file"));
      TRIBUTARY_ASSIGN_OR_RETURN(c.gateway_allow_list, sec.String("allow_list"));
    } else if (c.gateway_security == "none") {
      if (sec.Has("secret_key_file") || sec.Has("allow_list")) {
        return sec.Fail(root["gateway_security"], "mode", "none takes no keys");
      }
    } else {
      return sec.Fail(root["gateway_security"]["mode"], "mode", "expected curve or none");
    }
  }
  return c;
}

namespace {

template <typename T>
Result<void> ReadOne(const Section& s, const std::string& key, T& out, uint64_t lo, uint64_t hi) {
  if (!s.Has(key)) return Ok();
  TRIBUTARY_ASSIGN_OR_RETURN(uint64_t v, s.Integer(key, lo, hi));
  out = static_cast<T>(v);
  return Ok();
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

Result<SemiPflJob> ReadSemiPfl(const Section& s, const YAML::Node& node) {
  TRIBUTARY_TRY(s.OnlyKeys({"name", "autoencoder", "embedding", "hidden", "depth", "hypernet_lr", "clip", "ae_epochs",
                            "ae_lr", "base_models", "server_samples", "base_hidden", "base_epochs", "base_lr",
                            "threshold", "min_samples", "combine_steps", "combine_lr", "adapt_batchnorm"}));
  SemiPflJob j;
  if (s.Has("adapt_batchnorm")) {
    const YAML::Node v = node["adapt_batchnorm"];
    if (!v.IsScalar() || !YAML::convert<bool>::decode(v, j.adapt_batchnorm)) {
      return s.Fail(v, "adapt_batchnorm", "expected true or false");
    }
  }
  if (s.Has("autoencoder")) {
    const YAML::Node a = node["autoencoder"];
    if (!a.IsSequence() || a.size() == 0) return s.Fail(a, "autoencoder", "expected a list of widths, e.g. [256, 128, 64]");
    j.autoencoder.clear();
    for (const auto& w : a) {
      int64_t v = 0;
      if (!w.IsScalar() || !YAML::convert<int64_t>::decode(w, v) || v < 1 || v > 65536) {
        return s.Fail(w, "autoencoder", "widths are integers in [1, 65536]");
      }
      j.autoencoder.push_back(v);
    }
  }
  uint64_t n = 0;
  for (auto [key, field, lo, hi] : {std::tuple{"embedding", &j.embedding, 0ull, 4096ull},
                                    std::tuple{"hidden", &j.hidden, 1ull, 65536ull},
                                    std::tuple{"base_hidden", &j.base_hidden, 1ull, 4096ull}}) {
    if (s.Has(key)) {
      TRIBUTARY_ASSIGN_OR_RETURN(n, s.Integer(key, lo, hi));
      *field = static_cast<int64_t>(n);
    }
  }
  TRIBUTARY_TRY(ReadOne(s, "depth", j.depth, 1, 64));
  TRIBUTARY_TRY(ReadOne(s, "ae_epochs", j.ae_epochs, 1, 1000));
  TRIBUTARY_TRY(ReadOne(s, "base_models", j.base_models, 1, 64));
  TRIBUTARY_TRY(ReadOne(s, "server_samples", j.server_samples, 8, 1'000'000));
  TRIBUTARY_TRY(ReadOne(s, "base_epochs", j.base_epochs, 1, 1000));
  TRIBUTARY_TRY(ReadOne(s, "min_samples", j.min_samples, 2, 1'000'000));
  TRIBUTARY_TRY(ReadOne(s, "combine_steps", j.combine_steps, 0, 100'000));
  for (auto [key, field] : {std::pair{"hypernet_lr", &j.hypernet_lr}, std::pair{"clip", &j.clip},
                            std::pair{"ae_lr", &j.ae_lr}, std::pair{"base_lr", &j.base_lr},
                            std::pair{"threshold", &j.threshold}, std::pair{"combine_lr", &j.combine_lr}}) {
    if (s.Has(key)) {
      TRIBUTARY_ASSIGN_OR_RETURN(const double v, s.Number(key));
      if (v <= 0) return s.Fail(node[key], key, "must be positive");
      *field = v;
    }
  }
  if (j.min_samples > j.server_samples) return s.Fail(node, "min_samples", "more than server_samples");
  return j;
}

}  // namespace

Result<SimulationJob> ParseSimulationJob(const std::string& yaml_text, const std::string& source_name) {
  TRIBUTARY_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml_text, source_name));
  Section top(root, source_name, "");
  TRIBUTARY_TRY(top.ExpectMap());
  TRIBUTARY_TRY(top.OnlyKeys({"name", "seed", "rounds", "clients", "clients_per_round", "data", "model", "train",
                              "strategy", "federation"}));
  SimulationJob j;
  if (top.Has("name")) {
    TRIBUTARY_ASSIGN_OR_RETURN(j.name, top.String("name"));
  }
  TRIBUTARY_TRY(ReadOne(top, "seed", j.seed, 0, ~uint64_t{0} >> 1));
  TRIBUTARY_TRY(ReadOne(top, "rounds", j.rounds, 1, 100'000));
  TRIBUTARY_TRY(ReadOne(top, "clients", j.clients, 1, 1'000'000));
  TRIBUTARY_TRY(ReadOne(top, "clients_per_round", j.clients_per_round, 1, 1'000'000));
  if (j.clients_per_round > j.clients) {
    return top.Fail(root["clients_per_round"], "clients_per_round", "more than `clients`");
  }
  TRIBUTARY_TRY(ReadChoice(top, "model", j.model, {"mlp", "cnn"}));
  if (top.Has("data")) {
    Section d = top.Child("data");
    TRIBUTARY_TRY(d.ExpectMap());
    TRIBUTARY_TRY(d.OnlyKeys({"dataset", "partition", "alpha", "shards_per_client", "samples", "dir", "label_ratio",
                              "samples_per_client"}));
    TRIBUTARY_TRY(ReadChoice(d, "dataset", j.dataset, {"fashion-mnist", "synthetic", "synthetic-har"}));
    if (d.Has("label_ratio")) {
      TRIBUTARY_ASSIGN_OR_RETURN(j.label_ratio, d.Number("label_ratio"));
      if (j.label_ratio < 0 || j.label_ratio > 1) return d.Fail(root["data"]["label_ratio"], "label_ratio", "must be in [0, 1]");
    }
    TRIBUTARY_TRY(ReadOne(d, "samples_per_client", j.samples_per_client, 8, 1'000'000));
    TRIBUTARY_TRY(ReadChoice(d, "partition", j.partition, {"iid", "dirichlet", "shards"}));
    TRIBUTARY_TRY(ReadPositive(d, "alpha", j.alpha));
    if (j.alpha <= 0) return d.Fail(root["data"]["alpha"], "alpha", "must be positive");
    TRIBUTARY_TRY(ReadOne(d, "shards_per_client", j.shards_per_client, 1, 1000));
    TRIBUTARY_TRY(ReadOne(d, "samples", j.synthetic_samples, 100, 10'000'000));
    if (d.Has("dir")) {
      TRIBUTARY_ASSIGN_OR_RETURN(j.data_dir, d.String("dir"));
    }
  }
  if (top.Has("train")) {
    Section t = top.Child("train");
    TRIBUTARY_TRY(t.ExpectMap());
    TRIBUTARY_TRY(t.OnlyKeys({"local_epochs", "batch_size", "lr", "momentum", "optimizer", "proximal_mu"}));
    TRIBUTARY_TRY(ReadOne(t, "local_epochs", j.local_epochs, 1, 1000));
    TRIBUTARY_TRY(ReadOne(t, "batch_size", j.batch_size, 1, 1'000'000));
    TRIBUTARY_TRY(ReadPositive(t, "lr", j.lr));
    TRIBUTARY_TRY(ReadPositive(t, "momentum", j.momentum));
    TRIBUTARY_TRY(ReadChoice(t, "optimizer", j.optimizer, {"sgd", "adam"}));
    TRIBUTARY_TRY(ReadPositive(t, "proximal_mu", j.proximal_mu));
  }
  if (top.Has("strategy") && root["strategy"].IsMap() && root["strategy"]["name"].IsScalar() &&
      root["strategy"]["name"].Scalar() == "semipfl") {
    j.strategy.name = "semipfl";
    TRIBUTARY_ASSIGN_OR_RETURN(j.semipfl, ReadSemiPfl(top.Child("strategy"), root["strategy"]));
  } else if (top.Has("strategy")) {
    TRIBUTARY_ASSIGN_OR_RETURN(j.strategy, ReadStrategy(top.Child("strategy")));
  }
  if (j.dataset == "synthetic-har" && j.strategy.name != "semipfl") {
    return top.Fail(root["data"]["dataset"], "data.dataset", "synthetic-har is a per-user dataset for strategy semipfl");
  }
  if (j.strategy.name == "fedprox" && j.proximal_mu <= 0) {
    return top.Fail(root["strategy"], "strategy", "fedprox needs train.proximal_mu > 0 (the clients apply it)");
  }
  if (top.Has("federation")) {
    Section f = top.Child("federation");
    TRIBUTARY_TRY(f.ExpectMap());
    TRIBUTARY_TRY(f.OnlyKeys({"nodes", "fan_in", "dataplane", "compression", "workers", "deadline_s"}));
    TRIBUTARY_TRY(ReadOne(f, "nodes", j.nodes, 1, 64));
    TRIBUTARY_TRY(ReadOne(f, "fan_in", j.fan_in, 1, 4096));
    TRIBUTARY_TRY(ReadChoice(f, "dataplane", j.dataplane, {"auto", "ebpf", "userspace"}));
    TRIBUTARY_TRY(ReadChoice(f, "compression", j.compression, {"none", "f16", "bf16", "int8"}));
    TRIBUTARY_TRY(ReadOne(f, "workers", j.workers, 1, 256));
    TRIBUTARY_TRY(ReadOne(f, "deadline_s", j.deadline_s, 1, 86'400));
  }
  return j;
}

Result<SimulationJob> LoadSimulationJob(const std::string& path) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseSimulationJob(text, path);
}

Result<NodeConfig> LoadNodeConfig(const std::string& path) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseNodeConfig(text, path);
}

Result<agg::StrategyOptions> ParseStrategyConfig(const std::string& yaml_text, const std::string& source_name) {
  TRIBUTARY_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml_text, source_name));
  Section top(root, source_name, "");
  TRIBUTARY_TRY(top.ExpectMap());
  TRIBUTARY_TRY(top.OnlyKeys({"strategy"}));
  if (!top.Has("strategy")) return top.Fail(root, "strategy", "missing");
  return ReadStrategy(top.Child("strategy"));
}

}  // namespace tributary::config
