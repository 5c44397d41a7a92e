// Client authentication: the allow-list's formats and errors, and the ZAP
// handler's answers (key bound to its client id, unknown keys refused, the
// list re-read on change without a restart), asked directly over ZAP.
#include "tributary/keys/allow_list.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "tributary/keys/curve_keys.h"

namespace tributary::keys {
namespace {

namespace fs = std::filesystem;

class AllowListTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tributary-auth-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_ / "clients");
    alice_ = keys::GenerateKeyPair().value();
    bob_ = keys::GenerateKeyPair().value();
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

  fs::path dir_;
  keys::CurveKeyPair alice_, bob_;
};

TEST_F(AllowListTest, ADirectoryOfPubFilesBindsEachKeyToItsFileName) {
  Write(dir_ / "clients" / "alice.pub", alice_.public_key + "\n");
  Write(dir_ / "clients" / "notes.txt", "not a key");
  auto list = AllowList::Load(dir_ / "clients").value();
  EXPECT_EQ(list.size(), 1u);
  EXPECT_EQ(list.ClientOf(alice_.public_key), "alice");
  EXPECT_FALSE(list.ClientOf(bob_.public_key).has_value());
}

TEST_F(AllowListTest, AFileOfLinesWithComments) {
  Write(dir_ / "list", "# clients\nalice " + alice_.public_key + "  # laptop\n\nbob " + bob_.public_key + "\n");
  auto list = AllowList::Load(dir_ / "list").value();
  EXPECT_EQ(list.ClientOf(alice_.public_key), "alice");
  EXPECT_EQ(list.ClientOf(bob_.public_key), "bob");
}

// '#' is one of Z85's characters: a key holding it is still a key.
TEST_F(AllowListTest, AKeyWithAHashIsNotCutAsAComment) {
  keys::CurveKeyPair hashed = keys::GenerateKeyPair().value();
  while (hashed.public_key.find('#') == std::string::npos) hashed = keys::GenerateKeyPair().value();
  Write(dir_ / "list", "carol " + hashed.public_key + "\n");
  EXPECT_EQ(AllowList::Load(dir_ / "list").value().ClientOf(hashed.public_key), "carol");
}

TEST_F(AllowListTest, MalformedEntriesAreConfigErrorsWithTheirLine) {
  Write(dir_ / "list", "alice " + alice_.public_key + "\nbob short\n");
  auto r = AllowList::Load(dir_ / "list");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kConfig);
  EXPECT_NE(r.error().reason.find(":2"), std::string::npos) << r.error().reason;
  Write(dir_ / "list", "alice " + alice_.public_key + " extra\n");
  EXPECT_EQ(AllowList::Load(dir_ / "list").error().code, ErrorCode::kConfig);
  Write(dir_ / "clients" / "carol.pub", "garbage");
  EXPECT_EQ(AllowList::Load(dir_ / "clients").error().code, ErrorCode::kConfig);
}

TEST_F(AllowListTest, OneKeyForTwoClientsIsRefused) {
  Write(dir_ / "list", "alice " + alice_.public_key + "\nmallory " + alice_.public_key + "\n");
  auto r = AllowList::Load(dir_ / "list");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().reason.find("alice"), std::string::npos);
  EXPECT_EQ(AllowList::Load(dir_ / "nothing-here").error().code, ErrorCode::kNotFound);
}

