#include "tributary/simulation/job.h"

#include "tributary/config/yaml_section.h"

namespace tributary::simulation {
namespace {

using config::ReadChoice;
using config::ReadOne;
using config::ReadPositive;
using config::Section;

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
  TRIBUTARY_ASSIGN_OR_RETURN(YAML::Node root, config::ParseYaml(yaml_text, source_name));
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
    TRIBUTARY_ASSIGN_OR_RETURN(j.strategy, config::ReadStrategy(top.Child("strategy")));
  }
  if (j.dataset == "synthetic-har" && j.strategy.name != "semipfl") {
    return top.Fail(root["data"]["dataset"], "data.dataset", "synthetic-har is a per-user dataset for strategy semipfl");
  }
  if (j.strategy.name == "semipfl" && j.samples_per_client == 0) j.samples_per_client = 400;
  if (j.strategy.name != "semipfl" && j.samples_per_client > 0 && j.partition != "iid") {
    return top.Fail(root["data"]["samples_per_client"], "data.samples_per_client", "needs partition iid");
  }
  if (j.strategy.name == "fedprox" && j.proximal_mu <= 0) {
    return top.Fail(root["strategy"], "strategy", "fedprox needs train.proximal_mu > 0 (the clients apply it)");
  }
  if (top.Has("federation")) {
    Section f = top.Child("federation");
    TRIBUTARY_TRY(f.ExpectMap());
    TRIBUTARY_TRY(f.OnlyKeys({"nodes", "fan_in", "dataplane", "compression", "workers", "deadline_s",
                              "function_liveness_ms"}));
    TRIBUTARY_TRY(ReadOne(f, "nodes", j.nodes, 1, 64));
    TRIBUTARY_TRY(ReadOne(f, "fan_in", j.fan_in, 1, 4096));
    TRIBUTARY_TRY(ReadChoice(f, "dataplane", j.dataplane, {"auto", "ebpf", "userspace"}));
    TRIBUTARY_TRY(ReadChoice(f, "compression", j.compression, {"none", "f16", "bf16", "int8"}));
    TRIBUTARY_TRY(ReadOne(f, "workers", j.workers, 1, 256));
    TRIBUTARY_TRY(ReadOne(f, "deadline_s", j.deadline_s, 1, 86'400));
    TRIBUTARY_TRY(ReadOne(f, "function_liveness_ms", j.function_liveness_ms, 1'000, 86'400'000));
    if (j.function_liveness_ms >= j.deadline_s * 1000) {
      // Else the deadline would replan around a hung function before it is replaced: other sums, other bits.
      const YAML::Node at = root["federation"]["function_liveness_ms"];
      return f.Fail(at.IsDefined() ? at : root["federation"], "function_liveness_ms",
                    "must be shorter than deadline_s (default 10000 ms)");
    }
  }
  return j;
}

Result<SimulationJob> LoadSimulationJob(const std::string& path) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::string text, config::ReadFile(path));
  return ParseSimulationJob(text, path);
}

}  // namespace tributary::simulation
