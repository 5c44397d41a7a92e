#include "tributary/controller/controller_service.h"

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "tributary/controller/safetensors.h"

namespace tributary::controller {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

std::vector<float> InitialValues(const config::ModelInit& init, uint64_t elements) {
  std::vector<float> v(elements, 0.0f);
  std::mt19937_64 rng(init.seed);
  if (init.scheme == "normal") {
    std::normal_distribution<float> d(0.0f, static_cast<float>(init.scale));
    for (float& x : v) x = d(rng);
  } else if (init.scheme == "uniform") {
    std::uniform_real_distribution<float> d(static_cast<float>(-init.scale), static_cast<float>(init.scale));
    for (float& x : v) x = d(rng);
  }
  return v;
}

// Rounds done (every job the service holds was added, so this cannot fail).
uint64_t VersionOf(const Controller& c, const std::string& job) {
  auto v = c.ModelVersion(job);
  return v ? v.value() : 0;
}

// Where a job stands, for /v1/status.
struct JobState {
  std::string name;
  RoundSchedule schedule;
  AfterRound after_round;
  OnRoundFailure on_failure;
  bool log_rounds = true;
  std::string phase = "waiting_for_clients";  // waiting_for_clients, collecting, done, failed
  bool started = false;                       // start_after was met once
  uint64_t round = 0;                         // the round running or next
  uint32_t attempt = 0;
  uint64_t reruns = 0;
  uint64_t cross_node_bytes = 0;  // planned, over the rounds that ran (the partials and the steered uploads)
  std::string last_error;
  std::optional<Error> failure;  // what ended the job (phase failed)
  std::optional<RoundReport> last;
  uint64_t update_bytes = 0;  // one update, f32
  uint32_t fan_in = 8;  // 0: auto
  uint32_t fan_in_min = 2, fan_in_max = 64;
  std::chrono::milliseconds fan_in_tail{100};
  planner::PlacementPolicy placement_policy = planner::PlacementPolicy::kLocality;
  std::chrono::milliseconds deadline{0};  // the fold budget of a round
  std::optional<planner::Placement> placement;  // of the round running or last run
  uint64_t placement_round = 0;
  bool finished() const { return phase == "done" || phase == "failed"; }
};

json ReportJson(const RoundReport& r) {
  return {{"round", r.round},
          {"model_version", r.model_version},
          {"updates", r.updates},
          {"weight", r.weight},
          {"seconds", r.seconds.count()},
          {"updates_by_node", r.updates_by_node},
          {"lost_nodes", r.lost_nodes},
          {"missing_clients", r.missing}};
}

// Prometheus label values: backslash, quote and newline escaped.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    out += c == '\n' ? 'n' : c;
  }
  return out;
}

// The round's placement (placement.h) over the connected nodes, from their
// latest heartbeats, for the job's f32 updates.
Result<planner::Placement> PlaceRound(const std::map<std::string, NodeInfo>& nodes, const JobState& j,
                                      const std::vector<AvailableClient>& selected) {
  planner::PlacementInputs in;
  std::set<std::string> connected;
  for (const auto& [id, n] : nodes) {
    if (!n.connected) continue;
    connected.insert(id);
    in.nodes.push_back({id, n.segment_free_bytes, n.function_limit, n.fold_bytes_per_s, n.function_fold_bytes_per_s,
                        n.peak_arrivals_per_s});
  }
  // A node lost since the selection: its clients are out of this attempt
  // (under min_clients it runs again), like those of a node lost mid-round.
  for (const AvailableClient& c : selected) {
    if (connected.count(c.node)) in.clients.push_back({c.client, c.node});
  }
  in.update_bytes = j.update_bytes;
  in.model_bytes = j.update_bytes;
  in.fan_in = j.fan_in;
  in.fan_in_min = j.fan_in_min;
  in.fan_in_max = j.fan_in_max;
  in.tail_target_s = std::chrono::duration<double>(j.fan_in_tail).count();
  in.policy = j.placement_policy;
  in.seed = j.schedule.seed ^ (j.round * 0x9E3779B97F4A7C15ull);
  in.round_budget_s = std::chrono::duration<double>(j.deadline).count();
  return planner::PlanPlacement(in);
}

