#include "tributary/simulation/report.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

namespace tributary::simulation {
namespace {

struct Series {
  std::string label, color;
  std::vector<double> values;
};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

// A line chart (or stacked bars) as inline SVG: rounds on x.
std::string Chart(const std::string& title, const std::vector<Series>& series, bool stacked) {
  const double w = 640, h = 260, left = 56, right = 16, top = 28, bottom = 36;
  size_t n = 0;
  double hi = 0;
  for (const Series& s : series) n = std::max(n, s.values.size());
  for (size_t i = 0; i < n; ++i) {
    double sum = 0;
    for (const Series& s : series) {
      const double v = i < s.values.size() ? s.values[i] : 0;
      sum += v;
      hi = std::max(hi, stacked ? sum : v);
    }
  }
  hi = hi > 0 ? hi * 1.05 : 1;
  auto x = [&](double i) { return left + (n > 1 ? i / static_cast<double>(n - 1) : 0.5) * (w - left - right); };
  auto y = [&](double v) { return top + (1 - v / hi) * (h - top - bottom); };
  std::ostringstream o;
  o << std::fixed << std::setprecision(1) << "<svg xmlns='http://www.w3.org/2000/svg' width='" << w << "' height='" << h
    << "' font-family='sans-serif' font-size='11'>\n<text x='" << left << "' y='16' font-size='13'>" << Escape(title)
    << "</text>\n";
  for (int k = 0; k <= 4; ++k) {
    const double v = hi * k / 4;
    o << "<line x1='" << left << "' x2='" << w - right << "' y1='" << y(v) << "' y2='" << y(v)
      << "' stroke='#ddd'/><text x='4' y='" << y(v) + 4 << "'>" << std::setprecision(v < 10 ? 3 : 1) << v
      << "</text>\n" << std::setprecision(1);
  }
  o << "<text x='" << (w / 2) << "' y='" << h - 6 << "'>round (1.." << n << ")</text>\n";
  if (stacked) {
    const double bar = std::max(1.0, (w - left - right) / std::max<size_t>(n, 1) * 0.8);
    for (size_t i = 0; i < n; ++i) {
      double base = 0;
      for (const Series& s : series) {
        const double v = i < s.values.size() ? s.values[i] : 0;
        o << "<rect x='" << x(static_cast<double>(i)) - bar / 2 << "' y='" << y(base + v) << "' width='" << bar
          << "' height='" << y(base) - y(base + v) << "' fill='" << s.color << "'/>\n";
        base += v;
      }
    }
  } else {
    for (const Series& s : series) {
      o << "<polyline fill='none' stroke-width='2' stroke='" << s.color << "' points='";
      for (size_t i = 0; i < s.values.size(); ++i) o << x(static_cast<double>(i)) << "," << y(s.values[i]) << " ";
      o << "'/>\n";
    }
  }
  double lx = left + 140;
  for (const Series& s : series) {
    o << "<rect x='" << lx << "' y='7' width='10' height='10' fill='" << s.color << "'/><text x='" << lx + 14
      << "' y='16'>" << Escape(s.label) << "</text>\n";
    lx += 150;
  }
  o << "</svg>\n";
  return o.str();
}

// Every field of a round, by name, in the CSV's column order: `f(name, field)`.
template <typename Metrics, typename F>
void ForEachField(Metrics& m, F&& f) {
  f("round", m.round), f("accuracy", m.accuracy), f("loss", m.loss), f("train_loss", m.train_loss);
  f("round_s", m.round_s), f("clients_s", m.clients_s), f("aggregation_s", m.aggregation_s);
  f("evaluation_s", m.evaluation_s), f("updates", m.updates), f("updates_per_s", m.updates_per_s);
  f("bytes_up", m.bytes_up), f("bytes_down", m.bytes_down), f("functions_live", m.functions_live);
  f("cold_starts", m.cold_starts), f("warm_reuses", m.warm_reuses), f("function_deaths", m.function_deaths);
  f("liveness_kills", m.liveness_kills), f("rebuilds", m.rebuilds);
}

nlohmann::ordered_json ToJson(const RoundMetrics& m) {
  nlohmann::ordered_json j;
  ForEachField(m, [&](const char* name, const auto& v) { j[name] = v; });
  return j;
}

// Throws nlohmann::json::exception for a missing or mistyped field.
RoundMetrics FromJson(const nlohmann::json& j) {
  RoundMetrics m;
  ForEachField(m, [&](const char* name, auto& v) { j.at(name).get_to(v); });
  return m;
}

// The CSV's header (the field names) or a round's line (its values).
std::string CsvLine(const RoundMetrics& m, bool header = false) {
  std::string out;
  const nlohmann::ordered_json row = ToJson(m);
  for (const auto& [key, value] : row.items()) out += (out.empty() ? "" : ",") + (header ? key : value.dump());
  return out + "\n";
}

Result<void> WriteFile(const std::filesystem::path& path, const std::string& text, std::ios::openmode mode) {
  std::ofstream out(path, std::ios::binary | mode);
  out << text;
  out.flush();
  if (!out) return MakeError(ErrorCode::kIo, "cannot write " + path.string());
  return Ok();
}

// A kill leaves the old file or the new one, never a torn one.
Result<void> ReplaceFile(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::path fresh = path;
  fresh += ".new";
  TRIBUTARY_TRY(WriteFile(fresh, text, std::ios::trunc));
  std::error_code ec;
  std::filesystem::rename(fresh, path, ec);
  if (ec) return MakeError(ErrorCode::kIo, "cannot replace " + path.string() + ": " + ec.message());
  return Ok();
}

// What makes a run directory's rounds this job's: everything that changes a
// bit of the model (not rounds: a finished run may be extended).
nlohmann::json RunIdentity(const SimulationJob& job) {
  const agg::StrategyOptions& s = job.strategy;
  auto optional = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); };
  return {{"job", job.name},
          {"seed", job.seed},
          {"clients", job.clients},
          {"clients_per_round", job.clients_per_round},
          {"data", {{"dataset", job.dataset}, {"partition", job.partition}, {"alpha", job.alpha},
                    {"shards_per_client", job.shards_per_client}, {"synthetic_samples", job.synthetic_samples}}},
          {"model", job.model},
          {"train", {{"local_epochs", job.local_epochs}, {"batch_size", job.batch_size}, {"lr", job.lr},
                     {"momentum", job.momentum}, {"optimizer", job.optimizer}, {"proximal_mu", job.proximal_mu}}},
          {"strategy", {{"name", s.name}, {"server_lr", optional(s.server_lr)}, {"momentum", optional(s.momentum)},
                        {"beta1", optional(s.beta1)}, {"beta2", optional(s.beta2)}, {"tau", optional(s.tau)}}},
          {"federation", {{"nodes", job.nodes}, {"fan_in", job.fan_in}, {"compression", job.compression}}}};
}

}  // namespace

