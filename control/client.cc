// ControlClient: attach, map the domain's memory, bind ports, deliver events to the guest.
#include "pvio/control/client.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pvio::control {

ControlClient::~ControlClient() {
  if (active_) active_->set_maptrack(gnttab::Maptrack());  // the page goes with the mappings
  for (const Mapping& m : mappings_) ::munmap(m.addr, m.len);
}

template <typename Req>
int ControlClient::request(Req& req, Parsed* reply, Received* raw) {
  req.hdr = make_header(static_cast<MsgType>(req.hdr.type), sizeof(Req), next_request_id_++);
  if (int rc = send_message(sock_.get(), req); rc != 0) return rc;
  *raw = recv_message(sock_.get());
  if (raw->rc == 0) return -ECONNRESET;
  // SO_RCVTIMEO expired: the domain did not answer in time.
  if (raw->rc == -EAGAIN || raw->rc == -EWOULDBLOCK) return -ETIMEDOUT;
  if (raw->rc < 0) return raw->rc;
  *reply = parse_received(*raw);
  if (reply->error != ParseError::None) return parse_error_status(reply->error);
  if (reply->request_id != req.hdr.request_id) return -EPROTO;
  if (const auto* e = std::get_if<ErrorReply>(&reply->msg)) return e->status;
  return 0;
}

int ControlClient::attach(const std::string& socket_path, domid_t domid,
                          std::unique_ptr<ControlClient>* out, int timeout_ms) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) return -ENAMETOOLONG;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  std::unique_ptr<ControlClient> c(new ControlClient());
  c->sock_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!c->sock_) return -errno;
  if (timeout_ms > 0) {
    // A unix connect() to a full backlog waits SO_SNDTIMEO; recvmsg waits SO_RCVTIMEO.
    timeval tv{};
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = static_cast<suseconds_t>(timeout_ms % 1000) * 1000;
    if (::setsockopt(c->sock_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        ::setsockopt(c->sock_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
      return -errno;
  }
  if (::connect(c->sock_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return errno == EAGAIN ? -ETIMEDOUT : -errno;

  AttachRequest req{};
  req.hdr.type = static_cast<std::uint16_t>(MsgType::AttachRequest);
  req.domid = domid;
  Parsed p;
  Received raw;
  if (int rc = c->request(req, &p, &raw); rc != 0) return rc;
  const auto* rep = std::get_if<AttachReply>(&p.msg);
  if (rep == nullptr) return -EPROTO;
  if (rep->status != 0) return rep->status;
  if (rep->domid != domid) return -EPROTO;

  // parse_message checked the table; here it is checked against the memfd's real size.
  UniqueFd memfd = std::move(raw.fds[0]);
  c->upcall_fd_ = std::move(raw.fds[1]);
  struct stat st{};
  if (::fstat(memfd.get(), &st) != 0) return -errno;
  const auto fd_size = static_cast<std::uint64_t>(st.st_size);
  for (std::uint32_t i = 0; i < rep->nr_regions; ++i) {
    const RegionDesc& d = rep->regions[i];
    if (d.offset > fd_size || d.size > fd_size - d.offset) return -EINVAL;
    void* m = ::mmap(nullptr, d.size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(),
                     static_cast<off_t>(d.offset));
    if (m == MAP_FAILED) return -errno;
    c->mappings_.push_back({m, d.size});
    if (!c->memory_.add_region(d.gpa, d.size, static_cast<std::uint8_t*>(m))) return -EINVAL;
  }
  c->domid_ = domid;
  c->shared_info_gfn_ = rep->shared_info_gfn;
  c->shared_info_ = reinterpret_cast<evtchn::shared_info*>(c->memory_.frame(rep->shared_info_gfn));
  if (c->shared_info_ == nullptr) return -EINVAL;
  c->grant_frame_gfns_.assign(rep->grant_frame_gfns, rep->grant_frame_gfns + rep->nr_grant_frames);
  c->xenstore_gfn_ = rep->xenstore_gfn;
  c->xenstore_port_ = rep->xenstore_port;
  // shared_info is the start of its page in the domain's memory: sends wake its pollers.
  c->to_guest_ = std::make_unique<evtchn::UpcallNotifier>(c->shared_info_, c->upcall_fd_.get(),
                                                          /*wake_pollers=*/true);
  // Our maptrack page: every grant this process maps from the domain is recorded there, so
  // the domain can release exactly our pins if we die.
  UniqueFd maptrack = std::move(raw.fds[2]);
  if (::fstat(maptrack.get(), &st) != 0) return -errno;
  if (static_cast<std::uint64_t>(st.st_size) < gnttab::kMaptrackBytes) return -EINVAL;
  void* mt = ::mmap(nullptr, gnttab::kMaptrackBytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                    maptrack.get(), 0);
  if (mt == MAP_FAILED) return -errno;
  c->mappings_.push_back({mt, gnttab::kMaptrackBytes});
  c->active_ = gnttab::ActiveGrantTable::fresh(c->memory_, domid);
  c->active_->set_maptrack(gnttab::Maptrack(static_cast<std::uint64_t*>(mt)));
  *out = std::move(c);
  return 0;
}

int ControlClient::bind_interdomain(evtchn_port_t remote_port, evtchn_port_t* local_port) {
  BindInterdomainRequest req{};
  req.hdr.type = static_cast<std::uint16_t>(MsgType::BindInterdomainRequest);
  req.remote_port = remote_port;
  Parsed p;
  Received raw;
  if (int rc = request(req, &p, &raw); rc != 0) return rc;
  const auto* rep = std::get_if<BindInterdomainReply>(&p.msg);
  if (rep == nullptr) return -EPROTO;
  if (rep->status != 0) return rep->status;
  if (rep->remote_port != remote_port || bindings_.count(rep->local_port)) return -EPROTO;
  bindings_[rep->local_port] = Binding{remote_port, std::move(raw.fds[0])};
  *local_port = rep->local_port;
  return 0;
}

int ControlClient::unbind(evtchn_port_t local_port) {
  UnbindRequest req{};
  req.hdr.type = static_cast<std::uint16_t>(MsgType::UnbindRequest);
  req.local_port = local_port;
  Parsed p;
  Received raw;
  if (int rc = request(req, &p, &raw); rc != 0) return rc;
  const auto* rep = std::get_if<UnbindReply>(&p.msg);
  if (rep == nullptr || rep->local_port != local_port) return -EPROTO;
  if (rep->status == 0) bindings_.erase(local_port);
  return rep->status;
}

int ControlClient::detach() {
  DetachRequest req{};
  req.hdr.type = static_cast<std::uint16_t>(MsgType::DetachRequest);
  Parsed p;
  Received raw;
  const int rc = request(req, &p, &raw);
  const auto* rep = std::get_if<DetachReply>(&p.msg);
  bindings_.clear();
  sock_.reset();
  if (rc != 0) return rc;
  return rep == nullptr ? -EPROTO : rep->status;
}

int ControlClient::notify(evtchn_port_t local_port) {
  auto it = bindings_.find(local_port);
  if (it == bindings_.end()) return -EINVAL;
  to_guest_->notify(it->second.remote_port);
  return 0;
}

int ControlClient::kick_fd(evtchn_port_t local_port) const {
  auto it = bindings_.find(local_port);
  return it == bindings_.end() ? -1 : it->second.kick.get();
}

evtchn_port_t ControlClient::remote_port(evtchn_port_t local_port) const {
  auto it = bindings_.find(local_port);
  return it == bindings_.end() ? 0 : it->second.remote_port;
}

}  // namespace pvio::control
