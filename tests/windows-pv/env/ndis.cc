// NDIS for the host: the routines xennet imports and the NDIS side of a miniport's life
// (see ndis_host.h).
#include "ndis_host.h"

#include <chrono>
#include <cstring>
#include <string>

#include "kernel.h"

namespace pvio::windows::test {

namespace {
constexpr std::uint8_t kPoison = 0xDB;

std::vector<std::uint8_t> nb_bytes(PNET_BUFFER nb) {
  std::vector<std::uint8_t> out;
  ULONG left = nb->DataLength;
  ULONG off = nb->CurrentMdlOffset;
  for (PMDL m = nb->CurrentMdl; m != nullptr && left > 0; m = m->Next, off = 0) {
    const ULONG take = std::min<ULONG>(left, m->ByteCount - off);
    const auto* p = static_cast<const std::uint8_t*>(m->MappedSystemVa) + off;
    out.insert(out.end(), p, p + take);
    left -= take;
  }
  if (left != 0) violation("NET_BUFFER DataLength is beyond its MDL chain");
  return out;
}

// An NDIS_OFFLOAD from the miniport, as NDIS checks it: type, a known revision and at least
// that revision's size. Copied (revision 1 leaves IPsecV2 zero).
bool read_offload(const NDIS_OFFLOAD* o, ULONG room, NDIS_OFFLOAD& out, const char* what) {
  std::memset(&out, 0, sizeof out);
  if (o == nullptr || room < NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_1 ||
      o->Header.Type != NDIS_OBJECT_TYPE_OFFLOAD ||
      (o->Header.Revision != NDIS_OFFLOAD_REVISION_1 && o->Header.Revision != NDIS_OFFLOAD_REVISION_2) ||
      o->Header.Size < (o->Header.Revision == NDIS_OFFLOAD_REVISION_1 ? NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_1
                                                                       : NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_2) ||
      o->Header.Size > room) {
    violation(std::string(what) + ": an NDIS_OFFLOAD with a bad header");
    return false;
  }
  std::memcpy(&out, o, o->Header.Size < sizeof out ? o->Header.Size : sizeof out);
  return true;
}

// Everything `cur` enables, `hw` must offer.
void check_within(const NDIS_OFFLOAD& cur, const NDIS_OFFLOAD& hw, const char* what) {
  const auto& c = cur.Checksum;
  const auto& h = hw.Checksum;
  const bool ok =
      (!c.IPv4Transmit.TcpChecksum || h.IPv4Transmit.TcpChecksum) &&
      (!c.IPv4Transmit.UdpChecksum || h.IPv4Transmit.UdpChecksum) &&
      (!c.IPv4Transmit.IpChecksum || h.IPv4Transmit.IpChecksum) &&
      (!c.IPv4Receive.TcpChecksum || h.IPv4Receive.TcpChecksum) &&
      (!c.IPv4Receive.UdpChecksum || h.IPv4Receive.UdpChecksum) &&
      (!c.IPv4Receive.IpChecksum || h.IPv4Receive.IpChecksum) &&
      (!c.IPv6Transmit.TcpChecksum || h.IPv6Transmit.TcpChecksum) &&
      (!c.IPv6Transmit.UdpChecksum || h.IPv6Transmit.UdpChecksum) &&
      (!c.IPv6Receive.TcpChecksum || h.IPv6Receive.TcpChecksum) &&
      (!c.IPv6Receive.UdpChecksum || h.IPv6Receive.UdpChecksum) &&
      (!cur.LsoV1.IPv4.Encapsulation || hw.LsoV1.IPv4.Encapsulation) &&
      (!cur.LsoV2.IPv4.Encapsulation || hw.LsoV2.IPv4.Encapsulation) &&
      (!cur.LsoV2.IPv6.Encapsulation || hw.LsoV2.IPv6.Encapsulation);
  if (!ok) violation(std::string(what) + ": enables an offload the hardware capabilities lack");
}

// The IP version of a frame by its EtherType (one VLAN tag): 4, 6 or 0.
int ip_version(const std::vector<std::uint8_t>& f) {
  std::size_t off = 12;
  if (f.size() < off + 2) return 0;
  unsigned type = f[off] << 8 | f[off + 1];
  if (type == 0x8100 && f.size() >= off + 6) type = f[off + 4] << 8 | f[off + 5];
  return type == 0x0800 ? 4 : type == 0x86DD ? 6 : 0;
}

void check_dispatch_flag(ULONG flags, ULONG bit, const char* routine) {
  const bool at_dispatch = current_irql() == DISPATCH_LEVEL;
  if (((flags & bit) != 0) != at_dispatch)
    violation(std::string(routine) + ": the DISPATCH_LEVEL flag does not match the IRQL");
}
}  // namespace

NdisHost& NdisHost::instance() {
  static NdisHost host;
  return host;
}

NdisHost::NdisHost() { returner_ = std::thread([this] { returner_loop(); }); }
NdisHost::~NdisHost() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  returner_.join();
}

NdisHost::Adapter* NdisHost::from_handle(NDIS_HANDLE h) {
  auto* a = static_cast<Adapter*>(h);
  std::lock_guard lk(mu_);
  if (adapters_.count(a) == 0) {
    violation("an NDIS routine called with an unknown miniport adapter handle");
    return nullptr;
  }
  return a;
}

// ---- driver and adapter life cycle ----

NDIS_STATUS NdisHost::register_driver(PNDIS_MINIPORT_DRIVER_CHARACTERISTICS c, PNDIS_HANDLE out) {
  require_irql(PASSIVE_LEVEL, "NdisMRegisterMiniportDriver");
  if (c->Header.Type != NDIS_OBJECT_TYPE_MINIPORT_DRIVER_CHARACTERISTICS ||
      c->Header.Revision < NDIS_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1 ||
      c->Header.Size < NDIS_SIZEOF_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1 ||
      c->MajorNdisVersion != 6) {
    violation("NdisMRegisterMiniportDriver: bad characteristics header or NDIS version");
    return NDIS_STATUS_FAILURE;
  }
  // The handlers NDIS requires of every miniport.
  if (!c->InitializeHandlerEx || !c->HaltHandlerEx || !c->UnloadHandler || !c->PauseHandler ||
      !c->RestartHandler || !c->OidRequestHandler || !c->SendNetBufferListsHandler ||
      !c->ReturnNetBufferListsHandler || !c->CancelSendHandler ||
      !c->DevicePnPEventNotifyHandler || !c->ShutdownHandlerEx || !c->CancelOidRequestHandler) {
    violation("NdisMRegisterMiniportDriver: a required handler is missing");
    return NDIS_STATUS_FAILURE;
  }
  chars_ = *c;
  registered_ = true;
  *out = this;
  return NDIS_STATUS_SUCCESS;
}

