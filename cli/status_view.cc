#include "status_view.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <cstdio>

namespace tributary::cli {
namespace {

std::string Bytes(uint64_t b) {
  char s[32];
  if (b >= (1ull << 30)) {
    std::snprintf(s, sizeof(s), "%.1f GiB", static_cast<double>(b) / (1ull << 30));
  } else {
    std::snprintf(s, sizeof(s), "%.1f MiB", static_cast<double>(b) / (1ull << 20));
  }
  return s;
}

// `j[key]` if it is an object, else an empty one (a field may be null or absent).
const nlohmann::json& Obj(const nlohmann::json& j, const char* key) {
  static const nlohmann::json empty = nlohmann::json::object();
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : empty;
}

// What the planner did in a job's round: per node, the updates it expects
// and got, its tree, and the clients it steered; then what crossed nodes.
void PrintPlacement(const nlohmann::json& p, std::ostream& out) {
  if (p.empty()) return;
  char line[512];
  std::snprintf(line, sizeof(line), "  placement of round %llu:\n  %-16s %9s %8s %8s %6s %6s %6s %10s\n",
                static_cast<unsigned long long>(p.value("round", 0ull)), "NODE", "CHECKED", "EXPECTED", "ACTUAL",
                "IN", "OUT", "FAN-IN", "FUNCS L/I/R");
  out << line;
  for (const auto& [id, n] : Obj(p, "nodes").items()) {
    const auto& f = Obj(n, "functions");
    const std::string funcs = std::to_string(f.value("leaves", 0)) + "/" + std::to_string(f.value("intermediates", 0)) +
                              "/" + std::to_string(f.value("node_roots", 0));
    const std::string actual = n.contains("actual_updates") ? std::to_string(n.value("actual_updates", 0ull)) : "-";
    std::snprintf(line, sizeof(line), "  %-16s %9llu %8llu %8s %6llu %6llu %6u %10s\n", id.c_str(),
                  static_cast<unsigned long long>(n.value("checked_in", 0ull)),
                  static_cast<unsigned long long>(n.value("expected_updates", 0ull)), actual.c_str(),
                  static_cast<unsigned long long>(n.value("steered_in", 0ull)),
                  static_cast<unsigned long long>(n.value("steered_out", 0ull)), n.value("fan_in", 0u), funcs.c_str());
    out << line;
  }
  const size_t steered = p.contains("steered") && p["steered"].is_array() ? p["steered"].size() : 0;
  out << "  " << p.value("partials", 0ull) << " partials and " << steered << " steered uploads cross nodes ("
      << Bytes(p.value("cross_node_bytes", 0ull)) << ")";
  if (p.value("unplaced", 0ull) > 0) out << "; " << p.value("unplaced", 0ull) << " clients left out: no node had room";
  out << "\n";
}

Result<std::string> FetchStatus(const std::string& url) {
  httplib::Client http(url);
  http.set_connection_timeout(std::chrono::seconds(5));
  http.set_read_timeout(std::chrono::seconds(10));
  auto res = http.Get("/v1/status");
  if (!res) return MakeError(ErrorCode::kIo, "no answer from " + url + ": " + httplib::to_string(res.error()));
  if (res->status != 200) return MakeError(ErrorCode::kIo, url + "/v1/status answered " + std::to_string(res->status));
  return res->body;
}

Result<nlohmann::json> FetchStatusJson(const std::string& url) {
  TRIBUTARY_ASSIGN_OR_RETURN(std::string body, FetchStatus(url));
  nlohmann::json s = nlohmann::json::parse(body, nullptr, false);
  if (!s.is_object()) return MakeError(ErrorCode::kMalformedFrame, url + "/v1/status is not a JSON object");
  return s;
}

}  // namespace

Result<uint64_t> JobRoundsDone(const std::string& url, const std::string& job) {
  TRIBUTARY_ASSIGN_OR_RETURN(nlohmann::json s, FetchStatusJson(url));
  const auto jobs = s.find("jobs");
  if (jobs == s.end() || !jobs->is_object() || !jobs->contains(job)) {
    return MakeError(ErrorCode::kUnknownJob, "the controller at " + url + " has no job '" + job + "'");
  }
  return (*jobs)[job].value("rounds_done", uint64_t{0});
}

Result<void> PrintStatus(const std::string& url, bool json, std::ostream& out) {
  if (json) {
    TRIBUTARY_ASSIGN_OR_RETURN(std::string body, FetchStatus(url));
    out << body;
    return Ok();
  }
  TRIBUTARY_ASSIGN_OR_RETURN(const nlohmann::json s, FetchStatusJson(url));
  char line[512];
  out << "controller " << s.value("version", "?") << (s.value("ready", false) ? " (ready)" : " (loading)") << ", "
      << s.value("clients_available", 0) << " clients available, " << s.value("node_losses", 0) << " node losses\n\n";
  std::snprintf(line, sizeof(line), "%-16s %-10s %-28s %8s %8s %11s %13s\n", "NODE", "STATE", "GATEWAY", "CLIENTS",
                "UPDATES", "FUNCS L/I", "SEGMENT FREE");
  out << line;
  for (const auto& [id, n] : Obj(s, "nodes").items()) {
    const auto& load = Obj(n, "load");
    const std::string funcs = std::to_string(load.value("functions_live", 0)) + "/" +
                              std::to_string(load.value("functions_idle", 0));
    std::snprintf(line, sizeof(line), "%-16s %-10s %-28s %8llu %8llu %11s %13s\n", id.c_str(),
                  n.value("connected", false) ? "connected" : "lost", n.value("gateway", "").c_str(),
                  static_cast<unsigned long long>(n.value("clients_checked_in", 0ull)),
                  static_cast<unsigned long long>(n.value("updates_this_round", 0ull)), funcs.c_str(),
                  Bytes(load.value("segment_free_bytes", 0ull)).c_str());
    out << line;
  }
  out << "\n";
  std::snprintf(line, sizeof(line), "%-16s %-20s %6s %9s %8s %8s %9s %s\n", "JOB", "PHASE", "ROUND", "DONE", "RERUNS",
                "UPDATES", "SECONDS", "LOST NODES");
  out << line;
  for (const auto& [id, j] : Obj(s, "jobs").items()) {
    const auto& last = Obj(j, "last_round");
    std::string lost;
    if (last.contains("lost_nodes") && last["lost_nodes"].is_array()) {
      for (const auto& n : last["lost_nodes"]) lost += (lost.empty() ? "" : ",") + n.get<std::string>();
    }
    const uint64_t rounds = j.value("rounds", 0ull);
    const std::string done = std::to_string(j.value("rounds_done", 0ull)) + "/" + (rounds ? std::to_string(rounds) : "-");
    std::snprintf(line, sizeof(line), "%-16s %-20s %6llu %9s %8llu %8llu %9.2f %s\n", id.c_str(),
                  j.value("phase", "").c_str(), static_cast<unsigned long long>(j.value("round", 0ull)), done.c_str(),
                  static_cast<unsigned long long>(j.value("reruns", 0ull)),
                  static_cast<unsigned long long>(last.value("updates", 0ull)), last.value("seconds", 0.0),
                  lost.empty() ? "-" : lost.c_str());
    out << line;
    if (!j.value("last_error", "").empty()) out << "  last error: " << j.value("last_error", "") << "\n";
    PrintPlacement(Obj(j, "placement"), out);
  }
  const auto& refused = Obj(s, "refused");
  if (!refused.empty()) {
    out << "\nrefused:";
    for (const auto& [reason, n] : refused.items()) out << " " << reason << " " << n.get<uint64_t>();
    out << "\n";
  }
  return Ok();
}

}  // namespace tributary::cli