// Who uploads where: every node's clients, its own and those steered in.
std::map<std::string, std::vector<std::string>> UploadsByNode(const planner::Placement& p) {
  std::map<std::string, std::vector<std::string>> out;
  for (const planner::NodeShare& n : p.nodes) {
    if (!n.clients.empty()) out[n.node] = n.clients;
  }
  return out;
}

json PlacementJson(const planner::Placement& p, const std::optional<RoundReport>& done) {
  json nodes = json::object();
  for (const planner::NodeShare& n : p.nodes) {
    json o = {{"expected_updates", n.clients.size()},
              {"checked_in", n.checked_in},
              {"room", n.room},
              {"steered_in", n.steered_in},
              {"steered_out", n.steered_out},
              {"fan_in", n.fan_in},
              {"functions", {{"leaves", n.tree.leaves}, {"intermediates", n.tree.intermediates}, {"node_roots", n.tree.leaves ? 1 : 0}}}};
    if (done) {
      auto it = done->updates_by_node.find(n.node);
      o["actual_updates"] = it == done->updates_by_node.end() ? 0 : it->second;
    }
    nodes[n.node] = o;
  }
  json steered = json::array();
  for (const planner::Steer& s : p.steered) steered.push_back({{"client", s.client}, {"from", s.from}, {"to", s.to}});
  return {{"nodes", nodes},
          {"steered", steered},
          {"unplaced", p.unplaced.size()},
          {"partials", p.partials},
          {"cross_node_bytes", p.cross_node_bytes}};
}

}  // namespace

Result<ServiceJob> ServiceJobFor(const config::DeploymentJob& job) {
  ServiceJob out;
  out.source = job.source;
  out.schedule = {job.rounds, job.clients_per_round, job.min_clients, job.over_selection, job.start_after, job.seed};
  JobSpec& js = out.spec;
  js.id = job.name;
  if (!job.model_file.empty()) {
    TRIBUTARY_ASSIGN_OR_RETURN(SafetensorsModel file, ReadSafetensors(job.model_file));
    js.model = std::move(file.spec);
    js.initial_model = std::move(file.values);
  } else {
    TRIBUTARY_ASSIGN_OR_RETURN(js.model, agg::ModelSpec::Create(job.layout));
    js.initial_model = InitialValues(job.init, js.model.elements());
  }
  js.strategy = job.strategy;
  js.fan_in = job.fan_in;
  js.fan_in_min = job.fan_in_min;
  js.fan_in_max = job.fan_in_max;
  js.fan_in_tail = std::chrono::milliseconds(job.fan_in_tail_ms);
  out.placement = job.placement == "round_robin" ? planner::PlacementPolicy::kRoundRobin
                  : job.placement == "random"    ? planner::PlacementPolicy::kRandom
                                                 : planner::PlacementPolicy::kLocality;
  js.deadline = std::chrono::seconds(job.deadline_s);
  js.reject_non_finite = job.reject_non_finite;
  js.client_config = job.train;
  return out;
}

struct ControllerService::Impl {
  std::unique_ptr<Controller> controller;
  std::string state_dir;
  mutable std::mutex mu;
  std::condition_variable wake;
  mutable std::condition_variable finished;  // a job's phase became done or failed
  std::vector<JobState> jobs;
  std::atomic<bool> ready{false};
  bool stop = false;
  std::thread loop;
  httplib::Server http;
  int http_port = 0;
  std::thread http_thread;