NDIS_STATUS NdisHost::initialize(PDEVICE_OBJECT lower, Adapter** out) {
  auto* a = new Adapter();
  a->lower = lower;
  a->in_initialize = true;
  {
    std::lock_guard lk(mu_);
    adapters_.insert(a);
  }
  NDIS_MINIPORT_INIT_PARAMETERS params{};
  params.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_INIT_PARAMETERS;
  params.Header.Revision = 1;
  params.Header.Size = sizeof params;
  NDIS_STATUS st;
  {
    AtIrql passive(PASSIVE_LEVEL);
    st = chars_.InitializeHandlerEx(a, nullptr, &params);
  }
  std::lock_guard lk(mu_);
  a->in_initialize = false;
  if (st == NDIS_STATUS_PENDING) violation("MiniportInitializeEx returned NDIS_STATUS_PENDING");
  if (st != NDIS_STATUS_SUCCESS) {
    // A failed initialisation must leave nothing behind.
    if (!a->pools.empty() || !a->mdls.empty()) violation("MiniportInitializeEx failed and leaked pools or MDLs");
    adapters_.erase(a);
    delete a;
    *out = nullptr;
    return st;
  }
  if (!a->have_registration || !a->have_general)
    violation("MiniportInitializeEx succeeded without registration and general attributes");
  a->state = State::Paused;  // NDIS 6: an initialised miniport starts paused
  *out = a;
  return st;
}

NDIS_STATUS NdisHost::set_attributes(NDIS_HANDLE h, PNDIS_MINIPORT_ADAPTER_ATTRIBUTES attrs) {
  require_irql(PASSIVE_LEVEL, "NdisMSetMiniportAttributes");
  Adapter* a = from_handle(h);
  if (a == nullptr) return NDIS_STATUS_FAILURE;
  std::lock_guard lk(mu_);
  if (!a->in_initialize) {
    violation("NdisMSetMiniportAttributes outside MiniportInitializeEx");
    return NDIS_STATUS_FAILURE;
  }
  const UCHAR type = attrs->RegistrationAttributes.Header.Type;
  if (type == NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES) {
    const auto& r = attrs->RegistrationAttributes;
    if (r.Header.Revision != NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1 ||
        r.Header.Size < NDIS_SIZEOF_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1) {
      violation("registration attributes: bad header");
      return NDIS_STATUS_INVALID_LENGTH;
    }
    a->context = r.MiniportAdapterContext;
    a->attribute_flags = r.AttributeFlags;
    a->have_registration = true;
    return NDIS_STATUS_SUCCESS;
  }
  if (type == NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES) {
    if (!a->have_registration) {
      violation("general attributes before registration attributes");
      return NDIS_STATUS_FAILURE;
    }
    const auto& g = attrs->GeneralAttributes;
    if (g.Header.Revision < NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1 ||
        g.Header.Size < NDIS_SIZEOF_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1 ||
        g.MacAddressLength != 6 || g.MtuSize == 0) {
      violation("general attributes: bad header, MAC length or MTU");
      return NDIS_STATUS_INVALID_LENGTH;
    }
    // NDIS 6.20 power management: revision 2 reports it in PowerManagementCapabilitiesEx
    // (NDIS_PM_CAPABILITIES, type DEFAULT, revision 1 or 2 at least that revision's size); the
    // NDIS 6.0 member must then be NULL.
    if (g.Header.Revision >= NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_2) {
      if (g.Header.Size < NDIS_SIZEOF_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_2) {
        violation("general attributes: revision 2 with a revision 1 size");
        return NDIS_STATUS_INVALID_LENGTH;
      }
      if (g.PowerManagementCapabilities != nullptr)
        violation("general attributes: revision 2 with PowerManagementCapabilities set (must be NULL)");
      if (const NDIS_PM_CAPABILITIES* pm = g.PowerManagementCapabilitiesEx; pm != nullptr) {
        const bool ok = pm->Header.Type == NDIS_OBJECT_TYPE_DEFAULT &&
                        ((pm->Header.Revision == NDIS_PM_CAPABILITIES_REVISION_1 &&
                          pm->Header.Size >= NDIS_SIZEOF_NDIS_PM_CAPABILITIES_REVISION_1) ||
                         (pm->Header.Revision == 2 && pm->Header.Size >= sizeof(NDIS_PM_CAPABILITIES)));
        if (!ok) {
          violation("PowerManagementCapabilitiesEx: an NDIS_PM_CAPABILITIES with a bad header");
          return NDIS_STATUS_INVALID_PARAMETER;
        }
        // Copied now: the miniport's structure may be gone after the call.
        std::memset(&a->pm, 0, sizeof a->pm);
        std::memcpy(&a->pm, pm, pm->Header.Size < sizeof a->pm ? pm->Header.Size : sizeof a->pm);
        a->have_pm = true;
      }
    }
    a->general = g;
    a->general.PowerManagementCapabilitiesEx = nullptr;  // not to be followed later
    a->have_general = true;
    return NDIS_STATUS_SUCCESS;
  }
  if (type == NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES) {
    const auto& o = attrs->OffloadAttributes;
    if (!a->have_registration) {
      violation("offload attributes before registration attributes");
      return NDIS_STATUS_FAILURE;
    }
    if (o.Header.Revision != NDIS_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES_REVISION_1 ||
        o.Header.Size < NDIS_SIZEOF_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES_REVISION_1) {
      violation("offload attributes: bad header");
      return NDIS_STATUS_INVALID_PARAMETER;
    }
    if (o.DefaultTcpConnectionOffloadConfiguration != nullptr ||
        o.TcpConnectionOffloadHardwareCapabilities != nullptr)
      violation("offload attributes: connection offload is not modelled");
    NDIS_OFFLOAD hw, def;
    if (!read_offload(o.HardwareOffloadCapabilities, sizeof(NDIS_OFFLOAD), hw, "HardwareOffloadCapabilities") ||
        !read_offload(o.DefaultOffloadConfiguration, sizeof(NDIS_OFFLOAD), def, "DefaultOffloadConfiguration"))
      return NDIS_STATUS_INVALID_PARAMETER;
    check_within(def, hw, "DefaultOffloadConfiguration");
    a->offload_hw = hw;
    a->offload_default = a->offload_current = def;
    a->have_offload = true;
    return NDIS_STATUS_SUCCESS;
  }
  violation("NdisMSetMiniportAttributes: attributes of a type this environment does not model");
  return NDIS_STATUS_NOT_SUPPORTED;
}

