// Control ring requests (netif.h "Control messages") and the Toeplitz flow hash.
#include "ctrl.h"

#include <rte_ether.h>
#include <rte_ip.h>

#include <cstring>
#include <stdexcept>

namespace pvio::netback {

std::uint32_t toeplitz_hash(const std::uint8_t* key, std::size_t key_len, const std::uint8_t* data,
                            std::size_t len) {
  std::uint64_t window = 0;  // the key's next 64 bits, left-most first
  for (std::size_t i = 0; i < 8; ++i) window = (window << 8) | (i < key_len ? key[i] : 0);
  std::uint32_t h = 0;
  for (std::size_t i = 0; i < len; ++i) {
    for (int bit = 7; bit >= 0; --bit) {
      if ((data[i] >> bit) & 1) h ^= static_cast<std::uint32_t>(window >> 32);
      window <<= 1;
    }
    window |= i + 8 < key_len ? key[i + 8] : 0;
  }
  return h;
}

bool flow_hash(const HashConfig& h, const rte_mbuf* m, std::uint32_t* out) {
  const std::uint32_t flags = h.flags.load(std::memory_order_relaxed);
  if (h.algorithm.load(std::memory_order_relaxed) != netif::kCtrlHashAlgorithmToeplitz || flags == 0)
    return false;
  const std::uint32_t len = rte_pktmbuf_data_len(m);
  const auto* p = rte_pktmbuf_mtod(m, const std::uint8_t*);
  if (len < 14) return false;
  std::uint8_t buf[36];
  std::size_t n = 0;
  if (p[12] == 0x08 && p[13] == 0x00 && len >= 14 + 20) {
    const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(p + 14);
    const std::uint32_t ihl = rte_ipv4_hdr_len(ip);
    const bool frag = (ip->fragment_offset &
                       rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) != 0;
    std::memcpy(buf, p + 14 + 12, 8);  // source and destination address
    if ((flags & netif::kCtrlHashTypeIpv4Tcp) && ip->next_proto_id == IPPROTO_TCP && !frag &&
        ihl >= 20 && len >= 14 + ihl + 4) {
      std::memcpy(buf + 8, p + 14 + ihl, 4);  // ports
      n = 12;
    } else if (flags & netif::kCtrlHashTypeIpv4) {
      n = 8;
    }
  } else if (p[12] == 0x86 && p[13] == 0xDD && len >= 14 + 40) {
    std::memcpy(buf, p + 14 + 8, 32);
    if ((flags & netif::kCtrlHashTypeIpv6Tcp) && p[14 + 6] == IPPROTO_TCP && len >= 14 + 40 + 4) {
      std::memcpy(buf + 32, p + 14 + 40, 4);
      n = 36;
    } else if (flags & netif::kCtrlHashTypeIpv6) {
      n = 32;
    }
  }
  if (n == 0) return false;
  std::uint8_t key[kMaxHashKeySize];
  for (unsigned i = 0; i < kMaxHashKeySize; ++i) key[i] = h.key[i].load(std::memory_order_relaxed);
  *out = toeplitz_hash(key, kMaxHashKeySize, buf, n);
  return true;
}

CtrlRing::CtrlRing(const VifConfig& cfg, HashConfig& hash) : cfg_(cfg), hash_(hash) {
  mapper_ = std::make_unique<gnttab::GrantMapper>(cfg.frontend_domid, cfg.backend_domid,
                                                  *cfg.memory, cfg.grant_table_gfns);
  const gnttab::MapResult r = mapper_->map(cfg.ctrl_ring_ref, /*readonly=*/false);
  if (r.status != gnttab::GNTST_okay)
    throw std::invalid_argument("ctrl-ring-ref " + std::to_string(cfg.ctrl_ring_ref) +
                                " does not map: " + gnttab::status_string(r.status));
  handle_ = r.handle;
  const ring::RingIdx start =
      std::atomic_ref<ring::RingIdx>(reinterpret_cast<ring::SringHeader*>(r.addr)->rsp_prod)
          .load(std::memory_order_acquire);
  ring_.attach(r.addr, ring::kPageSize, start);
}

CtrlRing::~CtrlRing() { mapper_->unmap(handle_); }

// The key is copied from the start of the granted page; octets not given are zero.
std::uint32_t CtrlRing::set_key(grant_ref_t gref, std::uint32_t len) {
  if (len > kMaxHashKeySize) return netif::kCtrlStatusBufferOverflow;
  if (len != 0) {
    gnttab::gnttab_copy op{};
    op.source = gnttab::gnttab_copy_ptr::gref(gref, cfg_.frontend_domid, 0);
    op.dest = gnttab::gnttab_copy_ptr::local(page_);
    op.len = static_cast<std::uint16_t>(len);
    op.flags = gnttab::GNTCOPY_source_gref;
    if (mapper_->copy(op) != gnttab::GNTST_okay) return netif::kCtrlStatusInvalidParameter;
  }
  for (unsigned i = 0; i < kMaxHashKeySize; ++i)
    hash_.key[i].store(i < len ? page_[i] : 0, std::memory_order_relaxed);
  return netif::kCtrlStatusSuccess;
}

// A sub-table of `len` entries at entry `off`; every entry must name one of the vif's queues,
// and nothing changes unless all do.
std::uint32_t CtrlRing::set_mapping(grant_ref_t gref, std::uint32_t len, std::uint32_t off) {
  const std::uint32_t size = hash_.mapping_size.load(std::memory_order_relaxed);
  if (off + len < off || off + len > size || len > 4096 / sizeof(std::uint32_t))
    return netif::kCtrlStatusInvalidParameter;
  if (len == 0) return netif::kCtrlStatusSuccess;
  gnttab::gnttab_copy op{};
  op.source = gnttab::gnttab_copy_ptr::gref(gref, cfg_.frontend_domid, 0);
  op.dest = gnttab::gnttab_copy_ptr::local(page_);
  op.len = static_cast<std::uint16_t>(len * sizeof(std::uint32_t));
  op.flags = gnttab::GNTCOPY_source_gref;
  if (mapper_->copy(op) != gnttab::GNTST_okay) return netif::kCtrlStatusInvalidParameter;
  std::uint32_t entries[kMaxHashMappingSize];
  std::memcpy(entries, page_, len * sizeof(std::uint32_t));
  for (std::uint32_t i = 0; i < len; ++i)
    if (entries[i] >= cfg_.queues.size()) return netif::kCtrlStatusInvalidParameter;
  for (std::uint32_t i = 0; i < len; ++i)
    hash_.mapping[off + i].store(entries[i], std::memory_order_relaxed);
  return netif::kCtrlStatusSuccess;
}

std::uint32_t CtrlRing::handle(const netif::xen_netif_ctrl_request& req, std::uint32_t* data) {
  *data = 0;
  switch (req.type) {
    case netif::kCtrlTypeSetHashAlgorithm:
      if (req.data[0] != netif::kCtrlHashAlgorithmNone &&
          req.data[0] != netif::kCtrlHashAlgorithmToeplitz)
        return netif::kCtrlStatusInvalidParameter;
      hash_.algorithm.store(req.data[0], std::memory_order_relaxed);
      if (req.data[0] == netif::kCtrlHashAlgorithmNone) hash_.flags.store(0, std::memory_order_relaxed);
      return netif::kCtrlStatusSuccess;
    case netif::kCtrlTypeGetHashFlags:
      *data = kHashFlagsSupported;
      return netif::kCtrlStatusSuccess;
    case netif::kCtrlTypeSetHashFlags:
      // A valid algorithm must be selected first (netif.h, SET_HASH_FLAGS).
      if ((req.data[0] & ~kHashFlagsSupported) != 0 ||
          hash_.algorithm.load(std::memory_order_relaxed) == netif::kCtrlHashAlgorithmNone)
        return netif::kCtrlStatusInvalidParameter;
      hash_.flags.store(req.data[0], std::memory_order_relaxed);
      return netif::kCtrlStatusSuccess;
    case netif::kCtrlTypeSetHashKey:
      return set_key(req.data[0], req.data[1]);
    case netif::kCtrlTypeGetHashMappingSize:
      *data = kMaxHashMappingSize;
      return netif::kCtrlStatusSuccess;
    case netif::kCtrlTypeSetHashMappingSize:
      if (req.data[0] > kMaxHashMappingSize) return netif::kCtrlStatusInvalidParameter;
      // A new size starts from an all-zero table (every hash to queue 0).
      hash_.mapping_size.store(0, std::memory_order_relaxed);
      for (auto& e : hash_.mapping) e.store(0, std::memory_order_relaxed);
      hash_.mapping_size.store(req.data[0], std::memory_order_relaxed);
      return netif::kCtrlStatusSuccess;
    case netif::kCtrlTypeSetHashMapping:
      return set_mapping(req.data[0], req.data[1], req.data[2]);
    default:
      // Including the gref mapping messages, which this backend does not offer.
      return netif::kCtrlStatusNotSupported;
  }
}

bool CtrlRing::round(std::string* why) {
  const ring::RingCheck c = ring_.unconsumed_requests();
  if (!c.ok()) {
    *why = "ctrl ring: impossible producer index";
    return false;
  }
  for (std::uint32_t i = 0; i < c.count; ++i) {
    netif::xen_netif_ctrl_request req;
    ring_.consume_request(req);  // the only read of this slot
    netif::xen_netif_ctrl_response rsp{};
    rsp.id = req.id;
    rsp.type = req.type;
    rsp.status = handle(req, &rsp.data);
    ring_.produce_response(rsp);
    requests_.fetch_add(1, std::memory_order_relaxed);
  }
  if (c.count != 0 && ring_.push_responses() && cfg_.queues[0].notifier != nullptr)
    cfg_.queues[0].notifier->notify(cfg_.ctrl_port);
  return c.count != 0;
}

bool CtrlRing::final_check(std::string* why) {
  const ring::RingCheck c = ring_.final_check_for_requests();
  if (!c.ok()) {
    *why = "ctrl ring: impossible producer index";
    return false;
  }
  return c.count != 0;
}

}  // namespace pvio::netback
