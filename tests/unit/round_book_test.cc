// RoundBook: who may upload what, and the Admission guard that releases itself.
#include "tributary/gateway/round_book.h"

#include <gtest/gtest.h>

#include <optional>

namespace tributary::gateway {
namespace {

RoundSpec Spec(uint64_t round = 3) {
  RoundSpec s;
  s.job = "job";
  s.round = round;
  s.model_version = round - 1;
  s.selected = {{"alice", 1}, {"bob", 2}};
  s.client_config = {{"lr", 0.5}};
  return s;
}

TEST(RoundBook, AdmitsSelectedClientsOfTheOpenRound) {
  RoundBook book;
  book.OpenRound(Spec());
  auto a = book.Admit("job", 3, 2, "alice");
  ASSERT_TRUE(a);
  EXPECT_EQ(a.value()->client, "alice");
  EXPECT_EQ(a.value()->route_key, 1u);
  EXPECT_EQ(book.Admit("job", 3, 2, "carol").error().code, ErrorCode::kNotSelected);
  EXPECT_EQ(book.Admit("other", 3, 2, "alice").error().code, ErrorCode::kUnknownJob);
  EXPECT_EQ(book.Admit("job", 2, 2, "bob").error().code, ErrorCode::kReplay);        // an old round
  EXPECT_EQ(book.Admit("job", 4, 2, "bob").error().code, ErrorCode::kRoundClosed);   // a future one
  EXPECT_EQ(book.Admit("job", 3, 1, "bob").error().code, ErrorCode::kReplay);        // a stale model
}

TEST(RoundBook, AnUploadInProgressBlocksASecondOne) {
  RoundBook book;
  book.OpenRound(Spec());
  auto first = book.Admit("job", 3, 2, "alice").value();
  EXPECT_EQ(book.Admit("job", 3, 2, "alice").error().code, ErrorCode::kUploadInProgress);  // not "accepted"
}

TEST(RoundBook, AnAdmissionThatGoesUncommittedLetsTheClientRetry) {
  RoundBook book;
  book.OpenRound(Spec());
  { auto dropped = book.Admit("job", 3, 2, "alice").value(); }
  EXPECT_TRUE(book.Admit("job", 3, 2, "alice"));
}

TEST(RoundBook, ACommittedClientIsNotAdmittedAgainNorAssigned) {
  RoundBook book;
  book.OpenRound(Spec());
  ASSERT_TRUE(book.AssignmentFor("alice").has_value());
  {
    auto a = book.Admit("job", 3, 2, "alice").value();
    a.Commit();
  }
  EXPECT_EQ(book.Admit("job", 3, 2, "alice").error().code, ErrorCode::kDuplicateUpdate);
  EXPECT_FALSE(book.AssignmentFor("alice").has_value());
  auto bob = book.AssignmentFor("bob");
  ASSERT_TRUE(bob.has_value());
  EXPECT_EQ(bob->round, 3u);
  EXPECT_EQ(bob->model_version, 2u);
  EXPECT_EQ(std::get<double>(bob->config.at("lr")), 0.5);
}

TEST(RoundBook, ASteeredClientIsPointedAtItsGatewayAndNotAdmittedHere) {
  RoundBook book;
  RoundSpec spec = Spec();
  spec.steered_away["carol"] = UploadGateway{"tcp://10.0.0.2:7600", "key-of-b"};
  book.OpenRound(spec);
  auto carol = book.AssignmentFor("carol");
  ASSERT_TRUE(carol.has_value());
  EXPECT_EQ(carol->round, 3u);
  ASSERT_TRUE(carol->upload_gateway.has_value());
  EXPECT_EQ(carol->upload_gateway->endpoint, "tcp://10.0.0.2:7600");
  EXPECT_EQ(carol->upload_gateway->public_key, "key-of-b");
  EXPECT_FALSE(book.AssignmentFor("alice")->upload_gateway.has_value()) << "a local client uploads here";
  EXPECT_EQ(book.Admit("job", 3, 2, "carol").error().code, ErrorCode::kNotSelected) << "its update goes elsewhere";
  // Still pointed there after other clients delivered, until the round closes.
  book.Admit("job", 3, 2, "alice").value().Commit();
  EXPECT_TRUE(book.AssignmentFor("carol").has_value());
  book.CloseRound("job");
  EXPECT_FALSE(book.AssignmentFor("carol").has_value());
}

TEST(RoundBook, AMovedAdmissionSettlesOnce) {
  RoundBook book;
  book.OpenRound(Spec());
  std::optional<Admission> a(book.Admit("job", 3, 2, "alice").value());
  Admission moved = std::move(*a);
  a.reset();  // the moved-from guard releases nothing...
  EXPECT_EQ(book.Admit("job", 3, 2, "alice").error().code, ErrorCode::kUploadInProgress);  // ...still held
  { Admission gone = std::move(moved); }  // releases here, and only here
  auto again = book.Admit("job", 3, 2, "alice").value();
  again.Commit();
  EXPECT_EQ(book.Admit("job", 3, 2, "alice").error().code, ErrorCode::kDuplicateUpdate);
}

TEST(RoundBook, AnAdmissionOfAnEarlierRoundDoesNotTouchTheNextOne) {
  RoundBook book;
  book.OpenRound(Spec(3));
  auto old = book.Admit("job", 3, 2, "alice").value();
  book.OpenRound(Spec(4));
  auto current = book.Admit("job", 4, 3, "alice").value();
  old.Commit();  // round 3 is gone: no effect on round 4
  EXPECT_EQ(book.Admit("job", 4, 3, "alice").error().code, ErrorCode::kUploadInProgress);  // still in flight
  { Admission release = std::move(current); }
  EXPECT_TRUE(book.Admit("job", 4, 3, "alice"));
}

TEST(RoundBook, AClosedRoundAdmitsNoOne) {
  RoundBook book;
  book.OpenRound(Spec());
  book.CloseRound("job");
  EXPECT_EQ(book.Admit("job", 3, 2, "alice").error().code, ErrorCode::kRoundClosed);
  EXPECT_FALSE(book.AssignmentFor("alice").has_value());
  EXPECT_EQ(book.Lookup("job", 3, 2).error().code, ErrorCode::kRoundClosed);
}

}  // namespace
}  // namespace tributary::gateway
