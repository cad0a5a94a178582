// The main() every benchmark program shares: Google Benchmark's console output through a
// reporter that prints the program's closing table of ratios against its peer in Finalize().
#pragma once

#include <benchmark/benchmark.h>

namespace pvio::bench {

template <typename Reporter>
int run_benchmarks(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  Reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

}  // namespace pvio::bench
