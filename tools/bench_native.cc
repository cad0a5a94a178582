// pvio bench's host-native engines on the bench file: one small loop per kind of host I/O, so
// the PV disk is compared with the best the host itself reaches, not with one engine that a
// medium happens to handle badly (io_uring on tmpfs punts every read to an io-wq worker).
#include "bench_native.h"

#include <fcntl.h>
#include <libaio.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <thread>

#include "pvio/guest/pattern.h"
#include "pvio/guest/rng.h"

namespace pvio::cli::native {
namespace {

constexpr std::uint64_t kSeed = 7;  // the guest's seed: the same block sequence as the PV disk
constexpr long kTmpfsMagic = 0x01021994;

std::uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

// O_DIRECT, as pvio-blkback opens the backing; buffered where the file system refuses it.
int open_file(const Job& job, bool* direct) {
  const int mode = job.write ? O_RDWR : O_RDONLY;
  int fd = ::open(job.file.c_str(), mode | O_DIRECT | O_CLOEXEC);
  *direct = fd >= 0;
  if (fd < 0) fd = ::open(job.file.c_str(), mode | O_CLOEXEC);
  return fd;
}

// One aligned buffer per queue slot, written once with the data pattern (as the guest's
// fill=0 and fio do: filling per write would time the fill, not the I/O path).
struct Buffers {
  std::vector<void*> bufs;
  Buffers(std::uint64_t n, std::uint64_t bs) : bufs(n, nullptr) {
    for (auto& b : bufs) {
      if (::posix_memalign(&b, 4096, bs) != 0) throw std::bad_alloc();
      auto* words = static_cast<std::uint64_t*>(b);
      for (std::uint64_t k = 0; k < bs / 8; ++k) words[k] = guest::pattern_word(kSeed, 8 * k);
    }
  }
  ~Buffers() {
    for (void* b : bufs) std::free(b);
  }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;
};

void finish(Run& r, std::vector<std::uint64_t>& lat, std::uint64_t bs) {
  std::sort(lat.begin(), lat.end());
  r.bytes = r.ops * bs;
  if (!lat.empty()) {
    r.p50_ns = lat[(lat.size() - 1) * 50 / 100];
    r.p99_ns = lat[(lat.size() - 1) * 99 / 100];
  }
  r.ok = r.ops > 0 && r.errors == 0;
  if (!r.ok && r.why.empty()) r.why = std::to_string(r.errors) + " failed I/Os";
}

// ---- psync: QD threads, each with one pread/pwrite in flight ----

Run run_psync(const Job& job) {
  Run r;
  r.engine = "psync";
  const int fd = open_file(job, &r.direct);
  if (fd < 0) {
    r.why = std::string("open: ") + std::strerror(errno);
    return r;
  }
  const std::uint64_t blocks = job.size / job.bs, limit = job.time_ms * 1000000ull;
  Buffers bufs(job.qd, job.bs);
  std::atomic<std::uint64_t> next_seq{0}, ops{0}, errors{0};
  std::vector<std::vector<std::uint64_t>> lats(job.qd);
  const std::uint64_t start = now_ns();
  std::vector<std::thread> threads;
  for (std::uint64_t t = 0; t < job.qd; ++t) {
    threads.emplace_back([&, t] {
      guest::Rng rng(kSeed + t);  // thread 0 draws the guest's sequence; the others their own
      auto& lat = lats[t];
      lat.reserve(1 << 16);
      for (;;) {
        const std::uint64_t block = job.random ? rng.next() % blocks : next_seq.fetch_add(1) % blocks;
        const auto off = static_cast<off_t>(block * job.bs);
        const std::uint64_t t0 = now_ns();
        const ssize_t n = job.write ? ::pwrite(fd, bufs.bufs[t], job.bs, off) : ::pread(fd, bufs.bufs[t], job.bs, off);
        const std::uint64_t t1 = now_ns();
        lat.push_back(t1 - t0);
        ops.fetch_add(1, std::memory_order_relaxed);
        if (n != static_cast<ssize_t>(job.bs)) errors.fetch_add(1, std::memory_order_relaxed);
        if (t1 - start >= limit) break;
      }
    });
  }
  for (auto& th : threads) th.join();
  r.elapsed_ns = now_ns() - start;
  if (job.write) ::fdatasync(fd);
  ::close(fd);
  r.ops = ops.load();
  r.errors = errors.load();
  std::vector<std::uint64_t> lat;
  for (auto& l : lats) lat.insert(lat.end(), l.begin(), l.end());
  finish(r, lat, job.bs);
  return r;
}

// ---- queue engines: one thread keeps QD requests in flight ----

// prep() queues one request for `slot`; submit_and_reap() submits what was queued, waits for at
// least one completion and calls done(slot, result) for each completion it finds.
class Queue {
 public:
  virtual ~Queue() = default;
  virtual void prep(std::size_t slot, bool write, void* buf, std::uint64_t len, std::uint64_t off) = 0;
  virtual int submit_and_reap(const std::function<void(std::size_t, long)>& done) = 0;
};

class AioQueue final : public Queue {
 public:
  AioQueue(int fd, std::uint64_t qd, std::string* why) : fd_(fd), iocbs_(qd) {
    if (int rc = io_setup(static_cast<int>(qd), &ctx_); rc < 0) {
      *why = std::string("io_setup: ") + std::strerror(-rc);
      ctx_ = nullptr;
    }
  }
  ~AioQueue() override {
    if (ctx_) io_destroy(ctx_);
  }
  bool ready() const { return ctx_ != nullptr; }
  void prep(std::size_t slot, bool write, void* buf, std::uint64_t len, std::uint64_t off) override {
    iocb* cb = &iocbs_[slot];
    if (write) io_prep_pwrite(cb, fd_, buf, len, static_cast<long long>(off));
    else io_prep_pread(cb, fd_, buf, len, static_cast<long long>(off));
    cb->data = reinterpret_cast<void*>(slot);
    pending_.push_back(cb);
  }
  int submit_and_reap(const std::function<void(std::size_t, long)>& done) override {
    if (!pending_.empty()) {
      const int rc = io_submit(ctx_, static_cast<long>(pending_.size()), pending_.data());
      if (rc != static_cast<int>(pending_.size())) return rc < 0 ? rc : -EIO;
      pending_.clear();
    }
    io_event ev[64];
    const int n = io_getevents(ctx_, 1, 64, ev, nullptr);
    if (n < 0) return n;
    for (int i = 0; i < n; ++i)
      done(reinterpret_cast<std::size_t>(ev[i].data), static_cast<long>(ev[i].res));
    return 0;
  }

