// xenvbd on xenbus.sys's own child PDO: the bus driver started over a user-mode pvio domain
// (hypervisor.h on the domain, the real pvio-xenstored), a disk attached by the real toolstack
// (`pvio block-attach`) and served by the real pvio-blkback, the vbd child taken from
// BusRelations, and StorPort starting xenvbd's adapter over that PDO. Every grant, event
// channel and xenstore request of the disk goes through xenbus's FDO (its grant table, its
// ISR and DPC, its ring client and watch thread); SCSI data is checked in the backing file.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "env/storport_host.h"
#include "xenbus_fixture.h"

extern "C" NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path);

namespace pvio::windows::test {
namespace {

using blkfront::user::test::fill_pattern;
using blkfront::user::test::read_file;

constexpr domid_t kDomid = 21;
constexpr ULONG kDevid = 51712;
constexpr std::uint64_t kDiskBytes = 32u << 20;
constexpr std::uint32_t kBlock = 512;

std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
std::uint64_t be64(const std::uint8_t* p) { return std::uint64_t{be32(p)} << 32 | be32(p + 4); }
void put32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}
void put64(std::uint8_t* p, std::uint64_t v) {
  put32(p, static_cast<std::uint32_t>(v >> 32));
  put32(p + 4, static_cast<std::uint32_t>(v));
}

class XenvbdOnXenbusTest : public XenbusFixture {
 protected:
  XenvbdOnXenbusTest()
      : XenbusFixture({.domid = kDomid, .disk_bytes = kDiskBytes, .memory_bytes = 64u << 20,
                       .nr_grant_frames = 8, .name = "xenvbd-on-xenbus"}) {}
  void attach_devices() override {
    attach("block-attach " + std::to_string(kDomid) + " " + dom0_->disk);
  }
  void TearDown() override {
    // PnP removes the disk's stack before its bus: the adapter first, then the bus.
    if (adapter_started_) host().stop_adapter();
    if (vbd_ != nullptr) {
      EXPECT_EQ(pdo_of(vbd_)->interface_refs, 0) << "xenvbd kept xenbus's interface referenced";
    }
    XenbusFixture::TearDown();
  }

  static xenbus::Pdo* pdo_of(PDEVICE_OBJECT dev) {
    return static_cast<xenbus::Pdo*>(dev->DeviceExtension);
  }
  StorPortHost& host() { return StorPortHost::instance(); }

  std::unique_ptr<ScsiRequest> run(std::initializer_list<std::uint8_t> cdb_head, std::uint8_t len,
                                   const std::uint8_t* cdb, std::uint32_t data_len, ULONG flags,
                                   const std::vector<std::uint8_t>* out = nullptr) {
    auto r = host().make_request(cdb_head, data_len, flags);
    std::memcpy(r->srb.Cdb, cdb, len);
    r->srb.CdbLength = len;
    if (out != nullptr) std::memcpy(r->data.data(), out->data(), out->size());
    EXPECT_TRUE(host().execute(*r)) << "SRB not completed";
    return r;
  }
  std::unique_ptr<ScsiRequest> rw16(bool write, std::uint64_t lba, std::uint32_t blocks,
                                    const std::vector<std::uint8_t>* out = nullptr) {
    std::uint8_t c[16] = {};
    c[0] = write ? 0x8A : 0x88;
    put64(c + 2, lba);
    put32(c + 10, blocks);
    return run({}, 16, c, blocks * kBlock, write ? SRB_FLAGS_DATA_OUT : SRB_FLAGS_DATA_IN, out);
  }

  // The bus, its vbd child and xenvbd's adapter on it, connected to the backend.
  void bring_up() {
    set_guest_memory(dom_.get());
    ASSERT_EQ(start().status, STATUS_SUCCESS);
    vbd_ = child("XENBUS\\VBD", std::to_string(kDevid));
    ASSERT_NE(vbd_, nullptr);
    ASSERT_EQ(send_pnp(vbd_, IRP_MN_START_DEVICE).status, STATUS_SUCCESS);
    static bool registered = false;
    if (!registered) {
      UNICODE_STRING reg{};
      ASSERT_EQ(DriverEntry(nullptr, &reg), STATUS_SUCCESS);
      registered = true;
    }
    ASSERT_EQ(host().start_adapter(vbd_), SP_RETURN_FOUND);
    adapter_started_ = true;
  }

  void write_and_read_back(std::uint64_t lba, std::uint32_t blocks, unsigned seed) {
    std::vector<std::uint8_t> data(blocks * kBlock);
    fill_pattern(data.data(), lba * kBlock, data.size(), seed);
    auto w = rw16(true, lba, blocks, &data);
    ASSERT_EQ(w->status(), SRB_STATUS_SUCCESS);
    EXPECT_EQ(read_file(dom0_->disk, lba * kBlock, data.size()), data);
    auto rd = rw16(false, lba, blocks);
    ASSERT_EQ(rd->status(), SRB_STATUS_SUCCESS);
    EXPECT_EQ(rd->data, data);
  }