void NdisHost::device_property(NDIS_HANDLE h, PDEVICE_OBJECT* pdo, PDEVICE_OBJECT* fdo,
                               PDEVICE_OBJECT* next) {
  require_irql(PASSIVE_LEVEL, "NdisMGetDeviceProperty");
  Adapter* a = from_handle(h);
  if (a == nullptr) return;
  // No filter between the miniport and the bus driver: the next device is xenbus's PDO.
  if (pdo != nullptr) *pdo = a->lower;
  if (fdo != nullptr) *fdo = reinterpret_cast<PDEVICE_OBJECT>(a->fdo);
  if (next != nullptr) *next = a->lower;
}

NDIS_STATUS NdisHost::restart(Adapter* a) {
  {
    std::lock_guard lk(mu_);
    if (a->state != State::Paused) violation("(environment) restart of an adapter that is not paused");
    if (a->low_power) violation("(environment) restart of an adapter in D3");
  }
  NDIS_MINIPORT_RESTART_PARAMETERS p{};
  p.Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
  p.Header.Revision = 1;
  p.Header.Size = sizeof p;
  NDIS_STATUS st;
  {
    AtIrql passive(PASSIVE_LEVEL);
    st = chars_.RestartHandler(a->context, &p);
  }
  if (st == NDIS_STATUS_PENDING) violation("MiniportRestart pending: NdisMRestartComplete is not modelled");
  std::lock_guard lk(mu_);
  if (st == NDIS_STATUS_SUCCESS) a->state = State::Running;
  return st;
}

// mu_ held: the pause is over; nothing may be outstanding any more.
void NdisHost::check_pause_done(Adapter* a) {
  if (!a->outstanding.empty())
    violation("pause completed with " + std::to_string(a->outstanding.size()) +
              " send NBL(s) not completed");
  if (!a->with_protocol.empty())
    violation("pause completed with " + std::to_string(a->with_protocol.size()) +
              " receive NBL(s) not yet returned");
  a->state = State::Paused;
  a->pause_pending = false;
  cv_.notify_all();
}

bool NdisHost::pause(Adapter* a, int timeout_ms, NDIS_STATUS* status) {
  {
    std::lock_guard lk(mu_);
    a->state = State::Pausing;
    a->pause_pending = true;
  }
  NDIS_MINIPORT_PAUSE_PARAMETERS p{};
  p.Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
  p.Header.Revision = 1;
  p.Header.Size = sizeof p;
  NDIS_STATUS st;
  {
    AtIrql passive(PASSIVE_LEVEL);
    st = chars_.PauseHandler(a->context, &p);
  }
  if (status != nullptr) *status = st;
  std::unique_lock lk(mu_);
  if (st == NDIS_STATUS_SUCCESS) {
    if (a->pause_pending) check_pause_done(a);
    else violation("MiniportPause returned SUCCESS after calling NdisMPauseComplete");
  } else if (st != NDIS_STATUS_PENDING) {
    violation("MiniportPause returned neither SUCCESS nor PENDING");
  }
  return cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms),
                      [&] { return a->state == State::Paused; });
}

void NdisHost::pause_async(Adapter* a) {
  {
    std::lock_guard lk(mu_);
    a->state = State::Pausing;  // before the thread runs: sends from now on meet a pausing miniport
  }
  a->pauser = std::thread([this, a] { pause(a, 60000); });
}

bool NdisHost::wait_paused(Adapter* a, int timeout_ms) {
  bool ok;
  {
    std::unique_lock lk(mu_);
    ok = cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms),
                      [&] { return a->state == State::Paused; });
  }
  if (ok && a->pauser.joinable()) a->pauser.join();
  return ok;
}

void NdisHost::pause_complete(NDIS_HANDLE h) {
  require_irql(DISPATCH_LEVEL, "NdisMPauseComplete");
  Adapter* a = from_handle(h);
  if (a == nullptr) return;
  std::lock_guard lk(mu_);
  if (a->low_power) violation("NdisMPauseComplete in D3");
  if (!a->pause_pending) {
    violation("NdisMPauseComplete without a pending pause");
    return;
  }
  check_pause_done(a);
}

void NdisHost::halt(Adapter* a) {
  if (a->pauser.joinable()) a->pauser.join();
  {
    std::lock_guard lk(mu_);
    if (a->state != State::Paused) violation("(environment) halt of an adapter that is not paused");
  }
  {
    AtIrql passive(PASSIVE_LEVEL);
    chars_.HaltHandlerEx(a->context, NdisHaltDeviceDisabled);
  }
  std::lock_guard lk(mu_);
  a->state = State::Halted;
  if (!a->pools.empty()) violation("MiniportHaltEx left " + std::to_string(a->pools.size()) + " NBL pool(s)");
  if (!a->mdls.empty()) violation("MiniportHaltEx left " + std::to_string(a->mdls.size()) + " MDL(s)");
  for (const auto& b : a->completed) {
    for (std::size_t i = 0; i < b->size; ++i) {
      if (b->mem[i] != kPoison) {
        violation("send NBL " + std::to_string(b->id) + " was written after its completion");
        break;
      }
    }
  }
  adapters_.erase(a);
  delete a;
}

// ---- pools, NBLs, MDLs ----