 private:
  int fd_;
  io_context_t ctx_ = nullptr;
  std::vector<iocb> iocbs_;
  std::vector<iocb*> pending_;
};

// io_uring in three set-ups: plain (fd, unregistered buffers); registered (fixed file and
// buffers, and COOP_TASKRUN / SINGLE_ISSUER / DEFER_TASKRUN where the kernel takes them);
// SQPOLL (a kernel thread polls the submission queue; fixed file and buffers too).
class UringQueue final : public Queue {
 public:
  enum class Kind { Plain, Registered, Sqpoll };
  UringQueue(Kind kind, int fd, std::uint64_t qd, const std::vector<void*>& bufs, std::uint64_t bs,
             std::string* note, std::string* why)
      : fixed_(kind != Kind::Plain), fd_(fd) {
    const unsigned entries = static_cast<unsigned>(std::max<std::uint64_t>(qd, 2) * 2);
    int rc = -EINVAL;
    if (kind == Kind::Plain) {
      rc = io_uring_queue_init(entries, &ring_, 0);
    } else if (kind == Kind::Registered) {
      // Newest set-up first; older kernels refuse the flags they do not know with EINVAL.
      const std::pair<unsigned, const char*> tries[] = {
          {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
           "single_issuer,defer_taskrun"},
          {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER, "coop_taskrun,single_issuer"},
          {IORING_SETUP_COOP_TASKRUN, "coop_taskrun"},
          {0, "no taskrun flags"}};
      for (const auto& [flags, name] : tries) {
        io_uring_params p{};
        p.flags = flags;
        rc = io_uring_queue_init_params(entries, &ring_, &p);
        if (rc == 0) {
          *note = name;
          break;
        }
      }
    } else {
      io_uring_params p{};
      p.flags = IORING_SETUP_SQPOLL;
      p.sq_thread_idle = 100;  // ms; the run keeps the thread busy, so it never sleeps mid-run
      rc = io_uring_queue_init_params(entries, &ring_, &p);
      *note = "sqpoll";
    }
    if (rc < 0) {
      *why = std::string("io_uring_queue_init: ") + std::strerror(-rc);
      return;
    }
    inited_ = true;
    if (fixed_) {
      std::vector<iovec> iov;
      for (void* b : bufs) iov.push_back({b, bs});
      if ((rc = io_uring_register_files(&ring_, &fd, 1)) < 0 ||
          (rc = io_uring_register_buffers(&ring_, iov.data(), static_cast<unsigned>(iov.size()))) < 0) {
        *why = std::string("io_uring_register: ") + std::strerror(-rc);
        return;
      }
    }
    ready_ = true;
  }
  ~UringQueue() override {
    if (inited_) io_uring_queue_exit(&ring_);
  }
  bool ready() const { return ready_; }
  void prep(std::size_t slot, bool write, void* buf, std::uint64_t len, std::uint64_t off) override {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    const auto n = static_cast<unsigned>(len);
    if (fixed_) {
      const int idx = static_cast<int>(slot);
      if (write) io_uring_prep_write_fixed(sqe, 0, buf, n, off, idx);
      else io_uring_prep_read_fixed(sqe, 0, buf, n, off, idx);
      sqe->flags |= IOSQE_FIXED_FILE;
    } else {
      if (write) io_uring_prep_write(sqe, fd_, buf, n, off);
      else io_uring_prep_read(sqe, fd_, buf, n, off);
    }
    io_uring_sqe_set_data64(sqe, slot);
  }
  int submit_and_reap(const std::function<void(std::size_t, long)>& done) override {
    if (int rc = io_uring_submit_and_wait(&ring_, 1); rc < 0) return rc;
    io_uring_cqe* cqe = nullptr;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++n;
      done(static_cast<std::size_t>(io_uring_cqe_get_data64(cqe)), cqe->res);
    }
    io_uring_cq_advance(&ring_, n);
    return 0;
  }

