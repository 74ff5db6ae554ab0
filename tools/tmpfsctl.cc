// tmpfsctl: ask a running tmpfsd how it is doing, where a file's pages
// are, and change its limits.
//
//   tmpfsctl stats PATH [--json | --prometheus]
//   tmpfsctl where FILE... [--json]
//   tmpfsctl set PATH OPTION=VALUE[,...]...
//   tmpfsctl restart PATH [--binary FILE]
//
// PATH is the mount point or anything inside the mount. Everything goes
// over daemon/control.h's ioctls; stats and set only for root and the user
// who mounted, where for anyone who can open the file. Exit codes: 0 done;
// 1 another failure (PATH cannot be opened, a directory for where, a limit
// refused, ...); 2 bad usage; 3 PATH is not on a tmpfsd mount; 4 permission
// denied; 5 the daemon is gone (the mount is not connected).
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "daemon/control.h"

namespace {

enum Exit { kOk = 0, kFailed = 1, kUsage = 2, kNotTmpfsd = 3, kDenied = 4, kGone = 5 };

struct Figure {
  std::string name;
  unsigned long long value = 0;
  std::string kind;  // "counter" or "gauge"
  std::string what;
};

// Prints one line for an errno of open() or the ioctl; returns the exit
// code. `owner_only`: the request is one only root and the mounter may make.
int fail(const std::string& path, int err, bool from_ioctl, bool owner_only = true) {
  int code = kFailed;
  std::string why;
  if (err == ENOTCONN) {
    code = kGone;
    why = "the tmpfsd daemon of this mount is gone (transport endpoint is not connected)";
  } else if (err == EPERM || err == EACCES) {
    code = kDenied;
    why = owner_only && from_ioctl
              ? "permission denied (only root and the user who mounted may ask)"
              : "permission denied";
  } else if (from_ioctl && (err == ENOTTY || err == EINVAL || err == ENOSYS || err == EOPNOTSUPP)) {
    code = kNotTmpfsd;
    why = "not on a tmpfsd mount";
  } else {
    why = std::strerror(err);
  }
  std::fprintf(stderr, "tmpfsctl: %s: %s\n", path.c_str(), why.c_str());
  return code;
}

std::vector<Figure> parse(const char* text) {
  std::vector<Figure> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    Figure f;
    if (!(l >> f.name >> f.value >> f.kind)) continue;
    std::getline(l >> std::ws, f.what);
    out.push_back(std::move(f));
  }
  return out;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

// Prometheus text format: a label value escapes \, " and newline; HELP
// text escapes \ and newline.
std::string prom_escape(const std::string& s, bool label) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && label)
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

void print_text(const std::string& mount, const std::vector<Figure>& figs) {
  size_t w = 0;
  for (const Figure& f : figs) w = std::max(w, f.name.size());
  std::printf("tmpfsd at %s\n", mount.c_str());
  for (const Figure& f : figs) {
    std::printf("  %-*s %20llu  %s\n", int(w), f.name.c_str(), f.value, f.what.c_str());
  }
}

void print_json(const std::string& mount, unsigned long long format,
                const std::vector<Figure>& figs) {
  std::printf("{\"format\": %llu, \"mountpoint\": %s, \"stats\": {", format,
              json_string(mount).c_str());
  bool first = true;
  for (const Figure& f : figs) {
    std::printf("%s\"%s\": %llu", first ? "" : ", ", f.name.c_str(), f.value);
    first = false;
  }
  std::printf("}}\n");
}

void print_prometheus(const std::string& mount, const std::vector<Figure>& figs) {
  const std::string label = "{mountpoint=\"" + prom_escape(mount, true) + "\"}";
  for (const Figure& f : figs) {
    std::string name = "tmpfsd_" + f.name;
    if (f.kind == "counter") name += "_total";
    std::printf("# HELP %s %s\n# TYPE %s %s\n%s%s %llu\n", name.c_str(),
                prom_escape(f.what, false).c_str(), name.c_str(),
                f.kind == "counter" ? "counter" : "gauge", name.c_str(), label.c_str(), f.value);
  }
}