Result<void> AppendRound(const std::string& run_dir, const RoundMetrics& m) {
  namespace fs = std::filesystem;
  const fs::path csv = fs::path(run_dir) / "metrics.csv";
  if (!fs::exists(csv)) TRIBUTARY_TRY(WriteFile(csv, CsvLine({}, /*header=*/true), std::ios::trunc));
  TRIBUTARY_TRY(WriteFile(csv, CsvLine(m), std::ios::app));
  return WriteFile(fs::path(run_dir) / "metrics.jsonl", ToJson(m).dump() + "\n", std::ios::app);
}

Result<std::vector<RoundMetrics>> LoggedRounds(const std::string& run_dir, uint64_t keep) {
  namespace fs = std::filesystem;
  const fs::path jsonl = fs::path(run_dir) / "metrics.jsonl";
  std::vector<RoundMetrics> rounds;
  std::ifstream in(jsonl);
  std::string line;
  // A line cut short by a kill is not a round: everything before it is.
  while (rounds.size() < keep && std::getline(in, line) && in.good()) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) break;
    RoundMetrics m;
    try {
      m = FromJson(j);
    } catch (const nlohmann::json::exception& e) {
      return MakeError(ErrorCode::kConfig, jsonl.string() + ": not a round's metrics: " + e.what());
    }
    if (m.round != rounds.size() + 1) break;
    rounds.push_back(m);
  }
  std::string csv = CsvLine({}, /*header=*/true), lines;
  for (const RoundMetrics& m : rounds) {
    csv += CsvLine(m);
    lines += ToJson(m).dump() + "\n";
  }
  TRIBUTARY_TRY(ReplaceFile(fs::path(run_dir) / "metrics.csv", csv));
  TRIBUTARY_TRY(ReplaceFile(jsonl, lines));
  return rounds;
}

