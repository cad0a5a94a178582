// pvio bench's host-native peer: every host engine that fits a workload (psync threads, libaio,
// io_uring plain, with registered file and buffers, with SQPOLL), run on the same file, plus
// fio as an independent anchor and a description of the medium behind the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pvio::cli::native {

struct Job {
  std::string file;
  bool write = false, random = false;
  std::uint64_t bs = 4096, qd = 1, time_ms = 2000, size = 0;
  // Host threads, each keeping qd in flight (its own ring or AIO context, its own block
  // sequence): the peer of that many PV queues. psync runs qd x threads threads.
  std::uint64_t threads = 1;
};

struct Run {
  std::string engine;  // one of engines()
  bool ok = false, direct = false;
  std::uint64_t ops = 0, bytes = 0, elapsed_ns = 0, p50_ns = 0, p99_ns = 0, errors = 0;
  std::string note;  // set-up flags the kernel accepted (e.g. "defer_taskrun")
  std::string why;   // when !ok
};

// psync, libaio, uring, uring-reg, uring-sqpoll: the order they run and are printed in.
const std::vector<std::string>& engines();
Run run(const std::string& engine, const Job& job);

// The index of the run with the most completed I/O per second among those that are ok, or -1.
int best(const std::vector<Run>& runs);

// fio with the same pattern and the engine that `engine` names (fio's psync/libaio/io_uring
// options); iops 0 and `why` set when fio is missing or failed.
struct FioRun {
  double iops = 0, p50_ns = 0;
  std::string cmdline, why;
};
FioRun run_fio(const std::string& engine, const Job& job);

// What backs `path`: "tmpfs", or "<fstype> on <device>" from statfs and /proc/self/mountinfo.
std::string describe_medium(const std::string& path);

}  // namespace pvio::cli::native
