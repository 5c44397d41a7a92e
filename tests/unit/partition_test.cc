// Simulated federations' data partitions and the job keys that choose them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <set>

#include "tributary/simulation/dataset.h"
#include "tributary/simulation/job.h"

namespace tributary::simulation {
namespace {

torch::Tensor Labels(int64_t n) { return torch::arange(n, torch::kLong).remainder(10); }

TEST(Partition, TheEvenSplitGivesEverySampleToOneClient) {
  const auto p = Partition(Labels(1000), 10, 7, {}, 3).value();
  std::multiset<int64_t> all;
  for (const auto& mine : p) {
    EXPECT_GE(mine.size(), 142u);
    EXPECT_LE(mine.size(), 143u);
    all.insert(mine.begin(), mine.end());
  }
  EXPECT_EQ(all.size(), 1000u);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 1000u);
}

TEST(Partition, MoreClientsThanFitShareSamplesButNeverTwiceInOneClient) {
  PartitionSpec spec;
  spec.samples_per_client = 60;
  const auto p = Partition(Labels(6000), 10, 1000, spec, 5).value();  // the set dealt out ten times
  ASSERT_EQ(p.size(), 1000u);
  std::map<int64_t, int> uses;
  for (const auto& mine : p) {
    ASSERT_EQ(mine.size(), 60u);
    EXPECT_EQ(std::set<int64_t>(mine.begin(), mine.end()).size(), 60u);
    for (int64_t i : mine) uses[i] += 1;
  }
  EXPECT_EQ(uses.size(), 6000u);
  for (const auto& [sample, n] : uses) EXPECT_EQ(n, 10) << sample;
  EXPECT_EQ(Partition(Labels(6000), 10, 1000, spec, 5).value(), p);  // a function of its seed
  EXPECT_NE(Partition(Labels(6000), 10, 1000, spec, 6).value(), p);
  spec.kind = "dirichlet";
  EXPECT_EQ(Partition(Labels(6000), 10, 1000, spec, 5).error().code, ErrorCode::kInvalidArgument);
  spec.kind = "iid";
  spec.samples_per_client = 7;  // 6000 = 857 * 7 + 1: each pass leaves one sample out, a client never straddles two
  const auto sevens = Partition(Labels(6000), 10, 2000, spec, 5).value();
  for (const auto& mine : sevens) {
    EXPECT_EQ(std::set<int64_t>(mine.begin(), mine.end()).size(), 7u);
  }
  spec.samples_per_client = 6001;
  EXPECT_EQ(Partition(Labels(6000), 10, 2, spec, 5).error().code, ErrorCode::kInvalidArgument);
}

TEST(Partition, SamplesPerClientIsAnIidKeyOutsideSemiPfl) {
  const std::string base = "clients: 10\nclients_per_round: 5\n";
  EXPECT_EQ(ParseSimulationJob(base + "data: {partition: iid, samples_per_client: 60}\n", "j").value().samples_per_client, 60u);
  EXPECT_EQ(ParseSimulationJob(base, "j").value().samples_per_client, 0u);  // the even split
  const auto skewed = ParseSimulationJob(base + "data: {partition: dirichlet, samples_per_client: 60}\n", "j");
  ASSERT_FALSE(skewed);
  EXPECT_EQ(skewed.error().code, ErrorCode::kConfig);
  EXPECT_NE(skewed.error().reason.find("samples_per_client"), std::string::npos);
  EXPECT_EQ(ParseSimulationJob(base + "strategy: {name: semipfl}\n", "j").value().samples_per_client, 400u);
}

}  // namespace
}  // namespace tributary::simulation
