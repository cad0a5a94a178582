// Request dispatch, watches, transactions and domain records; see server.h.
#include "pvio/xenstore/server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <type_traits>

#include "pvio/xenstore/ring_transport.h"

namespace pvio::xs {
namespace {

constexpr std::string_view kOk("OK\0", 3);

// `path` equals `dir` or lies below it.
bool in_subtree(std::string_view path, std::string_view dir) {
  if (dir == "/") return path.starts_with('/');
  return path == dir || (path.starts_with(dir) && path.size() > dir.size() &&
                         path[dir.size()] == '/');
}

std::string with_nul(std::string s) {
  s.push_back('\0');
  return s;
}

}  // namespace

Server::Server(Quotas q) : store_(q) {}
Server::~Server() {
  // Going away is not releasing: nothing is journaled while the members are torn down
  // (domains_ goes before conns_, and its transports detach on the way).
  journal_ = nullptr;
  domains_.clear();
}

ConnId Server::attach(domid_t domid, Connection* conn) {
  ConnId id = next_conn_++;
  conns_.emplace(id, Conn{domid, conn, false, {}, {}, {}, {}, false});
  return id;
}

void Server::detach(ConnId id, bool dropped) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.dead) return;
  if (dropped) ++stats_.dropped_connections;
  if (persisted_conn(it->second)) pending_.connection_reset(it->second.domid);
  it->second.dead = true;
  it->second.out = nullptr;
  if (depth_ == 0) reap();
}

void Server::reap() {
  std::erase_if(conns_, [](const auto& kv) { return kv.second.dead; });
}

std::size_t Server::connection_count() const {
  return std::count_if(conns_.begin(), conns_.end(),
                       [](const auto& kv) { return !kv.second.dead; });
}

bool Server::domain_introduced(domid_t domid) const {
  return domid == 0 || domains_.count(domid) != 0;
}

RingTransport* Server::domain_transport(domid_t domid) {
  auto it = domains_.find(domid);
  return it == domains_.end() ? nullptr : it->second.transport.get();
}

void Server::handle(ConnId id, const xsd_sockmsg& hdr, std::span<const char> payload) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.dead) return;
  ++depth_;
  ++stats_.requests;
  ParsedRequest parsed = parse_request(hdr, payload);
  Reply reply;
  if (parsed.error != XsError::None) {
    ++stats_.invalid_requests;
    reply.error = parsed.error;
  } else {
    reply = dispatch(id, it->second, hdr, parsed.request);
  }
  // Write-ahead: the change is on disk before its reply or any watch event goes out.
  persist();
  // The connection may have been released while handling (RELEASE of a domain by Dom0 never
  // releases the caller itself, but a failing transport may detach).
  it = conns_.find(id);
  if (it != conns_.end() && !it->second.dead) {
    if (reply.error != XsError::None) {
      ++stats_.error_replies;
      it->second.out->send(encode_error(hdr.req_id, hdr.tx_id, reply.error));
    } else {
      it->second.out->send(
          encode_message(static_cast<MsgType>(hdr.type), hdr.req_id, hdr.tx_id, reply.payload));
    }
  }
  // WATCH's first event goes out after its OK, as C xenstored does.
  if (parsed.error == XsError::None && reply.error == XsError::None) {
    if (const auto* w = std::get_if<ReqWatch>(&parsed.request)) {
      it = conns_.find(id);
      if (it != conns_.end() && !it->second.dead) {
        Conn& c = it->second;
        for (const auto& watch : c.watches)
          if (watch.token == w->token &&
              watch.path == canonical_path(c.domid, w->path, true, store_.quotas().path_length)) {
            send_event(c, watch, watch.path);
            break;
          }
      }
    }
  }
  if (--depth_ == 0) {
    reap();
    if (journal_ != nullptr && journal_->journal_bytes() > snapshot_bytes_) snapshot();
  }
}

