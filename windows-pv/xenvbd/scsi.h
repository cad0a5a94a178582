// SCSI for a PV disk: each CDB StorPort hands the miniport is parsed once into a typed
// ScsiCommand (a block I/O, a flush, an unmap, a command answered locally, or a check
// condition with its sense code), and the locally answered commands (INQUIRY and its VPD
// pages, READ CAPACITY, MODE SENSE, REPORT LUNS) are built here from the disk's geometry.
// Pure functions over bytes: no StorPort, no blkfront; the host tests call them directly.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pvio::windows::xenvbd {

// The disk as the backend describes it, in the SCSI view.
struct Geometry {
  std::uint64_t sectors512 = 0;   // capacity in 512-byte units (blkif "sectors")
  std::uint32_t block_size = 512;  // logical block = backend "sector-size"
  std::uint32_t physical_block_size = 512;
  bool read_only = false;
  bool flush = false;    // feature-flush-cache or feature-barrier
  bool discard = false;  // feature-discard
  std::uint32_t discard_granularity = 0;  // bytes, 0 = one block
  std::uint32_t max_transfer_bytes = 1u << 20;
  std::uint32_t devid = 0;
  std::uint64_t blocks() const { return sectors512 * 512 / block_size; }
};

// Sense data in fixed format (SPC-4 4.5.3), key / ASC / ASCQ.
struct Sense {
  std::uint8_t key = 0;
  std::uint8_t asc = 0;
  std::uint8_t ascq = 0;
};
inline constexpr std::uint8_t kSenseIllegalRequest = 0x05;
inline constexpr std::uint8_t kSenseDataProtect = 0x07;
inline constexpr std::uint8_t kSenseMediumError = 0x03;
inline constexpr std::uint8_t kSenseNotReady = 0x02;
inline constexpr std::uint8_t kSenseAbortedCommand = 0x0B;
inline constexpr std::uint8_t kScsiStatusGood = 0x00;
inline constexpr std::uint8_t kScsiStatusCheckCondition = 0x02;

enum class CommandKind : std::uint8_t {
  Local,  // answered from the geometry: `data_len` bytes of response built into the buffer
  Read,
  Write,
  Flush,
  Unmap,  // the parameter list is in the data buffer: parse_unmap()
  Check,  // check condition with `sense`
};

struct ScsiCommand {
  CommandKind kind = CommandKind::Check;
  std::uint64_t sector = 0;      // Read/Write: first 512-byte sector
  std::uint32_t nr_sectors = 0;  // Read/Write: 512-byte sectors
  std::uint32_t data_len = 0;    // bytes moved (Read/Write) or answered (Local)
  Sense sense;
};

// Parses cdb[0..cdb_len) against the geometry. `buffer`/`buffer_len` is the SRB's data buffer:
// Local commands write their answer there (truncated to buffer_len and to the CDB's
// allocation length; data_len says how much). Read/Write check that the transfer fits the
// disk and the buffer.
ScsiCommand parse_command(const std::uint8_t* cdb, std::uint32_t cdb_len, const Geometry& geo,
                          std::uint8_t* buffer, std::uint32_t buffer_len);

// One UNMAP block descriptor, converted to 512-byte sectors.
struct UnmapRange {
  std::uint64_t sector = 0;
  std::uint32_t nr_sectors = 0;
};
inline constexpr std::uint32_t kMaxUnmapDescriptors = 8;  // advertised in VPD page B0h

// Parses the UNMAP parameter list (SBC-3 5.28). Returns the number of ranges (0..max) or -1
// with `sense` set for a malformed list or an out-of-range descriptor.
int parse_unmap(const std::uint8_t* list, std::uint32_t list_len, const Geometry& geo,
                UnmapRange* out, std::uint32_t max, Sense& sense);

// Fixed-format sense data into buf (at most len bytes); returns bytes written.
std::uint32_t build_sense(const Sense& s, std::uint8_t* buf, std::uint32_t len);

}  // namespace pvio::windows::xenvbd
