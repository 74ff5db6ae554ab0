// Mount-level differential tests: entry point. Says which mode runs, and
// after the tests checks that nothing this process mounted is left behind.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <sys/prctl.h>

#include <cstdio>

#include "harness.h"

int main(int argc, char* argv[]) {
  std::printf("mount tests: mode = %s\n", mt::mode_description().c_str());
  std::fflush(stdout);
  // A daemonised tmpfsd's parent exits once the mount is live; as the
  // subreaper this process inherits the daemon and can wait for its exit
  // status, as it would for a foreground one.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  mt::start_watchdog();
  int result = Catch::Session().run(argc, argv);
  int problems = mt::shutdown_all();
  if (problems) {
    std::fprintf(stderr, "mount tests: %d problem(s) at shutdown (see above)\n", problems);
    if (result == 0) result = 1;
  }
  std::printf("mount tests: mode was %s\n", mt::mode_description().c_str());
  return result;
}
