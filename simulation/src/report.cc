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

}  // namespace

Result<void> WriteReport(const std::string& run_dir, const SimulationJob& job,
                         const std::vector<RoundMetrics>& rounds, const FinalModel& model) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return MakeError(ErrorCode::kIo, "cannot create " + run_dir + ": " + ec.message());

  nlohmann::json rows = nlohmann::json::array();
  std::ofstream csv(fs::path(run_dir) / "metrics.csv");
  csv << "round,accuracy,loss,train_loss,round_s,clients_s,aggregation_s,evaluation_s,updates,updates_per_s,"
         "bytes_up,bytes_down,functions_live,cold_starts,warm_reuses,function_deaths,rebuilds\n";
  for (const RoundMetrics& m : rounds) {
    csv << m.round << ',' << m.accuracy << ',' << m.loss << ',' << m.train_loss << ',' << m.round_s << ','
        << m.clients_s << ',' << m.aggregation_s << ',' << m.evaluation_s << ',' << m.updates << ','
        << m.updates_per_s << ',' << m.bytes_up << ',' << m.bytes_down << ',' << m.functions_live << ','
        << m.cold_starts << ',' << m.warm_reuses << ',' << m.function_deaths << ',' << m.rebuilds << '\n';
    rows.push_back({{"round", m.round}, {"accuracy", m.accuracy}, {"loss", m.loss}, {"train_loss", m.train_loss},
                    {"round_s", m.round_s}, {"clients_s", m.clients_s}, {"aggregation_s", m.aggregation_s},
                    {"evaluation_s", m.evaluation_s}, {"updates", m.updates}, {"updates_per_s", m.updates_per_s},
                    {"bytes_up", m.bytes_up}, {"bytes_down", m.bytes_down}, {"functions_live", m.functions_live},
                    {"cold_starts", m.cold_starts}, {"warm_reuses", m.warm_reuses},
                    {"function_deaths", m.function_deaths}, {"rebuilds", m.rebuilds}});
  }
  std::ofstream(fs::path(run_dir) / "metrics.json") << nlohmann::json{{"job", job.name}, {"seed", job.seed}, {"rounds", rows}}.dump(2) << "\n";

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
    html << "<p>Faults: " << rounds.back().function_deaths << " function deaths, " << rounds.back().rebuilds
         << " tree rebuilds.</p>\n";
  }
  html << Chart("Test accuracy per round", {acc}, false) << Chart("Loss per round", {loss, train}, false)
       << Chart("Round time breakdown (s)", {clients, agg, eval}, true) << "</body></html>\n";
  if (!csv || !html || !bin) return MakeError(ErrorCode::kIo, "cannot write the report in " + run_dir);
  return Ok();
}

}  // namespace tributary::simulation