Server::Reply Server::dispatch(ConnId id, Conn& c, const xsd_sockmsg& hdr,
                               const Request& req) {
  (void)id;
  const Caller who{c.domid};
  Transaction* tx = nullptr;
  if (hdr.tx_id != 0) {
    auto t = c.transactions.find(hdr.tx_id);
    if (t == c.transactions.end()) {
      // Opened before a restart: its overlay is gone, so it ends as a conflict would and the
      // guest retries it (every xenbus client handles EAGAIN from TRANSACTION_END).
      if (c.lost_transactions.count(hdr.tx_id) != 0) {
        if (std::holds_alternative<ReqTransactionEnd>(req)) {
          c.lost_transactions.erase(hdr.tx_id);
          transaction_ended(c, hdr.tx_id, XsError::Again);
        }
        return {XsError::Again, {}};
      }
      // Ended, but the guest is asking again: its reply was lost with a daemon that died
      // before writing it to the ring. Same answer as the first time.
      if (auto e = c.ended_transactions.find(hdr.tx_id);
          e != c.ended_transactions.end() && std::holds_alternative<ReqTransactionEnd>(req))
        return {e->second, e->second == XsError::None ? std::string(kOk) : std::string()};
      return {XsError::NoEnt, {}};
    }
    tx = t->second.get();
  }
  auto resolve = [&](std::string_view p, bool special = false) {
    return canonical_path(c.domid, p, special, store_.quotas().path_length);
  };
  auto apply = [&](std::vector<Change>& changes) {
    if (tx != nullptr)
      tx->defer(std::move(changes));
    else
      fire(changes);
  };

  return std::visit(
      [&](const auto& r) -> Reply {
        using T = std::decay_t<decltype(r)>;
        std::vector<Change> changes;
        if constexpr (std::is_same_v<T, ReqRead>) {
          std::string path = resolve(r.path);
          if (path.empty()) return {XsError::Inval, {}};
          Reply out;
          out.error = store_.read(who, tx, path, out.payload);
          return out;
        } else if constexpr (std::is_same_v<T, ReqWrite>) {
          std::string path = resolve(r.path);
          if (path.empty()) return {XsError::Inval, {}};
          XsError e = store_.write(who, tx, path, r.value, changes);
          if (e == XsError::None) apply(changes);
          return {e, std::string(kOk)};
        } else if constexpr (std::is_same_v<T, ReqMkdir>) {
          std::string path = resolve(r.path);
          if (path.empty()) return {XsError::Inval, {}};
          XsError e = store_.mkdir(who, tx, path, changes);
          if (e == XsError::None) apply(changes);
          return {e, std::string(kOk)};
        } else if constexpr (std::is_same_v<T, ReqRm>) {
          std::string path = resolve(r.path);
          if (path.empty()) return {XsError::Inval, {}};
          XsError e = store_.rm(who, tx, path, changes);
          if (e == XsError::None) apply(changes);
          return {e, std::string(kOk)};
        } else if constexpr (std::is_same_v<T, ReqDirectory>) {
          std::string path = resolve(r.path);
          if (path.empty()) return {XsError::Inval, {}};
          std::vector<std::string> kids;
          Reply out;
          out.error = store_.directory(who, tx, path, kids);
          for (const auto& k : kids) out.payload += with_nul(k);
          // Too long for one message: libxenstore then falls back to DIRECTORY_PART.
          if (out.payload.size() > XENSTORE_PAYLOAD_MAX) return {XsError::TooBig, {}};
          return out;
        } else if constexpr (std::is_same_v<T, ReqGetPerms>) {
          std::string path = resolve(r.path, true);
          if (path.empty()) return {XsError::Inval, {}};
          std::vector<NodePerm> perms;
          Reply out;
          out.error = store_.get_perms(who, tx, path, perms);
          for (const auto& p : perms) out.payload += with_nul(format_perm(p));
          return out;
        } else if constexpr (std::is_same_v<T, ReqSetPerms>) {
          std::string path = resolve(r.path, true);
          if (path.empty()) return {XsError::Inval, {}};
          XsError e = store_.set_perms(who, tx, path, r.perms, changes);
          if (e == XsError::None) apply(changes);
          return {e, std::string(kOk)};
        } else if constexpr (std::is_same_v<T, ReqWatch>) {
          std::string path = resolve(r.path, true);
          if (path.empty()) return {XsError::Inval, {}};
          for (const auto& w : c.watches)
            if (w.path == path && w.token == r.token) {
              // A guest's WATCH handled before a restart whose OK was lost is read again: it
              // is there, so it succeeds (and fires) as the first time did.
              if (c.restored) return {XsError::None, std::string(kOk)};
              return {XsError::Exist, {}};
            }
          if (!who.privileged() && c.watches.size() >= store_.quotas().watches_per_connection)
            return {XsError::TooBig, {}};
          bool relative = r.path[0] != '/' && r.path[0] != '@';
          c.watches.push_back({path, std::string(r.token), relative});
          if (persisted_conn(c)) pending_.watch(c.domid, {path, std::string(r.token), relative});
          return {XsError::None, std::string(kOk)};
        } else if constexpr (std::is_same_v<T, ReqUnwatch>) {
          std::string path = resolve(r.path, true);
          if (path.empty()) return {XsError::Inval, {}};
          auto it = std::find_if(c.watches.begin(), c.watches.end(), [&](const Watch& w) {
            return w.path == path && w.token == r.token;
          });
          if (it == c.watches.end()) return {XsError::NoEnt, {}};
          if (persisted_conn(c)) pending_.unwatch(c.domid, it->path, it->token);
          c.watches.erase(it);
          return {XsError::None, std::string(kOk)};
        } else if constexpr (std::is_same_v<T, ReqTransactionStart>) {
          if (tx != nullptr) return {XsError::Busy, {}};
          if (!who.privileged() &&
              c.transactions.size() >= store_.quotas().transactions_per_connection)
            return {XsError::NoSpc, {}};
          uint32_t txid = next_tx_++;
          if (next_tx_ == 0) next_tx_ = 1;  // 0 means "no transaction"
          c.transactions.emplace(txid, std::make_unique<Transaction>(c.domid));
          if (persisted_conn(c)) pending_.transaction_start(c.domid, txid);
          return {XsError::None, with_nul(std::to_string(txid))};
        } else if constexpr (std::is_same_v<T, ReqTransactionEnd>) {
          if (tx == nullptr) return {XsError::NoEnt, {}};
          std::unique_ptr<Transaction> owned = std::move(c.transactions.at(hdr.tx_id));
          c.transactions.erase(hdr.tx_id);
          if (!r.commit) {
            transaction_ended(c, hdr.tx_id, XsError::None);
            return {XsError::None, std::string(kOk)};
          }
          XsError e = store_.commit(*owned, changes);
          transaction_ended(c, hdr.tx_id, e);
          if (e != XsError::None) return {e, {}};
          fire(changes);
          return {XsError::None, std::string(kOk)};
        } else if constexpr (std::is_same_v<T, ReqIntroduce>) {
          return do_introduce(who, r);
        } else if constexpr (std::is_same_v<T, ReqRelease>) {
          return do_release(who, r);
        } else if constexpr (std::is_same_v<T, ReqGetDomainPath>) {
          // As C xenstored: any domain may ask, the answer is a fixed function of the domid.
          return {XsError::None, with_nul(domain_path(r.domid))};
        } else if constexpr (std::is_same_v<T, ReqIsDomainIntroduced>) {
          if (!who.privileged()) return {XsError::Acces, {}};
          return {XsError::None, with_nul(domain_introduced(r.domid) ? "T" : "F")};
        } else if constexpr (std::is_same_v<T, ReqResetWatches>) {
          if (!who.privileged()) return {XsError::Acces, {}};
          c.watches.clear();
          c.transactions.clear();
          return {XsError::None, std::string(kOk)};
        } else {
          static_assert(std::is_same_v<T, ReqUnsupported>);
          return {XsError::NoSys, {}};
        }
      },
      req);
}