  // One round of `j` if its clients are there; false if it cannot run now.
  bool Step(JobState& j, std::unique_lock<std::mutex>& lock) {
    if (j.phase == "failed") return false;
    const RoundSchedule& s = j.schedule;
    auto version = controller->ModelVersion(j.name);
    if (!version) return false;
    j.round = version.value() + 1;
    if (s.rounds > 0 && version.value() >= s.rounds) {
      j.round = version.value();
      if (j.phase != "done") {
        spdlog::info("controller: job '{}' done: {} rounds", j.name, version.value());
        j.phase = "done";
        finished.notify_all();
      }
      return false;
    }
    const std::vector<AvailableClient> available = controller->AvailableClients();
    const uint64_t need = j.started ? s.min_clients : std::max(s.start_after, s.min_clients);
    if (available.size() < need) {
      j.phase = "waiting_for_clients";
      return false;
    }
    j.started = true;
    j.phase = "collecting";
    const auto want = static_cast<size_t>(std::ceil(s.clients_per_round * s.over_selection - 1e-9));
    const std::vector<AvailableClient> selected = SelectClients(available, want, s.seed, j.name, j.round, j.attempt);
    RoundPolicy policy;
    policy.min_updates = s.min_clients;
    policy.close_at = s.over_selection > 1.0 ? s.clients_per_round : 0;
    auto placed = PlaceRound(controller->NodeDetails(), j, selected);
    if (!placed) {  // the registry's clients are on connected nodes: a bug, not a round to retry
      j.phase = "failed";
      j.last_error = placed.error().ToString();
      j.failure = placed.error();
      finished.notify_all();
      return false;
    }
    j.placement = placed.value();
    j.placement_round = j.round;
    lock.unlock();  // the hooks run without it too: /v1/status answers meanwhile
    const planner::Placement& plan = placed.value();
    if (j.fan_in == 0) {
      for (const planner::NodeShare& n : plan.nodes) policy.fan_in_by_node[n.node] = n.fan_in;
    }
    if (j.log_rounds) {
      spdlog::info("controller: job '{}' round {} (attempt {}): {} of {} available clients selected", j.name, j.round,
                   j.attempt, selected.size(), available.size());
    }
    if (!plan.steered.empty() || !plan.unplaced.empty()) {
      spdlog::info("controller: job '{}' round {}: {} clients steered to other nodes, {} left out (no node has room)",
                   j.name, j.round, plan.steered.size(), plan.unplaced.size());
    }
    auto report = controller->RunRound(j.name, UploadsByNode(plan), policy, plan.steered);
    Result<void> verdict = Ok();
    if (report) {
      const RoundReport& r = report.value();
      if (j.log_rounds) {
        spdlog::info("controller: job '{}' round {}: {} updates from {} nodes in {:.2f} s{}", j.name, r.round,
                     r.updates, r.updates_by_node.size(), r.seconds.count(),
                     r.lost_nodes.empty() ? "" : " (lost nodes: " + std::to_string(r.lost_nodes.size()) + ")");
      }
      AppendRoundLog(j.name, r, selected.size(), plan);
      if (j.after_round) verdict = j.after_round(r, selected);
    } else if (j.on_failure) {
      verdict = j.on_failure(report.error());
    }
    lock.lock();
    if (report) {
      j.cross_node_bytes += plan.cross_node_bytes;
      j.last = report.value();
      j.attempt = 0;
      j.last_error.clear();
    }
    if (!verdict) {
      spdlog::error("controller: job '{}' ends after round {}: {}", j.name, j.round, verdict.error().ToString());
      j.phase = "failed";
      j.last_error = verdict.error().ToString();
      j.failure = verdict.error();
      finished.notify_all();
      return false;
    }
    if (report) return true;
    j.last_error = report.error().ToString();
    spdlog::warn("controller: job '{}' round {} attempt {} failed, running it again: {}", j.name, j.round, j.attempt,
                 j.last_error);
    j.attempt += 1;
    j.reruns += 1;
    return false;
  }

