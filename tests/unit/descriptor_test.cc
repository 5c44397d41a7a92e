// The verdict logic shared by the BPF program and the userspace relay.
#include <gtest/gtest.h>

#include "tributary/dataplane/descriptor.h"

namespace tributary::dataplane {
namespace {

Descriptor Good() {
  return MakeUpdate({.dest_fn = 7, .route_key = 0, .task = 1, .round = 2, .dtype = 1, .weight = 60.0,
                     .block = {.offset = 4096, .length = 1000, .generation = 3}});
}

TEST(Descriptor, LayoutAndAccessors) {
  const Descriptor d = Good();
  EXPECT_EQ(sizeof d, 80u);
  EXPECT_EQ(d.magic, TRB_DESCRIPTOR_MAGIC);
  EXPECT_EQ(d.version, TRB_DESCRIPTOR_VERSION);
  EXPECT_EQ(d.kind, TRB_KIND_UPDATE);
  EXPECT_EQ(d.src_fn, TRB_AGENT_FN);
  EXPECT_DOUBLE_EQ(WeightOf(d), 60.0);
  EXPECT_EQ(offsetof(Descriptor, offset), 48u);
  EXPECT_EQ(BlockOf(d).length, 1000u);
}

// Each builder sets its kind's fields and leaves every other one 0.
TEST(Descriptor, BuildersFillOnlyTheirKindsFields) {
  const Descriptor hello = MakeHello({.src_fn = 9, .lease = 4, .payload_port = 7000});
  EXPECT_EQ(hello.kind, TRB_KIND_HELLO);
  EXPECT_EQ(hello.dest_fn, TRB_AGENT_FN);
  EXPECT_EQ(hello.lease, 4u);
  EXPECT_EQ(hello.payload_port, 7000u);
  EXPECT_EQ(hello.task + hello.offset + hello.length + hello.route_key + hello.slot, 0u);
  const Descriptor partial = MakePartial({.dest_fn = 3, .src_fn = 5, .slot = 2, .task = 11, .round = 4, .weight = 2.5});
  EXPECT_EQ(partial.kind, TRB_KIND_PARTIAL);
  EXPECT_EQ(partial.slot, 2u);
  EXPECT_EQ(partial.route_key, 0u);
  EXPECT_EQ(partial.dtype, 0u);
  EXPECT_EQ(partial.lease, 0u);
  const Descriptor task = WithBlock(MakeTask({.dest_fn = 3, .task = 12, .round = 4}), {64, 128, 9});
  EXPECT_EQ(task.kind, TRB_KIND_TASK);
  EXPECT_EQ(task.offset, 64u);
  EXPECT_EQ(task.length, 128u);
  EXPECT_EQ(task.generation, 9u);
  EXPECT_EQ(task.weight_bits, 0u);
  const Descriptor beat = MakeHeartbeat(9);
  EXPECT_EQ(beat.kind, TRB_KIND_HEARTBEAT);
  EXPECT_EQ(beat.dest_fn, TRB_AGENT_FN);
  EXPECT_EQ(beat.src_fn, 9u);
  EXPECT_EQ(beat.task + beat.offset + beat.length + beat.lease + beat.route_key + beat.slot, 0u);
  for (const Descriptor* d : {&hello, &partial, &task, &beat}) EXPECT_EQ(trb_classify(d, sizeof *d), TRB_TO_FUNCTION);
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
  EXPECT_EQ(trb_classify(&good, sizeof good - 1), TRB_MALFORMED);
  Descriptor d = good;
  d.magic ^= 1;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_MALFORMED);
  d = good;
  d.version = TRB_DESCRIPTOR_VERSION - 1;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_MALFORMED);
  d = good;
  d.kind = 0;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_MALFORMED);
  d.kind = TRB_KIND_HEARTBEAT + 1;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_MALFORMED);
  d = good;
  d.dest_fn = TRB_MAX_FUNCTIONS;
  EXPECT_EQ(trb_classify(&d, sizeof d), TRB_MALFORMED);
}

}  // namespace
}  // namespace tributary::dataplane
