// pvio: the toolstack CLI (xl-like). Each verb is one tools/pvio_<verb>.cc that registers
// itself; this file only dispatches.
//   pvio <verb> [args...]      pvio help
#include <cstdio>
#include <string>
#include <vector>

#include "pvio_cli.h"

namespace {

int help() {
  std::printf("usage: pvio <verb> [args...]\n\nverbs:\n");
  for (const auto& [name, v] : pvio::cli::verbs())
    std::printf("  %-14s %s\n      pvio %s %s\n", name.c_str(), v.summary, name.c_str(), v.usage);
  std::printf("\nThe run dir (pid files, logs, sockets) is $PVIO_RUN_DIR, else "
              "$XDG_RUNTIME_DIR/pvio, else /run/pvio.\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    help();
    return 2;
  }
  const std::string verb = argv[1];
  if (verb == "help" || verb == "--help" || verb == "-h") return help();
  const auto& verbs = pvio::cli::verbs();
  auto it = verbs.find(verb);
  if (it == verbs.end()) {
    std::fprintf(stderr, "pvio: unknown verb '%s' (try `pvio help`)\n", verb.c_str());
    return 2;
  }
  return it->second.run(std::vector<std::string>(argv + 2, argv + argc));
}
