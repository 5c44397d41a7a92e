// tributary-simulate: the body of `tributary simulate job.yaml` (a separate
// executable, so that only simulations load LibTorch).
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <optional>

#include "tributary/simulation/dataset.h"
#include "tributary/simulation/federation.h"
#include "tributary/simulation/semipfl_federation.h"

int main(int argc, char** argv) {
  CLI::App app{"Run a simulated federation: controller, node agents and clients on this machine"};
  std::string job_file, run_dir, cache_dir = tributary::simulation::DefaultCacheDir();
  uint32_t rounds = 0;
  std::optional<uint64_t> seed;
  std::optional<double> label_ratio;
  app.add_option("job", job_file, "The job (YAML; see examples/*.yaml)")->required();
  app.add_option("--seed", seed, "Override the job's seed");
  app.add_option("--label-ratio", label_ratio, "Override data.label_ratio (semipfl)")->check(CLI::Range(0.0, 1.0));
  app.add_option("--out", run_dir, "Run directory (default: runs/<job name>-<time>)");
  app.add_option("--rounds", rounds, "Override the job's rounds");
  app.add_option("--cache-dir", cache_dir, "Where datasets are decompressed")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto job = tributary::simulation::LoadSimulationJob(job_file);
  if (!job) {
    std::cerr << "tributary simulate: " << job.error().ToString() << "\n";
    return 1;
  }
  if (rounds > 0) job.value().rounds = rounds;
  if (seed) job.value().seed = *seed;
  if (label_ratio) job.value().label_ratio = *label_ratio;
  if (run_dir.empty()) {
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
    run_dir = "runs/" + job.value().name + "-" + stamp;
  }
  tributary::simulation::SimulationOptions o;
  o.run_dir = run_dir;
  o.cache_dir = cache_dir;
  o.progress_bar = isatty(STDOUT_FILENO) != 0;
  o.tributary_binary = (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "tributary").string();
  spdlog::info("simulate {}: {} rounds, {} clients ({} per round); results in {}", job.value().name,
               job.value().rounds, job.value().clients, job.value().clients_per_round, run_dir);
  const auto t0 = std::chrono::steady_clock::now();
  if (job.value().strategy.name == "semipfl") {
    auto result = tributary::simulation::RunSemiPflSimulation(job.value(), o, std::cout);
    if (!result) {
      std::cerr << "tributary simulate: " << result.error().ToString() << "\n";
      return 1;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "done in " << seconds << " s; per-user results: " << run_dir << "/semipfl-users.csv\n";
    return 0;
  }
  auto result = tributary::simulation::RunSimulation(job.value(), o, std::cout);
  if (!result) {
    std::cerr << "tributary simulate: " << result.error().ToString() << "\n";
    return 1;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "final accuracy " << result.value().back().accuracy << " after " << result.value().size()
            << " rounds in " << seconds << " s; report: " << run_dir << "/report.html\n";
  return 0;
}
