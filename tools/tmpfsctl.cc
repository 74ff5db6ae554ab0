// tmpfsctl: ask a running tmpfsd how it is doing.
//
//   tmpfsctl stats PATH [--json | --prometheus]
//
// PATH is the mount point or anything inside the mount. The figures come
// from the daemon over daemon/control.h's ioctl; only root and the user who
// mounted may read them. Exit codes: 0 done; 1 another failure (PATH
// cannot be opened, ...); 2 bad usage; 3 PATH is not on a tmpfsd mount;
// 4 permission denied; 5 the daemon is gone (the mount is not connected).
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
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

// Prints one line for an errno of open() or the ioctl; returns the exit code.
int fail(const std::string& path, int err, bool from_ioctl) {
  int code = kFailed;
  std::string why;
  if (err == ENOTCONN) {
    code = kGone;
    why = "the tmpfsd daemon of this mount is gone (transport endpoint is not connected)";
  } else if (err == EPERM || err == EACCES) {
    code = kDenied;
    why = "permission denied (only root and the user who mounted may ask)";
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tmpfsctl: ask a running tmpfsd how it is doing"};
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }
  if (st->parsed()) return stats(path, json, prometheus);
  return kUsage;
}
