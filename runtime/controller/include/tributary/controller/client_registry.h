// The clients available for selection, and who is selected: the
// controller's decisions about clients, as plain values so that they are
// unit-tested on recorded check-ins.
//
// Each node reports the clients that asked its gateway for work (check-ins);
// a client is available while its latest check-in is younger than the
// registry's time-to-live and its node is connected. A client that checks in
// at another node moves there: selection follows where each client asks.
//
// SelectClients() is a seeded partial Fisher-Yates shuffle of the available
// clients sorted by id, drawn with SplitMix64 and a bounded draw of its own
// (not the standard library's distributions, which differ between
// implementations): the same clients, seed, job, round and attempt give the
// same selection on every machine, build and restart, and no client is
// selected twice. A client's properties are not kept: nothing selects on
// them yet.
//
// Thread safety: ClientRegistry is not synchronized (the controller holds its lock).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>


namespace tributary::controller {

struct AvailableClient {
  std::string client;
  std::string node;  // where it checked in last
  bool operator==(const AvailableClient&) const = default;
};

class ClientRegistry {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kMaxClients = 10'000'000;
  static constexpr size_t kMaxClientIdBytes = 256;
  explicit ClientRegistry(std::chrono::milliseconds ttl) : ttl_(ttl) {}

  // False if refused: an id longer than kMaxClientIdBytes, or a new client
  // when the registry holds kMaxClients.
  bool CheckIn(const std::string& client, const std::string& node, Clock::time_point at);
  // Sorted by client id.
  std::vector<AvailableClient> Available(Clock::time_point now, const std::set<std::string>& connected_nodes) const;
  // Clients available on each node.
  std::map<std::string, uint64_t> CountByNode(Clock::time_point now) const;
  // Forgets clients whose check-in is older than the time-to-live.
  void Expire(Clock::time_point now);
  size_t size() const { return clients_.size(); }

 private:
  struct Entry {
    std::string node;
    Clock::time_point at;
  };
  std::chrono::milliseconds ttl_;
  std::map<std::string, Entry> clients_;
};

// `count` of `available` (all of them if fewer), in selection order.
std::vector<AvailableClient> SelectClients(const std::vector<AvailableClient>& available, size_t count, uint64_t seed,
                                           std::string_view job, uint64_t round, uint32_t attempt);

// Node id -> its selected clients, the shape Controller::RunRound takes.
std::map<std::string, std::vector<std::string>> ByNode(const std::vector<AvailableClient>& selected);

}  // namespace tributary::controller