NDIS_HANDLE NdisHost::alloc_pool(NDIS_HANDLE h, PNET_BUFFER_LIST_POOL_PARAMETERS p) {
  require_irql(DISPATCH_LEVEL, "NdisAllocateNetBufferListPool");
  Adapter* a = from_handle(h);
  if (a == nullptr) return nullptr;
  if (p->Header.Type != NDIS_OBJECT_TYPE_DEFAULT ||
      p->Header.Revision != NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1 ||
      p->Header.Size < NDIS_SIZEOF_NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1) {
    violation("NdisAllocateNetBufferListPool: bad parameters header");
    return nullptr;
  }
  if (p->fAllocateNetBuffer == 0 || p->ContextSize != 0) {
    violation("NdisAllocateNetBufferListPool: only pools with NET_BUFFERs and no context are modelled");
    return nullptr;
  }
  count_allocation();
  auto* pool = new Pool{a, {}};
  std::lock_guard lk(mu_);
  a->pools.insert(pool);
  all_pools_.insert(pool);
  return pool;
}

void NdisHost::free_pool(NDIS_HANDLE h) {
  require_irql(DISPATCH_LEVEL, "NdisFreeNetBufferListPool");
  auto* pool = static_cast<Pool*>(h);
  std::lock_guard lk(mu_);
  if (all_pools_.erase(pool) == 0) {
    violation("NdisFreeNetBufferListPool of an unknown pool");
    return;
  }
  if (!pool->nbls.empty()) violation("NdisFreeNetBufferListPool with NBLs still allocated from it");
  pool->adapter->pools.erase(pool);
  delete pool;
}

PNET_BUFFER_LIST NdisHost::alloc_nbl(NDIS_HANDLE h, PMDL chain, ULONG offset, SIZE_T length) {
  require_irql(DISPATCH_LEVEL, "NdisAllocateNetBufferAndNetBufferList");
  auto* pool = static_cast<Pool*>(h);
  count_allocation();
  std::lock_guard lk(mu_);
  if (all_pools_.count(pool) == 0) {
    violation("NdisAllocateNetBufferAndNetBufferList from an unknown pool");
    return nullptr;
  }
  auto* mem = static_cast<std::uint8_t*>(
      std::aligned_alloc(16, sizeof(NET_BUFFER_LIST) + sizeof(NET_BUFFER)));
  std::memset(mem, 0, sizeof(NET_BUFFER_LIST) + sizeof(NET_BUFFER));
  auto* nbl = reinterpret_cast<PNET_BUFFER_LIST>(mem);
  auto* nb = reinterpret_cast<PNET_BUFFER>(mem + sizeof(NET_BUFFER_LIST));
  nbl->FirstNetBuffer = nb;
  nbl->NdisPoolHandle = pool;
  nb->MdlChain = nb->CurrentMdl = chain;
  nb->DataOffset = nb->CurrentMdlOffset = offset;
  nb->DataLength = static_cast<ULONG>(length);
  nb->NdisPoolHandle = pool;
  pool->nbls.insert(nbl);
  return nbl;
}

void NdisHost::free_nbl(PNET_BUFFER_LIST nbl) {
  require_irql(DISPATCH_LEVEL, "NdisFreeNetBufferList");
  std::lock_guard lk(mu_);
  auto* pool = static_cast<Pool*>(nbl->NdisPoolHandle);
  if (all_pools_.count(pool) == 0 || pool->nbls.erase(nbl) == 0) {
    violation("NdisFreeNetBufferList of an NBL this miniport did not allocate");
    return;
  }
  if (pool->adapter->with_protocol.count(nbl) != 0)
    violation("NdisFreeNetBufferList of a receive NBL the protocol still owns");
  std::free(nbl);
}

PMDL NdisHost::alloc_mdl(NDIS_HANDLE h, PVOID va, ULONG len) {
  require_irql(DISPATCH_LEVEL, "NdisAllocateMdl");
  Adapter* a = from_handle(h);
  if (a == nullptr) return nullptr;
  count_allocation();
  auto* mdl = new MDL{};
  mdl->MdlFlags = MDL_SOURCE_IS_NONPAGED_POOL;
  mdl->MappedSystemVa = va;
  const auto addr = reinterpret_cast<std::uintptr_t>(va);
  mdl->StartVa = reinterpret_cast<PVOID>(addr & ~std::uintptr_t{4095});
  mdl->ByteOffset = static_cast<ULONG>(addr & 4095);
  mdl->ByteCount = len;
  std::lock_guard lk(mu_);
  a->mdls.insert(mdl);
  return mdl;
}

void NdisHost::free_mdl(PMDL mdl) {
  require_irql(DISPATCH_LEVEL, "NdisFreeMdl");
  std::lock_guard lk(mu_);
  for (Adapter* a : adapters_) {
    if (a->mdls.erase(mdl) != 0) {
      delete mdl;
      return;
    }
  }
  violation("NdisFreeMdl of an MDL NdisAllocateMdl did not make");
}

// ---- sends ----

