// What the benchmark programs share: a main() with Google Benchmark's console output through a
// RatioReporter that prints the program's closing table of ratios against its peer.
#pragma once

#include <benchmark/benchmark.h>

#include <vector>

namespace pvio::bench {

// Console output as usual. Every run that stands for its benchmark (no error; with
// --benchmark_repetitions, the median) goes to collect(); print_ratios() prints the closing
// table after the console's own output.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") continue;
      collect(r);
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    print_ratios();
  }

 protected:
  virtual void collect(const Run& run) = 0;
  virtual void print_ratios() = 0;
};

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
