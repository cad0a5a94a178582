// In-process harness for the xenstore server: each Peer is a connection whose replies and
// watch events are decoded from the exact bytes the server queued.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "pvio/xenstore/protocol.h"
#include "pvio/xenstore/server.h"

namespace pvio::xs::test {

struct Msg {
  uint32_t type = 0;
  uint32_t req_id = 0;
  uint32_t tx_id = 0;
  std::string payload;
  bool is_error(const char* name) const {
    return type == static_cast<uint32_t>(MsgType::XS_ERROR) && payload == std::string(name) + '\0';
  }
};

inline std::string z(std::string_view s) { return std::string(s) + '\0'; }

class Peer final : public Connection {
 public:
  Peer(Server& s, domid_t domid) : server_(s), domid_(domid) { id_ = s.attach(domid, this); }
  ~Peer() override { server_.detach(id_); }

  void send(std::string_view m) override {
    std::span<const char> in(m.data(), m.size());
    ASSERT_EQ(reader_.feed(in), MessageReader::Status::Message);
    ASSERT_TRUE(in.empty());
    Msg msg{reader_.header().type, reader_.header().req_id, reader_.header().tx_id,
            std::string(reader_.payload().data(), reader_.payload().size())};
    reader_.reset();
    if (msg.type == static_cast<uint32_t>(MsgType::XS_WATCH_EVENT))
      events.push_back(msg);
    else
      replies.push_back(msg);
  }
  std::size_t pending_output() const override { return 0; }

  Msg req(MsgType t, std::string_view payload, uint32_t tx = 0) {
    xsd_sockmsg h{static_cast<uint32_t>(t), ++req_id_, tx, static_cast<uint32_t>(payload.size())};
    server_.handle(id_, h, std::span<const char>(payload.data(), payload.size()));
    if (replies.empty()) return Msg{0xffffffffu, 0, 0, "<no reply>"};
    Msg m = replies.front();
    replies.pop_front();
    EXPECT_EQ(m.req_id, req_id_);
    return m;
  }
  // Convenience wrappers returning the error name or "OK"/the payload.
  std::string read(std::string_view p, uint32_t tx = 0) { return result(req(MsgType::XS_READ, z(p), tx)); }
  std::string write(std::string_view p, std::string_view v, uint32_t tx = 0) {
    return result(req(MsgType::XS_WRITE, z(p) + std::string(v), tx));
  }
  std::string mkdir(std::string_view p, uint32_t tx = 0) { return result(req(MsgType::XS_MKDIR, z(p), tx)); }
  std::string rm(std::string_view p, uint32_t tx = 0) { return result(req(MsgType::XS_RM, z(p), tx)); }
  std::string dir(std::string_view p, uint32_t tx = 0) { return result(req(MsgType::XS_DIRECTORY, z(p), tx)); }
  std::string get_perms(std::string_view p) { return result(req(MsgType::XS_GET_PERMS, z(p))); }
  std::string set_perms(std::string_view p, std::vector<std::string> perms, uint32_t tx = 0) {
    std::string payload = z(p);
    for (auto& s : perms) payload += z(s);
    return result(req(MsgType::XS_SET_PERMS, payload, tx));
  }
  std::string watch(std::string_view p, std::string_view tok) {
    return result(req(MsgType::XS_WATCH, z(p) + z(tok)));
  }
  std::string unwatch(std::string_view p, std::string_view tok) {
    return result(req(MsgType::XS_UNWATCH, z(p) + z(tok)));
  }
  uint32_t tx_start() {
    Msg m = req(MsgType::XS_TRANSACTION_START, std::string_view("\0", 1));
    EXPECT_EQ(m.type, static_cast<uint32_t>(MsgType::XS_TRANSACTION_START)) << m.payload;
    return static_cast<uint32_t>(std::stoul(m.payload));
  }
  std::string tx_end(uint32_t tx, bool commit) {
    return result(req(MsgType::XS_TRANSACTION_END, z(commit ? "T" : "F"), tx));
  }
  // Pops all events as "path|token" strings.
  std::vector<std::string> take_events() {
    std::vector<std::string> out;
    for (auto& e : events) {
      auto nul = e.payload.find('\0');
      out.push_back(e.payload.substr(0, nul) + "|" +
                    e.payload.substr(nul + 1, e.payload.size() - nul - 2));
    }
    events.clear();
    return out;
  }

  static std::string result(const Msg& m) {
    if (m.type == static_cast<uint32_t>(MsgType::XS_ERROR)) return m.payload.substr(0, m.payload.size() - 1);
    if (m.payload == std::string("OK\0", 3)) return "OK";
    return m.payload;
  }

  std::deque<Msg> replies;
  std::deque<Msg> events;
  ConnId id() const { return id_; }

 private:
  Server& server_;
  domid_t domid_;
  ConnId id_;
  uint32_t req_id_ = 0;
  MessageReader reader_;
};

}  // namespace pvio::xs::test
