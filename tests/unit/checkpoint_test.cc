// Checkpoint files: round trips, and every torn or corrupted file is a typed
// error, never a crash or a silent fresh start.
#include "tributary/controller/checkpoint.h"

#include "tributary/controller/controller.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace tributary::controller {
namespace {

CheckpointState Sample() { return {7, 3, {1.5f, -2.0f, 0.25f}, {{0.1f, 0.2f, 0.3f}, {4, 5, 6}}}; }

class CheckpointFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("tributary-ckpt-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "job.ckpt").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void Overwrite(const std::string& bytes) {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out << bytes;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST(Checkpoint, EncodesAndDecodesEveryField) {
  const CheckpointState s = Sample();
  auto back = DecodeCheckpoint(EncodeCheckpoint(s), 3, 2, "test").value();
  EXPECT_EQ(back.model_version, 7u);
  EXPECT_EQ(back.steps, 3u);
  EXPECT_EQ(back.model, s.model);
  EXPECT_EQ(back.slots, s.slots);
}

TEST(Checkpoint, EveryFlippedByteIsCaught) {
  const std::string good = EncodeCheckpoint(Sample());
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x5a);
    auto r = DecodeCheckpoint(bad, 3, 2, "test");
    ASSERT_FALSE(r) << "flip at byte " << i;
    EXPECT_EQ(r.error().code, ErrorCode::kConfig);
  }
}

TEST(Checkpoint, EveryTruncationIsCaught) {
  const std::string good = EncodeCheckpoint(Sample());
  for (size_t n = 0; n < good.size(); ++n) {
    auto r = DecodeCheckpoint(std::string_view(good).substr(0, n), 3, 2, "test");
    ASSERT_FALSE(r) << "length " << n;
    EXPECT_EQ(r.error().code, ErrorCode::kConfig);
  }
}

TEST(Checkpoint, SizesOfAnotherJobAreRefused) {
  const std::string good = EncodeCheckpoint(Sample());
  EXPECT_EQ(DecodeCheckpoint(good, 4, 2, "test").error().code, ErrorCode::kConfig);
  EXPECT_EQ(DecodeCheckpoint(good, 3, 1, "test").error().code, ErrorCode::kConfig);
}

TEST_F(CheckpointFileTest, MissingFileIsNoCheckpoint) {
  auto r = ReadCheckpoint(path_, 3, 2);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r.value().has_value());
}

TEST_F(CheckpointFileTest, WrittenFileReadsBackAndReplacesTheOld) {
  ASSERT_TRUE(WriteCheckpoint(path_, Sample()));
  CheckpointState next = Sample();
  next.model_version = 8;
  next.model[0] = 9.0f;
  ASSERT_TRUE(WriteCheckpoint(path_, next));
  auto r = ReadCheckpoint(path_, 3, 2).value();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->model_version, 8u);
  EXPECT_EQ(r->model[0], 9.0f);
  EXPECT_FALSE(std::filesystem::exists(path_ + ".tmp"));
}

TEST_F(CheckpointFileTest, TornFileIsATypedErrorNamingIt) {
  ASSERT_TRUE(WriteCheckpoint(path_, Sample()));
  const std::string good = EncodeCheckpoint(Sample());
  Overwrite(good.substr(0, good.size() / 2));
  auto r = ReadCheckpoint(path_, 3, 2);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kConfig);
  EXPECT_NE(r.error().reason.find(path_), std::string::npos);
  Overwrite("");
  EXPECT_EQ(ReadCheckpoint(path_, 3, 2).error().code, ErrorCode::kConfig);
}

TEST_F(CheckpointFileTest, UnwritableDirectoryIsAnIoError) {
  auto r = WriteCheckpoint((dir_ / "missing" / "job.ckpt").string(), Sample());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kIo);
}

// A controller refuses a job whose checkpoint is corrupt, instead of starting
// it again from its initial model; a sound one resumes the job.
TEST_F(CheckpointFileTest, TheControllerRefusesACorruptCheckpointAndResumesASoundOne) {
  JobSpec spec;
  spec.id = "job";
  spec.model = agg::ModelSpec::Create({{"w", agg::DType::kF32, {3}}}).value();
  spec.initial_model = {0, 0, 0};
  auto controller = Controller::Start({.checkpoint_dir = dir_.string()}).value();
  ASSERT_TRUE(WriteCheckpoint(path_, {5, 5, {1, 2, 3}, {}}));
  ASSERT_TRUE(controller->AddJob(spec));
  EXPECT_EQ(controller->ModelVersion("job").value(), 5u);
  EXPECT_EQ(controller->Model("job").value(), (std::vector<float>{1, 2, 3}));

  const std::string good = EncodeCheckpoint({6, 6, {1, 2, 3}, {}});
  Overwrite(good.substr(0, good.size() - 3));
  auto again = Controller::Start({.checkpoint_dir = dir_.string()}).value();
  auto refused = again->AddJob(spec);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kConfig);
  EXPECT_EQ(again->ModelVersion("job").error().code, ErrorCode::kUnknownJob);
}

}  // namespace
}  // namespace tributary::controller
