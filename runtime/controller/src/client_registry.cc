#include "tributary/controller/client_registry.h"

#include <algorithm>
#include <random>

#include <xxhash.h>

namespace tributary::controller {

void ClientRegistry::CheckIn(const std::string& client, const std::string& node, ConfigMap properties,
                             Clock::time_point at) {
  Entry& e = clients_[client];
  if (at < e.at) return;  // an older report arriving late keeps the newer one
  e = Entry{node, std::move(properties), at};
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
  const uint64_t job_hash = XXH3_64bits(job.data(), job.size());
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(job_hash),
                    static_cast<uint32_t>(job_hash >> 32), static_cast<uint32_t>(round),
                    static_cast<uint32_t>(round >> 32), attempt};
  std::mt19937_64 rng(seq);
  std::vector<AvailableClient> pool = available;
  std::sort(pool.begin(), pool.end(), [](const auto& a, const auto& b) { return a.client < b.client; });
  count = std::min(count, pool.size());
  for (size_t i = 0; i < count; ++i) {
    std::swap(pool[i], pool[i + std::uniform_int_distribution<size_t>(0, pool.size() - 1 - i)(rng)]);
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
