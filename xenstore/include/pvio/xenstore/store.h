// The xenstore tree: nodes with values, Xen's permission model, per-domain node quotas and
// transactions (a private overlay committed atomically or refused with EAGAIN on conflict).
// Paths given to the Store are already canonical absolute paths (see canonical_path()).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pvio/xen/xen.h"
#include "pvio/xenstore/protocol.h"
#include "pvio/xen/io/xs_wire.h"

namespace pvio::xs {

// Xen's default quotas (xenstored -q/--quota defaults).
struct Quotas {
  uint32_t nodes_per_domain = 1000;       // ENOSPC beyond
  uint32_t watches_per_connection = 128;  // E2BIG beyond
  uint32_t transactions_per_connection = 10;  // ENOSPC beyond
  uint32_t entry_size = 2048;             // bytes of one node's value; ENOSPC beyond
  uint32_t path_length = XENSTORE_REL_PATH_MAX;  // below /local/domain/<id>/; EINVAL beyond
};

struct Caller {
  domid_t domid = 0;
  bool privileged() const { return domid == 0; }  // Dom0 is the only privileged domain here
};

struct Node {
  std::string value;
  std::vector<NodePerm> perms;         // perms[0]: owner + everyone else's rights
  std::vector<std::string> children;   // child names in creation order, as C xenstored
  uint64_t generation = 0;             // bumped on every change; transactions compare it
};

// A change that fires watches: `path` changed; `recursive` for removal (watches below the
// path fire too). Watchers must be able to read the node under `perms` (or `old_perms`).
struct Change {
  std::string path;
  bool recursive = false;
  std::vector<NodePerm> perms;
  std::vector<NodePerm> old_perms;
};

// Resolves a client path: relative paths go under /local/domain/<domid>. Checks characters
// (alphanumerics and "-/_@"), no "//", no trailing "/", and length limits. `allow_special`
// admits "@introduceDomain"-style names (watches and perms only). Empty result = EINVAL.
std::string canonical_path(domid_t domid, std::string_view path, bool allow_special,
                           uint32_t rel_path_max = XENSTORE_REL_PATH_MAX);
std::string domain_path(domid_t domid);  // "/local/domain/<domid>"

// Effective rights of `caller` on a node with `perms` (Xen's perm_for_conn).
XsPerm perm_for(const Caller& caller, const std::vector<NodePerm>& perms);
bool can_read(const Caller& caller, const std::vector<NodePerm>& perms);

class Transaction {
 public:
  explicit Transaction(domid_t owner) : owner_(owner) {}
  domid_t owner() const { return owner_; }
  // Watches for changes made inside the transaction fire only when it commits.
  void defer(std::vector<Change>&& changes) {
    for (auto& c : changes) changes_.push_back(std::move(c));
    changes.clear();
  }

 private:
  friend class Store;
  domid_t owner_;
  std::map<std::string, std::optional<Node>, std::less<>> overlay_;      // nullopt = removed
  std::map<std::string, std::optional<uint64_t>, std::less<>> accessed_;  // generation seen
  std::unordered_map<domid_t, int64_t> node_delta_;
  std::vector<Change> changes_;
};

class Store {
 public:
  explicit Store(Quotas q = {});

  XsError read(const Caller& c, Transaction* tx, const std::string& path, std::string& out);
  XsError write(const Caller& c, Transaction* tx, const std::string& path,
                std::string_view value, std::vector<Change>& changes);
  XsError mkdir(const Caller& c, Transaction* tx, const std::string& path,
                std::vector<Change>& changes);
  XsError rm(const Caller& c, Transaction* tx, const std::string& path,
             std::vector<Change>& changes);
  XsError directory(const Caller& c, Transaction* tx, const std::string& path,
                    std::vector<std::string>& out);
  XsError get_perms(const Caller& c, Transaction* tx, const std::string& path,
                    std::vector<NodePerm>& out);
  XsError set_perms(const Caller& c, Transaction* tx, const std::string& path,
                    const std::vector<NodePerm>& perms, std::vector<Change>& changes);

  // Commits: EAGAIN if any node the transaction looked at changed since; otherwise applies
  // it and returns the changes whose watches fire now.
  XsError commit(Transaction& tx, std::vector<Change>& changes);

  // Perms of the special watch nodes (@introduceDomain, @releaseDomain); nullptr if unknown.
  const std::vector<NodePerm>* special_perms(std::string_view name) const;
  // Nodes owned by `domid`: what its node quota counts.
  uint32_t nodes_owned_by(domid_t domid) const;
  const Quotas& quotas() const { return quotas_; }
  std::size_t node_count() const { return nodes_.size(); }

  // Persistence. With tracking on, every path whose committed node changed (written,
  // created, removed, perms) is remembered until take_dirty(); "@name" for special perms.
  void set_track_changes(bool on) { track_ = on; }
  std::vector<std::string> take_dirty();
  const Node* committed(std::string_view path) const;
  const std::map<std::string, Node, std::less<>>& nodes() const { return nodes_; }
  const std::map<std::string, std::vector<NodePerm>, std::less<>>& specials() const {
    return special_;
  }
  // Replaces the tree with `nodes` read back from disk, which is not trusted: a child that
  // does not exist is dropped from its parent's list, a node whose parent does not list it
  // (or does not exist) is dropped with its subtree, a missing root is created. Quota
  // counts are recomputed. Returns how many nodes and child entries were dropped.
  std::size_t load(std::map<std::string, Node, std::less<>> nodes,
                   const std::map<std::string, std::vector<NodePerm>, std::less<>>& specials);

 private:
  const Node* lookup(Transaction* tx, std::string_view path);
  Node& modify(Transaction* tx, const std::string& path);  // node must exist
  void put(Transaction* tx, const std::string& path, Node n);
  void erase(Transaction* tx, const std::string& path);
  void count(Transaction* tx, domid_t owner, int64_t delta);
  // Finds `path` with `need` rights; masks ENOENT as EACCES when the caller may not know.
  const Node* get(const Caller& c, Transaction* tx, const std::string& path, XsPerm need,
                  XsError& err);
  XsError create(const Caller& c, Transaction* tx, const std::string& path);
  void remove_subtree(Transaction* tx, const std::string& path);

  Quotas quotas_;
  std::map<std::string, Node, std::less<>> nodes_;
  std::unordered_map<domid_t, int64_t> owned_;
  std::map<std::string, std::vector<NodePerm>, std::less<>> special_;
  uint64_t generation_ = 0;
  bool track_ = false;
  std::vector<std::string> dirty_;
  void touched(const std::string& path) {
    if (track_) dirty_.push_back(path);
  }
};

}  // namespace pvio::xs