std::vector<std::uint64_t> NdisHost::send(Adapter* a, const std::vector<SendNbl>& nbls) {
  std::vector<std::uint64_t> ids;
  PNET_BUFFER_LIST head = nullptr, tail = nullptr;
  {
    std::lock_guard lk(mu_);
    if (a->state != State::Running && a->state != State::Pausing)
      violation("(environment) send to an adapter that is neither running nor pausing");
    for (const SendNbl& s : nbls) {
      if (!s.beyond_advertised) {
        // The stack asks only for what the current configuration enables.
        const auto& c = a->offload_current.Checksum;
        NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO ci;
        ci.Value = s.checksum_info;
        NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO li;
        li.Value = s.lso_info;
        const auto& t = ci.Transmit;
        bool ok = true;
        if (t.IsIPv4) ok = (!t.TcpChecksum || c.IPv4Transmit.TcpChecksum) &&
                           (!t.UdpChecksum || c.IPv4Transmit.UdpChecksum) &&
                           (!t.IpHeaderChecksum || c.IPv4Transmit.IpChecksum);
        if (t.IsIPv6) ok = ok && (!t.TcpChecksum || c.IPv6Transmit.TcpChecksum) &&
                           (!t.UdpChecksum || c.IPv6Transmit.UdpChecksum);
        if (li.LsoV1Transmit.MSS != 0) {
          if (li.Transmit.Type == NDIS_TCP_LARGE_SEND_OFFLOAD_V1_TYPE)
            ok = ok && a->offload_current.LsoV1.IPv4.Encapsulation != 0;
          else if (li.LsoV2Transmit.IPVersion == NDIS_TCP_LARGE_SEND_OFFLOAD_IPv6)
            ok = ok && a->offload_current.LsoV2.IPv6.Encapsulation != 0;
          else
            ok = ok && a->offload_current.LsoV2.IPv4.Encapsulation != 0;
          if (s.frames.size() != 1) violation("(environment) an LSO NBL has one NET_BUFFER");
        }
        if (!ok) violation("(environment) a send asks for an offload the miniport has not enabled");
      }
      const std::size_t nnb = s.frames.size();
      const std::size_t nmdl = nnb * s.mdl_pieces;
      std::size_t data = 0;
      for (const auto& f : s.frames) data += f.size();
      const std::size_t size = sizeof(NET_BUFFER_LIST) + nnb * sizeof(NET_BUFFER) +
                               nmdl * sizeof(MDL) + data;
      auto b = std::make_unique<SentBlock>();
      b->id = next_id_++;
      b->mem.reset(new std::uint8_t[size]());
      b->size = size;
      auto* nbl = reinterpret_cast<PNET_BUFFER_LIST>(b->mem.get());
      auto* nbs = reinterpret_cast<PNET_BUFFER>(nbl + 1);
      auto* mdls = reinterpret_cast<PMDL>(nbs + nnb);
      auto* bytes = reinterpret_cast<std::uint8_t*>(mdls + nmdl);
      nbl->NetBufferListInfo[TcpIpChecksumNetBufferListInfo] = s.checksum_info;
      nbl->NetBufferListInfo[TcpLargeSendNetBufferListInfo] = s.lso_info;
      nbl->SourceHandle = this;
      for (std::size_t i = 0; i < nnb; ++i) {
        const auto& f = s.frames[i];
        std::memcpy(bytes, f.data(), f.size());
        PNET_BUFFER nb = &nbs[i];
        if (i + 1 < nnb) nb->Next = &nbs[i + 1];
        // Split the frame over mdl_pieces MDLs of about equal size.
        std::size_t at = 0;
        for (unsigned k = 0; k < s.mdl_pieces; ++k) {
          PMDL m = &mdls[i * s.mdl_pieces + k];
          const std::size_t len = k + 1 == s.mdl_pieces ? f.size() - at : f.size() / s.mdl_pieces;
          m->MdlFlags = MDL_SOURCE_IS_NONPAGED_POOL;
          m->MappedSystemVa = bytes + at;
          m->ByteCount = static_cast<ULONG>(len);
          if (k + 1 < s.mdl_pieces) m->Next = m + 1;
          at += len;
        }
        nb->MdlChain = nb->CurrentMdl = &mdls[i * s.mdl_pieces];
        nb->DataLength = static_cast<ULONG>(f.size());
        bytes += f.size();
      }
      nbl->FirstNetBuffer = nnb > 0 ? &nbs[0] : nullptr;
      if (tail != nullptr) tail->Next = nbl;
      else head = nbl;
      tail = nbl;
      ids.push_back(b->id);
      a->status[b->id] = NDIS_STATUS_PENDING;
      a->nbl_by_id[b->id] = nbl;
      a->outstanding[nbl] = std::move(b);
    }
  }
  AtIrql dispatch(DISPATCH_LEVEL);
  chars_.SendNetBufferListsHandler(a->context, head, NDIS_DEFAULT_PORT_NUMBER,
                                   NDIS_SEND_FLAGS_DISPATCH_LEVEL);
  return ids;
}

void NdisHost::send_complete(NDIS_HANDLE h, PNET_BUFFER_LIST nbls, ULONG flags) {
  require_irql(DISPATCH_LEVEL, "NdisMSendNetBufferListsComplete");
  check_dispatch_flag(flags, NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL, "NdisMSendNetBufferListsComplete");
  Adapter* a = from_handle(h);
  if (a == nullptr) return;
  std::lock_guard lk(mu_);
  // Paused: the pause finished with nothing outstanding, so there is nothing to complete.
  if (a->low_power) violation("send completed in D3 (low-power state)");
  else if (a->state == State::Paused) violation("send completed while the adapter is paused");
  std::vector<PNET_BUFFER_LIST> list;
  for (PNET_BUFFER_LIST n = nbls; n != nullptr; n = n->Next) {
    // A completed NBL is poisoned: its Next is not to be followed.
    if (a->completed_nbls.count(n) != 0) {
      violation("NdisMSendNetBufferListsComplete of an NBL already completed (completed twice)");
      break;
    }
    list.push_back(n);
    if (list.size() > 100000) {
      violation("NdisMSendNetBufferListsComplete: the NBL chain loops");
      return;
    }
  }
  for (PNET_BUFFER_LIST nbl : list) {
    auto it = a->outstanding.find(nbl);
    if (it == a->outstanding.end()) {
      violation("NdisMSendNetBufferListsComplete of an NBL that is not outstanding (completed twice?)");
      continue;
    }
    if (nbl->Status == NDIS_STATUS_PENDING) violation("send NBL completed with NDIS_STATUS_PENDING");
    auto b = std::move(it->second);
    a->outstanding.erase(it);
    a->status[b->id] = nbl->Status;
    a->lso_done[b->id] = nbl->NetBufferListInfo[TcpLargeSendNetBufferListInfo];
    // Ours again: poisoned, and checked at halt.
    std::memset(b->mem.get(), kPoison, b->size);
    b->poisoned = true;
    a->completed_nbls.insert(nbl);
    a->completed.push_back(std::move(b));
  }
  cv_.notify_all();
}

bool NdisHost::wait_sends(Adapter* a, int timeout_ms) {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms),
                      [&] { return a->outstanding.empty(); });
}
std::size_t NdisHost::outstanding_sends(Adapter* a) {
  std::lock_guard lk(mu_);
  return a->outstanding.size();
}
NDIS_STATUS NdisHost::send_status(Adapter* a, std::uint64_t id) {
  std::lock_guard lk(mu_);
  auto it = a->status.find(id);
  return it == a->status.end() ? NDIS_STATUS_FAILURE : it->second;
}
PNET_BUFFER_LIST NdisHost::nbl_of(Adapter* a, std::uint64_t id) {
  std::lock_guard lk(mu_);
  return a->nbl_by_id[id];
}
PVOID NdisHost::completed_lso_info(Adapter* a, std::uint64_t id) {
  std::lock_guard lk(mu_);
  return a->lso_done[id];
}

