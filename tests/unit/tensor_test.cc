#include "tributary/aggregator/tensor.h"

#include <gtest/gtest.h>

namespace tributary::agg {
namespace {

TEST(ModelSpec, LaysOutRunsOfEqualDType) {
  auto spec = ModelSpec::Create({{"a", DType::kF32, {2, 3}},
                                 {"b", DType::kF32, {4}},
                                 {"c", DType::kF16, {5}},
                                 {"d", DType::kBF16, {}},
                                 {"e", DType::kBF16, {0, 7}}});
  ASSERT_TRUE(spec) << spec.error().ToString();
  EXPECT_EQ(spec.value().elements(), 6u + 4 + 5 + 1);
  EXPECT_EQ(spec.value().payload_bytes(), 40u + 10 + 2);
  const auto& runs = spec.value().runs();
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].elements, 10u);
  EXPECT_EQ(runs[1].first_element, 10u);
  EXPECT_EQ(runs[1].byte_offset, 40u);
  EXPECT_EQ(runs[2].dtype, DType::kBF16);
  EXPECT_EQ(runs[2].byte_offset, 50u);
}

TEST(ModelSpec, RejectsBadSpecsWithTypedErrors) {
  EXPECT_EQ(ModelSpec::Create({}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(ModelSpec::Create({{"", DType::kF32, {1}}}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(ModelSpec::Create({{"a", DType::kF32, {1}}, {"a", DType::kF32, {1}}}).error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ModelSpec::Create({{"a", DType::kF32, {-1}}}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(ModelSpec::Create({{"a", DType::kF32, {1 << 30, 1 << 30}}}).error().code, ErrorCode::kTooLarge);
}

TEST(ModelSpec, WithDTypeKeepsShapes) {
  auto spec = ModelSpec::Create({{"a", DType::kF32, {3}}, {"b", DType::kF32, {2}}}).value();
  ModelSpec half = spec.WithDType(DType::kF16);
  EXPECT_TRUE(half.SameShapes(spec));
  EXPECT_EQ(half.payload_bytes(), 10u);
  EXPECT_EQ(half.runs().size(), 1u);
}

TEST(DType, ParsesNames) {
  EXPECT_EQ(ParseDType("bf16").value(), DType::kBF16);
  EXPECT_EQ(ParseDType("int8").value(), DType::kI8);
  EXPECT_EQ(ParseDType("int4").error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace tributary::agg