Server::Reply Server::do_introduce(const Caller& who, const ReqIntroduce& r) {
  if (!who.privileged()) return {XsError::Acces, {}};
  if (r.domid == 0 || r.domid >= kDomidSelf) return {XsError::Inval, {}};
  if (auto it = domains_.find(r.domid); it != domains_.end()) {
    // Re-introducing with the same ring is harmless; a different ring is a toolstack bug.
    if (it->second.gfn == r.gfn && it->second.port == r.port) return {XsError::None, std::string(kOk)};
    return {XsError::Exist, {}};
  }
  if (connector_ == nullptr) return {XsError::NoSys, {}};
  std::unique_ptr<RingTransport> t = connector_->connect(r.domid, r.gfn, r.port);
  if (!t) return {XsError::Inval, {}};
  t->bind(*this, r.domid);
  domains_.emplace(r.domid, Domain{r.gfn, r.port, std::move(t)});
  if (journal_ != nullptr) pending_.domain(r.domid, r.gfn, r.port);
  fire_special("@introduceDomain");
  return {XsError::None, std::string(kOk)};
}

Server::Reply Server::do_release(const Caller& who, const ReqRelease& r) {
  if (!who.privileged()) return {XsError::Acces, {}};
  if (r.domid == 0) return {XsError::Inval, {}};
  if (!release_domain(r.domid)) return {XsError::NoEnt, {}};
  return {XsError::None, std::string(kOk)};
}

