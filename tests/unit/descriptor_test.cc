// The verdict logic shared by the BPF program and the userspace relay.
#include <gtest/gtest.h>

#include "tributary/dataplane/descriptor.h"

namespace tributary::dataplane {
namespace {

Descriptor Good() { return MakeDescriptor({TRB_KIND_UPDATE, 7, 0, 1, 2, 4096, 1000, 3, 60.0}); }

TEST(Descriptor, LayoutAndAccessors) {
  const Descriptor d = Good();
  EXPECT_EQ(sizeof d, 64u);
  EXPECT_EQ(d.magic, TRB_DESCRIPTOR_MAGIC);
  EXPECT_EQ(d.version, TRB_DESCRIPTOR_VERSION);
  EXPECT_DOUBLE_EQ(WeightOf(d), 60.0);
  EXPECT_EQ(offsetof(Descriptor, offset), 32u);
}

TEST(Descriptor, ClassifyRoutesByDestinationOrRouteKey) {
  Descriptor d = Good();
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_TO_FUNCTION);
  d.dest_fn = TRB_NO_FUNCTION;
  d.route_key = 5;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_BY_ROUTE);
}

TEST(Descriptor, ClassifyRejectsMalformed) {
  const Descriptor good = Good();
  EXPECT_EQ(trb_classify(&good, 63), TRB_MALFORMED);
  Descriptor d = good;
  d.magic ^= 1;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_MALFORMED);
  d = good;
  d.version = 2;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_MALFORMED);
  d = good;
  d.kind = 0;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_MALFORMED);
  d.kind = 9;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_MALFORMED);
  d = good;
  d.dest_fn = TRB_MAX_FUNCTIONS;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_MALFORMED);
}

}  // namespace
}  // namespace tributary::dataplane
