// The controller's decisions about clients: who is available, who is selected.
#include "tributary/controller/client_registry.h"

#include <gtest/gtest.h>

#include <set>

namespace tributary::controller {
namespace {

using Clock = ClientRegistry::Clock;
using std::chrono::milliseconds;

std::vector<AvailableClient> Clients(size_t n) {
  std::vector<AvailableClient> out;
  for (size_t i = 0; i < n; ++i) out.push_back({"c" + std::to_string(1000 + i), "node-" + std::to_string(i % 3)});
  return out;
}

TEST(ClientRegistry, AClientIsAvailableWithinItsTimeToLiveOnAConnectedNode) {
  ClientRegistry r(milliseconds(1000));
  const auto t0 = Clock::now();
  r.CheckIn("b", "n1", t0);
  r.CheckIn("a", "n2", t0 + milliseconds(500));
  EXPECT_EQ(r.Available(t0 + milliseconds(900), {"n1", "n2"}),
            (std::vector<AvailableClient>{{"a", "n2"}, {"b", "n1"}}));  // sorted by id
  EXPECT_EQ(r.Available(t0 + milliseconds(900), {"n2"}), (std::vector<AvailableClient>{{"a", "n2"}}));
  EXPECT_EQ(r.Available(t0 + milliseconds(1200), {"n1", "n2"}), (std::vector<AvailableClient>{{"a", "n2"}}));
  r.Expire(t0 + milliseconds(1600));
  EXPECT_EQ(r.size(), 0u);
}

TEST(ClientRegistry, AClientFollowsItsLatestCheckIn) {
  ClientRegistry r(milliseconds(1000));
  const auto t0 = Clock::now();
  r.CheckIn("a", "n1", t0 + milliseconds(100));
  r.CheckIn("a", "n2", t0 + milliseconds(200));
  r.CheckIn("a", "n1", t0 + milliseconds(150));  // an older report arriving late
  EXPECT_EQ(r.Available(t0 + milliseconds(300), {"n1", "n2"}), (std::vector<AvailableClient>{{"a", "n2"}}));
  EXPECT_EQ(r.CountByNode(t0 + milliseconds(300)), (std::map<std::string, uint64_t>{{"n2", 1}}));
}

TEST(ClientRegistry, OversizedIdsAreRefused) {
  ClientRegistry r(milliseconds(1000));
  EXPECT_FALSE(r.CheckIn(std::string(ClientRegistry::kMaxClientIdBytes + 1, 'x'), "n1", Clock::now()));
  EXPECT_TRUE(r.CheckIn(std::string(ClientRegistry::kMaxClientIdBytes, 'x'), "n1", Clock::now()));
  EXPECT_EQ(r.size(), 1u);
}

// Recorded: the selection must not change between builds or standard
// libraries (a resumed controller re-runs a round with the same clients).
TEST(SelectClients, IsTheSameAsRecorded) {
  std::vector<std::string> ids;
  for (const auto& c : SelectClients(Clients(10), 4, 1, "job", 1, 0)) ids.push_back(c.client);
  EXPECT_EQ(ids, (std::vector<std::string>{"c1004", "c1006", "c1005", "c1003"}));
}

TEST(SelectClients, IsDeterministicWithoutRepeatsAndIndependentOfInputOrder) {
  auto pool = Clients(100);
  const auto a = SelectClients(pool, 30, 7, "job", 3, 0);
  std::reverse(pool.begin(), pool.end());
  const auto b = SelectClients(pool, 30, 7, "job", 3, 0);
  ASSERT_EQ(a.size(), 30u);
  EXPECT_EQ(a, b);
  std::set<std::string> ids;
  for (const auto& c : a) ids.insert(c.client);
  EXPECT_EQ(ids.size(), 30u);
  // Another round, attempt, seed or job selects differently.
  EXPECT_NE(SelectClients(pool, 30, 7, "job", 4, 0), a);
  EXPECT_NE(SelectClients(pool, 30, 7, "job", 3, 1), a);
  EXPECT_NE(SelectClients(pool, 30, 8, "job", 3, 0), a);
  EXPECT_NE(SelectClients(pool, 30, 7, "other", 3, 0), a);
  // Fewer available than asked for: all of them.
  EXPECT_EQ(SelectClients(Clients(5), 30, 7, "job", 3, 0).size(), 5u);
}

TEST(SelectClients, IsRoughlyUniform) {
  const auto pool = Clients(20);
  std::map<std::string, int> picked;
  for (uint64_t round = 1; round <= 2000; ++round) {
    for (const auto& c : SelectClients(pool, 5, 1, "job", round, 0)) picked[c.client] += 1;
  }
  ASSERT_EQ(picked.size(), 20u);
  for (const auto& [client, n] : picked) {
    EXPECT_GT(n, 400) << client;  // expected 500 each
    EXPECT_LT(n, 600) << client;
  }
}

TEST(SelectClients, ByNodeGroupsTheSelectionWhereEachClientCheckedIn) {
  const auto by = ByNode({{"a", "n2"}, {"b", "n1"}, {"c", "n2"}});
  EXPECT_EQ(by, (std::map<std::string, std::vector<std::string>>{{"n1", {"b"}}, {"n2", {"a", "c"}}}));
}

}  // namespace
}  // namespace tributary::controller
