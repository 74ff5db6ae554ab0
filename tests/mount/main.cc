// Mount-level differential tests: entry point. Says which mode runs, and
// after the tests checks that nothing this process mounted is left behind.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "harness.h"

int main(int argc, char* argv[]) {
  std::printf("mount tests: mode = %s\n", mt::mode_description().c_str());
  std::fflush(stdout);
  int result = Catch::Session().run(argc, argv);
  int problems = mt::shutdown_all();
  if (problems) {
    std::fprintf(stderr, "mount tests: %d problem(s) at shutdown (see above)\n", problems);
    if (result == 0) result = 1;
  }
  std::printf("mount tests: mode was %s\n", mt::mode_description().c_str());
  return result;
}