// The mount point PATH is on (for the output), from /proc/self/mountinfo's
// longest matching mount point; PATH itself if that cannot be read.
std::string mount_point_of(const std::string& path) {
  std::error_code ec;
  std::string abs = std::filesystem::absolute(path, ec).lexically_normal().string();
  if (ec) return path;
  if (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  FILE* f = std::fopen("/proc/self/mountinfo", "r");
  if (!f) return abs;
  std::string best;
  char line[4096];
  while (std::fgets(line, sizeof line, f)) {
    std::istringstream l(line);
    std::string id, parent, dev, root, mp;
    if (!(l >> id >> parent >> dev >> root >> mp)) continue;
    // mountinfo writes space, tab, newline and backslash as \ooo.
    std::string dec;
    for (size_t i = 0; i < mp.size(); ++i) {
      if (mp[i] == '\\' && i + 3 < mp.size()) {
        dec += char(std::strtol(mp.substr(i + 1, 3).c_str(), nullptr, 8));
        i += 3;
      } else {
        dec += mp[i];
      }
    }
    bool under =
        abs == dec || dec == "/" ||
        (abs.size() > dec.size() && abs.compare(0, dec.size(), dec) == 0 && abs[dec.size()] == '/');
    if (under && dec.size() >= best.size()) best = dec;
  }
  std::fclose(f);
  return best.empty() ? abs : best;
}

int stats(const std::string& path, bool json, bool prometheus) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return fail(path, errno, false);
  auto reply = std::make_unique<tmpfsd::control::StatsReply>();
  int r = ::ioctl(fd, tmpfsd::control::kStatsIoctl, reply.get());
  int err = errno;
  ::close(fd);
  if (r < 0) return fail(path, err, true);
  reply->text[sizeof reply->text - 1] = '\0';
  std::vector<Figure> figs = parse(reply->text);
  if (figs.empty() || figs[0].name != "format") {
    std::fprintf(stderr,
                 "tmpfsctl: %s: the daemon's reply is not in a format this tmpfsctl reads\n",
                 path.c_str());
    return kFailed;
  }
  const unsigned long long format = figs[0].value;  // the layout's version, not a figure
  figs.erase(figs.begin());
  std::string mount = mount_point_of(path);
  if (json)
    print_json(mount, format, figs);
  else if (prometheus)
    print_prometheus(mount, figs);
  else
    print_text(mount, figs);
  return std::fflush(stdout) == 0 ? kOk : kFailed;
}

// ---- where --------------------------------------------------------------------

using tmpfsd::control::WhereKind;
constexpr unsigned kKinds = tmpfsd::control::kWhereKinds;
const char* const kKindNames[kKinds] = {"hole", "resident", "swapped",
                                        "zero", "remote",   "compressed"};
// The residency bar, as vmtouch -v draws it: a cell wholly of one kind is
// ' ' (hole), 'O' (resident), 'S' (swapped), 'Z' (zero), 'R' (remote) or
// 'C' (compressed); a cell of several kinds is the lower-case letter of its
// kind other than hole with the most bytes ('o': partly resident). README
// has the legend.
constexpr char kWholeCells[kKinds] = {' ', 'O', 'S', 'Z', 'R', 'C'};
constexpr char kPartCells[kKinds] = {' ', 'o', 's', 'z', 'r', 'c'};
constexpr size_t kBarCells = 60;

const char* kind_name(WhereKind k) {
  const auto i = static_cast<uint32_t>(k);
  return i < kKinds ? kKindNames[i] : "unknown";
}

struct WhereFile {
  std::string path;
  uint64_t size = 0;
  uint64_t end = 0;
  uint32_t page_size = 0;
  std::vector<tmpfsd::control::WhereRun> runs;
  std::array<uint64_t, kKinds> bytes{};  // per kind
};

