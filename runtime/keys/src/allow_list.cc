#include "tributary/keys/allow_list.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "tributary/keys/curve_keys.h"
#include "tributary/core/zmq_poll.h"

namespace tributary::keys {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The newest modification time of the path and, for a directory, its files.
fs::file_time_type LastChange(const fs::path& path) {
  std::error_code ec;
  auto newest = fs::last_write_time(path, ec);
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec)) newest = std::max(newest, e.last_write_time(ec));
  }
  return newest;
}

}  // namespace

bool IdAuthorized(const std::string& bound, const std::string& claimed) {
  if (bound.empty() || bound.back() != '*') return claimed == bound;
  const std::string_view prefix(bound.data(), bound.size() - 1);
  return claimed.size() > prefix.size() && std::string_view(claimed).starts_with(prefix);
}

Result<AllowList> AllowList::Load(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return MakeError(ErrorCode::kNotFound, "no allow-list at '" + path.string() + "'");
  std::vector<std::tuple<std::string, std::string, std::string>> entries;  // client, key, where
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec)) {
      if (e.path().extension() != ".pub") continue;
      auto key = LoadPublicKey(e.path().string());
      entries.emplace_back(e.path().stem().string(), key ? key.value() : "", e.path().string());
    }
  } else {
    std::ifstream in(path);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      // '#' is a Z85 character, so only a word that starts with it starts a
      // comment (a line of its own, or after the key), never one inside a key.
      std::istringstream words(line);
      std::string client, key, extra;
      if (!(words >> client) || client.front() == '#') continue;
      words >> key >> extra;
      if (!extra.empty() && extra.front() != '#') key.clear();  // more than two words: malformed
      entries.emplace_back(client, key, path.string() + ":" + std::to_string(n));
    }
  }
  AllowList list;
  for (const auto& [client, key, where] : entries) {
    if (!IsZ85Key(key)) return MakeError(ErrorCode::kConfig, where + ": expected a 40-character Z85 public key");
    if (const size_t star = client.find('*'); star != std::string::npos && star + 1 != client.size()) {
      return MakeError(ErrorCode::kConfig, where + ": '*' may only end an id (a prefix entry such as 'edge-*')");
    }
    auto [it, fresh] = list.client_of_.emplace(key, client);
    if (!fresh && it->second != client) {
      return MakeError(ErrorCode::kConfig, where + ": key already listed for client '" + it->second + "'");
    }
  }
  return list;
}

std::optional<std::string> AllowList::ClientOf(const std::string& z85_key) const {
  auto it = client_of_.find(z85_key);
  if (it == client_of_.end()) return std::nullopt;
  return it->second;
}

struct ZapAuthenticator::Impl {
  zmq::socket_t socket;
  fs::path path;
  AllowList list;
  fs::file_time_type loaded_version{};
  Clock::time_point checked{};
  std::string role, peers;
  std::atomic<uint64_t> refused{0};
  std::atomic<bool> stop{false};
  std::thread thread;

  explicit Impl(zmq::context_t& context) : socket(context, zmq::socket_type::rep) {}

  // Re-reads the list if it changed; a broken list keeps the last good one.
  void Refresh() {
    const auto now = Clock::now();
    if (now - checked < std::chrono::seconds(1)) return;
    checked = now;
    const auto version = LastChange(path);
    if (version == loaded_version) return;
    auto fresh = AllowList::Load(path);
    if (!fresh) {
      spdlog::error("{}: allow-list not reloaded, keeping {} keys: {}", role, list.size(), fresh.error().ToString());
      return;
    }
    list = std::move(fresh).value();
    loaded_version = version;
    spdlog::info("{}: allow-list {} loaded: {} {} keys", role, path.string(), list.size(), peers);
  }

  void Run() {
    while (!stop.load()) {
      zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
      if (PollUnlessInterrupted(&item, 1, std::chrono::milliseconds(100)).value_or(0) == 0) continue;
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(socket, std::back_inserter(request))) continue;
      Answer(request);
    }
  }

  // ZAP (RFC 27): version, request id, domain, address, identity, mechanism, credentials.
  void Answer(const std::vector<zmq::message_t>& r) {
    std::string status = "400", text = "unknown key", user;
    if (r.size() >= 7 && r[5].to_string() == "CURVE" && r[6].size() == 32) {
      char z85[41];
      zmq_z85_encode(z85, static_cast<const uint8_t*>(r[6].data()), 32);
      Refresh();
      if (auto client = list.ClientOf(z85)) {
        status = "200";
        text = "OK";
        user = *client;
      } else {
        refused += 1;
        spdlog::warn("{}: refused a connection from {} with an unknown key {}", role, r[3].to_string(), z85);
      }
    }
    const std::string request_id = r.size() > 1 ? r[1].to_string() : "";
    std::array<zmq::const_buffer, 6> reply = {zmq::str_buffer("1.0"), zmq::buffer(request_id),
                                              zmq::buffer(status), zmq::buffer(text), zmq::buffer(user),
                                              zmq::const_buffer()};
    (void)zmq::send_multipart(socket, reply);
  }
};

ZapAuthenticator::ZapAuthenticator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<ZapAuthenticator>> ZapAuthenticator::Start(zmq::context_t& context, fs::path allow_list,
                                                                   std::string role, std::string peers) {
  auto impl = std::make_unique<Impl>(context);
  impl->path = std::move(allow_list);
  impl->role = std::move(role);
  impl->peers = std::move(peers);
  TRIBUTARY_ASSIGN_OR_RETURN(impl->list, AllowList::Load(impl->path));
  impl->loaded_version = LastChange(impl->path);
  impl->checked = Clock::now();
  try {
    impl->socket.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return MakeError(ErrorCode::kInternal, std::string("cannot bind the ZAP handler: ") + e.what());
  }
  spdlog::info("{}: CURVE authentication, allow-list {} with {} {} keys", impl->role, impl->path.string(),
               impl->list.size(), impl->peers);
  Impl* self = impl.get();
  impl->thread = std::thread([self] { self->Run(); });
  return std::unique_ptr<ZapAuthenticator>(new ZapAuthenticator(std::move(impl)));
}

uint64_t ZapAuthenticator::refused() const { return impl_->refused.load(); }

ZapAuthenticator::~ZapAuthenticator() {
  impl_->stop = true;
  impl_->thread.join();
}

}  // namespace tributary::keys