 private:
  io_uring ring_{};
  bool fixed_, inited_ = false, ready_ = false;
  int fd_;
};

Run run_queue(const std::string& engine, const Job& job, std::uint64_t thread = 0) {
  Run r;
  r.engine = engine;
  const int fd = open_file(job, &r.direct);
  if (fd < 0) {
    r.why = std::string("open: ") + std::strerror(errno);
    return r;
  }
  Buffers bufs(job.qd, job.bs);
  std::unique_ptr<Queue> q;
  if (engine == "libaio") {
    auto a = std::make_unique<AioQueue>(fd, job.qd, &r.why);
    if (a->ready()) q = std::move(a);
  } else {
    const auto kind = engine == "uring" ? UringQueue::Kind::Plain
                      : engine == "uring-reg" ? UringQueue::Kind::Registered
                                              : UringQueue::Kind::Sqpoll;
    auto u = std::make_unique<UringQueue>(kind, fd, job.qd, bufs.bufs, job.bs, &r.note, &r.why);
    if (u->ready()) q = std::move(u);
  }
  if (!q) {
    ::close(fd);
    return r;
  }
  const std::uint64_t blocks = job.size / job.bs, limit = job.time_ms * 1000000ull;
  // The guest's picker: the same blocks as the PV disk (thread t > 0: a sequence of its own).
  guest::Rng rng(kSeed + thread);
  std::vector<std::uint64_t> t0(job.qd), lat;
  lat.reserve(1 << 20);
  std::uint64_t issued = 0, inflight = 0;
  bool stop = false;
  auto issue = [&](std::size_t slot) {
    const std::uint64_t block = job.random ? rng.next() % blocks : issued % blocks;
    ++issued;
    ++inflight;
    t0[slot] = now_ns();
    q->prep(slot, job.write, bufs.bufs[slot], job.bs, block * job.bs);
  };
  const std::uint64_t start = now_ns();
  for (std::size_t i = 0; i < job.qd; ++i) issue(i);
  while (inflight > 0) {
    const int rc = q->submit_and_reap([&](std::size_t slot, long res) {
      const std::uint64_t t1 = now_ns();
      lat.push_back(t1 - t0[slot]);
      ++r.ops;
      --inflight;
      if (res != static_cast<long>(job.bs)) ++r.errors;
      if (t1 - start >= limit) stop = true;
      if (!stop) issue(slot);
    });
    if (rc < 0) {
      r.why = std::string(engine) + ": " + std::strerror(-rc);
      ++r.errors;
      break;
    }
  }
  r.elapsed_ns = now_ns() - start;
  if (job.write) ::fdatasync(fd);
  q.reset();
  ::close(fd);
  finish(r, lat, job.bs);
  return r;
}

// The number after `"key" : ` (fio's JSON spacing) at or after `from`, or -1.
double fio_number(const std::string& j, const std::string& key, std::size_t from) {
  const auto k = j.find("\"" + key + "\" : ", from);
  return k == std::string::npos ? -1 : std::atof(j.c_str() + k + key.size() + 5);
}

}  // namespace