// The residency bar: kBarCells cells (fewer for a small file: one a page),
// each drawn from the kinds of the bytes in its share of [0, end).
std::string bar(const WhereFile& f) {
  const uint64_t pages = f.page_size ? f.end / f.page_size : 0;
  const size_t cells = size_t(std::min<uint64_t>(kBarCells, pages));
  std::string out(cells, ' ');
  if (cells == 0) return out;
  std::vector<std::array<unsigned __int128, kKinds>> weight(cells);
  const unsigned __int128 end = f.end;
  for (const auto& r : f.runs) {
    const auto k = static_cast<uint32_t>(r.kind);
    if (k >= kKinds) continue;
    // The run's bytes [a, b) scaled to cell positions: cell c covers
    // [c * end / cells, (c + 1) * end / cells).
    const unsigned __int128 a = r.offset, b = r.offset + r.length;
    size_t c = size_t(a * cells / end);
    for (; c < cells; ++c) {
      const unsigned __int128 lo = std::max(a, c * end / cells);
      const unsigned __int128 hi = std::min(b, (c + 1) * end / cells);
      if (lo >= b) break;
      if (hi > lo) weight[c][k] += hi - lo;
    }
  }
  for (size_t c = 0; c < cells; ++c) {
    size_t kinds = 0, best = 0;  // best: the kind other than hole with most bytes
    for (size_t k = 0; k < kKinds; ++k) {
      if (weight[c][k] == 0) continue;
      ++kinds;
      if (k != 0 && (best == 0 || weight[c][k] > weight[c][best])) best = k;
    }
    out[c] = kinds <= 1 ? kWholeCells[best] : kPartCells[best];
  }
  return out;
}

// Every run of one file, in as many calls as it takes. Returns an exit code.
int where_one(const std::string& path, WhereFile* f) {
  f->path = path;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return fail(path, errno, false, false);
  if (S_ISDIR(st.st_mode)) return fail(path, EISDIR, false, false);
  if (!S_ISREG(st.st_mode)) {
    // Opening a fifo or a device would reach the pipe or the driver, not tmpfsd.
    std::fprintf(stderr, "tmpfsctl: %s: not a regular file\n", path.c_str());
    return kFailed;
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return fail(path, errno, false, false);
  auto b = std::make_unique<tmpfsd::control::WhereBuffer>();
  uint64_t start = 0;
  for (;;) {
    std::memset(b.get(), 0, sizeof *b);
    b->start = start;
    if (::ioctl(fd, tmpfsd::control::kWhereIoctl, b.get()) < 0) {
      int err = errno;
      ::close(fd);
      return fail(path, err, true, false);
    }
    f->size = b->size;
    f->end = b->end;
    f->page_size = b->page_size;
    for (uint32_t i = 0; i < b->count && i < tmpfsd::control::kWhereRuns; ++i) {
      const auto& r = b->runs[i];
      if (!f->runs.empty() && f->runs.back().kind == r.kind &&
          f->runs.back().offset + f->runs.back().length == r.offset)
        f->runs.back().length += r.length;  // split only by the call's boundary
      else
        f->runs.push_back(r);
      if (static_cast<uint32_t>(r.kind) < kKinds)
        f->bytes[static_cast<uint32_t>(r.kind)] += r.length;
    }
    // Done, or a daemon that makes no progress (never loop for ever).
    if (b->next >= b->end || b->next <= start || b->count == 0) break;
    start = b->next;
  }
  ::close(fd);
  return kOk;
}

std::string pages_of(const WhereFile& f, WhereKind k) {
  return std::to_string(f.page_size ? f.bytes[static_cast<uint32_t>(k)] / f.page_size : 0);
}

// "R/N pages resident, S swapped, H hole[, Z zero][, X remote][, C compressed]"
std::string totals(const WhereFile& f) {
  const uint64_t pages = f.page_size ? f.end / f.page_size : 0;
  std::string out = pages_of(f, WhereKind::kResident) + "/" + std::to_string(pages) +
                    " pages resident, " + pages_of(f, WhereKind::kSwapped) + " swapped, " +
                    pages_of(f, WhereKind::kHole) + " hole";
  for (WhereKind k : {WhereKind::kZero, WhereKind::kRemote, WhereKind::kCompressed})
    if (f.bytes[static_cast<uint32_t>(k)]) out += ", " + pages_of(f, k) + " " + kind_name(k);
  return out;
}

void print_where_text(const WhereFile& f) {
  std::printf("%s: %" PRIu64 " bytes, %" PRIu64 " pages of %u bytes\n", f.path.c_str(), f.size,
              f.page_size ? f.end / f.page_size : 0, f.page_size);
  std::printf("  [%s] %s\n", bar(f).c_str(), totals(f).c_str());
  for (const auto& r : f.runs) {
    std::printf("  %" PRIu64 "-%" PRIu64 " %s\n", r.offset, r.offset + r.length, kind_name(r.kind));
  }
}

void print_where_json(const WhereFile& f, bool first) {
  std::printf("%s{\"path\": %s, \"size\": %" PRIu64 ", \"end\": %" PRIu64
              ", \"page_size\": %u, \"runs\": [",
              first ? "" : ", ", json_string(f.path).c_str(), f.size, f.end, f.page_size);
  for (size_t i = 0; i < f.runs.size(); ++i) {
    const auto& r = f.runs[i];
    std::printf("%s{\"start\": %" PRIu64 ", \"end\": %" PRIu64 ", \"kind\": \"%s\"}", i ? ", " : "",
                r.offset, r.offset + r.length, kind_name(r.kind));
  }
  std::printf("], \"bytes\": {");
  for (unsigned k = 0; k < kKinds; ++k)
    std::printf("%s\"%s\": %" PRIu64, k ? ", " : "", kKindNames[k], f.bytes[k]);
  std::printf("}}");
}

// Every file in turn; a file that fails is one line on stderr, the others
// still print. The exit code is the first failure's.
int where(const std::vector<std::string>& paths, bool json) {
  int rc = kOk;
  bool first = true;
  WhereFile total;  // every file's pages, summed
  total.path = "total";
  size_t shown = 0;
  if (json) std::printf("{\"format\": %u, \"files\": [", tmpfsd::control::kFormatVersion);
  for (const std::string& p : paths) {
    WhereFile f;
    if (int r = where_one(p, &f); r != kOk) {
      if (rc == kOk) rc = r;
      continue;
    }
    if (json)
      print_where_json(f, first);
    else
      print_where_text(f);
    first = false;
    ++shown;
    total.page_size = f.page_size;
    total.end += f.end;
    total.size += f.size;
    for (unsigned k = 0; k < kKinds; ++k) total.bytes[k] += f.bytes[k];
  }
  if (json) {
    std::printf("], \"total\": {");
    for (unsigned k = 0; k < kKinds; ++k)
      std::printf("%s\"%s\": %" PRIu64, k ? ", " : "", kKindNames[k], total.bytes[k]);
    std::printf("}}\n");
  } else if (shown > 1) {
    std::printf("total: %zu files, %s\n", shown, totals(total).c_str());
  }
  if (std::fflush(stdout) != 0) return kFailed;
  return rc;
}

// ---- restart ------------------------------------------------------------------

// The figures `pid` and `restarts_failed` of the daemon now; false with the
// exit code in *rc when it cannot be asked.
bool restart_figures(const std::string& path, uint64_t* pid, uint64_t* failed, int* rc) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return *rc = fail(path, errno, false), false;
  auto reply = std::make_unique<tmpfsd::control::StatsReply>();
  const int r = ::ioctl(fd, tmpfsd::control::kStatsIoctl, reply.get());
  const int err = errno;
  ::close(fd);
  if (r < 0) return *rc = fail(path, err, true), false;
  reply->text[sizeof reply->text - 1] = '\0';
  *pid = *failed = 0;
  for (const Figure& f : parse(reply->text)) {
    if (f.name == "pid") *pid = f.value;
    if (f.name == "restarts_failed") *failed = f.value;
  }
  return true;
}