  // <state_dir>/<job>/rounds.jsonl: one line per completed round (written
  // after its checkpoint: a crash in between loses the line, not the round).
  void AppendRoundLog(const std::string& job, const RoundReport& r, size_t selected, const planner::Placement& plan) {
    if (state_dir.empty()) return;
    json line = ReportJson(r);
    line["clients"] = r.clients;
    line["selected"] = selected;
    line["steered"] = plan.steered.size();
    line["cross_node_bytes"] = plan.cross_node_bytes;  // as planned: the partials and the steered uploads
    std::ofstream out(state_dir + "/" + job + "/rounds.jsonl", std::ios::app);
    out << line.dump() << "\n";
    if (!out) spdlog::error("controller: cannot append to {}/{}/rounds.jsonl", state_dir, job);
  }

  void Loop() {
    std::unique_lock lock(mu);
    while (!stop) {
      bool progressed = false;
      for (JobState& j : jobs) {
        if (stop) break;
        progressed |= Step(j, lock);
      }
      if (!progressed) wake.wait_for(lock, std::chrono::milliseconds(200), [&] { return stop; });
    }
  }

  std::string StatusJson() const {
    json out;
    out["version"] = TRIBUTARY_VERSION;
    out["ready"] = ready.load();
    json nodes = json::object();
    for (const auto& [id, n] : controller->NodeDetails()) {
      nodes[id] = {{"connected", n.connected},
                   {"gateway", n.gateway},
                   {"version", n.version},
                   {"seconds_since_heard", n.seconds_since_heard},
                   {"capacity",
                    {{"cores", n.cores},
                     {"segment_bytes", n.segment_bytes},
                     {"function_limit", n.function_limit},
                     {"fold_bytes_per_s", n.fold_bytes_per_s},
                     {"dataplane", n.dataplane}}},
                   {"load",
                    {{"segment_free_bytes", n.segment_free_bytes},
                     {"functions_live", n.functions_live},
                     {"functions_idle", n.functions_idle}}},
                   {"clients_checked_in", n.clients_checked_in},
                   {"updates_this_round", n.round_accepted}};
    }
    out["nodes"] = nodes;
    const ControllerStats stats = controller->Stats();
    out["clients_available"] = stats.clients_available;
    out["refused"] = json::object();
    for (const auto& [reason, n] : stats.refused) out["refused"][reason] = n;
    out["node_losses"] = stats.node_losses;
    json jobs_out = json::object();
    std::lock_guard lock(mu);
    for (const JobState& j : jobs) {
      json o = {{"phase", j.phase},
                {"round", j.round},
                {"attempt", j.attempt},
                {"rounds", j.schedule.rounds},
                {"rounds_done", VersionOf(*controller, j.name)},
                {"model_version", VersionOf(*controller, j.name)},
                {"reruns", j.reruns},
                {"clients_per_round", j.schedule.clients_per_round},
                {"min_clients", j.schedule.min_clients},
                {"last_error", j.last_error}};
      o["last_round"] = j.last ? ReportJson(*j.last) : json(nullptr);
      // The running round's plan, or the last one's with what each node delivered.
      const bool delivered = j.last && j.last->round == j.placement_round;
      o["placement"] = j.placement ? PlacementJson(*j.placement, delivered ? j.last : std::nullopt) : json(nullptr);
      if (j.placement) o["placement"]["round"] = j.placement_round;
      jobs_out[j.name] = o;
    }
    out["jobs"] = jobs_out;
    return out.dump(2) + "\n";
  }

