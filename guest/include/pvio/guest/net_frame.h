// The Ethernet frames the test guest's network workloads send, receive and echo, written and
// checked the same way by the guest (freestanding) and by host-side tests and `pvio bench`:
// dst(6) src(6) ethertype 0x88B5 (IEEE "local experimental") seq(4, little endian), then byte
// i of the frame is (seq + i) & 0xff. seq kHelloSeq is the guest's "I am listening" frame.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace pvio::guest {

inline constexpr uint16_t kNetEthertype = 0x88B5;
inline constexpr uint32_t kHelloSeq = 0xFFFFFFFFu;
inline constexpr uint32_t kNetHeaderBytes = 18;  // Ethernet header + seq
inline constexpr uint32_t kNetMinFrame = 60;     // without FCS
inline constexpr uint32_t kNetMaxFrame = 1514;

// Fills `len` bytes of frame: header, seq, payload pattern.
inline void net_frame_fill(uint8_t* f, uint32_t len, const uint8_t dst[6], const uint8_t src[6],
                           uint32_t seq) {
  for (int i = 0; i < 6; ++i) f[i] = dst[i], f[6 + i] = src[i];
  f[12] = kNetEthertype >> 8;
  f[13] = kNetEthertype & 0xff;
  for (int i = 0; i < 4; ++i) f[14 + i] = static_cast<uint8_t>(seq >> (8 * i));
  for (uint32_t i = kNetHeaderBytes; i < len; ++i) f[i] = static_cast<uint8_t>(seq + i);
}

// Rewrites only the sequence number and the payload pattern of a filled frame.
inline void net_frame_set_seq(uint8_t* f, uint32_t len, uint32_t seq) {
  for (int i = 0; i < 4; ++i) f[14 + i] = static_cast<uint8_t>(seq >> (8 * i));
  for (uint32_t i = kNetHeaderBytes; i < len; ++i) f[i] = static_cast<uint8_t>(seq + i);
}

inline bool net_frame_is_ours(const uint8_t* f, size_t len) {
  return len >= kNetHeaderBytes && f[12] == (kNetEthertype >> 8) && f[13] == (kNetEthertype & 0xff);
}

inline uint32_t net_frame_seq(const uint8_t* f) {
  return static_cast<uint32_t>(f[14]) | static_cast<uint32_t>(f[15]) << 8 |
         static_cast<uint32_t>(f[16]) << 16 | static_cast<uint32_t>(f[17]) << 24;
}

// Whether the payload after the header follows the pattern of the frame's seq.
inline bool net_frame_payload_ok(const uint8_t* f, size_t len) {
  const uint32_t seq = net_frame_seq(f);
  for (size_t i = kNetHeaderBytes; i < len; ++i)
    if (f[i] != static_cast<uint8_t>(seq + i)) return false;
  return true;
}

}  // namespace pvio::guest
