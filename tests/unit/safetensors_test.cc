// Model files in the safetensors format: what we write is what the format
// says, and malformed files are refused with a reason.
#include "tributary/controller/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>

namespace tributary::controller {
namespace {

agg::ModelSpec Spec() {
  return agg::ModelSpec::Create({{"conv.weight", agg::DType::kF32, {2, 3}}, {"conv.bias", agg::DType::kF32, {2}}}).value();
}

std::string Encode(const nlohmann::json& header, size_t data_bytes) {
  const std::string json = header.dump();
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  return out + json + std::string(data_bytes, '\0');
}

TEST(Safetensors, RoundTripsNamesShapesValuesAndMetadata) {
  const std::vector<float> values = {1, 2, 3, 4, 5, 6, -1.5f, 0.25f};
  const std::string file = EncodeSafetensors(Spec(), values, {{"model_version", "3"}}).value();
  auto back = DecodeSafetensors(file, "m.safetensors");
  ASSERT_TRUE(back) << back.error().ToString();
  EXPECT_EQ(back.value().spec.tensors(), Spec().tensors());
  EXPECT_EQ(back.value().values, values);
  EXPECT_EQ(back.value().metadata.at("model_version"), "3");
}

TEST(Safetensors, TheHeaderIsTheFormatsJson) {
  const std::string file = EncodeSafetensors(Spec(), std::vector<float>(8, 0.0f), {}).value();
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  EXPECT_EQ(n % 8, 0u);  // padded, so the data is aligned
  EXPECT_EQ(file.size(), 8 + n + 8 * 4);
  const auto header = nlohmann::json::parse(file.substr(8, n));
  EXPECT_EQ(header["conv.weight"]["dtype"], "F32");
  EXPECT_EQ(header["conv.weight"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(header["conv.weight"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(header["conv.bias"]["data_offsets"], nlohmann::json({24, 32}));
}

TEST(Safetensors, TensorsAreReadInOffsetOrder) {
  // A file whose JSON lists tensors out of order (JSON objects have none).
  const nlohmann::json h = {{"z", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}},
                            {"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}}};
  auto m = DecodeSafetensors(Encode(h, 12), "f");
  ASSERT_TRUE(m) << m.error().ToString();
  EXPECT_EQ(m.value().spec.tensors()[0].name, "z");
  EXPECT_EQ(m.value().spec.tensors()[1].name, "a");
}

TEST(Safetensors, MalformedFilesAreConfigErrorsThatSayWhy) {
  auto refused = [](const std::string& data, const std::string& why) {
    auto m = DecodeSafetensors(data, "bad.safetensors");
    ASSERT_FALSE(m) << why;
    EXPECT_EQ(m.error().code, ErrorCode::kConfig);
    EXPECT_NE(m.error().reason.find(why), std::string::npos) << m.error().reason;
    EXPECT_EQ(m.error().reason.rfind("bad.safetensors: ", 0), 0u) << m.error().reason;
  };
  refused("abc", "shorter");
  refused(std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8) + "{}", "runs past");
  refused(Encode(nlohmann::json::array(), 0), "not a JSON object");
  const auto entry = [](const char* dtype, nlohmann::json shape, nlohmann::json offsets) {
    return nlohmann::json{{"dtype", dtype}, {"shape", shape}, {"data_offsets", offsets}};
  };
  refused(Encode({{"w", entry("F16", {2}, {0, 4})}}, 4), "only F32");
  refused(Encode({{"w", entry("F32", {3}, {0, 8})}}, 8), "its shape needs 12");
  refused(Encode({{"w", entry("F32", {2}, {0, 8})}}, 4), "run past");
  refused(Encode({{"w", entry("F32", {1}, {0, 4})}, {"v", entry("F32", {1}, {8, 12})}}, 12), "does not start");
  refused(Encode({{"w", entry("F32", {1}, {0, 4})}}, 8), "after the last tensor");
  refused(Encode({{"w", entry("F32", {-1}, {0, 4})}}, 4), "shape holds");
  refused(Encode({{"w", {{"dtype", "F32"}}}}, 0), "needs dtype, shape and data_offsets");
}

TEST(Safetensors, ValuesMustFitTheSpec) {
  auto e = EncodeSafetensors(Spec(), std::vector<float>(3, 0.0f), {});
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, ErrorCode::kShapeMismatch);
}

}  // namespace
}  // namespace tributary::controller