  std::string Metrics() const {
    std::ostringstream m;
    const ControllerStats stats = controller->Stats();
    const auto nodes = controller->NodeDetails();
    m << "# HELP tributary_controller_node_connected Whether the node is connected (heartbeats within node_timeout).\n"
      << "# TYPE tributary_controller_node_connected gauge\n";
    for (const auto& [id, n] : nodes) m << "tributary_controller_node_connected{node=\"" << Label(id) << "\"} " << n.connected << "\n";
    m << "# HELP tributary_controller_node_clients_checked_in Clients available on the node.\n"
      << "# TYPE tributary_controller_node_clients_checked_in gauge\n";
    for (const auto& [id, n] : nodes) {
      m << "tributary_controller_node_clients_checked_in{node=\"" << Label(id) << "\"} " << n.clients_checked_in << "\n";
    }
    m << "# HELP tributary_controller_node_round_accepted Updates the node accepted in the round in progress.\n"
      << "# TYPE tributary_controller_node_round_accepted gauge\n";
    for (const auto& [id, n] : nodes) {
      m << "tributary_controller_node_round_accepted{node=\"" << Label(id) << "\"} " << n.round_accepted << "\n";
    }
    m << "# HELP tributary_controller_clients_available Clients available for selection.\n"
      << "# TYPE tributary_controller_clients_available gauge\n"
      << "tributary_controller_clients_available " << stats.clients_available << "\n"
      << "# HELP tributary_controller_refused_total Node messages and connections refused, by reason.\n"
      << "# TYPE tributary_controller_refused_total counter\n";
    for (const auto& [reason, n] : stats.refused) {
      m << "tributary_controller_refused_total{reason=\"" << Label(reason) << "\"} " << n << "\n";
    }
    m << "# HELP tributary_controller_node_losses_total Nodes declared lost (silent past node_timeout).\n"
      << "# TYPE tributary_controller_node_losses_total counter\n"
      << "tributary_controller_node_losses_total " << stats.node_losses << "\n"
      << "# HELP tributary_controller_rounds_total Rounds run, by outcome.\n"
      << "# TYPE tributary_controller_rounds_total counter\n"
      << "tributary_controller_rounds_total{outcome=\"completed\"} " << stats.rounds_completed << "\n"
      << "tributary_controller_rounds_total{outcome=\"failed\"} " << stats.rounds_failed << "\n";
    std::lock_guard lock(mu);
    m << "# HELP tributary_job_model_version The job's global model version (rounds done).\n"
      << "# TYPE tributary_job_model_version gauge\n";
    for (const JobState& j : jobs) {
      m << "tributary_job_model_version{job=\"" << Label(j.name) << "\"} "
        << VersionOf(*controller, j.name) << "\n";
    }
    m << "# HELP tributary_job_last_round_updates Updates folded in the job's last round.\n"
      << "# TYPE tributary_job_last_round_updates gauge\n";
    for (const JobState& j : jobs) {
      m << "tributary_job_last_round_updates{job=\"" << Label(j.name) << "\"} " << (j.last ? j.last->updates : 0) << "\n";
    }
    m << "# HELP tributary_job_last_round_seconds Wall time of the job's last round.\n"
      << "# TYPE tributary_job_last_round_seconds gauge\n";
    for (const JobState& j : jobs) {
      m << "tributary_job_last_round_seconds{job=\"" << Label(j.name) << "\"} "
        << (j.last ? j.last->seconds.count() : 0.0) << "\n";
    }
    m << "# HELP tributary_job_round_reruns_total Rounds run again (too few updates).\n"
      << "# TYPE tributary_job_round_reruns_total counter\n";
    for (const JobState& j : jobs) m << "tributary_job_round_reruns_total{job=\"" << Label(j.name) << "\"} " << j.reruns << "\n";
    m << "# HELP tributary_job_cross_node_bytes_total Bytes planned to cross nodes (node partials, steered uploads).\n"
      << "# TYPE tributary_job_cross_node_bytes_total counter\n";
    for (const JobState& j : jobs) {
      m << "tributary_job_cross_node_bytes_total{job=\"" << Label(j.name) << "\"} " << j.cross_node_bytes << "\n";
    }
    return m.str();
  }
};

