// ModelStore: newest version wins, personal models by client, holds outlive replacement.
#include "tributary/gateway/model_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace tributary::gateway {
namespace {

class ModelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    shm::SegmentOptions o;
    o.name = "tributary.model-store-test." + std::to_string(getpid());
    o.bytes = 4 << 20;
    segment_ = shm::Segment::Create(o).value();
  }
  void TearDown() override {
    store_.Clear();
    segment_.reset();
  }

  PublishedModel Model(uint64_t version, float value) {
    auto block = segment_->Allocate(4, {.kind = shm::BlockKind::kModel, .round = version}).value();
    std::memcpy(block.mutable_bytes().data(), &value, 4);
    return PublishedModel{version, agg::ModelSpec::Create({{"w", agg::DType::kF32, {1}}}).value(), version, std::move(block)};
  }

  static float ValueOf(const PublishedModel& m) {
    float v;
    std::memcpy(&v, m.block.bytes().data(), 4);
    return v;
  }

  std::unique_ptr<shm::Segment> segment_;
  ModelStore store_;
};

TEST_F(ModelStoreTest, UnknownJobIsNotFound) { EXPECT_EQ(store_.Get("job").error().code, ErrorCode::kNotFound); }

TEST_F(ModelStoreTest, NewerVersionsReplaceOlderOnesAreIgnored) {
  store_.Publish("job", Model(2, 2.0f));
  store_.Publish("job", Model(1, 1.0f));
  EXPECT_EQ(store_.Get("job").value().version, 2u);
  store_.Publish("job", Model(3, 3.0f));
  EXPECT_EQ(ValueOf(store_.Get("job").value()), 3.0f);
}

TEST_F(ModelStoreTest, AReaderKeepsItsVersionWhileANewerOneIsPublished) {
  store_.Publish("job", Model(1, 1.0f));
  PublishedModel held = store_.Get("job").value();
  store_.Publish("job", Model(2, 2.0f));
  EXPECT_EQ(ValueOf(held), 1.0f);  // its block is still alive
  EXPECT_EQ(segment_->Stats().live_blocks, 2u);
  held = {};
  EXPECT_EQ(segment_->Stats().live_blocks, 1u);
}

TEST_F(ModelStoreTest, PersonalModelsAreServedToTheirOwnClientOnly) {
  store_.Publish("job", Model(4, 0.0f));
  store_.Publish("job", Model(4, 7.0f), "alice");
  EXPECT_EQ(ValueOf(store_.Get("job", "alice").value()), 7.0f);
  EXPECT_EQ(ValueOf(store_.Get("job", "bob").value()), 0.0f);  // bob has none: the job's
}

TEST_F(ModelStoreTest, OldPersonalModelsAreDropped) {
  store_.Publish("job", Model(4, 7.0f), "alice");
  store_.Publish("job", Model(5, 8.0f), "bob");
  store_.DropPersonalBefore("job", 5);
  EXPECT_EQ(store_.Get("job", "alice").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(ValueOf(store_.Get("job", "bob").value()), 8.0f);
  store_.Publish("job", Model(6, 1.0f));  // a newer global version drops older personal ones
  EXPECT_EQ(ValueOf(store_.Get("job", "bob").value()), 1.0f);
}

}  // namespace
}  // namespace tributary::gateway
