// Polled driver for the emulated Intel 82540EM (e1000) and the network workloads on it
// (mode=net nic=e1000 op=tx|rx|echo), reporting the same PVIO-RESULT fields as the PV NIC.
#pragma once

#include <stdint.h>

#include "net_workload.h"

namespace pvio::guest {

class E1000Nic {
 public:
  static constexpr uint32_t kRxSlots = 256, kTxSlots = 256, kBufBytes = 2048;

  // Finds 8086:100E on bus 0, resets it, reads the MAC from the EEPROM (checksum verified),
  // sets up both rings and enables RX and TX with interrupts masked (the driver polls the
  // descriptors' DD bits, which costs no exit). Prints why not and returns false on failure.
  bool open();
  const uint8_t* mac() const { return mac_; }

  // Copies a frame into the next TX slot; false if the ring is full. Nothing is sent until
  // push_tx (one TDT write, one exit, for everything queued).
  bool queue_tx(const uint8_t* frame, uint32_t len);
  void push_tx();
  // Takes back completed TX slots (DD written back); returns how many are free.
  uint32_t reclaim_tx();
  bool tx_idle() { return reclaim_tx() == kTxSlots - 1; }
  // Hands every received frame to fn and gives the slots back with one RDT write.
  using RxFn = void (*)(void* cookie, const uint8_t* frame, uint32_t len, bool error);
  uint32_t poll_rx(RxFn fn, void* cookie);

  // Interrupts instead of a busy poll when idle: routes the NIC's INTx pin through the IOAPIC
  // to a vector whose handler acknowledges ICR, and unmasks RXT0 (every received frame).
  void enable_rx_interrupt();
  // Halts until the NIC's next interrupt unless a frame is already waiting or an interrupt came
  // since `seen` (interrupt count as returned by interrupts()).
  void wait_rx(uint64_t seen);
  uint64_t interrupts() const;

  // Register accesses so far: each one a VM exit.
  uint64_t mmio_reads = 0, mmio_writes = 0;
  uint64_t hlts = 0;

 private:
  uint32_t rd(uint32_t reg);
  void wr(uint32_t reg, uint32_t value);
  uint64_t bar0_ = 0;
  uint8_t irq_line_ = 0;
  uint8_t mac_[6] = {};
  struct Desc {
    uint64_t addr;
    uint32_t lower, upper;
  };
  volatile Desc* rx_ = nullptr;
  volatile Desc* tx_ = nullptr;
  uint8_t* rx_buf_ = nullptr;
  uint8_t* tx_buf_ = nullptr;
  uint32_t rx_next_ = 0;                  // next RX slot the device fills
  uint32_t tx_tail_ = 0, tx_clean_ = 0;   // next slot to fill; oldest slot not reclaimed
  uint32_t tx_pushed_ = 0;                // TDT as last written
};

// Runs the workload on the e1000, prints one PVIO-RESULT line and powers off.
[[noreturn]] void run_e1000_workload(const NetOptions& o, uint64_t tsc_khz);

}  // namespace pvio::guest
