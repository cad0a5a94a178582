// Running a program under test as a child process: its output into files, its exit status
// with a deadline; or a shell command line with its output captured.
#pragma once

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

namespace pvio::test {

// Starts `argv` (argv[0] a path) with stdout and stderr written to `out_path` and `err_path`
// (truncated; "" is /dev/null) and `env` set in its environment. The pid, or -1.
inline pid_t spawn(std::vector<std::string> argv, const std::string& out_path,
                   const std::string& err_path,
                   const std::vector<std::pair<std::string, std::string>>& env = {}) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
  const auto open_out = [](const std::string& path) {
    return path.empty() ? ::open("/dev/null", O_WRONLY)
                        : ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  };
  ::dup2(open_out(out_path), 1);
  ::dup2(open_out(err_path), 2);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  ::execv(args[0], args.data());
  ::_exit(127);
}

// The exit status of `pid` (128 + the signal if one ended it), waiting up to timeout_ms
// (-1: for ever); -1 if it is still running then.
inline int wait_exit(pid_t pid, int timeout_ms = -1) {
  int status = 0;
  if (timeout_ms < 0) {
    if (::waitpid(pid, &status, 0) != pid) return -1;
  } else {
    for (int waited = 0;; waited += 100) {
      if (::waitpid(pid, &status, WNOHANG) == pid) break;
      if (waited >= timeout_ms) return -1;
      ::usleep(100000);
    }
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs `cmd` through the shell with stderr joined to stdout, appending that output to *out
// when given. Its exit status (128 + the signal if one ended it), or -1 if it did not start.
inline int run_shell(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  std::string o;
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) o.append(buf, n);
  const int st = ::pclose(p);
  if (out != nullptr) *out += o;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

}  // namespace pvio::test
