// Test hosts as network namespaces on one machine (the cluster tests).
//
// TestNetwork::Create makes one namespace per host, each with an `eth0`
// joined to a bridge that lives in a namespace of its own, with addresses
// from 169.254.77.0/24 and fd42:7472:6962::/64 assigned inside the
// namespaces only; its destructor removes them all (also after a failure),
// and Create first removes namespaces left by a test process that died.
// Traffic to those addresses must start inside a namespace: Spawn runs a
// program in one (`ip netns exec`), InNamespace runs a function in a forked
// child that joined one. Shared memory is not separated by namespaces.
//
// Needs root and iproute2; Privileged() says why not otherwise.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace tributary::testing {

// Empty if this process may create network namespaces, else the reason.
inline std::string NetnsUnavailable() {
  if (geteuid() != 0) return "network namespaces need root";
  if (std::system("command -v ip >/dev/null 2>&1") != 0) return "iproute2 (ip) is not installed";
  return "";
}

class TestNetwork {
 public:
  // Hosts get 169.254.77.<10 + index> and fd42:7472:6962::<10 + index>.
  static std::unique_ptr<TestNetwork> Create(const std::vector<std::string>& hosts, std::string* error) {
    RemoveStale();
    auto net = std::unique_ptr<TestNetwork>(new TestNetwork());
    net->prefix_ = "trb" + std::to_string(getpid());
    const std::string br = net->prefix_ + "-br";
    net->namespaces_.push_back(br);
    std::vector<std::string> cmds = {"ip netns add " + br, "ip -n " + br + " link add br0 type bridge",
                                     "ip -n " + br + " link set br0 up", "ip -n " + br + " link set lo up"};
    for (size_t i = 0; i < hosts.size(); ++i) {
      const std::string ns = net->prefix_ + "-" + hosts[i];
      const std::string v = "v" + std::to_string(i);
      const std::string v4 = "169.254.77." + std::to_string(10 + i);
      const std::string v6 = "fd42:7472:6962::" + std::to_string(10 + i);
      net->namespaces_.push_back(ns);
      net->hosts_[hosts[i]] = {ns, v4, v6};
      cmds.insert(cmds.end(), {"ip netns add " + ns, "ip -n " + br + " link add " + v + " type veth peer name eth0 netns " + ns,
                               "ip -n " + br + " link set " + v + " master br0 up", "ip -n " + ns + " link set lo up",
                               "ip -n " + ns + " addr add " + v4 + "/24 dev eth0",
                               "ip -n " + ns + " addr add " + v6 + "/64 dev eth0 nodad",
                               "ip -n " + ns + " link set eth0 up"});
    }
    for (const std::string& c : cmds) {
      if (std::system((c + " 2>/tmp/" + net->prefix_ + ".err").c_str()) != 0) {
        std::ifstream in("/tmp/" + net->prefix_ + ".err");
        *error = c + ": " + std::string(std::istreambuf_iterator<char>(in), {});
        return nullptr;
      }
    }
    std::remove(("/tmp/" + net->prefix_ + ".err").c_str());
    return net;
  }

  ~TestNetwork() {
    for (auto& [pid, name] : children_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    for (const std::string& ns : namespaces_) (void)std::system(("ip netns del " + ns + " 2>/dev/null").c_str());
  }

  const std::string& Address(const std::string& host) const { return hosts_.at(host).v4; }
  const std::string& Namespace(const std::string& host) const { return hosts_.at(host).ns; }

  // Runs `argv` in `host`'s namespace, stdout and stderr to `log`.
  pid_t Spawn(const std::string& host, const std::vector<std::string>& argv, const std::string& log) {
    std::vector<std::string> full = {"ip", "netns", "exec", Namespace(host)};
    full.insert(full.end(), argv.begin(), argv.end());
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> args;
      for (std::string& a : full) args.push_back(a.data());
      args.push_back(nullptr);
      ::execvp("ip", args.data());
      ::_exit(127);
    }
    children_[pid] = argv.empty() ? "" : argv[0];
    return pid;
  }

  // Signals a spawned process and reaps it (SIGKILL, or SIGTERM with a wait).
  int Stop(pid_t pid, int signal) {
    ::kill(pid, signal);
    int status = 0;
    ::waitpid(pid, &status, 0);
    children_.erase(pid);
    return status;
  }

  bool Running(pid_t pid) {
    if (::waitpid(pid, nullptr, WNOHANG) == 0) return true;
    children_.erase(pid);  // reaped: its pid may be reused, never signal it again
    return false;
  }

  // `fn` in a forked child inside `host`'s namespace; its result comes back
  // through a pipe (nullopt if the child failed). The caller must not hold
  // threads whose locks the child would need: the child runs `fn` alone.
  std::optional<std::string> InNamespace(const std::string& host, const std::function<std::string()>& fn) {
    int pipefd[2];
    if (::pipe(pipefd) != 0) return std::nullopt;
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(pipefd[0]);
      const int ns = ::open(("/var/run/netns/" + Namespace(host)).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) ::_exit(2);
      const std::string out = fn();
      size_t at = 0;
      while (at < out.size()) {
        const ssize_t n = ::write(pipefd[1], out.data() + at, out.size() - at);
        if (n <= 0) ::_exit(3);
        at += static_cast<size_t>(n);
      }
      ::_exit(0);
    }
    ::close(pipefd[1]);
    std::string out;
    char buf[65536];
    for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
    ::close(pipefd[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
    return out;
  }

 private:
  TestNetwork() = default;

  // Namespaces of test processes that no longer run.
  static void RemoveStale() {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/var/run/netns", ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("trb", 0) != 0) continue;
      const pid_t owner = std::atoi(name.c_str() + 3);
      if (owner > 0 && ::kill(owner, 0) != 0) (void)std::system(("ip netns del " + name + " 2>/dev/null").c_str());
    }
  }

  struct Host {
    std::string ns, v4, v6;
  };
  std::string prefix_;
  std::vector<std::string> namespaces_;
  std::map<std::string, Host> hosts_;
  std::map<pid_t, std::string> children_;
};

}  // namespace tributary::testing
