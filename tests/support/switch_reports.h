// What a DescriptorSwitch reports through its callbacks, collected for tests.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "tributary/dataplane/descriptor_switch.h"

namespace tributary::testing {

struct SwitchReports {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<dataplane::Descriptor> undeliverable;
  std::vector<uint32_t> exits;

  // Callbacks that record into this object, which must outlive the switch.
  dataplane::SwitchCallbacks Callbacks() {
    dataplane::SwitchCallbacks cb;
    cb.on_undeliverable = [this](const dataplane::Descriptor& d) {
      std::lock_guard lock(mu);
      undeliverable.push_back(d);
      cv.notify_all();
    };
    cb.on_function_exit = [this](uint32_t fn) {
      std::lock_guard lock(mu);
      exits.push_back(fn);
      cv.notify_all();
    };
    return cb;
  }

  template <class Pred>
  bool WaitFor(Pred p) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(10), p);
  }
};

}  // namespace tributary::testing
