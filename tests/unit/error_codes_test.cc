// The C++ error codes and the wire protocol's enum must agree number for number.
#include <gtest/gtest.h>

#include "tributary/core/error.h"
#include "tributary/v1/error.pb.h"

namespace tributary {
namespace {

TEST(ErrorCodes, MatchTheWireEnumByNameAndNumber) {
  const auto* wire = v1::ErrorCode_descriptor();
  int checked = 0;
  for (int n = 0; n < 64; ++n) {
    const auto code = static_cast<ErrorCode>(n);
    const std::string_view name = ErrorCodeName(code);
    const auto* value = wire->FindValueByNumber(n);
    if (name == "UNKNOWN") {
      EXPECT_EQ(value, nullptr) << "wire code " << n << " has no C++ counterpart";
      continue;
    }
    ASSERT_NE(value, nullptr) << name << " is missing from error.proto";
    EXPECT_EQ(value->name(), name);
    ++checked;
  }
  EXPECT_EQ(checked, wire->value_count());
}

TEST(ErrorCodes, ToStringNamesTheCode) {
  EXPECT_EQ(MakeError(ErrorCode::kShapeMismatch, "tensor 'fc'").ToString(), "SHAPE_MISMATCH: tensor 'fc'");
}

}  // namespace
}  // namespace tributary