const std::vector<std::string>& engines() {
  static const std::vector<std::string> e = {"psync", "libaio", "uring", "uring-reg", "uring-sqpoll"};
  return e;
}

Run run(const std::string& engine, const Job& job) {
  if (job.size < job.bs || job.qd == 0) {
    Run r;
    r.engine = engine;
    r.why = "file smaller than one block";
    return r;
  }
  if (engine == "psync") {
    Job all = job;
    all.qd = job.qd * std::max<std::uint64_t>(job.threads, 1);
    return run_psync(all);
  }
  if (job.threads <= 1) return run_queue(engine, job);
  // One queue engine per thread, started together; their sums over the longest elapsed time.
  std::vector<Run> runs(job.threads);
  std::vector<std::thread> threads;
  for (std::uint64_t t = 0; t < job.threads; ++t)
    threads.emplace_back([&, t] { runs[t] = run_queue(engine, job, t); });
  for (auto& th : threads) th.join();
  Run r;
  r.engine = engine;
  r.ok = true;
  r.direct = true;
  for (const Run& x : runs) {
    r.ops += x.ops;
    r.bytes += x.bytes;
    r.errors += x.errors;
    r.elapsed_ns = std::max(r.elapsed_ns, x.elapsed_ns);
    r.p50_ns = std::max(r.p50_ns, x.p50_ns);  // the slowest thread's median
    r.p99_ns = std::max(r.p99_ns, x.p99_ns);
    r.ok = r.ok && x.ok;
    r.direct = r.direct && x.direct;
    if (!x.ok && r.why.empty()) r.why = x.why;
    if (r.note.empty()) r.note = x.note;
  }
  return r;
}

int best(const std::vector<Run>& runs) {
  int b = -1;
  double b_iops = 0;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    if (!r.ok || r.elapsed_ns == 0) continue;
    const double iops = r.ops * 1e9 / static_cast<double>(r.elapsed_ns);
    if (b < 0 || iops > b_iops) {
      b = static_cast<int>(i);
      b_iops = iops;
    }
  }
  return b;
}

