// The xenstore tree, permissions, quotas and transactions; see store.h.
#include "pvio/xenstore/store.h"

#include <algorithm>
#include <cctype>

namespace pvio::xs {
namespace {

bool valid_char(char ch) {
  return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '/' || ch == '_' ||
         ch == '@';
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string child_path(const std::string& parent, std::string_view name) {
  std::string p = parent;
  if (p != "/") p.push_back('/');
  p.append(name);
  return p;
}

std::string_view base_name(const std::string& path) {
  return std::string_view(path).substr(path.rfind('/') + 1);
}

bool has(XsPerm have, XsPerm need) {
  return (static_cast<uint8_t>(have) & static_cast<uint8_t>(need)) == static_cast<uint8_t>(need);
}

}  // namespace

std::string domain_path(domid_t domid) { return "/local/domain/" + std::to_string(domid); }

std::string canonical_path(domid_t domid, std::string_view path, bool allow_special,
                           uint32_t rel_path_max) {
  if (path.empty()) return {};
  std::string full;
  if (path[0] == '@') {
    if (!allow_special) return {};
    full = path;
  } else if (path[0] == '/') {
    full = path;
  } else {
    full = domain_path(domid) + "/" + std::string(path);
  }
  if (full.size() > 1 && full.back() == '/') return {};
  if (full.find("//") != std::string::npos) return {};
  if (!std::all_of(full.begin(), full.end(), valid_char)) return {};  // also rejects ".."
  if (full.size() > XENSTORE_ABS_PATH_MAX) return {};
  if (domid != 0) {
    // Xen counts the length below /local/domain/<id>/ against the relative-path limit.
    std::size_t off = 0;
    constexpr std::string_view kLocal = "/local/domain/";
    if (full.starts_with(kLocal)) {
      std::size_t i = kLocal.size();
      while (i < full.size() && std::isdigit(static_cast<unsigned char>(full[i]))) ++i;
      if (i > kLocal.size() && i < full.size() && full[i] == '/') off = i + 1;
    }
    if (full.size() - off > rel_path_max) return {};
  }
  return full;
}

XsPerm perm_for(const Caller& c, const std::vector<NodePerm>& perms) {
  // Owners and Dom0 get everything (Xen's perm_for_conn); then the first ACL entry naming
  // the caller; else the owner entry's rights for everyone else.
  if (c.privileged() || perms.empty() || perms[0].domid == c.domid) return XsPerm::Both;
  for (std::size_t i = 1; i < perms.size(); ++i)
    if (perms[i].domid == c.domid) return perms[i].perm;
  return perms[0].perm;
}

bool can_read(const Caller& c, const std::vector<NodePerm>& perms) {
  return has(perm_for(c, perms), XsPerm::Read);
}

Store::Store(Quotas q) : quotas_(q) {
  Node root;
  root.perms = {{0, XsPerm::None}};
  root.generation = ++generation_;
  nodes_.emplace("/", std::move(root));
  owned_[0] = 1;
  special_["@introduceDomain"] = {{0, XsPerm::None}};
  special_["@releaseDomain"] = {{0, XsPerm::None}};
}

const std::vector<NodePerm>* Store::special_perms(std::string_view name) const {
  auto it = special_.find(name);
  return it == special_.end() ? nullptr : &it->second;
}

uint32_t Store::nodes_owned_by(domid_t domid) const {
  auto it = owned_.find(domid);
  return it == owned_.end() ? 0 : static_cast<uint32_t>(it->second);
}

const Node* Store::lookup(Transaction* tx, std::string_view path) {
  if (tx != nullptr) {
    auto o = tx->overlay_.find(path);
    if (o != tx->overlay_.end()) return o->second ? &*o->second : nullptr;
  }
  auto it = nodes_.find(path);
  const Node* n = it == nodes_.end() ? nullptr : &it->second;
  if (tx != nullptr && tx->accessed_.find(path) == tx->accessed_.end())
    tx->accessed_.emplace(std::string(path),
                          n ? std::optional<uint64_t>(n->generation) : std::nullopt);
  return n;
}

Node& Store::modify(Transaction* tx, const std::string& path) {
  if (tx == nullptr) {
    Node& n = nodes_.at(path);
    n.generation = ++generation_;
    touched(path);
    return n;
  }
  auto o = tx->overlay_.find(path);
  if (o == tx->overlay_.end()) {
    const Node* base = lookup(tx, path);
    o = tx->overlay_.emplace(path, *base).first;
  }
  return *o->second;
}

void Store::put(Transaction* tx, const std::string& path, Node n) {
  if (tx == nullptr) {
    n.generation = ++generation_;
    nodes_.insert_or_assign(path, std::move(n));
    touched(path);
  } else {
    lookup(tx, path);  // record what the transaction saw there
    tx->overlay_.insert_or_assign(path, std::move(n));
  }
}

void Store::erase(Transaction* tx, const std::string& path) {
  if (tx == nullptr) {
    nodes_.erase(path);
    touched(path);
  } else {
    lookup(tx, path);
    tx->overlay_.insert_or_assign(path, std::nullopt);
  }
}

void Store::count(Transaction* tx, domid_t owner, int64_t delta) {
  if (tx == nullptr)
    owned_[owner] += delta;
  else
    tx->node_delta_[owner] += delta;
}

const Node* Store::get(const Caller& c, Transaction* tx, const std::string& path, XsPerm need,
                       XsError& err) {
  const Node* n = lookup(tx, path);
  if (n != nullptr) {
    if (!has(perm_for(c, n->perms), need)) {
      err = XsError::Acces;
      return nullptr;
    }
    return n;
  }
  // Don't tell a guest whether a node exists under a parent it cannot read (Xen's
  // errno_from_parents): walk up to the first existing ancestor.
  err = XsError::NoEnt;
  if (!c.privileged()) {
    std::string p = path;
    while (p != "/") {
      p = parent_of(p);
      const Node* a = lookup(tx, p);
      if (a != nullptr) {
        if (!can_read(c, a->perms)) err = XsError::Acces;
        break;
      }
    }
  }
  return nullptr;
}

XsError Store::read(const Caller& c, Transaction* tx, const std::string& path,
                    std::string& out) {
  XsError err = XsError::None;
  const Node* n = get(c, tx, path, XsPerm::Read, err);
  if (n == nullptr) return err;
  out = n->value;
  return XsError::None;
}

XsError Store::create(const Caller& c, Transaction* tx, const std::string& path) {
  // Find the nearest existing ancestor; the caller needs write access to it.
  std::vector<std::string> missing{path};
  std::string p = parent_of(path);
  const Node* anc = nullptr;
  while (true) {
    anc = lookup(tx, p);
    if (anc != nullptr || p == "/") break;
    missing.push_back(p);
    p = parent_of(p);
  }
  if (anc == nullptr) return XsError::NoEnt;  // unreachable: "/" always exists
  if (!has(perm_for(c, anc->perms), XsPerm::Write)) return XsError::Acces;
  if (!c.privileged()) {
    int64_t have = nodes_owned_by(c.domid);
    if (tx != nullptr) {
      auto d = tx->node_delta_.find(c.domid);
      if (d != tx->node_delta_.end()) have += d->second;
    }
    if (have + static_cast<int64_t>(missing.size()) > quotas_.nodes_per_domain)
      return XsError::NoSpc;
  }
  // Create top-down: each new node inherits its parent's perms; a guest owns what it creates.
  std::vector<NodePerm> perms = anc->perms;
  if (!c.privileged()) perms[0].domid = c.domid;
  std::string parent = p;
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    Node& par = modify(tx, parent);
    par.children.emplace_back(base_name(*it));
    Node n;
    n.perms = perms;
    put(tx, *it, std::move(n));
    count(tx, perms[0].domid, 1);
    parent = *it;
  }
  return XsError::None;
}

XsError Store::write(const Caller& c, Transaction* tx, const std::string& path,
                     std::string_view value, std::vector<Change>& changes) {
  if (!c.privileged() && value.size() > quotas_.entry_size) return XsError::NoSpc;
  XsError err = XsError::None;
  const Node* n = get(c, tx, path, XsPerm::Write, err);
  if (n == nullptr) {
    if (err != XsError::NoEnt) return err;
    err = create(c, tx, path);
    if (err != XsError::None) return err;
  }
  Node& m = modify(tx, path);
  m.value = value;
  changes.push_back({path, false, m.perms, {}});
  return XsError::None;
}

XsError Store::mkdir(const Caller& c, Transaction* tx, const std::string& path,
                     std::vector<Change>& changes) {
  XsError err = XsError::None;
  if (get(c, tx, path, XsPerm::Write, err) != nullptr) return XsError::None;  // exists: fine
  if (err != XsError::NoEnt) return err;
  err = create(c, tx, path);
  if (err != XsError::None) return err;
  changes.push_back({path, false, lookup(tx, path)->perms, {}});
  return XsError::None;
}

void Store::remove_subtree(Transaction* tx, const std::string& path) {
  const Node* n = lookup(tx, path);
  if (n == nullptr) return;
  std::vector<std::string> kids = n->children;
  domid_t owner = n->perms.empty() ? 0 : n->perms[0].domid;
  for (const auto& k : kids) remove_subtree(tx, child_path(path, k));
  count(tx, owner, -1);
  erase(tx, path);
}

XsError Store::rm(const Caller& c, Transaction* tx, const std::string& path,
                  std::vector<Change>& changes) {
  XsError err = XsError::None;
  const Node* n = get(c, tx, path, XsPerm::Write, err);
  if (n == nullptr) {
    // Removing a node that does not exist is fine if its parent exists (as C xenstored).
    if (err == XsError::NoEnt && path != "/" && lookup(tx, parent_of(path)) != nullptr)
      return XsError::None;
    return err;
  }
  if (path == "/") return XsError::Inval;
  std::vector<NodePerm> perms = n->perms;
  remove_subtree(tx, path);
  Node& par = modify(tx, parent_of(path));
  auto name = base_name(path);
  par.children.erase(std::find(par.children.begin(), par.children.end(), name));
  changes.push_back({path, true, std::move(perms), {}});
  return XsError::None;
}

XsError Store::directory(const Caller& c, Transaction* tx, const std::string& path,
                         std::vector<std::string>& out) {
  XsError err = XsError::None;
  const Node* n = get(c, tx, path, XsPerm::Read, err);
  if (n == nullptr) return err;
  out = n->children;
  return XsError::None;
}

XsError Store::get_perms(const Caller& c, Transaction* tx, const std::string& path,
                         std::vector<NodePerm>& out) {
  if (path[0] == '@') {
    const auto* sp = special_perms(path);
    if (sp == nullptr) return XsError::NoEnt;
    if (!can_read(c, *sp)) return XsError::Acces;
    out = *sp;
    return XsError::None;
  }
  XsError err = XsError::None;
  const Node* n = get(c, tx, path, XsPerm::Read, err);
  if (n == nullptr) return err;
  out = n->perms;
  return XsError::None;
}

XsError Store::set_perms(const Caller& c, Transaction* tx, const std::string& path,
                         const std::vector<NodePerm>& perms, std::vector<Change>& changes) {
  if (perms.empty()) return XsError::Inval;
  if (path[0] == '@') {
    // Special nodes: only Dom0 may change who sees @introduceDomain / @releaseDomain.
    auto it = special_.find(path);
    if (it == special_.end()) return XsError::NoEnt;
    if (!c.privileged()) return XsError::Acces;
    it->second = perms;
    touched(path);
    return XsError::None;
  }
  XsError err = XsError::None;
  const Node* n = get(c, tx, path, XsPerm::Write, err);
  if (n == nullptr) return err;
  // Only the owner (or Dom0) may change perms, and a guest may not give a node away.
  if (!c.privileged()) {
    if (n->perms[0].domid != c.domid) return XsError::Acces;
    if (perms[0].domid != c.domid) return XsError::Perm;
  }
  std::vector<NodePerm> old = n->perms;
  if (old[0].domid != perms[0].domid) {
    count(tx, old[0].domid, -1);
    count(tx, perms[0].domid, 1);
  }
  modify(tx, path).perms = perms;
  changes.push_back({path, false, perms, std::move(old)});
  return XsError::None;
}

XsError Store::commit(Transaction& tx, std::vector<Change>& changes) {
  for (const auto& [path, gen] : tx.accessed_) {
    auto it = nodes_.find(path);
    std::optional<uint64_t> now =
        it == nodes_.end() ? std::nullopt : std::optional<uint64_t>(it->second.generation);
    if (now != gen) return XsError::Again;
  }
  for (auto& [path, node] : tx.overlay_) {
    if (node) {
      node->generation = ++generation_;
      nodes_.insert_or_assign(path, std::move(*node));
    } else {
      nodes_.erase(path);
    }
    touched(path);
  }
  for (const auto& [domid, delta] : tx.node_delta_) owned_[domid] += delta;
  changes = std::move(tx.changes_);
  return XsError::None;
}

std::vector<std::string> Store::take_dirty() {
  std::vector<std::string> out;
  out.swap(dirty_);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

const Node* Store::committed(std::string_view path) const {
  auto it = nodes_.find(path);
  return it == nodes_.end() ? nullptr : &it->second;
}

std::size_t Store::load(std::map<std::string, Node, std::less<>> nodes,
                        const std::map<std::string, std::vector<NodePerm>, std::less<>>& specials) {
  std::size_t dropped = 0;
  if (nodes.find("/") == nodes.end()) {
    Node root;
    root.perms = {{0, XsPerm::None}};
    nodes.emplace("/", std::move(root));
  }
  // Keep only what is reachable from the root through children lists that name existing
  // nodes; walk top-down so a dropped node takes its subtree with it.
  std::map<std::string, Node, std::less<>> kept;
  std::vector<std::string> todo{"/"};
  while (!todo.empty()) {
    std::string path = std::move(todo.back());
    todo.pop_back();
    auto it = nodes.find(path);
    Node n = std::move(it->second);
    nodes.erase(it);
    std::vector<std::string> kids;
    for (auto& k : n.children) {
      std::string cp = child_path(path, k);
      if (nodes.find(cp) == nodes.end()) {
        ++dropped;  // listed but missing (or listed twice)
        continue;
      }
      todo.push_back(cp);
      kids.push_back(std::move(k));
    }
    n.children = std::move(kids);
    if (n.perms.empty()) n.perms = {{0, XsPerm::None}};
    kept.emplace(std::move(path), std::move(n));
  }
  dropped += nodes.size();  // not reachable from the root
  nodes_ = std::move(kept);
  owned_.clear();
  for (auto& [path, n] : nodes_) {
    n.generation = ++generation_;
    owned_[n.perms[0].domid] += 1;
  }
  for (const auto& [name, perms] : specials)
    if (special_.count(name) != 0 && !perms.empty()) special_[name] = perms;
  dirty_.clear();
  return dropped;
}

}  // namespace pvio::xs