bool Server::release_domain(domid_t domid) {
  auto it = domains_.find(domid);
  if (it == domains_.end()) return false;
  it->second.transport->unbind();
  domains_.erase(it);
  if (journal_ != nullptr) pending_.domain_released(domid);
  fire_special("@releaseDomain");
  return true;
}

void Server::send_event(Conn& c, const Watch& w, const std::string& abs_path) {
  if (c.dead || c.out == nullptr) return;
  if (c.out->pending_output() > kMaxPendingOutput) {
    ++stats_.dropped_watch_events;
    return;
  }
  std::string path = abs_path;
  if (w.relative) {
    std::string prefix = domain_path(c.domid) + "/";
    if (path.starts_with(prefix)) path.erase(0, prefix.size());
  }
  std::string payload = with_nul(path) + with_nul(w.token);
  ++stats_.watch_events;
  c.out->send(encode_message(MsgType::XS_WATCH_EVENT, 0, 0, payload));
}

void Server::fire(const std::vector<Change>& changes) {
  persist();
  for (const Change& ch : changes) {
    for (auto& [id, c] : conns_) {
      if (c.dead) continue;
      const Caller who{c.domid};
      // Events only reach watchers that may read the node (before or after a perms change).
      if (!can_read(who, ch.perms) && (ch.old_perms.empty() || !can_read(who, ch.old_perms)))
        continue;
      for (const Watch& w : c.watches) {
        if (w.path.starts_with('@')) continue;
        if (in_subtree(ch.path, w.path))
          send_event(c, w, ch.path);
        else if (ch.recursive && in_subtree(w.path, ch.path))
          send_event(c, w, w.path);  // the watched node went away with its ancestor
      }
    }
  }
}

void Server::fire_special(std::string_view name) {
  persist();
  const auto* perms = store_.special_perms(name);
  for (auto& [id, c] : conns_) {
    if (c.dead || perms == nullptr || !can_read(Caller{c.domid}, *perms)) continue;
    for (const Watch& w : c.watches)
      if (w.path == name) send_event(c, w, w.path);
  }
}

// ---- persistence ----

void Server::set_journal(Journal* j, uint64_t snapshot_bytes) {
  journal_ = j;
  snapshot_bytes_ = snapshot_bytes;
  store_.set_track_changes(j != nullptr);
  store_.take_dirty();
  pending_.clear();
}

void Server::transaction_ended(Conn& c, uint32_t txid, XsError result) {
  if (!persisted_conn(c)) return;
  pending_.transaction_end(c.domid, txid, result);
  c.ended_transactions[txid] = result;
  if (c.ended_transactions.size() > kRememberedTransactionEnds)
    c.ended_transactions.erase(c.ended_transactions.begin());
}

void Server::persist() {
  if (journal_ == nullptr) return;
  for (const std::string& p : store_.take_dirty()) {
    if (p[0] == '@') {
      if (const auto* sp = store_.special_perms(p)) pending_.special_perms(p, *sp);
    } else if (const Node* n = store_.committed(p)) {
      pending_.node(p, *n);
    } else {
      pending_.node_removed(p);
    }
  }
  if (pending_.empty()) return;
  if (!journal_->append(pending_)) ++stats_.journal_failures;
  pending_.clear();
}

