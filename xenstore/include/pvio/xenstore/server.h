// The xenstore daemon's core: connections (one per Dom0 socket client or guest ring), request
// dispatch over the Store, watches, transactions, and the domain records INTRODUCE creates.
// Transport-independent and single threaded: transports feed it complete messages.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pvio/xen/xen.h"
#include "pvio/xenstore/journal.h"
#include "pvio/xenstore/protocol.h"
#include "pvio/xenstore/store.h"
#include "pvio/xen/io/xs_wire.h"

namespace pvio::xs {

class Server;
class RingTransport;
using ConnId = uint32_t;

// The sending half of a transport. The server queues complete messages (replies and watch
// events); the transport delivers them when the peer has room.
class Connection {
 public:
  virtual ~Connection() = default;
  virtual void send(std::string_view message) = 0;
  virtual std::size_t pending_output() const = 0;
};

// Reaches a guest's xenstore ring for INTRODUCE(domid, gfn, port): maps the page and binds the
// event channel, returning the server side transport, or nullptr if the domain is unreachable.
class DomainConnector {
 public:
  virtual ~DomainConnector() = default;
  virtual std::unique_ptr<RingTransport> connect(domid_t domid, uint64_t gfn,
                                                 evtchn_port_t port) = 0;
};

struct ServerStats {
  uint64_t requests = 0;
  uint64_t error_replies = 0;
  uint64_t invalid_requests = 0;     // failed to parse
  uint64_t watch_events = 0;
  uint64_t dropped_watch_events = 0;  // peer not reading its output
  uint64_t dropped_connections = 0;
  uint64_t journal_failures = 0;      // appends the disk refused
  uint64_t snapshots = 0;
};

class Server {
 public:
  // Watch events are dropped for a connection with more output than this pending.
  static constexpr std::size_t kMaxPendingOutput = 1 << 20;

  explicit Server(Quotas q = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  ConnId attach(domid_t domid, Connection* conn);
  // Forgets a connection (its watches and transactions). Safe to call from inside handle().
  void detach(ConnId id, bool dropped = false);
  // One complete message from connection `id`.
  void handle(ConnId id, const xsd_sockmsg& hdr, std::span<const char> payload);

  void set_domain_connector(DomainConnector* c) { connector_ = c; }
  bool domain_introduced(domid_t domid) const;
  RingTransport* domain_transport(domid_t domid);
  // What XS_RELEASE does, for the daemon itself (the domain died, its ring broke): forgets the
  // domain, destroys its transport and fires @releaseDomain. Not from inside that transport's
  // own on_kick(). false if `domid` was not introduced.
  bool release_domain(domid_t domid);

  // Persistence: every change is appended to `j` before anyone (the requester or a watcher)
  // can see it; a snapshot replaces the journal once it grows past `snapshot_bytes`.
  void set_journal(Journal* j, uint64_t snapshot_bytes = 8u << 20);
  // The state a snapshot holds: the tree, special perms, introduced domains with their ring
  // connection's watches and open transactions.
  PersistedState persisted_state() const;
  // Writes a snapshot now (e.g. at shutdown). false without a journal or on failure.
  bool snapshot();
  // After a restart, before serving: loads the tree, re-attaches every domain through the
  // connector (from the ring's current indices), restores its watches and marks its open
  // transactions as lost (their next use answers EAGAIN), then fires every restored watch
  // once with its own path, as Xen does after a live update. Returns the domains reattached.
  std::size_t restore(PersistedState state);

  // A ring transport took bytes of an unfinished request off the ring (req_cons moved past
  // them): they are journaled so a restarted daemon can finish the message. `end_index` is
  // the ring index just past them.
  void ring_partial(ConnId id, uint32_t end_index, std::string_view bytes);
  void ring_boundary(ConnId id);  // the unfinished request is complete now
  // A ring transport is about to write only the first part of a message: `bytes` is the
  // rest, to go at rsp index `rsp_index`. nullopt: the message it had journaled is complete.
  void ring_output(ConnId id, std::optional<PendingOutput> rest);

  Store& store() { return store_; }
  const ServerStats& stats() const { return stats_; }
  std::size_t connection_count() const;

 private:
  struct Watch {
    std::string path;   // canonical absolute path or "@name"
    std::string token;
    bool relative;      // registered relative: events report paths relative to the domain
  };
  struct Conn {
    domid_t domid;
    Connection* out;
    bool dead = false;
    std::vector<Watch> watches;
    std::map<uint32_t, std::unique_ptr<Transaction>> transactions;
    std::set<uint32_t> lost_transactions;  // open when the daemon restarted: EAGAIN
    std::map<uint32_t, XsError> ended_transactions;  // guests only: the last few answers
    bool restored = false;  // a guest connection brought back by restore()
  };
  struct Domain {
    uint64_t gfn;
    evtchn_port_t port;
    std::unique_ptr<RingTransport> transport;
  };

  // The reply to one request: a payload or an error.
  struct Reply {
    XsError error = XsError::None;
    std::string payload;
  };

  Reply dispatch(ConnId id, Conn& c, const xsd_sockmsg& hdr, const Request& req);
  Reply do_introduce(const Caller& who, const ReqIntroduce& r);
  Reply do_release(const Caller& who, const ReqRelease& r);
  void fire(const std::vector<Change>& changes);
  void fire_special(std::string_view name);
  void send_event(Conn& c, const Watch& w, const std::string& abs_path);
  void reap();
  // Journals what changed since the last call (dirty nodes and the records queued in
  // pending_); called before any reply or watch event leaves the daemon.
  void persist();
  bool persisted_conn(const Conn& c) const { return journal_ != nullptr && c.domid != 0; }
  // Journals and remembers how a guest's transaction ended.
  void transaction_ended(Conn& c, uint32_t txid, XsError result);

  Store store_;
  std::map<ConnId, Conn> conns_;
  std::map<domid_t, Domain> domains_;
  DomainConnector* connector_ = nullptr;
  ConnId next_conn_ = 1;
  uint32_t next_tx_ = 1;
  int depth_ = 0;  // nesting of handle(); detached connections are reaped at depth 0
  ServerStats stats_;
  Journal* journal_ = nullptr;
  uint64_t snapshot_bytes_ = 0;
  RecordWriter pending_;
};

}  // namespace pvio::xs
