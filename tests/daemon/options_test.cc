// Options: what the command line means, and the one-line errors (exit 2)
// for what it cannot mean. No mounting.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "daemon/options.h"

using namespace tmpfsd;

namespace {

ParseOutcome parse(std::vector<std::string> args) {
  args.insert(args.begin(), "tmpfsd");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_options(int(argv.size()), argv.data());
}

}  // namespace

TEST_CASE("sizes are read as tmpfs reads them", "[options]") {
  const uint64_t ram = 8ull << 30;
  CHECK(parse_size("0", ram) == 0u);
  CHECK(parse_size("4096", ram) == 4096u);
  CHECK(parse_size("16k", ram) == 16384u);
  CHECK(parse_size("512M", ram) == 512ull << 20);
  CHECK(parse_size("2g", ram) == 2ull << 30);
  CHECK(parse_size("1t", ram) == 1ull << 40);
  CHECK(parse_size("50%", ram) == 4ull << 30);
  CHECK_FALSE(parse_size("", ram));
  CHECK_FALSE(parse_size("12q", ram));
  CHECK_FALSE(parse_size("-1", ram));
  CHECK_FALSE(parse_size("g", ram));
  CHECK_FALSE(parse_size("99999999999999999999", ram));
  CHECK_FALSE(parse_size("20000000000000e", ram));
}

TEST_CASE("mount options", "[options]") {
  auto r = parse({"-o", "size=1g,nr_inodes=10k,mode=755,uid=1000,gid=100,allow_other", "--memory", "64m", "/tmp"});
  REQUIRE(r.options);
  CHECK(r.options->size_bytes == 1ull << 30);
  CHECK(r.options->nr_inodes == 10240u);
  CHECK(r.options->mode == 0755);
  CHECK(r.options->uid == 1000u);
  CHECK(r.options->gid == 100u);
  CHECK(r.options->allow_other);
  CHECK(r.options->memory_bytes == 64ull << 20);
  CHECK_FALSE(r.options->writeback_cache);
}

TEST_CASE("defaults follow tmpfs: half of RAM, root mode 1777", "[options]") {
  auto r = parse({"/tmp"});
  REQUIRE(r.options);
  CHECK(r.options->size_bytes == physical_memory() / 2);
  CHECK(r.options->mode == 01777);
  CHECK(r.options->nr_inodes == 0u);
  CHECK(r.options->memory_bytes <= r.options->size_bytes);
}

TEST_CASE("bad options give a one-line error naming the option and exit status 2", "[options]") {
  struct Case {
    std::vector<std::string> args;
    std::string names;
  };
  std::vector<Case> cases = {
      {{"-o", "size=12q", "/tmp"}, "size"},
      {{"-o", "nr_inodes=x", "/tmp"}, "nr_inodes"},
      {{"-o", "mode=999", "/tmp"}, "mode"},
      {{"-o", "uid=-3", "/tmp"}, "uid"},
      {{"-o", "bogus=1", "/tmp"}, "bogus"},
      {{"-o", "noatime", "/tmp"}, "noatime"},
      {{"--memory", "lots", "/tmp"}, "--memory"},
      {{"--memory", "4k", "/tmp"}, "--memory"},
      {{"--page-size", "5000", "/tmp"}, "--page-size"},
      {{"--page-size", "2048", "/tmp"}, "--page-size"},
      {{"--log-level", "loud", "/tmp"}, "log-level"},
      {{"--writeback-conflict", "skip", "/tmp"}, "writeback-conflict"},
      {{"/nonexistent/mountpoint"}, "mountpoint"},
      {{"/etc/passwd"}, "not a directory"},
      {{}, "mountpoint"},
  };
  for (auto& c : cases) {
    auto r = parse(c.args);
    INFO(r.message);
    CHECK_FALSE(r.options);
    CHECK(r.exit_code == 2);
    CHECK(r.message.find(c.names) != std::string::npos);
    CHECK(r.message.find('\n') == std::string::npos);
  }
}

TEST_CASE("--writeback-conflict takes wait or copy", "[options]") {
  auto def = parse({"/tmp"});
  REQUIRE(def.options);
  CHECK(def.options->writeback_conflict == "wait");
  auto copy = parse({"--writeback-conflict", "copy", "/tmp"});
  REQUIRE(copy.options);
  CHECK(copy.options->writeback_conflict == "copy");
}

TEST_CASE("--help exits 0 with the usage", "[options]") {
  auto r = parse({"--help"});
  CHECK_FALSE(r.options);
  CHECK(r.exit_code == 0);
  CHECK(r.message.find("--memory") != std::string::npos);
}