PersistedState Server::persisted_state() const {
  PersistedState s;
  s.nodes = store_.nodes();
  s.specials = store_.specials();
  for (const auto& [domid, d] : domains_) {
    PersistedDomain pd;
    pd.gfn = d.gfn;
    pd.port = d.port;
    pd.partial = d.transport->partial();
    pd.output = d.transport->pending_output_state();
    if (auto c = conns_.find(d.transport->conn_id()); c != conns_.end() && !c->second.dead) {
      for (const Watch& w : c->second.watches) pd.watches.push_back({w.path, w.token, w.relative});
      for (const auto& [txid, tx] : c->second.transactions) pd.transactions.insert(txid);
      pd.transactions.insert(c->second.lost_transactions.begin(),
                             c->second.lost_transactions.end());
      pd.ended = c->second.ended_transactions;
    }
    s.domains.emplace(domid, std::move(pd));
  }
  s.last_txid = next_tx_ - 1;
  return s;
}

bool Server::snapshot() {
  if (journal_ == nullptr) return false;
  persist();
  if (!journal_->snapshot(persisted_state())) return false;
  ++stats_.snapshots;
  return true;
}

std::size_t Server::restore(PersistedState st) {
  if (std::size_t dropped = store_.load(std::move(st.nodes), st.specials); dropped != 0)
    spdlog::warn("xenstore state: {} nodes or child entries were inconsistent and dropped",
                 dropped);
  if (st.last_txid >= next_tx_) next_tx_ = st.last_txid + 1 == 0 ? 1 : st.last_txid + 1;
  std::size_t attached = 0;
  std::vector<ConnId> restored;
  for (auto& [domid, pd] : st.domains) {
    if (domid == 0 || domid >= kDomidSelf) continue;
    std::unique_ptr<RingTransport> t =
        connector_ != nullptr ? connector_->connect(domid, pd.gfn, pd.port) : nullptr;
    if (!t) {
      // Gone while the daemon was down: forget it (the toolstack cleans up its nodes).
      spdlog::warn("xenstore state: domain {} cannot be reattached; forgetting it", domid);
      if (journal_ != nullptr) pending_.domain_released(domid);
      continue;
    }
    t->bind(*this, domid);
    const ConnId id = t->conn_id();
    Conn& c = conns_.at(id);
    for (auto& w : pd.watches) c.watches.push_back({std::move(w.path), std::move(w.token), w.relative});
    c.lost_transactions = std::move(pd.transactions);
    c.ended_transactions = std::move(pd.ended);
    c.restored = true;
    if (pd.partial) t->restore_partial(pd.partial->end_index, pd.partial->bytes);
    if (pd.output) t->restore_output(pd.output->rsp_index, pd.output->bytes);
    domains_.emplace(domid, Domain{pd.gfn, pd.port, std::move(t)});
    restored.push_back(id);
    ++attached;
    spdlog::info("xenstore state: domain {} reattached ({} watches, {} transactions lost)",
                 domid, c.watches.size(), c.lost_transactions.size());
  }
  persist();
  // Every restored watch fires once with its own path: the guest re-reads what it watches
  // and so catches up on whatever changed while the daemon was away.
  for (ConnId id : restored) {
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second.dead) continue;
    for (const Watch& w : it->second.watches) send_event(it->second, w, w.path);
  }
  return attached;
}

void Server::ring_partial(ConnId id, uint32_t end_index, std::string_view bytes) {
  auto it = conns_.find(id);
  if (it == conns_.end() || !persisted_conn(it->second)) return;
  pending_.ring_partial(it->second.domid, end_index, bytes);
  persist();
}

void Server::ring_output(ConnId id, std::optional<PendingOutput> rest) {
  auto it = conns_.find(id);
  if (it == conns_.end() || !persisted_conn(it->second)) return;
  if (rest)
    pending_.ring_output(it->second.domid, rest->rsp_index, rest->bytes);
  else
    pending_.ring_output_done(it->second.domid);
  persist();
}

void Server::ring_boundary(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end() || !persisted_conn(it->second)) return;
  pending_.ring_boundary(it->second.domid);
  persist();
}

}  // namespace pvio::xs
