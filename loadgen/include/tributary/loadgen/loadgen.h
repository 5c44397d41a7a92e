// `tributary loadgen`: synthetic clients on the real SDK, for operators
// checking a deployment and for load tests.
//
// N clients (ids <prefix>00000 ...) spread over the gateways given (client i
// asks gateway i % G), served by C worker threads, each client with its own
// GatewaySession: they ask for work as the gateway says (NoTask's retry
// hint), and when selected download the round's model, make the
// deterministic fake update FakeUpdate() (no training: any model size costs
// only the transfer) and upload it. With CURVE each client authenticates
// with its own key, <client_keys_dir>/<id>.key (a gateway's allow-list then
// needs the matching .pub files, or "<id> <key>" lines).
//
// It stops when `stop` is set, after `duration`, or once every client has
// delivered `rounds` updates, and reports what happened: tasks, accepted
// updates, rejections by code, task request, download and upload latencies
// (p50, p99). Each client holds a connection and up to two inproc sockets: a
// process needs about four descriptors per client (RaiseDescriptorLimit).
//
// Thread safety: RunLoadgen blocks its caller; `stop` may be set from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "tributary/core/error.h"

namespace tributary::loadgen {

struct LoadgenOptions {
  std::vector<std::string> gateways;
  std::string gateway_public_key;  // Z85; empty: plaintext
  std::string client_keys_dir;     // with a gateway key: <dir>/<client-id>.key per client
  // Or one secret key file for every client (the gateway's allow-list binds
  // its public key to a prefix entry, e.g. "load-*"); wins over the directory.
  std::string client_key_file;
  uint32_t clients = 10;
  uint32_t first_client = 0;  // ids first_client .. first_client + clients - 1
  std::string id_prefix = "load-";
  uint32_t concurrency = 4;
  // The clients share one ZeroMQ context with this many I/O threads (not
  // two threads per client), so one process can hold 10,000 connections.
  uint32_t io_threads = 2;
  uint32_t rounds = 0;                  // updates per client, then it stops (0: no limit)
  // A selected client uploads this long after its download (its training;
  // the worker serves other clients meanwhile).
  std::chrono::milliseconds train_time{0};
  std::chrono::milliseconds duration{0};  // then everything stops (0: no limit)
};

struct LatencySummary {
  uint64_t count = 0;
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
};

struct LoadgenReport {
  uint64_t task_requests = 0;
  uint64_t tasks = 0;     // selections received
  uint64_t accepted = 0;  // updates the gateway accepted
  std::map<std::string, uint64_t> rejected;  // by error code name
  LatencySummary task, download, upload;  // task: each task request
  double seconds = 0;
};

// The id of client `i`: prefix and a five-digit index ("load-00042").
std::string ClientId(const std::string& prefix, uint32_t i);
// What client `client` uploads in `round` from `model`: every value moved by
// a small offset drawn from (client, round, index), so an update is the same
// on every run and differs between clients and rounds.
std::vector<float> FakeUpdate(const std::string& client, uint64_t round, std::span<const float> model);
// Its aggregation weight, 1..64, drawn from the client id.
uint64_t FakeSampleCount(const std::string& client);

// Raises this process's soft limit of open descriptors to what `clients`
// need, up to the hard limit; an error says how many are missing.
Result<void> RaiseDescriptorLimit(uint32_t clients);

Result<LoadgenReport> RunLoadgen(const LoadgenOptions& options, const std::atomic<bool>* stop);
// The report for people, or as one JSON object.
void PrintReport(const LoadgenReport& report, bool json, std::ostream& out);

}  // namespace tributary::loadgen
