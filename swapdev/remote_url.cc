// parse_remote_url (remote_store.h): the --remote URL.
#include <charconv>
#include <string>
#include <vector>

#include "swapdev/remote_store.h"

namespace tmpfsd::swapdev {

namespace {

constexpr size_t kMaxServers = 32;  // RemoteStore's per-slot holders are a 32-bit mask

bool parse_uint(std::string_view s, uint64_t max, uint64_t* out) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v > max) return false;
  *out = v;
  return true;
}

}  // namespace

bool parse_remote_url(std::string_view url, RemoteOptions* opt, std::string* error) {
  constexpr std::string_view kScheme = "memcached://";
  auto fail = [&](const std::string& why) {
    *error = "bad remote URL '" + std::string(url) + "': " + why +
             " (expected memcached://HOST[:PORT][,HOST[:PORT]...][?replicas=N][&local_copy=0|1])";
    return false;
  };
  if (url.substr(0, kScheme.size()) != kScheme) return fail("it must start with memcached://");
  std::string_view rest = url.substr(kScheme.size());
  std::string_view query;
  if (size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  std::vector<RemoteServer> servers;
  while (!rest.empty() || servers.empty()) {
    const size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (item.empty()) return fail("an empty server");
    RemoteServer s;
    std::string_view host = item;
    if (item.front() == '[') {  // [v6 address]:port
      const size_t close = item.find(']');
      if (close == std::string_view::npos) return fail("an unclosed '['");
      host = item.substr(1, close - 1);
      item = item.substr(close + 1);
      if (!item.empty() && item.front() != ':') return fail("junk after ']'");
    } else {
      const size_t colon = item.rfind(':');
      host = item.substr(0, colon);
      item = colon == std::string_view::npos ? std::string_view() : item.substr(colon);
    }
    if (!item.empty()) {
      uint64_t port = 0;
      if (!parse_uint(item.substr(1), 65535, &port) || port == 0)
        return fail("bad port '" + std::string(item.substr(1)) + "'");
      s.port = static_cast<uint16_t>(port);
    }
    if (host.empty()) return fail("an empty host name");
    s.host = std::string(host);
    servers.push_back(std::move(s));
    if (comma == std::string_view::npos) break;
  }
  if (servers.size() > kMaxServers)
    return fail("more than " + std::to_string(kMaxServers) + " servers");
  unsigned replicas = 0;
  bool local_copy = false;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const size_t eq = kv.find('=');
    const std::string_view name = kv.substr(0, eq);
    if ((name != "replicas" && name != "local_copy") || eq == std::string_view::npos)
      return fail("unknown parameter '" + std::string(kv) + "'");
    uint64_t n = 0;
    if (!parse_uint(kv.substr(eq + 1), name == "replicas" ? kMaxServers : 1, &n))
      return fail("bad " + std::string(name) + " '" + std::string(kv.substr(eq + 1)) + "'");
    if (name == "replicas")
      replicas = static_cast<unsigned>(n);
    else
      local_copy = n == 1;
  }
  if (replicas >= servers.size())
    return fail("replicas=" + std::to_string(replicas) + " needs at least " +
                std::to_string(replicas + 1) + " servers");
  opt->servers = std::move(servers);
  opt->replicas = replicas;
  opt->local_copy = local_copy;
  return true;
}

}  // namespace tmpfsd::swapdev
