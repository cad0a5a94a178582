// pvio-xenstored's persistent state: an append-only journal of changes plus a snapshot, both
// in the state directory, so a killed or restarted daemon comes back with the same tree,
// domains, guest watches and guest transaction ids. Every record is length-prefixed and
// checksummed (CRC-32); every field read back is validated before it becomes state, so a torn
// or corrupt tail costs the records after the last whole one, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "pvio/xen/xen.h"
#include "pvio/xenstore/store.h"

namespace pvio::xs {

struct PersistedWatch {
  std::string path;   // canonical absolute path or "@name"
  std::string token;
  bool relative = false;
  bool operator==(const PersistedWatch&) const = default;
};

// Bytes of a request the daemon had taken off a guest's ring (req_cons published past them)
// without having a whole message yet: they precede ring index `end_index`.
struct PartialRequest {
  uint32_t end_index = 0;
  std::string bytes;
};

// The rest of a message (reply or watch event) of which only the first part fits into the
// guest's rsp[]: journaled before that part is written, so a restarted daemon completes the
// message at ring index `rsp_index` instead of leaving the guest half a message.
struct PendingOutput {
  uint32_t rsp_index = 0;
  std::string bytes;
};

struct PersistedDomain {
  uint64_t gfn = 0;
  evtchn_port_t port = 0;
  std::vector<PersistedWatch> watches;   // of the domain's ring connection, in order
  std::set<uint32_t> transactions;       // open when the daemon stopped
  // The last few transactions it ended and how: a TRANSACTION_END whose reply was lost is
  // read again from the ring after a restart and must get the same answer.
  std::map<uint32_t, XsError> ended;
  std::optional<PartialRequest> partial;
  std::optional<PendingOutput> output;
};

// Everything the daemon keeps across a restart.
// How many ended transactions a guest connection remembers (see PersistedDomain::ended).
inline constexpr std::size_t kRememberedTransactionEnds = 16;

struct PersistedState {
  std::map<std::string, Node, std::less<>> nodes;
  std::map<std::string, std::vector<NodePerm>, std::less<>> specials;
  std::map<domid_t, PersistedDomain> domains;
  uint32_t last_txid = 0;  // highest transaction id handed to a guest
};

// Appends typed records to a buffer; Journal::append() writes a buffer at once.
class RecordWriter {
 public:
  void node(const std::string& path, const Node& n);
  void node_removed(const std::string& path);
  void special_perms(const std::string& name, const std::vector<NodePerm>& perms);
  void domain(domid_t domid, uint64_t gfn, evtchn_port_t port);
  void domain_released(domid_t domid);
  void watch(domid_t domid, const PersistedWatch& w);
  void unwatch(domid_t domid, const std::string& path, const std::string& token);
  void connection_reset(domid_t domid);  // its watches and transactions are gone
  void transaction_start(domid_t domid, uint32_t txid);
  void transaction_end(domid_t domid, uint32_t txid, XsError result);
  void ring_partial(domid_t domid, uint32_t end_index, std::string_view bytes);
  void ring_boundary(domid_t domid);  // no partial request any more
  void ring_output(domid_t domid, uint32_t rsp_index, std::string_view bytes);
  void ring_output_done(domid_t domid);  // the message is complete on the ring
  // Every record that rebuilds `s`.
  void state(const PersistedState& s);

  bool empty() const { return buf_.empty(); }
  const std::string& bytes() const { return buf_; }
  void clear() { buf_.clear(); }

 private:
  friend class RecordBody;
  std::string buf_;
};

// What reading a journal or snapshot found.
struct LoadReport {
  uint64_t records = 0;        // applied
  uint64_t rejected = 0;       // whole and checksummed but invalid: skipped
  bool truncated = false;      // the file ended inside a record, or a checksum failed
  uint64_t good_bytes = 0;     // offset just past the last whole record
  std::string detail;          // why reading stopped early, for the log
};

// Applies the records in `data` (no file header) to `state`.
LoadReport apply_records(std::string_view data, PersistedState& state);

class Journal {
 public:
  enum class Sync {
    None,    // write(2) before each reply: survives the daemon's death, not the host's
    Always,  // fdatasync(2) after each write as well
  };

  // Opens `dir`/xenstored.{snapshot,journal} (creating the directory and files as needed)
  // and reads the snapshot, then the journal's records, into `state`. A torn or corrupt
  // journal tail is cut off at the last whole record, with a log line. nullptr (errno set)
  // only if the directory or files cannot be opened, or another daemon holds the directory
  // (EWOULDBLOCK).
  static std::unique_ptr<Journal> open(const std::string& dir, Sync sync,
                                       PersistedState& state);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Writes the records in one write(2). false if the disk refused (logged).
  bool append(const RecordWriter& records);
  // Replaces snapshot and journal with one snapshot of `s` (written to a temporary file,
  // fsynced, renamed), then starts an empty journal. false on failure (the old files stay).
  bool snapshot(const PersistedState& s);

  uint64_t journal_bytes() const { return journal_bytes_; }
  const std::string& dir() const { return dir_; }
  static std::string snapshot_path(const std::string& dir);
  static std::string journal_path(const std::string& dir);

 private:
  Journal(std::string dir, Sync sync) : dir_(std::move(dir)), sync_(sync) {}
  bool start_journal(uint64_t generation);

  std::string dir_;
  Sync sync_;
  int fd_ = -1;
  int lock_fd_ = -1;
  uint64_t generation_ = 0;
  uint64_t journal_bytes_ = 0;
};

}  // namespace pvio::xs