// Asks the daemon to hand the mount to a new one, then waits (asking
// `pid` and `restarts_failed` every 10 ms) until another process serves it
// or the daemon counts a failure.
int restart(const std::string& path, const std::string& binary) {
  uint64_t pid = 0, failed = 0, now_pid = 0, now_failed = 0;
  int rc = kFailed;
  if (!restart_figures(path, &pid, &failed, &rc)) return rc;
  auto b = std::make_unique<tmpfsd::control::RestartBuffer>();
  if (binary.size() >= sizeof b->text) {
    std::fprintf(stderr, "tmpfsctl: %s: the binary's path is too long\n", binary.c_str());
    return kUsage;
  }
  std::memcpy(b->text, binary.c_str(), binary.size() + 1);
  const auto start = std::chrono::steady_clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return fail(path, errno, false);
  const int r = ::ioctl(fd, tmpfsd::control::kRestartIoctl, b.get());
  const int err = errno;
  ::close(fd);
  if (r < 0) return fail(path, err, true);
  b->text[sizeof b->text - 1] = '\0';
  if (b->error != 0) {
    std::fprintf(stderr, "tmpfsctl: %s: restart refused: %s\n", path.c_str(), b->text);
    return kFailed;
  }
  // Longer than the daemon waits for its successor (daemon/restart.h).
  const auto deadline = start + std::chrono::seconds(180);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!restart_figures(path, &now_pid, &now_failed, &rc)) return rc;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    if (now_pid != pid) {
      std::printf("restarted: pid %" PRIu64 " serves %s now (was %" PRIu64 "), %lld ms\n", now_pid,
                  path.c_str(), pid, static_cast<long long>(ms));
      return kOk;
    }
    if (now_failed != failed) {
      std::fprintf(stderr,
                   "tmpfsctl: %s: the restart failed (the reason is in the daemon's log); pid "
                   "%" PRIu64 " serves on\n",
                   path.c_str(), pid);
      return kFailed;
    }
  }
  std::fprintf(stderr, "tmpfsctl: %s: no new daemon after 180 s\n", path.c_str());
  return kFailed;
}