// A prefix entry binds one key to a family of ids, and nothing outside it.
TEST_F(AllowListTest, APrefixEntryAuthorizesEveryIdWithThePrefixAndNoOther) {
  Write(dir_ / "list", "pool-a-* " + alice_.public_key + "\nbob " + bob_.public_key + "\n");
  auto list = AllowList::Load(dir_ / "list").value();
  ASSERT_EQ(list.ClientOf(alice_.public_key), "pool-a-*");
  EXPECT_TRUE(IdAuthorized("pool-a-*", "pool-a-worker-1"));
  EXPECT_FALSE(IdAuthorized("pool-a-*", "pool-a-"));  // the prefix alone is no id of the family
  EXPECT_FALSE(IdAuthorized("pool-a-*", "pool-b-worker-1"));
  EXPECT_FALSE(IdAuthorized("pool-a-*", "pool-a"));
  EXPECT_TRUE(IdAuthorized("bob", "bob"));
  EXPECT_FALSE(IdAuthorized("bob", "bobby"));  // an exact entry is no prefix
  EXPECT_FALSE(IdAuthorized("", "anyone"));
  EXPECT_TRUE(IdAuthorized("*", "anyone"));
  // In a directory, the file's stem is the entry.
  Write(dir_ / "clients" / "pool-b-*.pub", bob_.public_key + "\n");
  EXPECT_EQ(AllowList::Load(dir_ / "clients").value().ClientOf(bob_.public_key), "pool-b-*");
}

TEST_F(AllowListTest, AStarBeforeTheEndOfAnIdIsRefused) {
  Write(dir_ / "list", "alice " + alice_.public_key + "\npool-*-x " + bob_.public_key + "\n");
  auto r = AllowList::Load(dir_ / "list");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kConfig);
  EXPECT_NE(r.error().reason.find(":2"), std::string::npos) << r.error().reason;
  EXPECT_NE(r.error().reason.find("'*' may only end an id"), std::string::npos) << r.error().reason;
}

// The ZAP handler answers (status, user id) for a CURVE key.
std::pair<std::string, std::string> AskZap(zmq::context_t& context, const std::string& z85_key) {
  uint8_t key[32];
  EXPECT_NE(zmq_z85_decode(key, z85_key.c_str()), nullptr);
  zmq::socket_t req(context, zmq::socket_type::req);
  req.connect("inproc://zeromq.zap.01");
  std::array<zmq::const_buffer, 7> ask = {zmq::str_buffer("1.0"), zmq::str_buffer("7"), zmq::str_buffer(""),
                                          zmq::str_buffer("127.0.0.1"), zmq::str_buffer(""),
                                          zmq::str_buffer("CURVE"), zmq::buffer(key, 32)};
  EXPECT_TRUE(zmq::send_multipart(req, ask));
  std::vector<zmq::message_t> reply;
  EXPECT_TRUE(zmq::recv_multipart(req, std::back_inserter(reply)));
  if (reply.size() < 5) return {"", ""};
  EXPECT_EQ(reply[1].to_string(), "7");  // the request id comes back
  return {reply[2].to_string(), reply[4].to_string()};
}

TEST_F(AllowListTest, TheZapHandlerBindsKeysToIdsAndRereadsTheList) {
  Write(dir_ / "clients" / "alice.pub", alice_.public_key + "\n");
  zmq::context_t context;
  auto auth = ZapAuthenticator::Start(context, dir_ / "clients", "gateway", "client").value();
  EXPECT_EQ(AskZap(context, alice_.public_key), std::make_pair(std::string("200"), std::string("alice")));
  EXPECT_EQ(AskZap(context, bob_.public_key).first, "400");
  // Added without a restart; the list is checked at most once a second.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  Write(dir_ / "clients" / "bob.pub", bob_.public_key + "\n");
  std::pair<std::string, std::string> bob;
  for (int i = 0; i < 30 && bob.first != "200"; ++i) {
    bob = AskZap(context, bob_.public_key);
    if (bob.first != "200") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(bob, std::make_pair(std::string("200"), std::string("bob")));
  // Revoked: alice's file goes.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  fs::remove(dir_ / "clients" / "alice.pub");
  std::string alice = "200";
  for (int i = 0; i < 30 && alice == "200"; ++i) {
    alice = AskZap(context, alice_.public_key).first;
    if (alice == "200") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(alice, "400");
}

}  // namespace
}  // namespace tributary::keys
