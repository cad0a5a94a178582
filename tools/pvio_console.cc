// pvio console N: attach to domain N's PV console, as `xl console` does: the guest's console
// ring output on standard output, standard input into the ring; Ctrl-] detaches. The domain's
// pvio-hv serves the ring on $PVIO_RUN_DIR/domain-N.console.sock.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "pvio_cli.h"

namespace pvio::cli {
namespace {

constexpr char kDetach = 0x1d;  // Ctrl-]

// Raw terminal while attached (when standard input is one), restored on the way out.
class RawTerminal {
 public:
  RawTerminal() {
    if (::isatty(STDIN_FILENO) && ::tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      ::cfmakeraw(&raw);
      active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }

 private:
  termios saved_{};
  bool active_ = false;
};

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

int run(const std::vector<std::string>& args) {
  domid_t domid = 0;
  if (args.size() != 1 || !parse_domid(args[0], &domid)) return fail("console", "usage: pvio console N");
  const std::string path = run_dir() + "/domain-" + std::to_string(domid) + ".console.sock";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return fail("console", "socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0 || ::connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return fail("console", "domain " + std::to_string(domid) + " has no console (" + path +
                               ": " + std::strerror(errno) + ")");
  RawTerminal raw;
  pollfd fds[2] = {{sock, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
  char buf[1024];
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) {
      const ssize_t r = ::read(sock, buf, sizeof(buf));
      if (r <= 0) break;  // the domain is gone
      if (!write_all(STDOUT_FILENO, buf, static_cast<std::size_t>(r))) break;
    }
    if (fds[1].revents) {
      const ssize_t r = ::read(STDIN_FILENO, buf, sizeof(buf));
      if (r <= 0) {
        fds[1].fd = -1;  // input ended: keep showing output
        continue;
      }
      const char* end = static_cast<const char*>(std::memchr(buf, kDetach, static_cast<std::size_t>(r)));
      const std::size_t n = end ? static_cast<std::size_t>(end - buf) : static_cast<std::size_t>(r);
      if (n > 0 && !write_all(sock, buf, n)) break;
      if (end) break;
    }
  }
  ::close(sock);
  return 0;
}

}  // namespace

PVIO_VERB("console", "N", "attach to domain N's PV console (Ctrl-] detaches)", run);

}  // namespace pvio::cli