// ---- set ----------------------------------------------------------------------

int set(const std::string& path, const std::vector<std::string>& options) {
  std::string text;
  for (const std::string& o : options) text += (text.empty() ? "" : ",") + o;
  const tmpfsd::control::SetOutcome r = tmpfsd::control::request_set(path, text);
  if (r.sys_error != 0) return fail(path, r.sys_error, r.from_ioctl);
  if (r.error != 0) {
    std::fprintf(stderr, "tmpfsctl: %s: %s (%s)\n", path.c_str(), r.message.c_str(),
                 std::strerror(r.error));
    return r.error == E2BIG ? kUsage : kFailed;
  }
  if (!r.message.empty())
    std::fprintf(stderr, "tmpfsctl: %s: %s\n", path.c_str(), r.message.c_str());
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tmpfsctl: ask a running tmpfsd how it is doing, where a file's pages are; change its "
      "limits"};
  app.require_subcommand(1);
  std::string path;
  bool json = false, prometheus = false;
  CLI::App* st = app.add_subcommand(
      "stats",
      "every figure the daemon keeps: frames, pages resident and swapped, swap use, "
      "swap-ins, readahead, writebacks, reclaim, errors, metadata, inodes, uptime");
  st->add_option("PATH", path, "the mount point, or any file or directory in the mount")
      ->required();
  auto* j = st->add_flag("--json", json, "one JSON object (README: tmpfsctl stats --json)");
  st->add_flag("--prometheus", prometheus,
               "the Prometheus text format (node_exporter's textfile collector reads it)")
      ->excludes(j);
  std::vector<std::string> files;
  bool where_json = false;
  CLI::App* wh = app.add_subcommand(
      "where",
      "which byte ranges of each file are resident (in a frame), in swap, holes, zero pages: "
      "the runs, a residency bar and totals");
  wh->add_option("FILE", files, "regular files in a tmpfsd mount")->required();
  wh->add_flag("--json", where_json, "one JSON object (README: tmpfsctl where --json)");
  std::string set_path;
  std::vector<std::string> set_options;
  CLI::App* se = app.add_subcommand(
      "set",
      "change limits of the live mount, as mount -o remount does on tmpfs: size=, nr_inodes=");
  se->add_option("PATH", set_path, "the mount point, or any file or directory in the mount")
      ->required();
  se->add_option("OPTION", set_options,
                 "size=SIZE (k/m/g/t suffixes, N% of RAM, 0: unlimited), nr_inodes=N; "
                 "comma-separated or one per argument")
      ->required();
  std::string restart_path, restart_binary;
  CLI::App* rs = app.add_subcommand(
      "restart",
      "hand the mount to a new daemon process (the installed binary) without unmounting: open "
      "files stay open, requests wait and are answered by the new one");
  rs->add_option("PATH", restart_path, "the mount point, or any file or directory in the mount")
      ->required();
  rs->add_option("--binary", restart_binary,
                 "the tmpfsd binary to run (an absolute path; default: the one the daemon was "
                 "started from, as installed now)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }
  if (st->parsed()) return stats(path, json, prometheus);
  if (wh->parsed()) return where(files, where_json);
  if (se->parsed()) return set(set_path, set_options);
  if (rs->parsed()) return restart(restart_path, restart_binary);
  return kUsage;
}
