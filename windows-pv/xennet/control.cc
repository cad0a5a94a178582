// xennet's control plane: the netfront Platform seam (xen_platform.h's, with single pages),
// MiniportInitializeEx / MiniportHaltEx, the PASSIVE_LEVEL handshake steps
// that share the core with the datapath, link-state indications and the OIDs.
#include <cstring>
#include <new>

#include "adapter.h"
#include "pvio/windows/xen_platform.h"

namespace pvio::windows::xennet {

namespace {
constexpr ULONG kPoolTag = 0x74656E58;  // 'Xnet'
constexpr std::uint32_t kConnectTimeoutMs = 30000;
constexpr std::uint32_t kCloseTimeoutMs = 5000;

LARGE_INTEGER relative_ms(std::uint32_t ms) {
  LARGE_INTEGER t;
  t.QuadPart = -static_cast<LONGLONG>(ms) * 10000;  // 100 ns units, negative = relative
  return t;
}

netfront::Limits limits() {
  netfront::Limits l;
  l.max_queues = 1;    // one send path, one receive indication path
  l.sg = true;
  l.gso = true;        // LSO sends map to netif GSO
  l.rx_gso = false;    // receive buffers are frame-sized (no RSC/LRO indication)
  return l;
}

const NDIS_OID kSupportedOids[] = {
    OID_GEN_SUPPORTED_LIST,        OID_GEN_MAXIMUM_LOOKAHEAD,   OID_GEN_MAXIMUM_FRAME_SIZE,
    OID_GEN_LINK_SPEED,            OID_GEN_CURRENT_PACKET_FILTER, OID_GEN_CURRENT_LOOKAHEAD,
    OID_GEN_MAXIMUM_TOTAL_SIZE,    OID_GEN_MEDIA_CONNECT_STATUS, OID_GEN_XMIT_OK,
    OID_GEN_RCV_OK,                OID_GEN_XMIT_ERROR,          OID_GEN_RCV_ERROR,
    OID_802_3_PERMANENT_ADDRESS,   OID_802_3_CURRENT_ADDRESS,   OID_802_3_MULTICAST_LIST,
    OID_802_3_MAXIMUM_LIST_SIZE,   OID_TCP_OFFLOAD_CURRENT_CONFIG,
    OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES, OID_TCP_OFFLOAD_PARAMETERS, OID_OFFLOAD_ENCAPSULATION,
    OID_PNP_QUERY_POWER,           OID_PNP_SET_POWER,
};
constexpr ULONG kSupportedFilters = NDIS_PACKET_TYPE_DIRECTED | NDIS_PACKET_TYPE_MULTICAST |
                                    NDIS_PACKET_TYPE_ALL_MULTICAST | NDIS_PACKET_TYPE_BROADCAST |
                                    NDIS_PACKET_TYPE_PROMISCUOUS;
}  // namespace

// The seam: xen_platform.h's over xenbus's interface, with netfront's memory call (one page).
class Adapter::XenPlatform final
    : public XenInterfacePlatform<netfront::Platform, netfront::LogLevel> {
 public:
  using XenInterfacePlatform::XenInterfacePlatform;
  bool alloc_page(netfront::GuestPage& out) override {
    out.addr = contiguous_pages(4096, &out.gfn);
    return out.addr != nullptr;
  }
  void free_page(const netfront::GuestPage& page) override { free_contiguous_pages(page.addr); }
};

void Adapter::logf(ULONG level, const char* msg) {
  DbgPrintEx(DPFLTR_IHVDRIVER_ID, level, "xennet %u: %s\n", static_cast<unsigned>(xen_.DeviceId),
             msg);
}

// IRP_MN_QUERY_INTERFACE down our stack: xenbus's PDO for this NIC answers it.
NTSTATUS Adapter::query_xen_interface(PDEVICE_OBJECT lower) {
  KEVENT done;
  KeInitializeEvent(&done, NotificationEvent, FALSE);
  IO_STATUS_BLOCK iosb{};
  PIRP irp = IoBuildSynchronousFsdRequest(IRP_MJ_PNP, lower, nullptr, 0, nullptr, &done, &iosb);
  if (irp == nullptr) return STATUS_INSUFFICIENT_RESOURCES;
  irp->IoStatus.Status = STATUS_NOT_SUPPORTED;  // a PnP IRP starts out "not supported"
  PIO_STACK_LOCATION sl = IoGetNextIrpStackLocation(irp);
  sl->MajorFunction = IRP_MJ_PNP;
  sl->MinorFunction = IRP_MN_QUERY_INTERFACE;
  sl->Parameters.QueryInterface.InterfaceType = &GUID_PVIO_XEN_INTERFACE;
  sl->Parameters.QueryInterface.Size = sizeof(xen_);
  sl->Parameters.QueryInterface.Version = PVIO_XEN_INTERFACE_VERSION;
  sl->Parameters.QueryInterface.Interface = &xen_.Header;
  sl->Parameters.QueryInterface.InterfaceSpecificData = nullptr;
  NTSTATUS st = IofCallDriver(lower, irp);
  if (st == STATUS_PENDING) {
    KeWaitForSingleObject(&done, Executive, KernelMode, FALSE, nullptr);
    st = iosb.Status;
  }
  return st;
}

// NDIS does not halt an adapter whose initialisation failed: undo what was done.
NDIS_STATUS Adapter::initialize(NDIS_HANDLE handle) {
  const NDIS_STATUS st = initialize_steps(handle);
  if (st != NDIS_STATUS_SUCCESS) halt();
  return st;
}

NDIS_STATUS Adapter::initialize_steps(NDIS_HANDLE handle) {
  handle_ = handle;
  KeInitializeSpinLock(&lock_);
  KeInitializeEvent(&watch_event_, SynchronizationEvent, FALSE);
  KeInitializeEvent(&control_mutex_, SynchronizationEvent, TRUE);

  // The registration attributes first: NDIS needs the adapter context before anything else.
  NDIS_MINIPORT_ADAPTER_ATTRIBUTES attrs;
  std::memset(&attrs, 0, sizeof attrs);
  auto& reg = attrs.RegistrationAttributes;
  reg.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES;
  reg.Header.Revision = NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1;
  reg.Header.Size = NDIS_SIZEOF_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1;
  reg.MiniportAdapterContext = this;
  // A PV NIC cannot wake the system; without this flag NDIS would halt the adapter before every
  // sleep instead of taking it to D3 with OID_PNP_SET_POWER (power.cc).
  reg.AttributeFlags = NDIS_MINIPORT_ATTRIBUTES_NO_HALT_ON_SUSPEND;
  reg.CheckForHangTimeInSeconds = 0;
  reg.InterfaceType = NdisInterfaceInternal;
  NDIS_STATUS st = NdisMSetMiniportAttributes(handle_, &attrs);
  if (st != NDIS_STATUS_SUCCESS) return st;

  PDEVICE_OBJECT pdo = nullptr, fdo = nullptr, next = nullptr;
  NdisMGetDeviceProperty(handle_, &pdo, &fdo, &next, nullptr, nullptr);
  if (next == nullptr || !NT_SUCCESS(query_xen_interface(next)))
    return NDIS_STATUS_ADAPTER_NOT_FOUND;
  have_interface_ = true;
  if (xen_.Kind != PvioXenVif) return NDIS_STATUS_ADAPTER_NOT_FOUND;

  static_assert(sizeof(XenPlatform) <= sizeof(platform_mem_));
  platform_ = new (platform_mem_) XenPlatform(
      XenBinding{&xen_, &Adapter::on_event, &Adapter::on_watch, this, &watch_event_, "xennet"});
  const netfront::Limits l = limits();
  const std::size_t bytes = netfront::Netfront::storage_bytes(l);
  core_storage_ = ExAllocatePoolWithTag(NonPagedPoolNx, bytes + 16, kPoolTag);
  if (core_storage_ == nullptr) return NDIS_STATUS_RESOURCES;
  auto* aligned = reinterpret_cast<void*>(
      (reinterpret_cast<std::uintptr_t>(core_storage_) + 15) & ~std::uintptr_t{15});
  core_ = new (core_mem_) netfront::Netfront(*platform_, xen_.DeviceId, l, aligned, bytes);
  core_->set_rx_handler(&Adapter::on_rx, this);
  core_->set_tx_done_handler(&Adapter::on_tx_done, this);
  if (!alloc_rx_pool()) return NDIS_STATUS_RESOURCES;

  // The handshake now, at PASSIVE_LEVEL: the MAC is part of the general attributes. Events
  // that come meanwhile are replayed by the next control step.
  KeWaitForSingleObject(&control_mutex_, Executive, KernelMode, FALSE, nullptr);
  KIRQL irql;
  lock(irql);
  control_busy_ = true;
  unlock(irql);
  const int rc = core_->connect(kConnectTimeoutMs);
  KeSetEvent(&control_mutex_, 0, FALSE);
  if (rc != 0) {
    logf(DPFLTR_ERROR_LEVEL, "backend did not connect");
    return NDIS_STATUS_ADAPTER_NOT_FOUND;
  }
  std::memcpy(mac_, core_->mac(), sizeof mac_);
  st = set_attributes();
  if (st != NDIS_STATUS_SUCCESS) return st;
  st = set_offload_attributes();
  if (st != NDIS_STATUS_SUCCESS) return st;
  steady_ = true;
  control_step();  // catch up with the backend and with deferred events
  return NDIS_STATUS_SUCCESS;
}

NDIS_STATUS Adapter::set_attributes() {
  NDIS_MINIPORT_ADAPTER_ATTRIBUTES attrs;
  std::memset(&attrs, 0, sizeof attrs);
  auto& g = attrs.GeneralAttributes;
  g.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES;
  // Revision 2 (NDIS 6.20, the version registered in driver.cc): the power management
  // capabilities go in PowerManagementCapabilitiesEx, the old member stays NULL. The adapter
  // has D0 and D3 and no wake-up of any kind (no WoL patterns, magic packet, link change or
  // protocol offloads); NDIS copies the structure during the call.
  g.Header.Revision = NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_2;
  g.Header.Size = NDIS_SIZEOF_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_2;
  NDIS_PM_CAPABILITIES pm;
  std::memset(&pm, 0, sizeof pm);
  pm.Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
  pm.Header.Revision = NDIS_PM_CAPABILITIES_REVISION_1;
  pm.Header.Size = NDIS_SIZEOF_NDIS_PM_CAPABILITIES_REVISION_1;
  pm.MinMagicPacketWakeUp = NdisDeviceStateUnspecified;
  pm.MinPatternWakeUp = NdisDeviceStateUnspecified;
  pm.MinLinkChangeWakeUp = NdisDeviceStateUnspecified;
  g.PowerManagementCapabilities = nullptr;
  g.PowerManagementCapabilitiesEx = &pm;
  g.MediaType = NdisMedium802_3;
  g.PhysicalMediumType = NdisPhysicalMediumUnspecified;
  g.MtuSize = kMtu;
  g.MaxXmitLinkSpeed = g.XmitLinkSpeed = g.MaxRcvLinkSpeed = g.RcvLinkSpeed = kLinkSpeedBps;
  const bool up = core_->carrier();
  g.MediaConnectState = up ? MediaConnectStateConnected : MediaConnectStateDisconnected;
  g.MediaDuplexState = MediaDuplexStateFull;
  link_indicated_ = g.MediaConnectState;
  g.LookaheadSize = kMtu;
  g.MacOptions = NDIS_MAC_OPTION_COPY_LOOKAHEAD_DATA | NDIS_MAC_OPTION_TRANSFERS_NOT_PEND |
                 NDIS_MAC_OPTION_NO_LOOPBACK;
  g.SupportedPacketFilters = kSupportedFilters;
  g.MaxMulticastListSize = kMaxMulticast;
  g.MacAddressLength = 6;
  std::memcpy(g.PermanentMacAddress, mac_, 6);
  std::memcpy(g.CurrentMacAddress, mac_, 6);
  g.AccessType = NET_IF_ACCESS_BROADCAST;
  g.DirectionType = NET_IF_DIRECTION_SENDRECEIVE;
  g.ConnectionType = NET_IF_CONNECTION_DEDICATED;
  g.IfType = IF_TYPE_ETHERNET_CSMACD;
  g.IfConnectorPresent = TRUE;
  g.SupportedStatistics = NDIS_STATISTICS_XMIT_OK_SUPPORTED | NDIS_STATISTICS_RCV_OK_SUPPORTED |
                          NDIS_STATISTICS_XMIT_ERROR_SUPPORTED |
                          NDIS_STATISTICS_RCV_ERROR_SUPPORTED;
  g.SupportedOidList = const_cast<PNDIS_OID>(kSupportedOids);
  g.SupportedOidListLength = sizeof kSupportedOids;
  return NdisMSetMiniportAttributes(handle_, &attrs);
}

// What the first connection negotiated is what NDIS is told the adapter can do; everything
// it can do starts enabled (NDIS applies the standardized registry keywords afterwards
// through OID_TCP_OFFLOAD_PARAMETERS).
NDIS_STATUS Adapter::set_offload_attributes() {
  offloads_hw_ = hardware_offloads(core_->negotiated());
  offloads_ = offloads_hw_;
  NDIS_OFFLOAD hw, def;
  to_ndis_offload(offloads_hw_, true, true, hw);
  to_ndis_offload(offloads_, encap_ip4_, encap_ip6_, def);
  NDIS_MINIPORT_ADAPTER_ATTRIBUTES attrs;
  std::memset(&attrs, 0, sizeof attrs);
  auto& o = attrs.OffloadAttributes;
  o.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES;
  o.Header.Revision = NDIS_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES_REVISION_1;
  o.Header.Size = NDIS_SIZEOF_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES_REVISION_1;
  o.DefaultOffloadConfiguration = &def;
  o.HardwareOffloadCapabilities = &hw;
  return NdisMSetMiniportAttributes(handle_, &attrs);
}

void Adapter::current_offload(NDIS_OFFLOAD& out) {
  KIRQL irql;
  lock(irql);
  const Offloads on = offloads_;
  const bool ip4 = encap_ip4_, ip6 = encap_ip6_;
  unlock(irql);
  to_ndis_offload(on, ip4, ip6, out);
}

// NDIS and the protocols learn the new configuration only from this indication.
void Adapter::indicate_offload_config() {
  NDIS_OFFLOAD cur;
  current_offload(cur);
  NDIS_STATUS_INDICATION ind;
  std::memset(&ind, 0, sizeof ind);
  ind.Header.Type = NDIS_OBJECT_TYPE_STATUS_INDICATION;
  ind.Header.Revision = NDIS_STATUS_INDICATION_REVISION_1;
  ind.Header.Size = sizeof ind;
  ind.SourceHandle = handle_;
  ind.PortNumber = NDIS_DEFAULT_PORT_NUMBER;
  ind.StatusCode = NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG;
  ind.StatusBuffer = &cur;
  ind.StatusBufferSize = sizeof cur;
  NdisMIndicateStatusEx(handle_, &ind);
}

// One NBL per receive buffer, built once: the I/O path only moves them between the free list
// and NDIS.
bool Adapter::alloc_rx_pool() {
  NET_BUFFER_LIST_POOL_PARAMETERS p;
  std::memset(&p, 0, sizeof p);
  p.Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
  p.Header.Revision = NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1;
  p.Header.Size = NDIS_SIZEOF_NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1;
  p.ProtocolId = NDIS_PROTOCOL_ID_DEFAULT;
  p.fAllocateNetBuffer = TRUE;
  p.PoolTag = kPoolTag;
  rx_pool_ = NdisAllocateNetBufferListPool(handle_, &p);
  if (rx_pool_ == nullptr) return false;
  rx_buffers_ = static_cast<std::uint8_t*>(
      ExAllocatePoolWithTag(NonPagedPoolNx, SIZE_T{kRxNbls} * kRxBufferBytes, kPoolTag));
  if (rx_buffers_ == nullptr) return false;
  for (std::uint32_t i = 0; i < kRxNbls; ++i) {
    rx_mdls_[i] = NdisAllocateMdl(handle_, rx_buffers_ + SIZE_T{i} * kRxBufferBytes, kRxBufferBytes);
    if (rx_mdls_[i] == nullptr) return false;
    rx_nbls_[i] = NdisAllocateNetBufferAndNetBufferList(rx_pool_, 0, 0, rx_mdls_[i], 0,
                                                        kRxBufferBytes);
    if (rx_nbls_[i] == nullptr) return false;
    rx_nbls_[i]->SourceHandle = handle_;
    rx_nbls_[i]->Next = rx_free_;
    rx_free_ = rx_nbls_[i];
    ++rx_free_count_;
  }
  return true;
}

void Adapter::free_rx_pool() {
  for (std::uint32_t i = 0; i < kRxNbls; ++i) {
    if (rx_nbls_[i] != nullptr) NdisFreeNetBufferList(rx_nbls_[i]);
    if (rx_mdls_[i] != nullptr) NdisFreeMdl(rx_mdls_[i]);
    rx_nbls_[i] = nullptr;
    rx_mdls_[i] = nullptr;
  }
  rx_free_ = nullptr;
  rx_free_count_ = 0;
  if (rx_buffers_ != nullptr) ExFreePoolWithTag(rx_buffers_, kPoolTag);
  rx_buffers_ = nullptr;
  if (rx_pool_ != nullptr) NdisFreeNetBufferListPool(rx_pool_);
  rx_pool_ = nullptr;
}

// NDIS halts a paused adapter: no send is outstanding and every receive NBL is back.
void Adapter::halt() {
  steady_ = false;
  if (core_ != nullptr) {
    KeWaitForSingleObject(&control_mutex_, Executive, KernelMode, FALSE, nullptr);
    KIRQL irql;
    lock(irql);
    control_busy_ = true;
    unlock(irql);
    core_->close(kCloseTimeoutMs);
    core_->~Netfront();
    core_ = nullptr;
    KeSetEvent(&control_mutex_, 0, FALSE);
  }
  free_rx_pool();
  if (core_storage_ != nullptr) ExFreePoolWithTag(core_storage_, kPoolTag);
  core_storage_ = nullptr;
  if (have_interface_ && xen_.Header.InterfaceDereference != nullptr)
    xen_.Header.InterfaceDereference(xen_.Header.Context);
  have_interface_ = false;
}

VOID Adapter::on_watch(PVOID ctx, PCSTR) {
  auto* a = static_cast<Adapter*>(ctx);
  KeSetEvent(&a->watch_event_, 0, FALSE);
  if (a->steady_) a->control_step();
}

// One step of the handshake state machine at PASSIVE_LEVEL, with the datapath held off the
// core. A failed step is retried after a backoff (10 ms doubling) a few times; after that
// the next watch event tries again, so a broken backend never makes a tight loop.
void Adapter::control_step() {
  // Halt and the power transitions hold the mutex while they wait for watch events on this
  // very thread (the core's xs_wait): they clear steady_ first, and a step waiting here then
  // gives way instead of blocking the watch thread.
  for (;;) {
    LARGE_INTEGER t = relative_ms(10);
    if (KeWaitForSingleObject(&control_mutex_, Executive, KernelMode, FALSE, &t) == STATUS_SUCCESS)
      break;
    if (!steady_) return;
  }
  // A watch that raced with halt, or one while in D3: the connection is closed on purpose and
  // reopened only by the D0 transition (power.cc).
  if (core_ == nullptr || low_power_) {
    KeSetEvent(&control_mutex_, 0, FALSE);
    return;
  }
  KIRQL irql;
  lock(irql);
  control_busy_ = true;
  unlock(irql);

  for (std::uint32_t attempt = 0, ms = 10; attempt < 4; ++attempt, ms *= 2) {
    if (core_->backend_changed() == 0) break;
    KEVENT never;
    KeInitializeEvent(&never, NotificationEvent, FALSE);
    LARGE_INTEGER t = relative_ms(ms);
    KeWaitForSingleObject(&never, Executive, KernelMode, FALSE, &t);
  }

  Deferred d;
  lock(irql);
  control_busy_ = false;
  take_core_done(d);  // sends the core finished while tearing a connection down
  if (events_pending_) {
    events_pending_ = false;
    datapath_events(d);
  } else {
    drain_tx(d);
  }
  check_pause(d);
  unlock(irql);
  flush(d);
  indicate_link_if_changed();
  KeSetEvent(&control_mutex_, 0, FALSE);
}

// The carrier is the connection (both ends Connected, no protocol error).
void Adapter::indicate_link_if_changed() {
  const bool up = core_ != nullptr && core_->carrier();
  const NDIS_MEDIA_CONNECT_STATE s = up ? MediaConnectStateConnected : MediaConnectStateDisconnected;
  if (s != link_indicated_) indicate_link(s);
}

void Adapter::indicate_link(NDIS_MEDIA_CONNECT_STATE s) {
  link_indicated_ = s;
  const bool up = s == MediaConnectStateConnected;
  NDIS_LINK_STATE ls;
  std::memset(&ls, 0, sizeof ls);
  ls.Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
  ls.Header.Revision = NDIS_LINK_STATE_REVISION_1;
  ls.Header.Size = sizeof ls;
  ls.MediaConnectState = s;
  ls.MediaDuplexState = up ? MediaDuplexStateFull : MediaDuplexStateUnknown;
  ls.XmitLinkSpeed = ls.RcvLinkSpeed = up ? kLinkSpeedBps : NDIS_LINK_SPEED_UNKNOWN;
  NDIS_STATUS_INDICATION ind;
  std::memset(&ind, 0, sizeof ind);
  ind.Header.Type = NDIS_OBJECT_TYPE_STATUS_INDICATION;
  ind.Header.Revision = NDIS_STATUS_INDICATION_REVISION_1;
  ind.Header.Size = sizeof ind;
  ind.SourceHandle = handle_;
  ind.PortNumber = NDIS_DEFAULT_PORT_NUMBER;
  ind.StatusCode = NDIS_STATUS_LINK_STATE;
  ind.StatusBuffer = &ls;
  ind.StatusBufferSize = sizeof ls;
  NdisMIndicateStatusEx(handle_, &ind);
}

// ---- OIDs: the basic query set, answered from what the adapter knows ----

NDIS_STATUS Adapter::oid_request(PNDIS_OID_REQUEST req) {
  switch (req->RequestType) {
    case NdisRequestQueryInformation:
    case NdisRequestQueryStatistics: {
      auto& q = req->DATA.QUERY_INFORMATION;
      return query_oid(q.Oid, q.InformationBuffer, q.InformationBufferLength, q.BytesWritten,
                       q.BytesNeeded);
    }
    case NdisRequestSetInformation: {
      auto& s = req->DATA.SET_INFORMATION;
      return set_oid(s.Oid, s.InformationBuffer, s.InformationBufferLength, s.BytesRead,
                     s.BytesNeeded);
    }
    default:
      return NDIS_STATUS_NOT_SUPPORTED;
  }
}

NDIS_STATUS Adapter::query_oid(NDIS_OID oid, PVOID buf, ULONG len, ULONG& written, ULONG& needed) {
  written = 0;
  needed = 0;
  ULONG u32 = 0;
  ULONG64 u64 = 0;
  const void* src = &u32;
  ULONG size = sizeof u32;
  bool counter = false;  // statistics: 32 or 64 bits, as the buffer allows
  NDIS_OFFLOAD offload;
  KIRQL irql;
  switch (oid) {
    case OID_TCP_OFFLOAD_CURRENT_CONFIG:
      current_offload(offload);
      src = &offload;
      size = sizeof offload;
      break;
    case OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES:
      to_ndis_offload(offloads_hw_, true, true, offload);
      src = &offload;
      size = sizeof offload;
      break;
    case OID_GEN_SUPPORTED_LIST:
      src = kSupportedOids;
      size = sizeof kSupportedOids;
      break;
    case OID_GEN_MAXIMUM_LOOKAHEAD:
    case OID_GEN_MAXIMUM_FRAME_SIZE: u32 = kMtu; break;
    case OID_GEN_CURRENT_LOOKAHEAD: u32 = lookahead_; break;
    case OID_GEN_MAXIMUM_TOTAL_SIZE: u32 = kMaxFrame; break;
    case OID_GEN_LINK_SPEED: u32 = static_cast<ULONG>(kLinkSpeedBps / 100); break;  // 100 bps units
    case OID_GEN_CURRENT_PACKET_FILTER: u32 = packet_filter_; break;
    case OID_GEN_MEDIA_CONNECT_STATUS:
      u32 = link_indicated_ == MediaConnectStateConnected ? NdisMediaStateConnected
                                                          : NdisMediaStateDisconnected;
      break;
    case OID_802_3_MAXIMUM_LIST_SIZE: u32 = kMaxMulticast; break;
    case OID_802_3_PERMANENT_ADDRESS:
    case OID_802_3_CURRENT_ADDRESS:
      src = mac_;
      size = 6;
      break;
    case OID_GEN_XMIT_OK:
    case OID_GEN_RCV_OK:
    case OID_GEN_XMIT_ERROR:
    case OID_GEN_RCV_ERROR:
      lock(irql);
      u64 = oid == OID_GEN_XMIT_OK    ? xmit_ok_
            : oid == OID_GEN_RCV_OK   ? rcv_ok_
            : oid == OID_GEN_XMIT_ERROR ? xmit_error_
                                      : rcv_error_ + rcv_no_buffer_;
      unlock(irql);
      counter = true;
      break;
    default:
      return NDIS_STATUS_NOT_SUPPORTED;
  }
  if (counter) {
    if (len >= sizeof u64) {
      src = &u64;
      size = sizeof u64;
    } else {
      u32 = static_cast<ULONG>(u64);
      needed = sizeof u64;
    }
  }
  if (len < size) {
    needed = size;
    return NDIS_STATUS_BUFFER_TOO_SHORT;
  }
  std::memcpy(buf, src, size);
  written = size;
  return NDIS_STATUS_SUCCESS;
}

NDIS_STATUS Adapter::set_oid(NDIS_OID oid, PVOID buf, ULONG len, ULONG& read, ULONG& needed) {
  read = 0;
  needed = 0;
  switch (oid) {
    case OID_GEN_CURRENT_PACKET_FILTER: {
      if (len < sizeof(ULONG)) {
        needed = sizeof(ULONG);
        return NDIS_STATUS_INVALID_LENGTH;
      }
      ULONG f;
      std::memcpy(&f, buf, sizeof f);
      if (f & ~kSupportedFilters) return NDIS_STATUS_NOT_SUPPORTED;
      KIRQL irql;
      lock(irql);
      packet_filter_ = f;
      unlock(irql);
      read = sizeof f;
      return NDIS_STATUS_SUCCESS;
    }
    case OID_GEN_CURRENT_LOOKAHEAD: {
      if (len < sizeof(ULONG)) {
        needed = sizeof(ULONG);
        return NDIS_STATUS_INVALID_LENGTH;
      }
      ULONG v;
      std::memcpy(&v, buf, sizeof v);
      if (v > kMtu) return NDIS_STATUS_INVALID_LENGTH;
      lookahead_ = v;
      read = sizeof v;
      return NDIS_STATUS_SUCCESS;
    }
    case OID_TCP_OFFLOAD_PARAMETERS: {
      Offloads next;
      KIRQL irql;
      lock(irql);
      const Offloads cur = offloads_;
      unlock(irql);
      const NDIS_STATUS st =
          parse_offload_parameters(buf, len, offloads_hw_, cur, next, read, needed);
      if (st != NDIS_STATUS_SUCCESS) return st;
      lock(irql);
      offloads_ = next;  // OIDs are serialised: nothing changed it meanwhile
      unlock(irql);
      indicate_offload_config();
      return NDIS_STATUS_SUCCESS;
    }
    case OID_OFFLOAD_ENCAPSULATION: {
      KIRQL irql;
      lock(irql);
      bool ip4 = encap_ip4_, ip6 = encap_ip6_;
      unlock(irql);
      const NDIS_STATUS st = parse_offload_encapsulation(buf, len, ip4, ip6, read, needed);
      if (st != NDIS_STATUS_SUCCESS) return st;
      lock(irql);
      encap_ip4_ = ip4;
      encap_ip6_ = ip6;
      unlock(irql);
      indicate_offload_config();
      return NDIS_STATUS_SUCCESS;
    }
    case OID_PNP_QUERY_POWER:
      return query_power(buf, len, read, needed);
    case OID_PNP_SET_POWER:
      return set_power(buf, len, read, needed);
    case OID_802_3_MULTICAST_LIST:
      // Every frame the switch delivers is indicated (the backend does the filtering a
      // multicast list would ask for); the list only has to fit.
      if (len % 6 != 0 || len / 6 > kMaxMulticast) return NDIS_STATUS_INVALID_LENGTH;
      read = len;
      return NDIS_STATUS_SUCCESS;
    default:
      return NDIS_STATUS_NOT_SUPPORTED;
  }
}

}  // namespace pvio::windows::xennet