Result<void> ClaimRunDir(const std::string& run_dir, const SimulationJob& job) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return MakeError(ErrorCode::kIo, "cannot create " + run_dir + ": " + ec.message());
  const fs::path path = fs::path(run_dir) / "run.json";
  const nlohmann::json mine = RunIdentity(job);
  if (!fs::exists(path)) return ReplaceFile(path, mine.dump(2) + "\n");
  const auto theirs = nlohmann::json::parse(std::ifstream(path), nullptr, /*allow_exceptions=*/false);
  if (theirs == mine) return Ok();
  return MakeError(ErrorCode::kConfig, run_dir + " holds a run of another job or settings (run.json: " +
                                           (theirs.is_discarded() ? "unreadable" : theirs.dump()) +
                                           "): choose another --out");
}

Result<void> WriteReport(const std::string& run_dir, const SimulationJob& job,
                         const std::vector<RoundMetrics>& rounds, const FinalModel& model) {
  namespace fs = std::filesystem;
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const RoundMetrics& m : rounds) rows.push_back(ToJson(m));
  std::ofstream(fs::path(run_dir) / "metrics.json")
      << nlohmann::ordered_json{{"job", job.name}, {"seed", job.seed}, {"rounds", rows}}.dump(2) << "\n";

  std::ofstream bin(fs::path(run_dir) / "model.bin", std::ios::binary);
  bin.write(reinterpret_cast<const char*>(model.values.data()), static_cast<std::streamsize>(model.values.size() * 4));
  nlohmann::json layout = nlohmann::json::array();
  for (const auto& [name, shape] : model.tensors) layout.push_back({{"name", name}, {"shape", shape}, {"dtype", "f32"}});
  std::ofstream(fs::path(run_dir) / "model.json") << nlohmann::json{{"job", job.name}, {"version", model.version},
                                                                    {"tensors", layout}}.dump(2) << "\n";

  Series acc{"test accuracy", "#1b7837", {}}, loss{"test loss", "#c51b7d", {}}, train{"client train loss", "#2166ac", {}};
  Series clients{"clients (ask, download, train, upload)", "#92c5de", {}}, agg{"aggregation tail", "#f4a582", {}},
      eval{"evaluation", "#bababa", {}};
  for (const RoundMetrics& m : rounds) {
    acc.values.push_back(m.accuracy);
    loss.values.push_back(m.loss);
    train.values.push_back(m.train_loss);
    clients.values.push_back(m.clients_s);
    agg.values.push_back(m.aggregation_s);
    eval.values.push_back(m.evaluation_s);
  }
  std::ofstream html(fs::path(run_dir) / "report.html");
  html << "<!doctype html>\n<html><head><meta charset='utf-8'><title>" << Escape(job.name)
       << "</title></head>\n<body style='font-family:sans-serif;max-width:700px;margin:24px auto'>\n<h1>"
       << Escape(job.name) << "</h1>\n<p>" << job.clients << " clients, " << job.clients_per_round
       << " per round, " << job.rounds << " rounds; model " << Escape(job.model) << ", data " << Escape(job.dataset)
       << " (" << Escape(job.partition) << "), strategy " << Escape(job.strategy.name) << ", seed " << job.seed
       << ".</p>\n";
  if (!rounds.empty()) {
    html << "<p>Final test accuracy <b>" << std::fixed << std::setprecision(4) << rounds.back().accuracy
         << "</b>, loss " << rounds.back().loss << ".</p>\n";
    // Faults the runtime absorbed (a function that died, a tree rebuilt): none is the usual case.
    html << "<p>Faults: " << rounds.back().function_deaths << " function deaths, " << rounds.back().liveness_kills
         << " hung functions killed, " << rounds.back().rebuilds
         << " tree rebuilds.</p>\n";
  }
  html << Chart("Test accuracy per round", {acc}, false) << Chart("Loss per round", {loss, train}, false)
       << Chart("Round time breakdown (s)", {clients, agg, eval}, true) << "</body></html>\n";
  if (!html || !bin) return MakeError(ErrorCode::kIo, "cannot write the report in " + run_dir);
  return Ok();
}

}  // namespace tributary::simulation
