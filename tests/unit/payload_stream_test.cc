// PayloadStream (the serverful comparison transport): frames arrive whole and
// in order per connection, headers are validated, a closed peer is kIo.
#include "tributary/dataplane/payload_stream.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <condition_variable>
#include <mutex>
#include <vector>

namespace tributary::dataplane {
namespace {

struct Received {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<PayloadHeader, std::vector<std::byte>>> frames;
  std::vector<Error> errors;
};

std::unique_ptr<PayloadServer> Serve(Received& r) {
  return PayloadServer::Start([&r](int fd) -> Result<void> {
           auto h = ReadPayloadHeader(fd);
           if (!h) {
             std::lock_guard lock(r.mu);
             r.errors.push_back(h.error());
             r.cv.notify_all();
             return std::move(h).error();
           }
           std::vector<std::byte> bytes(h.value().descriptor.length);
           TRIBUTARY_TRY(ReadPayloadBytes(fd, bytes));
           std::lock_guard lock(r.mu);
           r.frames.emplace_back(h.value(), std::move(bytes));
           r.cv.notify_all();
           return Ok();
         })
      .value();
}

TEST(PayloadStream, FramesArriveWholeAndInOrder) {
  Received r;
  auto server = Serve(r);
  UniqueFd fd = ConnectPayload(server->port()).value();
  for (uint32_t i = 0; i < 3; ++i) {
    std::vector<std::byte> payload((i + 1) * 300'000, std::byte(i + 1));
    const PayloadHeader h{MakePartial({.dest_fn = 5, .slot = i, .task = 9, .round = 2, .weight = 1.5 * i,
                                       .block = {.length = payload.size()}}),
                          i + 10, i == 1};
    ASSERT_TRUE(WritePayload(fd.get(), h, payload));
  }
  std::unique_lock lock(r.mu);
  ASSERT_TRUE(r.cv.wait_for(lock, std::chrono::seconds(10), [&] { return r.frames.size() == 3; }));
  for (uint32_t i = 0; i < 3; ++i) {
    const auto& [h, bytes] = r.frames[i];
    EXPECT_EQ(h.descriptor.slot, i);
    EXPECT_EQ(h.descriptor.task, 9u);
    EXPECT_EQ(WeightOf(h.descriptor), 1.5 * i);
    EXPECT_EQ(h.updates, i + 10);
    EXPECT_EQ(h.checked_finite, i == 1);
    ASSERT_EQ(bytes.size(), (i + 1) * 300'000u);
    EXPECT_EQ(bytes.front(), std::byte(i + 1));
    EXPECT_EQ(bytes.back(), std::byte(i + 1));
  }
}

TEST(PayloadStream, AHeaderThatIsNotADescriptorIsMalformed) {
  Received r;
  auto server = Serve(r);
  UniqueFd fd = ConnectPayload(server->port()).value();
  PayloadHeader junk{};
  junk.descriptor.magic = 0x12345678;
  ASSERT_TRUE(WritePayload(fd.get(), junk, {}));
  std::unique_lock lock(r.mu);
  ASSERT_TRUE(r.cv.wait_for(lock, std::chrono::seconds(10), [&] { return !r.errors.empty(); }));
  EXPECT_EQ(r.errors[0].code, ErrorCode::kMalformedFrame);
  EXPECT_TRUE(r.frames.empty());
}

TEST(PayloadStream, APeerThatClosesMidFrameIsAnIoError) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);
  const PayloadHeader h{MakeUpdate({.dest_fn = 3, .route_key = 1, .task = 1, .round = 1, .dtype = 1, .weight = 1,
                                    .block = {.length = 1000}}),
                        1, true};
  ASSERT_EQ(send(a.get(), &h, sizeof h, 0), static_cast<ssize_t>(sizeof h));
  ASSERT_EQ(send(a.get(), "abc", 3, 0), 3);
  a.reset();
  auto got = ReadPayloadHeader(b.get());
  ASSERT_TRUE(got);
  std::vector<std::byte> into(1000);
  auto r = ReadPayloadBytes(b.get(), into);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kIo);
  EXPECT_EQ(ReadPayloadHeader(b.get()).error().code, ErrorCode::kIo);
}

TEST(PayloadStream, ConnectingToAClosedPortFails) {
  uint16_t port;
  {
    Received r;
    port = Serve(r)->port();
  }
  auto fd = ConnectPayload(port);
  EXPECT_FALSE(fd);
}

}  // namespace
}  // namespace tributary::dataplane