FioRun run_fio(const std::string& engine, const Job& job) {
  FioRun f;
  const char* rw = job.write ? (job.random ? "randwrite" : "write") : (job.random ? "randread" : "read");
  bool direct = false;
  if (const int fd = open_file(job, &direct); fd >= 0) ::close(fd);
  std::vector<std::string> argv = {"fio", "--name=pvio-bench", "--filename=" + job.file, std::string("--rw=") + rw,
                                   "--bs=" + std::to_string(job.bs), "--size=" + std::to_string(job.size),
                                   "--runtime=" + std::to_string(job.time_ms) + "ms", "--time_based",
                                   std::string("--direct=") + (direct ? "1" : "0"), "--output-format=json"};
  if (engine == "psync") {
    argv.insert(argv.end(), {"--ioengine=psync", "--numjobs=" + std::to_string(job.qd), "--group_reporting"});
  } else {
    argv.push_back(engine == "libaio" ? "--ioengine=libaio" : "--ioengine=io_uring");
    argv.push_back("--iodepth=" + std::to_string(job.qd));
    if (engine == "uring-reg" || engine == "uring-sqpoll") argv.insert(argv.end(), {"--fixedbufs", "--registerfiles"});
    if (engine == "uring-sqpoll") argv.push_back("--sqthread_poll");
  }
  for (const auto& a : argv) f.cmdline += (f.cmdline.empty() ? "" : " ") + a;
  std::string out_path = (std::filesystem::temp_directory_path() / "pvio-bench-fio-XXXXXX").string();
  const int out_fd = ::mkstemp(out_path.data());
  if (out_fd < 0) {
    f.why = "mkstemp failed";
    return f;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_fd, STDOUT_FILENO);
    const int nul = ::open("/dev/null", O_WRONLY);
    ::dup2(nul, STDERR_FILENO);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execvp("fio", cargv.data());
    ::_exit(127);
  }
  ::close(out_fd);
  int status = 0;
  if (pid > 0) ::waitpid(pid, &status, 0);
  std::ifstream in(out_path);
  std::stringstream ss;
  ss << in.rdbuf();
  ::unlink(out_path.c_str());
  const std::string j = ss.str();
  if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    f.why = WIFEXITED(status) && WEXITSTATUS(status) == 127 ? "fio not installed" : "fio failed";
    return f;
  }
  const auto sect = j.find(job.write ? "\"write\" : {" : "\"read\" : {");
  if (sect == std::string::npos) {
    f.why = "no figure in fio's output";
    return f;
  }
  f.iops = std::max(0.0, fio_number(j, "iops", sect));
  // fio 3.33's completion latency with --sqthread_poll is not a latency: a 1 s run at QD32
  // reports a median of 17 s. Any median longer than the run is discarded the same way.
  const auto clat = j.find("\"clat_ns\" : {", sect);
  if (clat != std::string::npos && engine != "uring-sqpoll") {
    const double p50 = fio_number(j, "50.000000", clat);
    if (p50 > 0 && p50 < static_cast<double>(job.time_ms) * 1e6) f.p50_ns = p50;
  }
  if (f.iops <= 0) f.why = "fio reported no I/O";
  return f;
}

std::string describe_medium(const std::string& path) {
  std::error_code ec;
  const std::string real = std::filesystem::canonical(path, ec).string();
  struct stat st{};
  struct statfs sf{};
  if (ec || ::stat(real.c_str(), &st) != 0 || ::statfs(real.c_str(), &sf) != 0) return "unknown";
  // mountinfo: id parent major:minor root mountpoint options [optional...] - fstype source super
  std::ifstream mi("/proc/self/mountinfo");
  std::string line, by_dev, by_prefix;
  std::size_t prefix_len = 0;
  bool prefix_dev = false;
  const std::string dev = std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  for (; std::getline(mi, line);) {
    std::istringstream ls(line);
    std::string id, parent, mm, root, mnt, tok;
    ls >> id >> parent >> mm >> root >> mnt;
    while (ls >> tok && tok != "-") {
    }
    std::string fstype, source;
    ls >> fstype >> source;
    const std::string desc = fstype == "tmpfs" ? "tmpfs (" + mnt + ")" : fstype + " on " + source + " (" + mnt + ")";
    if (mm == dev && by_dev.empty()) by_dev = desc;
    const bool under = real == mnt || real.rfind(mnt == "/" ? "/" : mnt + "/", 0) == 0;
    if (under && mnt.size() >= prefix_len) {
      prefix_len = mnt.size();
      by_prefix = desc;
      prefix_dev = mm == dev;
    }
  }
  // The mount the path is under, when it is the file's device; else any mount of that device
  // (the same device is often mounted more than once: bind mounts, /run/netns).
  if (!by_prefix.empty() && prefix_dev) return by_prefix;
  if (!by_dev.empty()) return by_dev;
  if (!by_prefix.empty()) return by_prefix;
  if (sf.f_type == kTmpfsMagic) return "tmpfs";
  char b[32];
  std::snprintf(b, sizeof(b), "fs magic 0x%lx", static_cast<unsigned long>(sf.f_type));
  return b;
}

}  // namespace pvio::cli::native
