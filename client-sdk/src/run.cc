#include "tributary/client/run.h"

#include <thread>

namespace tributary::client {
namespace {

// The global model must have the client's tensors, in order, with their shapes.
Result<void> CheckLayout(const Parameters& global, const Parameters& local) {
  if (global.size() != local.size()) {
    return MakeError(ErrorCode::kShapeMismatch, "the global model has " + std::to_string(global.size()) +
                                                    " tensors, this client's " + std::to_string(local.size()));
  }
  for (size_t i = 0; i < global.size(); ++i) {
    if (global[i].name != local[i].name || global[i].shape != local[i].shape) {
      return MakeError(ErrorCode::kShapeMismatch, "global tensor " + std::to_string(i) + " '" + global[i].name +
                                                      "' does not match this client's '" + local[i].name + "'");
    }
  }
  return Ok();
}

bool Stopped(const RunOptions& o) { return o.stop != nullptr && o.stop->load(); }

}  // namespace

Result<RunSummary> Run(Client& client, const RunOptions& options) {
  TRIBUTARY_ASSIGN_OR_RETURN(auto session, Session::Connect(options.session, options.compression));
  RunSummary summary;
  const Parameters local = client.GetParameters();
  const Config properties = client.GetProperties();
  auto idle_since = std::chrono::steady_clock::now();
  uint64_t last_round = 0;
  while (!Stopped(options) && (options.max_rounds == 0 || summary.rounds + summary.failed_fits < options.max_rounds)) {
    TRIBUTARY_ASSIGN_OR_RETURN(TaskPoll poll, session->NextTask(properties));
    if (!poll.task || poll.task->round == last_round) {
      if (options.max_idle.count() > 0 && std::chrono::steady_clock::now() - idle_since > options.max_idle) {
        return MakeError(ErrorCode::kRoundClosed, "no task for " + std::to_string(options.max_idle.count()) + " ms");
      }
      std::this_thread::sleep_for(std::max(poll.retry_after, std::chrono::milliseconds(10)));
      continue;
    }
    const Task& task = *poll.task;
    last_round = task.round;
    auto global = session->FetchModel(task);
    if (!global && global.error().code == ErrorCode::kReplay) continue;  // the round moved on meanwhile
    if (!global) return std::move(global).error();
    TRIBUTARY_TRY(CheckLayout(global.value(), local));
    Metrics eval_metrics;
    if (ConfigBool(task.config, "evaluate", false)) {
      auto eval = client.Evaluate(global.value(), task.config);
      if (eval) {
        eval_metrics["eval_loss"] = eval.value().loss;
        eval_metrics["eval_examples"] = static_cast<double>(eval.value().num_examples);
        for (const auto& [k, v] : eval.value().metrics) eval_metrics["eval_" + k] = v;
      }
    }
    auto fit = client.Fit(global.value(), task.config);
    if (!fit) {
      summary.failed_fits += 1;
      continue;
    }
    fit.value().metrics.insert(eval_metrics.begin(), eval_metrics.end());
    auto sent = session->Submit(task, fit.value());
    // The round closed or moved on while this client trained: wait for the next one.
    if (!sent && (sent.error().code == ErrorCode::kRoundClosed || sent.error().code == ErrorCode::kReplay)) continue;
    if (!sent) return std::move(sent).error();
    summary.rounds += 1;
    summary.bytes_sent += sent.value().bytes_sent;
    summary.bytes_saved += sent.value().bytes_saved;
    idle_since = std::chrono::steady_clock::now();
  }
  return summary;
}

}  // namespace tributary::client