// ---- receives ----

void NdisHost::indicate_receive(NDIS_HANDLE h, PNET_BUFFER_LIST nbls, ULONG count, ULONG flags) {
  require_irql(DISPATCH_LEVEL, "NdisMIndicateReceiveNetBufferLists");
  check_dispatch_flag(flags, NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL, "NdisMIndicateReceiveNetBufferLists");
  if (flags & ~(NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL | NDIS_RECEIVE_FLAGS_RESOURCES))
    violation("NdisMIndicateReceiveNetBufferLists: flags this environment does not model");
  // RESOURCES: the protocol copies now; the NBLs are the miniport's again on return.
  const bool resources = (flags & NDIS_RECEIVE_FLAGS_RESOURCES) != 0;
  Adapter* a = from_handle(h);
  if (a == nullptr) return;
  std::vector<PNET_BUFFER_LIST> list;
  for (PNET_BUFFER_LIST n = nbls; n != nullptr && list.size() <= count; n = n->Next) list.push_back(n);
  if (list.size() != count) violation("NdisMIndicateReceiveNetBufferLists: NumberOfNetBufferLists is wrong");
  std::lock_guard lk(mu_);
  if (a->low_power) violation("receive indicated in D3 (low-power state)");
  else if (a->state != State::Running && a->state != State::Pausing)
    violation("receive indicated while the adapter is paused");
  for (PNET_BUFFER_LIST nbl : list) {
    auto* pool = static_cast<Pool*>(nbl->NdisPoolHandle);
    if (all_pools_.count(pool) == 0 || pool->adapter != a || pool->nbls.count(nbl) == 0) {
      violation("receive indication of an NBL not allocated from this miniport's pools");
      continue;
    }
    if (a->with_protocol.count(nbl) != 0) {
      violation("receive NBL indicated again before it was returned");
      continue;
    }
    if (nbl->FirstNetBuffer == nullptr || nbl->FirstNetBuffer->Next != nullptr)
      violation("receive NBL without exactly one NET_BUFFER (xennet indicates one frame each)");
    ReceivedFrame f;
    if (nbl->FirstNetBuffer != nullptr) f.data = nb_bytes(nbl->FirstNetBuffer);
    f.checksum.Value = nbl->NetBufferListInfo[TcpIpChecksumNetBufferListInfo];
    {
      // Receive checksum results only for offloads the current configuration enables.
      const auto& r = f.checksum.Receive;
      const auto& c = a->offload_current.Checksum;
      const int v = ip_version(f.data);
      const bool tcp = r.TcpChecksumSucceeded || r.TcpChecksumFailed;
      const bool udp = r.UdpChecksumSucceeded || r.UdpChecksumFailed;
      const bool ip = r.IpChecksumSucceeded || r.IpChecksumFailed;
      const bool ok = (v == 4 && (!tcp || c.IPv4Receive.TcpChecksum) && (!udp || c.IPv4Receive.UdpChecksum) &&
                       (!ip || c.IPv4Receive.IpChecksum)) ||
                      (v == 6 && (!tcp || c.IPv6Receive.TcpChecksum) && (!udp || c.IPv6Receive.UdpChecksum) && !ip) ||
                      (!tcp && !udp && !ip);
      if (!ok) violation("receive checksum information for an offload the miniport has not enabled");
    }
    if (!resources) {
      a->with_protocol[nbl] = f.data;
      if (!a->hold) a->to_return.push_back(nbl);
    } else {
      ++a->resources_indications;
    }
    a->received.push_back(std::move(f));
  }
  cv_.notify_all();
}

// The protocol: gives indicated NBLs back, at DISPATCH_LEVEL, in batches, from its own thread.
void NdisHost::returner_loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] {
      if (stop_) return true;
      for (Adapter* a : adapters_)
        if (!a->to_return.empty()) return true;
      return false;
    });
    if (stop_) return;
    for (Adapter* a : adapters_) {
      if (a->to_return.empty()) continue;
      PNET_BUFFER_LIST head = nullptr, tail = nullptr;
      while (!a->to_return.empty()) {
        PNET_BUFFER_LIST nbl = a->to_return.front();
        a->to_return.pop_front();
        auto it = a->with_protocol.find(nbl);
        if (it == a->with_protocol.end()) continue;
        if (nb_bytes(nbl->FirstNetBuffer) != it->second)
          violation("a receive NBL changed while the protocol owned it");
        a->with_protocol.erase(it);
        nbl->Next = nullptr;
        if (tail != nullptr) tail->Next = nbl;
        else head = nbl;
        tail = nbl;
      }
      if (head == nullptr) continue;
      NDIS_HANDLE ctx = a->context;
      lk.unlock();
      {
        AtIrql dispatch(DISPATCH_LEVEL);
        chars_.ReturnNetBufferListsHandler(ctx, head, NDIS_RETURN_FLAGS_DISPATCH_LEVEL);
      }
      lk.lock();
      cv_.notify_all();
      break;  // adapters_ may have changed: start over
    }
  }
}

std::vector<ReceivedFrame> NdisHost::take_received(Adapter* a) {
  std::lock_guard lk(mu_);
  std::vector<ReceivedFrame> out(std::make_move_iterator(a->received.begin()),
                                 std::make_move_iterator(a->received.end()));
  a->received.clear();
  return out;
}
bool NdisHost::wait_received(Adapter* a, std::size_t count, int timeout_ms) {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms),
                      [&] { return a->received.size() >= count; });
}
void NdisHost::set_hold(Adapter* a, bool hold) {
  std::lock_guard lk(mu_);
  a->hold = hold;
}
std::size_t NdisHost::held(Adapter* a) {
  std::lock_guard lk(mu_);
  return a->with_protocol.size();
}
std::size_t NdisHost::resources_indications(Adapter* a) {
  std::lock_guard lk(mu_);
  return a->resources_indications;
}
void NdisHost::release_held(Adapter* a) {
  std::lock_guard lk(mu_);
  for (const auto& [nbl, snap] : a->with_protocol) a->to_return.push_back(nbl);
  cv_.notify_all();
}

