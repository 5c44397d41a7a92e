// Comparing aggregates: the L2 norm of the difference relative to the
// reference's (the measure "within 1e-6 relative" means in these tests).
#pragma once

#include <cmath>
#include <span>

namespace tributary::testing {

template <class A, class B>
double RelativeError(std::span<const A> got, std::span<const B> want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    num += d * d;
    den += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  return std::sqrt(num / den);
}

}  // namespace tributary::testing