ControllerService::ControllerService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<ControllerService>> ControllerService::Start(const ControllerOptions& options,
                                                                    std::vector<ServiceJob> jobs,
                                                                    const std::string& http_bind) {
  auto impl = std::make_unique<Impl>();
  std::set<std::string> names;
  for (const ServiceJob& j : jobs) {
    if (!names.insert(j.spec.id).second) {
      return MakeError(ErrorCode::kConfig, j.source + ": a second job named '" + j.spec.id + "'");
    }
  }
  TRIBUTARY_ASSIGN_OR_RETURN(impl->controller, Controller::Start(options));
  impl->state_dir = options.checkpoint_dir;
  Impl* raw = impl.get();
  if (!http_bind.empty()) {
    const size_t colon = http_bind.rfind(':');
    if (colon == std::string::npos) return MakeError(ErrorCode::kConfig, "http_bind must be host:port");
    const std::string host = http_bind.substr(0, colon);
    const int port = std::atoi(http_bind.c_str() + colon + 1);
    impl->http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
    impl->http.Get("/readyz", [raw](const httplib::Request&, httplib::Response& res) {
      res.status = raw->ready.load() ? 200 : 503;
      res.set_content(raw->ready.load() ? "ready\n" : "loading\n", "text/plain");
    });
    impl->http.Get("/metrics", [raw](const httplib::Request&, httplib::Response& res) {
      res.set_content(raw->Metrics(), "text/plain; version=0.0.4");
    });
    impl->http.Get("/v1/status", [raw](const httplib::Request&, httplib::Response& res) {
      res.set_content(raw->StatusJson(), "application/json");
    });
    impl->http_port = port == 0 ? impl->http.bind_to_any_port(host) : (impl->http.bind_to_port(host, port) ? port : -1);
    if (impl->http_port <= 0) return MakeError(ErrorCode::kIo, "cannot serve HTTP on " + http_bind);
    impl->http_thread = std::thread([raw] { raw->http.listen_after_bind(); });
  }
  // The HTTP side answers (not ready) while the jobs' state loads.
  auto stop_http = [&] {
    if (raw->http_thread.joinable()) {
      raw->http.stop();
      raw->http_thread.join();
    }
  };
  std::vector<JobState> loaded;
  for (ServiceJob& j : jobs) {
    JobState state;
    state.name = j.spec.id;
    state.schedule = j.schedule;
    state.after_round = std::move(j.after_round);
    state.on_failure = std::move(j.on_failure);
    state.log_rounds = j.log_rounds;
    state.update_bytes = j.spec.model.elements() * sizeof(float);
    state.fan_in = j.spec.fan_in;
    state.fan_in_min = j.spec.fan_in_min;
    state.fan_in_max = j.spec.fan_in_max;
    state.fan_in_tail = j.spec.fan_in_tail;
    state.placement_policy = j.placement;
    state.deadline = j.spec.deadline;
    Result<void> added = impl->controller->AddJob(std::move(j.spec));
    if (!added) {
      stop_http();
      return MakeError(added.error().code, j.source + ": job '" + state.name + "': " + added.error().reason);
    }
    const uint64_t done = VersionOf(*impl->controller, state.name);
    if (done > 0) spdlog::info("controller: job '{}' resumed after round {}", state.name, done);
    loaded.push_back(std::move(state));
  }
  {
    std::lock_guard lock(impl->mu);  // the HTTP side reads `jobs` meanwhile
    impl->jobs = std::move(loaded);
  }
  impl->ready = true;
  impl->loop = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<ControllerService>(new ControllerService(std::move(impl)));
}

ControllerService::~ControllerService() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stop = true;
    impl_->wake.notify_all();
  }
  impl_->controller->Shutdown();
  impl_->loop.join();
  if (impl_->http_thread.joinable()) {
    impl_->http.stop();
    impl_->http_thread.join();
  }
}

Controller& ControllerService::controller() { return *impl_->controller; }

Result<void> ControllerService::WaitForJob(const std::string& job) const {
  std::unique_lock lock(impl_->mu);
  auto it = std::find_if(impl_->jobs.begin(), impl_->jobs.end(), [&](const JobState& j) { return j.name == job; });
  if (it == impl_->jobs.end()) return MakeError(ErrorCode::kUnknownJob, "the service runs no job '" + job + "'");
  impl_->finished.wait(lock, [&] { return it->finished(); });
  if (it->failure) return *it->failure;
  return Ok();
}
int ControllerService::http_port() const { return impl_->http_port; }
std::string ControllerService::StatusJson() const { return impl_->StatusJson(); }
std::string ControllerService::Metrics() const { return impl_->Metrics(); }

}  // namespace tributary::controller