  PDEVICE_OBJECT vbd_ = nullptr;
  bool adapter_started_ = false;
};

// S0 -> S3 -> S0 of the bus and the disk's PDO (the disk stack's own power policy, StorPort's,
// is not modelled: no I/O is sent while it sleeps), then the disk's I/O, whose completions
// come through xenbus's restored upcall, works as before.
TEST_F(XenvbdOnXenbusTest, DiskIoWorksAfterSleepAndResume) {
  if (IsSkipped() || HasFatalFailure()) return;
  bring_up();
  if (HasFatalFailure()) return;
  write_and_read_back((2u << 20) / kBlock, 16, 7);
  const std::uint64_t route = callback_via();

  ASSERT_EQ(send_power(vbd_, IRP_MN_SET_POWER, SystemPowerState, PowerSystemSleeping3), STATUS_SUCCESS);
  ASSERT_EQ(send_power(vbd_, IRP_MN_SET_POWER, DevicePowerState, PowerDeviceD3), STATUS_SUCCESS);
  ASSERT_EQ(send_power(pci_pdo_, IRP_MN_SET_POWER, SystemPowerState, PowerSystemSleeping3), STATUS_SUCCESS);
  EXPECT_EQ(device_power_state(attached_top(pci_pdo_)), PowerDeviceD3);
  EXPECT_EQ(callback_via(), 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_EQ(send_power(pci_pdo_, IRP_MN_SET_POWER, SystemPowerState, PowerSystemWorking), STATUS_SUCCESS);
  ASSERT_EQ(send_power(vbd_, IRP_MN_SET_POWER, SystemPowerState, PowerSystemWorking), STATUS_SUCCESS);
  ASSERT_EQ(send_power(vbd_, IRP_MN_SET_POWER, DevicePowerState, PowerDeviceD0), STATUS_SUCCESS);
  EXPECT_EQ(callback_via(), route);

  write_and_read_back((5u << 20) / kBlock, 128, 8);
  write_and_read_back((5u << 20) / kBlock + 1000, 1, 9);
}

TEST_F(XenvbdOnXenbusTest, ServesSCSIOnTheBusDriversOwnChild) {
  if (IsSkipped() || HasFatalFailure()) return;
  set_guest_memory(dom_.get());  // xenvbd's contiguous pages are the domain's RAM
  ASSERT_EQ(start().status, STATUS_SUCCESS);
  vbd_ = child("XENBUS\\VBD", std::to_string(kDevid));
  ASSERT_NE(vbd_, nullptr) << "no vbd child with xenvbd.inf's hardware ID";
  ASSERT_EQ(send_pnp(vbd_, IRP_MN_START_DEVICE).status, STATUS_SUCCESS);

  // The table a function driver gets from this child names the disk and the domain.
  PVIO_XEN_INTERFACE xen{};
  ASSERT_EQ(query_interface(vbd_, &xen), STATUS_SUCCESS);
  EXPECT_EQ(xen.Kind, PvioXenVbd);
  EXPECT_EQ(xen.DeviceId, kDevid);
  EXPECT_EQ(xen.OwnDomid, kDomid);
  xen.Header.InterfaceDereference(xen.Header.Context);
  EXPECT_EQ(pdo_of(vbd_)->interface_refs, 0);

  static bool registered = false;
  if (!registered) {
    UNICODE_STRING reg{};
    ASSERT_EQ(DriverEntry(nullptr, &reg), STATUS_SUCCESS);
    registered = true;
  }
  ASSERT_EQ(host().start_adapter(vbd_), SP_RETURN_FOUND);
  adapter_started_ = true;
  EXPECT_GE(pdo_of(vbd_)->interface_refs, 1) << "xenvbd does not hold xenbus's interface";

  // The handshake went through xenbus's xenstore client: both ends are Connected in the real
  // daemon.
  const std::string fe = home() + "/device/vbd/" + std::to_string(kDevid);
  const auto fe_state = xs_->read(fe + "/state");
  ASSERT_TRUE(fe_state.ok());
  EXPECT_EQ(fe_state.value, "4");
  const auto be_path = xs_->read(fe + "/backend");
  ASSERT_TRUE(be_path.ok());
  const auto be_state = xs_->read(be_path.value + "/state");
  ASSERT_TRUE(be_state.ok());
  EXPECT_EQ(be_state.value, "4");

  std::uint8_t inq[6] = {0x12, 0, 0, 0, 96, 0};
  auto r = run({}, 6, inq, 96, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(r->data[0], 0x00);  // direct-access block device
  EXPECT_EQ(std::string(reinterpret_cast<char*>(&r->data[8]), 8), "PVIO    ");

  std::uint8_t cap16[16] = {0x9E, 0x10};
  put32(cap16 + 10, 32);
  r = run({}, 16, cap16, 32, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(be64(&r->data[0]), kDiskBytes / kBlock - 1);
  EXPECT_EQ(be32(&r->data[8]), kBlock);

  // A write lands in the backing file; bytes written into the file behind the driver's back
  // read back through it; a read of the written range returns what was written.
  const std::uint64_t lba = (3u << 20) / kBlock;
  for (std::uint32_t blocks : {1u, 128u}) {
    std::vector<std::uint8_t> data(blocks * kBlock);
    fill_pattern(data.data(), lba * kBlock, data.size(), 40 + blocks);
    auto w = rw16(true, lba, blocks, &data);
    ASSERT_EQ(w->status(), SRB_STATUS_SUCCESS);
    EXPECT_EQ(read_file(dom0_->disk, lba * kBlock, data.size()), data) << blocks;
    auto rd = rw16(false, lba, blocks);
    ASSERT_EQ(rd->status(), SRB_STATUS_SUCCESS);
    EXPECT_EQ(rd->data, data) << blocks;
  }
  std::vector<std::uint8_t> behind(64 * 1024);
  fill_pattern(behind.data(), 0, behind.size(), 91);
  {
    const int fd = ::open(dom0_->disk.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, behind.data(), behind.size(), 7u << 20),
              static_cast<ssize_t>(behind.size()));
    ::fsync(fd);
    ::close(fd);
  }
  auto rd = rw16(false, (7u << 20) / kBlock, static_cast<std::uint32_t>(behind.size() / kBlock));
  ASSERT_EQ(rd->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(rd->data, behind);
}

}  // namespace
}  // namespace pvio::windows::test
