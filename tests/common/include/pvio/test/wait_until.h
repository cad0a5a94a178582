// Polling for a condition another thread or process makes true, with a deadline.
#pragma once

#include <chrono>
#include <thread>

namespace pvio::test {

// True as soon as `p()` is, checked every `poll_ms` for up to `timeout_ms`; then once more.
template <typename Pred>
bool wait_until(Pred p, int timeout_ms, int poll_ms = 10) {
  for (int i = 0; i < timeout_ms / poll_ms; ++i) {
    if (p()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  return p();
}

}  // namespace pvio::test