// ---- status and OIDs ----

void NdisHost::indicate_status(NDIS_HANDLE h, PNDIS_STATUS_INDICATION ind) {
  require_irql(DISPATCH_LEVEL, "NdisMIndicateStatusEx");
  Adapter* a = from_handle(h);
  if (a == nullptr) return;
  {
    std::lock_guard lk(mu_);
    if (a->low_power && !a->in_set_power) violation("status indicated in D3 (low-power state)");
  }
  if (ind->Header.Type != NDIS_OBJECT_TYPE_STATUS_INDICATION ||
      ind->Header.Revision != NDIS_STATUS_INDICATION_REVISION_1 || ind->SourceHandle != h) {
    violation("NdisMIndicateStatusEx: bad header or source handle");
    return;
  }
  if (ind->StatusCode == NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG) {
    NDIS_OFFLOAD cur;
    if (!read_offload(static_cast<const NDIS_OFFLOAD*>(ind->StatusBuffer), ind->StatusBufferSize, cur,
                      "NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG"))
      return;
    std::lock_guard lk(mu_);
    if (!a->have_offload) violation("NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG without offload attributes");
    check_within(cur, a->offload_hw, "NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG");
    a->offload_current = cur;
    a->offload_indications.push_back(cur);
    cv_.notify_all();
    return;
  }
  if (ind->StatusCode != NDIS_STATUS_LINK_STATE) return;
  if (ind->StatusBufferSize < sizeof(NDIS_LINK_STATE) || ind->StatusBuffer == nullptr) {
    violation("NDIS_STATUS_LINK_STATE without an NDIS_LINK_STATE");
    return;
  }
  const auto* ls = static_cast<const NDIS_LINK_STATE*>(ind->StatusBuffer);
  if (ls->Header.Type != NDIS_OBJECT_TYPE_DEFAULT || ls->Header.Revision != NDIS_LINK_STATE_REVISION_1)
    violation("NDIS_LINK_STATE: bad header");
  std::lock_guard lk(mu_);
  a->links.push_back(ls->MediaConnectState);
  cv_.notify_all();
}

std::vector<NDIS_MEDIA_CONNECT_STATE> NdisHost::link_states(Adapter* a) {
  std::lock_guard lk(mu_);
  return a->links;
}
bool NdisHost::wait_link(Adapter* a, NDIS_MEDIA_CONNECT_STATE s, int timeout_ms) {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms),
                      [&] { return !a->links.empty() && a->links.back() == s; });
}
const NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES& NdisHost::general(Adapter* a) { return a->general; }
bool NdisHost::has_offload(Adapter* a) {
  std::lock_guard lk(mu_);
  return a->have_offload;
}
NDIS_OFFLOAD NdisHost::offload_hardware(Adapter* a) {
  std::lock_guard lk(mu_);
  return a->offload_hw;
}
NDIS_OFFLOAD NdisHost::offload_default(Adapter* a) {
  std::lock_guard lk(mu_);
  return a->offload_default;
}
NDIS_OFFLOAD NdisHost::offload_current(Adapter* a) {
  std::lock_guard lk(mu_);
  return a->offload_current;
}
std::vector<NDIS_OFFLOAD> NdisHost::offload_indications(Adapter* a) {
  std::lock_guard lk(mu_);
  return a->offload_indications;
}

NDIS_STATUS NdisHost::query(Adapter* a, NDIS_OID oid, void* buf, ULONG len, ULONG* written) {
  NDIS_OID_REQUEST r{};
  r.Header.Type = NDIS_OBJECT_TYPE_OID_REQUEST;
  r.Header.Revision = 1;
  r.Header.Size = sizeof r;
  r.RequestType = NdisRequestQueryInformation;
  r.DATA.QUERY_INFORMATION.Oid = oid;
  r.DATA.QUERY_INFORMATION.InformationBuffer = buf;
  r.DATA.QUERY_INFORMATION.InformationBufferLength = len;
  AtIrql passive(PASSIVE_LEVEL);
  const NDIS_STATUS st = chars_.OidRequestHandler(a->context, &r);
  if (st == NDIS_STATUS_PENDING) violation("OID request pending: NdisMOidRequestComplete is not modelled");
  if (r.DATA.QUERY_INFORMATION.BytesWritten > len) violation("OID query wrote beyond the buffer");
  if (written != nullptr) *written = r.DATA.QUERY_INFORMATION.BytesWritten;
  return st;
}

NDIS_STATUS NdisHost::set(Adapter* a, NDIS_OID oid, const void* buf, ULONG len) {
  NDIS_OID_REQUEST r{};
  r.Header.Type = NDIS_OBJECT_TYPE_OID_REQUEST;
  r.Header.Revision = 1;
  r.Header.Size = sizeof r;
  r.RequestType = NdisRequestSetInformation;
  r.DATA.SET_INFORMATION.Oid = oid;
  r.DATA.SET_INFORMATION.InformationBuffer = const_cast<void*>(buf);
  r.DATA.SET_INFORMATION.InformationBufferLength = len;
  AtIrql passive(PASSIVE_LEVEL);
  const NDIS_STATUS st = chars_.OidRequestHandler(a->context, &r);
  if (st == NDIS_STATUS_PENDING) violation("OID request pending: NdisMOidRequestComplete is not modelled");
  return st;
}


// ---- power ----

NDIS_STATUS NdisHost::power_oid(Adapter* a, NDIS_OID oid, NDIS_DEVICE_POWER_STATE s) {
  const ULONG v = s;
  const NDIS_STATUS st = set(a, oid, &v, sizeof v);
  // Both power OIDs are documented as always succeeding for a miniport.
  if (st != NDIS_STATUS_SUCCESS)
    violation(std::string(oid == OID_PNP_SET_POWER ? "OID_PNP_SET_POWER" : "OID_PNP_QUERY_POWER") +
              " did not succeed");
  return st;
}

