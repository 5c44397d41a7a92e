#include "tributary/controller/client_registry.h"

#include <algorithm>

#include <xxhash.h>

namespace tributary::controller {

bool ClientRegistry::CheckIn(const std::string& client, const std::string& node, Clock::time_point at) {
  if (client.size() > kMaxClientIdBytes) return false;
  auto it = clients_.find(client);
  if (it == clients_.end()) {
    if (clients_.size() >= kMaxClients) return false;
    clients_.emplace(client, Entry{node, at});
    return true;
  }
  if (at >= it->second.at) it->second = Entry{node, at};  // an older report arriving late keeps the newer one
  return true;
}

std::vector<AvailableClient> ClientRegistry::Available(Clock::time_point now,
                                                       const std::set<std::string>& connected_nodes) const {
  std::vector<AvailableClient> out;
  for (const auto& [client, e] : clients_) {
    if (now - e.at <= ttl_ && connected_nodes.count(e.node)) out.push_back({client, e.node});
  }
  return out;
}

std::map<std::string, uint64_t> ClientRegistry::CountByNode(Clock::time_point now) const {
  std::map<std::string, uint64_t> out;
  for (const auto& [client, e] : clients_) {
    if (now - e.at <= ttl_) out[e.node] += 1;
  }
  return out;
}

void ClientRegistry::Expire(Clock::time_point now) {
  std::erase_if(clients_, [&](const auto& kv) { return now - kv.second.at > ttl_; });
}

std::vector<AvailableClient> SelectClients(const std::vector<AvailableClient>& available, size_t count, uint64_t seed,
                                           std::string_view job, uint64_t round, uint32_t attempt) {
  uint64_t state = XXH3_64bits_withSeed(job.data(), job.size(), seed) ^ (round * 0x9E3779B97F4A7C15ull) ^
                   (uint64_t{attempt} << 48);
  auto next = [&state] {  // SplitMix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  // Uniform in [0, n): rejection of the top partial range, so no value is favoured.
  auto below = [&next](uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = next(); while (r >= limit);
    return r % n;
  };
  std::vector<AvailableClient> pool = available;
  std::sort(pool.begin(), pool.end(), [](const auto& a, const auto& b) { return a.client < b.client; });
  count = std::min(count, pool.size());
  for (size_t i = 0; i < count; ++i) {
    std::swap(pool[i], pool[i + below(pool.size() - i)]);
  }
  pool.resize(count);
  return pool;
}

std::map<std::string, std::vector<std::string>> ByNode(const std::vector<AvailableClient>& selected) {
  std::map<std::string, std::vector<std::string>> out;
  for (const AvailableClient& c : selected) out[c.node].push_back(c.client);
  return out;
}

}  // namespace tributary::controller
