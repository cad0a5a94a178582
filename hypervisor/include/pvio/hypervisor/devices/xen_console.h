// The PV console backend of one pvio-hv domain (what xenconsoled does for a Xen guest): drains
// the guest's console ring (HVM_PARAM_CONSOLE_PFN, kicked through HVM_PARAM_CONSOLE_EVTCHN)
// to a log file and to the client attached on a unix socket (`pvio console N`), and puts the
// client's keystrokes into the ring's in[] for the guest.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "pvio/control/socket.h"
#include "pvio/xen/io/console.h"

namespace pvio::hv {

struct ConsoleStats {
  std::uint64_t bytes_out = 0;       // guest -> log/client
  std::uint64_t bytes_in = 0;        // client -> guest
  std::uint64_t invalid_rings = 0;   // out_prod more than a ring ahead of out_cons
  std::uint64_t clients = 0;         // clients attached so far
};

class XenConsole {
 public:
  // `ring`: the console page as the VMM maps it; `notify_guest`: raise the guest's console
  // port; `log_fd`: where output is appended (-1: none). Not owned.
  XenConsole(xen::xencons_interface* ring, std::function<void()> notify_guest, int log_fd);
  ~XenConsole();
  XenConsole(const XenConsole&) = delete;
  XenConsole& operator=(const XenConsole&) = delete;

  // Listens on `socket_path` for one client at a time and starts the console thread (also
  // without a socket: pass ""). 0 or -errno.
  int start(const std::string& socket_path);
  // The guest sent on its console port (any thread).
  void kick();
  // Drains what is left and stops the thread.
  void stop();
  ConsoleStats stats() const;

 private:
  void loop();
  void drain_output();
  void feed_input();
  void accept_client();

  xen::xencons_interface* ring_;
  std::function<void()> notify_guest_;
  int log_fd_;
  std::string socket_path_;
  control::UniqueFd listen_fd_, client_fd_, kick_fd_, stop_fd_;
  std::string pending_in_;  // client bytes the ring had no room for yet (console thread)
  std::thread thread_;
  std::atomic<std::uint64_t> bytes_out_{0}, bytes_in_{0}, invalid_rings_{0}, clients_{0};
};

}  // namespace pvio::hv