bool NdisHost::suspend(Adapter* a, int timeout_ms) {
  {
    std::lock_guard lk(mu_);
    if (a->low_power) violation("(environment) suspend of an adapter already in D3");
    const bool wakes = a->have_pm && (a->pm.MinMagicPacketWakeUp != NdisDeviceStateUnspecified ||
                                      a->pm.MinPatternWakeUp != NdisDeviceStateUnspecified ||
                                      a->pm.MinLinkChangeWakeUp != NdisDeviceStateUnspecified);
    if (!wakes && (a->attribute_flags & NDIS_MINIPORT_ATTRIBUTES_NO_HALT_ON_SUSPEND) == 0) {
      violation("(environment) NDIS would halt this adapter on suspend (no wake-up, no NO_HALT_ON_SUSPEND)");
      return false;
    }
  }
  // NDIS pauses the stack before the power OIDs (no NO_PAUSE_ON_SUSPEND at NDIS 6.20).
  bool paused;
  {
    std::lock_guard lk(mu_);
    paused = a->state == State::Paused;
  }
  if (!paused && !pause(a, timeout_ms)) return false;
  if (power_oid(a, OID_PNP_QUERY_POWER, NdisDeviceStateD3) != NDIS_STATUS_SUCCESS) return false;
  {
    std::lock_guard lk(mu_);
    a->in_set_power = true;
  }
  const NDIS_STATUS st = power_oid(a, OID_PNP_SET_POWER, NdisDeviceStateD3);
  std::lock_guard lk(mu_);
  a->in_set_power = false;
  a->low_power = true;
  if (!a->outstanding.empty() || !a->with_protocol.empty())
    violation("D3 with sends or receive NBLs still outstanding");
  return st == NDIS_STATUS_SUCCESS;
}

bool NdisHost::resume(Adapter* a) {
  {
    std::lock_guard lk(mu_);
    if (!a->low_power) violation("(environment) resume of an adapter that is not in D3");
    a->in_set_power = true;
  }
  const NDIS_STATUS st = power_oid(a, OID_PNP_SET_POWER, NdisDeviceStateD0);
  {
    std::lock_guard lk(mu_);
    a->in_set_power = false;
    a->low_power = false;
  }
  if (st != NDIS_STATUS_SUCCESS) return false;
  return restart(a) == NDIS_STATUS_SUCCESS;
}

bool NdisHost::low_power(Adapter* a) {
  std::lock_guard lk(mu_);
  return a->low_power;
}
bool NdisHost::no_halt_on_suspend(Adapter* a) {
  std::lock_guard lk(mu_);
  return (a->attribute_flags & NDIS_MINIPORT_ATTRIBUTES_NO_HALT_ON_SUSPEND) != 0;
}
NDIS_PM_CAPABILITIES NdisHost::pm_capabilities(Adapter* a, bool* have) {
  std::lock_guard lk(mu_);
  if (have != nullptr) *have = a->have_pm;
  return a->pm;
}

}  // namespace pvio::windows::test

using pvio::windows::test::NdisHost;

extern "C" {

NDIS_STATUS NdisMRegisterMiniportDriver(PDRIVER_OBJECT, PUNICODE_STRING, NDIS_HANDLE,
                                        PNDIS_MINIPORT_DRIVER_CHARACTERISTICS c, PNDIS_HANDLE out) {
  return NdisHost::instance().register_driver(c, out);
}
VOID NdisMDeregisterMiniportDriver(NDIS_HANDLE) {
  pvio::windows::test::require_irql(PASSIVE_LEVEL, "NdisMDeregisterMiniportDriver");
}
NDIS_STATUS NdisMSetMiniportAttributes(NDIS_HANDLE h, PNDIS_MINIPORT_ADAPTER_ATTRIBUTES a) {
  return NdisHost::instance().set_attributes(h, a);
}
VOID NdisMGetDeviceProperty(NDIS_HANDLE h, PDEVICE_OBJECT* pdo, PDEVICE_OBJECT* fdo,
                            PDEVICE_OBJECT* next, PVOID*, PVOID*) {
  NdisHost::instance().device_property(h, pdo, fdo, next);
}
NDIS_HANDLE NdisAllocateNetBufferListPool(NDIS_HANDLE h, PNET_BUFFER_LIST_POOL_PARAMETERS p) {
  return NdisHost::instance().alloc_pool(h, p);
}
VOID NdisFreeNetBufferListPool(NDIS_HANDLE pool) { NdisHost::instance().free_pool(pool); }
PNET_BUFFER_LIST NdisAllocateNetBufferAndNetBufferList(NDIS_HANDLE pool, USHORT ctx, USHORT backfill,
                                                       PMDL chain, ULONG offset, SIZE_T length) {
  if (ctx != 0 || backfill != 0)
    pvio::windows::test::violation("NBL contexts are not modelled");
  return NdisHost::instance().alloc_nbl(pool, chain, offset, length);
}
VOID NdisFreeNetBufferList(PNET_BUFFER_LIST nbl) { NdisHost::instance().free_nbl(nbl); }
PMDL NdisAllocateMdl(NDIS_HANDLE h, PVOID va, ULONG len) {
  return NdisHost::instance().alloc_mdl(h, va, len);
}
VOID NdisFreeMdl(PMDL mdl) { NdisHost::instance().free_mdl(mdl); }
VOID NdisMSendNetBufferListsComplete(NDIS_HANDLE h, PNET_BUFFER_LIST nbls, ULONG flags) {
  NdisHost::instance().send_complete(h, nbls, flags);
}
VOID NdisMIndicateReceiveNetBufferLists(NDIS_HANDLE h, PNET_BUFFER_LIST nbls, NDIS_PORT_NUMBER,
                                        ULONG count, ULONG flags) {
  NdisHost::instance().indicate_receive(h, nbls, count, flags);
}
VOID NdisMIndicateStatusEx(NDIS_HANDLE h, PNDIS_STATUS_INDICATION ind) {
  NdisHost::instance().indicate_status(h, ind);
}
VOID NdisMPauseComplete(NDIS_HANDLE h) { NdisHost::instance().pause_complete(h); }

// Every MDL in this environment is mapped (non-paged pool): a call means the driver built an
// MDL the environment never made.
PVOID MmMapLockedPagesSpecifyCache(PMDL, KPROCESSOR_MODE, MEMORY_CACHING_TYPE, PVOID, ULONG, ULONG) {
  pvio::windows::test::violation("MmMapLockedPagesSpecifyCache: an unmapped MDL (not modelled)");
  return nullptr;
}

}  // extern "C"
