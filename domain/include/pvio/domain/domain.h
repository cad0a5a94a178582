// A user-mode guest domain: a Linux process whose memory is a memfd, with Xen's per-domain
// pages laid out in it (shared_info, xenstore ring, grant-table frames), its own event-channel
// port table, and the domain control protocol served on a unix socket so Dom0 services can
// attach. An epoll loop scans shared_info on upcalls and calls the handlers of in-process
// frontends.
//
// Guest-physical layout (one region at gpa 0, `memory_bytes` long):
//   gfn 0                    shared_info
//   gfn 1                    xenstore ring (xenstore_domain_interface)
//   gfn 2 .. 2+G-1           grant-table frames (G = nr_grant_frames, v1 entries); reserved
//                            ref 1 (GNTTAB_RESERVED_XENSTORE) grants the xenstore page to Dom0
//   gfn 2+G ..               free RAM for frontends (alloc_pages)
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "pvio/control/dom0_ports.h"
#include "pvio/control/server.h"
#include "pvio/event_channel/port_table.h"
#include "pvio/grant_table/grant_table.h"
#include "pvio/grant_table/guest_memory.h"
#include "pvio/xen/io/xs_wire.h"

namespace pvio::domain {

inline constexpr std::uint64_t kSharedInfoGfn = 0;
inline constexpr std::uint64_t kXenstoreGfn = 1;
inline constexpr std::uint64_t kFirstGrantFrameGfn = 2;

// The xenstore ring page is Xen's struct xenstore_domain_interface, as xenstore/ defines it.
using xs::xenstore_domain_interface;

struct DomainConfig {
  domid_t domid = 1;
  std::uint64_t memory_bytes = 16u << 20;
  std::uint32_t nr_grant_frames = 4;
  std::string socket_path;  // empty: control::domain_socket_path(domid)
};

class Domain final {
 public:
  using Handler = std::function<void(evtchn_port_t)>;

  // Creates the memory, pages, port table (with the xenstore port allocated unbound for
  // Dom0) and the control socket. 0 or -errno.
  static int create(const DomainConfig& cfg, std::unique_ptr<Domain>* out);
  ~Domain();

  domid_t domid() const { return domid_; }
  const std::string& socket_path() const { return server_->path(); }
  const GuestMemory& memory() const { return memory_; }
  std::uint64_t memory_bytes() const { return memory_bytes_; }
  evtchn::shared_info* shared_info() const { return shared_info_; }
  xenstore_domain_interface* xenstore_interface() const { return xenstore_; }
  std::uint64_t xenstore_gfn() const { return kXenstoreGfn; }
  evtchn_port_t xenstore_port() const { return xenstore_port_; }
  std::span<const std::uint64_t> grant_frame_gfns() const { return grant_frame_gfns_; }
  // The granting side over this domain's grant frames, for in-process frontends. Not
  // synchronised (see grant_table.h): frontends on several threads serialise their calls.
  gnttab::GrantTable& grant_table() { return *grant_table_; }
  // Host address of guest frame `gfn`, or null.
  std::uint8_t* page(std::uint64_t gfn) const { return memory_.frame(gfn); }
  // Takes `n` contiguous free pages; returns their first gfn via `gfn`. 0 or -ENOMEM.
  int alloc_pages(std::uint64_t n, std::uint64_t* gfn);

  // Frontend API (thread-safe). An unbound port offered to `remote_dom`; `handler` runs on the
  // loop thread whenever the port fires.
  evtchn::PortResult alloc_unbound(domid_t remote_dom, Handler handler);
  int set_handler(evtchn_port_t port, Handler handler);
  // Replaces the loop's own upcall scan: the hook is called on the loop thread for every
  // upcall and scans shared_info itself (a guest kernel's interrupt handler, as the Windows
  // test environment runs xenbus's ISR). nullptr restores the scan.
  void set_upcall_hook(std::function<void()> hook);
  int send(evtchn_port_t port);  // EVTCHNOP_send
  int close(evtchn_port_t port);  // EVTCHNOP_close
  void mask(evtchn_port_t port);
  int unmask(evtchn_port_t port);  // EVTCHNOP_unmask
  int status(evtchn_port_t port, evtchn::ChannelStatus* out) const;
  std::size_t attached_clients() const;
  // Grant entries whose busy bits were released after a Dom0 service died holding them.
  std::uint64_t released_grants() const { return released_grants_.load(std::memory_order_relaxed); }

  // The loop: control socket, upcalls, stop requests. run() returns after stop().
  int run();
  // One round: waits up to timeout_ms (-1 forever). Returns 0, or -errno.
  int run_once(int timeout_ms);
  // Thread- and async-signal-safe.
  void stop();

 private:
  Domain() = default;
  void handle_upcall();

  // What ATTACH hands out (loop thread).
  control::DomainDescription describe();

  domid_t domid_ = 0;
  std::uint64_t memory_bytes_ = 0;
  control::UniqueFd memfd_;
  std::uint8_t* mem_ = nullptr;
  GuestMemory memory_;
  evtchn::shared_info* shared_info_ = nullptr;
  xenstore_domain_interface* xenstore_ = nullptr;
  std::vector<std::uint64_t> grant_frame_gfns_;
  std::vector<gnttab::grant_entry_v1*> grant_frames_;
  std::vector<grant_ref_t> grant_free_;
  std::unique_ptr<gnttab::GrantTable> grant_table_;
  std::atomic<std::uint64_t> released_grants_{0};
  control::RegionDesc region_{};
  std::uint64_t next_free_gfn_ = 0;
  std::function<void()> upcall_hook_;  // under mu_
  evtchn_port_t xenstore_port_ = 0;

  control::UniqueFd upcall_fd_;
  control::UniqueFd stop_fd_;
  control::UniqueFd epoll_;
  std::unique_ptr<evtchn::UpcallNotifier> upcall_;

  mutable std::mutex mu_;  // guards ports_, handlers_, dom0_ports_
  std::unique_ptr<evtchn::PortTable> ports_;
  std::vector<Handler> handlers_;
  std::unique_ptr<control::Dom0Ports> dom0_ports_;  // the control server's backend

  std::unique_ptr<control::ControlServer> server_;
};

}  // namespace pvio::domain
