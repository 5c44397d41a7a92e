#include "tributary/node/metrics.h"

#include <sstream>

namespace tributary::node {
namespace {

class Writer {
 public:
  explicit Writer(std::string node) : node_(std::move(node)) {}
  void Metric(const char* name, const char* type, const char* help) {
    out_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  }
  // A metric with a single sample (any counter or gauge type, printed as a double).
  template <typename T>
  void One(const char* name, const char* type, const char* help, T value, const std::string& labels = "") {
    Metric(name, type, help);
    Sample(name, static_cast<double>(value), labels);
  }
  void Sample(const char* name, double value, const std::string& labels = "") {
    out_ << name << "{node=\"" << node_ << '"' << (labels.empty() ? "" : ",") << labels << "} " << value << '\n';
  }
  std::string str() const { return out_.str(); }

 private:
  std::string node_;
  std::ostringstream out_;
};

}  // namespace

std::string RenderPrometheus(const std::string& node_id, const NodeStats& s) {
  Writer w(node_id);
  w.One("tributary_gateway_updates_accepted_total", "counter", "Client updates accepted by the gateway.",
        s.gateway.accepted);
  w.One("tributary_gateway_update_bytes_total", "counter", "Payload bytes of accepted updates.",
        s.gateway.accepted_bytes);
  w.Metric("tributary_gateway_rejected_total", "counter", "Rejected client requests, by error code.");
  for (const auto& [code, n] : s.gateway.rejected) {
    w.Sample("tributary_gateway_rejected_total", static_cast<double>(n),
             "code=\"" + std::string(ErrorCodeName(code)) + "\"");
  }
  w.One("tributary_gateway_uploads_in_progress", "gauge", "Uploads reserved and not yet complete.",
        s.gateway.uploads_in_progress);
  w.One("tributary_gateway_uploads_expired_total", "counter", "Uploads dropped after the idle timeout.",
        s.gateway.uploads_expired);
  w.One("tributary_gateway_uploads_superseded_total", "counter",
        "Unfinished uploads replaced by a newer header from the same client.", s.gateway.uploads_superseded);
  w.One("tributary_gateway_clients_seen", "gauge", "Distinct client ids that asked this gateway for work (counted up to 65,536).",
        s.gateway.clients_seen);
  w.One("tributary_functions_cold_starts_total", "counter", "Function processes started on demand (a round waited).",
        s.functions.cold_starts);
  w.One("tributary_functions_prewarmed_total", "counter", "Function processes the autoscaler started ahead of demand.",
        s.functions.prewarmed);
  w.One("tributary_functions_desired", "gauge", "Live functions the autoscaler wants.", s.autoscale_desired);
  w.One("tributary_functions_warm_reuses_total", "counter", "Warm functions handed out again.",
        s.functions.warm_reuses);
  w.One("tributary_functions_reaped_total", "counter", "Idle functions stopped after the keep-alive.",
        s.functions.reaped);
  w.One("tributary_functions_deaths_total", "counter", "Functions that exited unasked.", s.functions.deaths);
  w.One("tributary_functions_liveness_kills_total", "counter", "Functions killed for silence past the liveness bound.",
        s.functions.liveness_kills);
  w.One("tributary_functions_live", "gauge", "Function processes alive.", s.functions.live);
  w.One("tributary_functions_idle", "gauge", "Warm functions waiting for work.", s.functions.idle);
  w.One("tributary_store_capacity_bytes", "gauge", "Size of the node's shared-memory segment.", s.store.capacity_bytes);
  w.One("tributary_store_payload_bytes", "gauge", "Bytes of live blocks' payloads.", s.store.payload_bytes_in_use);
  w.One("tributary_store_live_blocks", "gauge", "Live blocks in the segment.", s.store.live_blocks);
  w.One("tributary_store_leases", "gauge", "Processes mapping the segment.", s.store.live_leases);
  w.One("tributary_rounds_completed_total", "counter", "Rounds whose node partial was produced.", s.rounds_completed);
  w.One("tributary_round_rebuilds_total", "counter", "Node trees rebuilt (function failures, deadlines).", s.rebuilds);
  w.One("tributary_dataplane_info", "gauge", "The data plane in use.", 1, "mode=\"" + s.dataplane + "\"");
  return w.str();
}

}  // namespace tributary::node
