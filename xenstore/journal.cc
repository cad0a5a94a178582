// pvio-xenstored's journal and snapshot; see journal.h. Format (little endian):
//   file   := magic[8] generation:u64 record*
//   record := body_len:u32 crc32(body):u32 body
//   body   := type:u8 field*; strings are len:u32 + bytes, perms are count:u32 + (domid:u16
//             perm:u8)*, node children are count:u32 + string*
#include "pvio/xenstore/journal.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <set>

namespace pvio::xs {
namespace {

constexpr char kSnapshotMagic[8] = {'P', 'V', 'X', 'S', 'S', 'N', 'A', 'P'};
constexpr char kJournalMagic[8] = {'P', 'V', 'X', 'S', 'J', 'R', 'N', 'L'};
constexpr std::size_t kFileHeader = 16;
constexpr std::size_t kRecordHeader = 8;
// No record is larger: a node's value is one message's payload at most, and a node's children
// are bounded by what fits in the tree; 16 MiB leaves room for very wide directories.
constexpr uint32_t kMaxBody = 16u << 20;
// Bounds for what a guest can have had: well above the quotas, so a quota change never
// loses state, but small enough that a corrupt file cannot make us allocate without limit.
constexpr std::size_t kMaxWatchesPerDomain = 4096;
constexpr std::size_t kMaxTransactionsPerDomain = 1024;

enum class RecordType : uint8_t {
  Node = 1,
  NodeRemoved = 2,
  SpecialPerms = 3,
  Domain = 4,
  DomainReleased = 5,
  Watch = 6,
  Unwatch = 7,
  ConnectionReset = 8,
  TransactionStart = 9,
  TransactionEnd = 10,
  RingPartial = 11,
  RingBoundary = 12,
  LastTxid = 13,
  End = 14,  // closes a snapshot: one without it was not written completely
  RingOutput = 15,
  RingOutputDone = 16,
};

uint32_t crc(std::string_view s) {
  return static_cast<uint32_t>(
      ::crc32(0L, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}

template <typename T>
void put_int(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // x86_64 and every host we build for are little endian
  out.append(b, sizeof(T));
}

void put_str(std::string& out, std::string_view s) {
  put_int<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

void put_perms(std::string& out, const std::vector<NodePerm>& perms) {
  put_int<uint32_t>(out, static_cast<uint32_t>(perms.size()));
  for (const auto& p : perms) {
    put_int<uint16_t>(out, p.domid);
    put_int<uint8_t>(out, static_cast<uint8_t>(p.perm));
  }
}

// Bounds-checked reading of one record body; any short read makes the whole record invalid.
class BodyReader {
 public:
  explicit BodyReader(std::string_view b) : b_(b) {}
  template <typename T>
  bool get(T& v) {
    if (b_.size() < sizeof(T)) return false;
    std::memcpy(&v, b_.data(), sizeof(T));
    b_.remove_prefix(sizeof(T));
    return true;
  }
  bool str(std::string& s, std::size_t max) {
    uint32_t n = 0;
    if (!get(n) || n > max || n > b_.size()) return false;
    s.assign(b_.data(), n);
    b_.remove_prefix(n);
    return true;
  }
  bool perms(std::vector<NodePerm>& out) {
    uint32_t n = 0;
    // An entry is 3 bytes: a count beyond what is left is corrupt, not a reason to allocate.
    if (!get(n) || n == 0 || n > b_.size() / 3) return false;
    out.clear();
    for (uint32_t i = 0; i < n; ++i) {
      uint16_t d = 0;
      uint8_t p = 0;
      if (!get(d) || !get(p) || p > static_cast<uint8_t>(XsPerm::Both)) return false;
      out.push_back({d, static_cast<XsPerm>(p)});
    }
    return true;
  }
  bool done() const { return b_.empty(); }
  std::size_t left() const { return b_.size(); }

 private:
  std::string_view b_;
};

bool valid_node_path(const std::string& p) {
  return !p.empty() && p[0] == '/' && canonical_path(0, p, false) == p;
}

bool valid_watch_path(const std::string& p) {
  return !p.empty() && (p[0] == '/' || p[0] == '@') && canonical_path(0, p, true) == p;
}

bool valid_child_name(const std::string& n) {
  return !n.empty() && n.find('/') == std::string::npos && n.size() < XENSTORE_ABS_PATH_MAX &&
         canonical_path(0, "/" + n, false) == "/" + n;
}

bool valid_guest(domid_t d) { return d != 0 && d < kDomidSelf; }

bool read_whole(int fd, std::string& out) {
  out.clear();
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

bool write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::write(fd, s.data(), s.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string file_header(const char (&magic)[8], uint64_t generation) {
  std::string h(magic, 8);
  put_int<uint64_t>(h, generation);
  return h;
}

// Applies one validated record body; false if it is malformed or refers to nothing.
bool apply_one(std::string_view body, PersistedState& st, bool& end) {
  BodyReader r(body);
  uint8_t type_byte = 0;
  if (!r.get(type_byte)) return false;
  const auto type = static_cast<RecordType>(type_byte);
  switch (type) {
    case RecordType::Node: {
      std::string path;
      Node n;
      uint32_t nkids = 0;
      if (!r.str(path, XENSTORE_ABS_PATH_MAX) || !valid_node_path(path)) return false;
      if (!r.str(n.value, XENSTORE_PAYLOAD_MAX) || !r.perms(n.perms)) return false;
      if (!r.get(nkids) || nkids > r.left() / 4) return false;
      std::set<std::string, std::less<>> seen;
      for (uint32_t i = 0; i < nkids; ++i) {
        std::string k;
        if (!r.str(k, XENSTORE_ABS_PATH_MAX) || !valid_child_name(k)) return false;
        if (!seen.insert(k).second) return false;
        n.children.push_back(std::move(k));
      }
      if (!r.done()) return false;
      st.nodes.insert_or_assign(std::move(path), std::move(n));
      return true;
    }
    case RecordType::NodeRemoved: {
      std::string path;
      if (!r.str(path, XENSTORE_ABS_PATH_MAX) || !valid_node_path(path) || !r.done())
        return false;
      if (path == "/") return false;  // the root always exists
      st.nodes.erase(path);
      return true;
    }
    case RecordType::SpecialPerms: {
      std::string name;
      std::vector<NodePerm> perms;
      if (!r.str(name, 64) || !r.perms(perms) || !r.done()) return false;
      if (name != "@introduceDomain" && name != "@releaseDomain") return false;
      st.specials[name] = std::move(perms);
      return true;
    }
    case RecordType::Domain: {
      uint16_t domid = 0;
      uint64_t gfn = 0;
      uint32_t port = 0;
      if (!r.get(domid) || !r.get(gfn) || !r.get(port) || !r.done() || !valid_guest(domid))
        return false;
      PersistedDomain d;
      d.gfn = gfn;
      d.port = port;
      st.domains[domid] = std::move(d);  // a fresh ring: nothing of an earlier one survives
      return true;
    }
    case RecordType::DomainReleased:
    case RecordType::ConnectionReset:
    case RecordType::RingOutputDone:
    case RecordType::RingBoundary: {
      uint16_t domid = 0;
      if (!r.get(domid) || !r.done()) return false;
      auto it = st.domains.find(domid);
      if (it == st.domains.end()) return false;
      if (type == RecordType::DomainReleased) {
        st.domains.erase(it);
      } else if (type == RecordType::ConnectionReset) {
        it->second.watches.clear();
        it->second.transactions.clear();
      } else if (type == RecordType::RingOutputDone) {
        it->second.output.reset();
      } else {
        it->second.partial.reset();
      }
      return true;
    }
    case RecordType::Watch:
    case RecordType::Unwatch: {
      uint16_t domid = 0;
      PersistedWatch w;
      uint8_t rel = 0;
      if (!r.get(domid) || !r.str(w.path, XENSTORE_ABS_PATH_MAX) || !valid_watch_path(w.path) ||
          !r.str(w.token, XENSTORE_PAYLOAD_MAX))
        return false;
      if (type == RecordType::Watch && (!r.get(rel) || rel > 1)) return false;
      if (!r.done()) return false;
      auto it = st.domains.find(domid);
      if (it == st.domains.end()) return false;
      auto& ws = it->second.watches;
      auto same = [&](const PersistedWatch& x) { return x.path == w.path && x.token == w.token; };
      if (type == RecordType::Unwatch) {
        std::erase_if(ws, same);
        return true;
      }
      if (std::any_of(ws.begin(), ws.end(), same) || ws.size() >= kMaxWatchesPerDomain)
        return false;
      w.relative = rel == 1;
      ws.push_back(std::move(w));
      return true;
    }
    case RecordType::TransactionStart:
    case RecordType::TransactionEnd: {
      uint16_t domid = 0;
      uint32_t txid = 0;
      uint8_t result = 0;
      if (!r.get(domid) || !r.get(txid) || txid == 0) return false;
      if (type == RecordType::TransactionEnd &&
          (!r.get(result) || result > static_cast<uint8_t>(XsError::Perm)))
        return false;
      if (!r.done()) return false;
      auto it = st.domains.find(domid);
      if (it == st.domains.end()) return false;
      auto& txs = it->second.transactions;
      if (type == RecordType::TransactionEnd) {
        txs.erase(txid);
        auto& ended = it->second.ended;
        ended[txid] = static_cast<XsError>(result);
        if (ended.size() > kRememberedTransactionEnds) ended.erase(ended.begin());
        return true;
      }
      if (txs.size() >= kMaxTransactionsPerDomain) return false;
      txs.insert(txid);
      st.last_txid = std::max(st.last_txid, txid);
      return true;
    }
    case RecordType::RingPartial: {
      uint16_t domid = 0;
      PartialRequest p;
      if (!r.get(domid) || !r.get(p.end_index) ||
          !r.str(p.bytes, sizeof(xsd_sockmsg) + XENSTORE_PAYLOAD_MAX) || !r.done() ||
          p.bytes.empty())
        return false;
      auto it = st.domains.find(domid);
      if (it == st.domains.end()) return false;
      it->second.partial = std::move(p);
      return true;
    }
    case RecordType::RingOutput: {
      uint16_t domid = 0;
      PendingOutput o;
      if (!r.get(domid) || !r.get(o.rsp_index) ||
          !r.str(o.bytes, sizeof(xsd_sockmsg) + XENSTORE_PAYLOAD_MAX) || !r.done() ||
          o.bytes.empty())
        return false;
      auto it = st.domains.find(domid);
      if (it == st.domains.end()) return false;
      it->second.output = std::move(o);
      return true;
    }
    case RecordType::LastTxid: {
      uint32_t txid = 0;
      if (!r.get(txid) || !r.done()) return false;
      st.last_txid = std::max(st.last_txid, txid);
      return true;
    }
    case RecordType::End:
      if (!r.done()) return false;
      end = true;
      return true;
  }
  return false;  // unknown type
}

LoadReport apply_records_until(std::string_view data, PersistedState& state, bool* saw_end) {
  LoadReport rep;
  std::size_t off = 0;
  while (off < data.size()) {
    if (data.size() - off < kRecordHeader) {
      rep.truncated = true;
      rep.detail = "a record header is cut short";
      break;
    }
    uint32_t len = 0, sum = 0;
    std::memcpy(&len, data.data() + off, 4);
    std::memcpy(&sum, data.data() + off + 4, 4);
    if (len == 0 || len > kMaxBody) {
      rep.truncated = true;
      rep.detail = "a record length of " + std::to_string(len) + " bytes is impossible";
      break;
    }
    if (data.size() - off - kRecordHeader < len) {
      rep.truncated = true;
      rep.detail = "the last record is cut short";
      break;
    }
    std::string_view body = data.substr(off + kRecordHeader, len);
    if (crc(body) != sum) {
      rep.truncated = true;
      rep.detail = "a record's checksum does not match";
      break;
    }
    bool end = false;
    if (apply_one(body, state, end))
      ++rep.records;
    else
      ++rep.rejected;
    off += kRecordHeader + len;
    if (end) {
      if (saw_end != nullptr) *saw_end = true;
      break;
    }
  }
  rep.good_bytes = off;
  return rep;
}

}  // namespace

// ---- writing records ----

// Builds one record in place: reserves the header, then fills in length and checksum.
class RecordBody {
 public:
  RecordBody(RecordWriter& w, RecordType t) : out_(w.buf_), start_(w.buf_.size()) {
    out_.append(kRecordHeader, '\0');
    put_int<uint8_t>(out_, static_cast<uint8_t>(t));
  }
  ~RecordBody() {
    std::string_view body(out_.data() + start_ + kRecordHeader,
                          out_.size() - start_ - kRecordHeader);
    const uint32_t len = static_cast<uint32_t>(body.size());
    const uint32_t sum = crc(body);
    std::memcpy(out_.data() + start_, &len, 4);
    std::memcpy(out_.data() + start_ + 4, &sum, 4);
  }
  std::string& out() { return out_; }

 private:
  std::string& out_;
  std::size_t start_;
};

void RecordWriter::node(const std::string& path, const Node& n) {
  RecordBody b(*this, RecordType::Node);
  put_str(b.out(), path);
  put_str(b.out(), n.value);
  put_perms(b.out(), n.perms);
  put_int<uint32_t>(b.out(), static_cast<uint32_t>(n.children.size()));
  for (const auto& k : n.children) put_str(b.out(), k);
}

void RecordWriter::node_removed(const std::string& path) {
  RecordBody b(*this, RecordType::NodeRemoved);
  put_str(b.out(), path);
}

void RecordWriter::special_perms(const std::string& name, const std::vector<NodePerm>& perms) {
  RecordBody b(*this, RecordType::SpecialPerms);
  put_str(b.out(), name);
  put_perms(b.out(), perms);
}

void RecordWriter::domain(domid_t domid, uint64_t gfn, evtchn_port_t port) {
  RecordBody b(*this, RecordType::Domain);
  put_int<uint16_t>(b.out(), domid);
  put_int<uint64_t>(b.out(), gfn);
  put_int<uint32_t>(b.out(), port);
}

void RecordWriter::domain_released(domid_t domid) {
  RecordBody b(*this, RecordType::DomainReleased);
  put_int<uint16_t>(b.out(), domid);
}

void RecordWriter::watch(domid_t domid, const PersistedWatch& w) {
  RecordBody b(*this, RecordType::Watch);
  put_int<uint16_t>(b.out(), domid);
  put_str(b.out(), w.path);
  put_str(b.out(), w.token);
  put_int<uint8_t>(b.out(), w.relative ? 1 : 0);
}

void RecordWriter::unwatch(domid_t domid, const std::string& path, const std::string& token) {
  RecordBody b(*this, RecordType::Unwatch);
  put_int<uint16_t>(b.out(), domid);
  put_str(b.out(), path);
  put_str(b.out(), token);
}

void RecordWriter::connection_reset(domid_t domid) {
  RecordBody b(*this, RecordType::ConnectionReset);
  put_int<uint16_t>(b.out(), domid);
}

void RecordWriter::transaction_start(domid_t domid, uint32_t txid) {
  RecordBody b(*this, RecordType::TransactionStart);
  put_int<uint16_t>(b.out(), domid);
  put_int<uint32_t>(b.out(), txid);
}

void RecordWriter::transaction_end(domid_t domid, uint32_t txid, XsError result) {
  RecordBody b(*this, RecordType::TransactionEnd);
  put_int<uint16_t>(b.out(), domid);
  put_int<uint32_t>(b.out(), txid);
  put_int<uint8_t>(b.out(), static_cast<uint8_t>(result));
}

void RecordWriter::ring_partial(domid_t domid, uint32_t end_index, std::string_view bytes) {
  RecordBody b(*this, RecordType::RingPartial);
  put_int<uint16_t>(b.out(), domid);
  put_int<uint32_t>(b.out(), end_index);
  put_str(b.out(), bytes);
}

void RecordWriter::ring_output(domid_t domid, uint32_t rsp_index, std::string_view bytes) {
  RecordBody b(*this, RecordType::RingOutput);
  put_int<uint16_t>(b.out(), domid);
  put_int<uint32_t>(b.out(), rsp_index);
  put_str(b.out(), bytes);
}

void RecordWriter::ring_output_done(domid_t domid) {
  RecordBody b(*this, RecordType::RingOutputDone);
  put_int<uint16_t>(b.out(), domid);
}

void RecordWriter::ring_boundary(domid_t domid) {
  RecordBody b(*this, RecordType::RingBoundary);
  put_int<uint16_t>(b.out(), domid);
}

void RecordWriter::state(const PersistedState& s) {
  // Parents before children (the map's order), so a reader could stream it.
  for (const auto& [path, n] : s.nodes) node(path, n);
  for (const auto& [name, perms] : s.specials) special_perms(name, perms);
  for (const auto& [domid, d] : s.domains) {
    domain(domid, d.gfn, d.port);
    for (const auto& w : d.watches) watch(domid, w);
    for (const auto& [tx, result] : d.ended) transaction_end(domid, tx, result);
    for (uint32_t tx : d.transactions) transaction_start(domid, tx);
    if (d.partial) ring_partial(domid, d.partial->end_index, d.partial->bytes);
    if (d.output) ring_output(domid, d.output->rsp_index, d.output->bytes);
  }
  {
    RecordBody b(*this, RecordType::LastTxid);
    put_int<uint32_t>(b.out(), s.last_txid);
  }
  RecordBody b(*this, RecordType::End);
}

LoadReport apply_records(std::string_view data, PersistedState& state) {
  return apply_records_until(data, state, nullptr);
}

// ---- files ----

std::string Journal::snapshot_path(const std::string& dir) { return dir + "/xenstored.snapshot"; }
std::string Journal::journal_path(const std::string& dir) { return dir + "/xenstored.journal"; }

std::unique_ptr<Journal> Journal::open(const std::string& dir, Sync sync, PersistedState& state) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return nullptr;
  std::unique_ptr<Journal> j(new Journal(dir, sync));
  // One daemon per state directory; the lock goes with the process, kill -9 included.
  j->lock_fd_ = ::open((dir + "/xenstored.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (j->lock_fd_ < 0) return nullptr;
  if (::flock(j->lock_fd_, LOCK_EX | LOCK_NB) != 0) return nullptr;

  // The snapshot: complete (ends with an End record) or it was not renamed into place.
  uint64_t generation = 0;
  bool have_snapshot = false;
  {
    const std::string path = snapshot_path(dir);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) return nullptr;
    if (fd >= 0) {
      std::string data;
      const bool ok = read_whole(fd, data);
      ::close(fd);
      if (!ok) return nullptr;
      if (data.size() < kFileHeader || std::memcmp(data.data(), kSnapshotMagic, 8) != 0) {
        spdlog::error("xenstore state: {} is not a snapshot; ignoring it", path);
      } else {
        std::memcpy(&generation, data.data() + 8, 8);
        bool end = false;
        LoadReport rep = apply_records_until(std::string_view(data).substr(kFileHeader), state, &end);
        have_snapshot = true;
        if (!end)
          spdlog::error("xenstore state: snapshot {} is incomplete ({}); kept {} records up to "
                        "byte {}", path, rep.detail.empty() ? "no end record" : rep.detail,
                        rep.records, kFileHeader + rep.good_bytes);
        if (rep.rejected != 0)
          spdlog::warn("xenstore state: snapshot {}: {} invalid records skipped", path, rep.rejected);
      }
    }
  }

  // The journal: the changes since that snapshot (same generation), else stale.
  const std::string path = journal_path(dir);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return nullptr;
  std::string data;
  if (!read_whole(fd, data)) {
    ::close(fd);
    return nullptr;
  }
  uint64_t jgen = 0;
  const bool header_ok = data.size() >= kFileHeader && std::memcmp(data.data(), kJournalMagic, 8) == 0;
  if (header_ok) std::memcpy(&jgen, data.data() + 8, 8);
  if (header_ok && (!have_snapshot || jgen == generation)) {
    LoadReport rep = apply_records(std::string_view(data).substr(kFileHeader), state);
    if (rep.rejected != 0)
      spdlog::warn("xenstore state: journal {}: {} invalid records skipped", path, rep.rejected);
    const uint64_t keep = kFileHeader + rep.good_bytes;
    if (rep.truncated) {
      spdlog::warn("xenstore state: journal {}: {}; recovered {} records, dropping {} bytes "
                   "after byte {}", path, rep.detail, rep.records, data.size() - keep, keep);
      if (::ftruncate(fd, static_cast<off_t>(keep)) != 0) {
        ::close(fd);
        return nullptr;
      }
    } else {
      spdlog::info("xenstore state: {} records from the journal", rep.records);
    }
    j->fd_ = fd;
    j->generation_ = jgen;
    j->journal_bytes_ = keep;
    if (::lseek(fd, static_cast<off_t>(keep), SEEK_SET) < 0) return nullptr;
    return j;
  }
  if (!data.empty())
    spdlog::info("xenstore state: journal {} predates the snapshot; starting a new one", path);
  ::close(fd);
  if (!j->start_journal(generation)) return nullptr;
  return j;
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

bool Journal::start_journal(uint64_t generation) {
  const std::string path = journal_path(dir_);
  const std::string tmp = path + ".new";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const std::string header = file_header(kJournalMagic, generation);
  if (!write_all(fd, header) || ::fsync(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return false;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  generation_ = generation;
  journal_bytes_ = header.size();
  return true;
}

bool Journal::append(const RecordWriter& records) {
  if (records.empty()) return true;
  if (!write_all(fd_, records.bytes())) {
    spdlog::error("xenstore state: journal write failed: {}", std::strerror(errno));
    // A partly written record is cut off on the next start; later whole records still count.
    return false;
  }
  journal_bytes_ += records.bytes().size();
  if (sync_ == Sync::Always && ::fdatasync(fd_) != 0) {
    spdlog::error("xenstore state: journal fdatasync failed: {}", std::strerror(errno));
    return false;
  }
  return true;
}

bool Journal::snapshot(const PersistedState& s) {
  // The new snapshot names the journal generation that follows it: a crash after the
  // rename but before the new journal leaves an older journal, which is then ignored.
  const uint64_t next = generation_ + 1;
  RecordWriter w;
  w.state(s);
  const std::string path = snapshot_path(dir_);
  const std::string tmp = path + ".new";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const bool ok = write_all(fd, file_header(kSnapshotMagic, next)) && write_all(fd, w.bytes()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    spdlog::error("xenstore state: cannot write snapshot {}: {}", path, std::strerror(errno));
    ::unlink(tmp.c_str());
    return false;
  }
  if (!start_journal(next)) {
    spdlog::error("xenstore state: cannot start a new journal: {}", std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace pvio::xs
