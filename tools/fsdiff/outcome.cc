// outcome.cc — field-by-field comparison of two Outcomes.
#include "outcome.h"

#include <algorithm>

#include <fmt/core.h>

#include "op.h"

namespace fsdiff {
namespace {

std::string hex_window(const std::vector<uint8_t>& d, size_t at) {
  std::string s;
  size_t end = std::min(d.size(), at + 16);
  for (size_t i = at; i < end; i++) s += fmt::format("{:02x}", d[i]);
  return s.empty() ? "(end)" : s;
}

// Data is printed as text when it looks like text (names, link targets).
bool printable(const std::vector<uint8_t>& d) {
  if (d.size() > 200) return false;
  return std::all_of(d.begin(), d.end(), [](uint8_t c) { return c == 0 || (c >= 32 && c < 127); });
}

std::string as_text(const std::vector<uint8_t>& d) {
  std::string s;
  for (uint8_t c : d) s += c ? char(c) : '|';
  return s;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> w;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(' ', i);
    if (j == std::string::npos) j = s.size();
    w.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return w;
}

// Facts are equal word by word, where a time that may or may not have moved
// ("m=same?", see observe.cc) matches any answer for the same time.
bool facts_match(const std::string& a, const std::string& b) {
  if (a == b) return true;
  std::vector<std::string> wa = words(a), wb = words(b);
  if (wa.size() != wb.size()) return false;
  for (size_t i = 0; i < wa.size(); i++) {
    if (wa[i] == wb[i]) continue;
    const std::string& x = wa[i].back() == '?' ? wa[i] : wb[i];
    const std::string& y = wa[i].back() == '?' ? wb[i] : wa[i];
    if (x.back() != '?' || x.size() < 2 || x[1] != '=' || y.compare(0, 2, x, 0, 2) != 0)
      return false;
  }
  return true;
}

}  // namespace

std::string compare_outcomes(const Outcome& a, const Outcome& b) {
  std::string out;
  if (a.ret != b.ret) out += fmt::format("  ret:   A={} B={}\n", a.ret, b.ret);
  if (a.err != b.err)
    out += fmt::format("  errno: A={} B={}\n", errno_name(a.err), errno_name(b.err));
  if (a.has_data != b.has_data || a.data != b.data) {
    if (printable(a.data) && printable(b.data)) {
      out += fmt::format("  data:  A=\"{}\" B=\"{}\"\n", as_text(a.data), as_text(b.data));
    } else {
      size_t i = 0, n = std::min(a.data.size(), b.data.size());
      while (i < n && a.data[i] == b.data[i]) i++;
      out += fmt::format("  data:  A={} bytes B={} bytes, first difference at byte {}: A={} B={}\n",
                         a.data.size(), b.data.size(), i, hex_window(a.data, i),
                         hex_window(b.data, i));
    }
  }
  auto ia = a.facts.begin(), ib = b.facts.begin();
  while (ia != a.facts.end() || ib != b.facts.end()) {
    if (ib == b.facts.end() || (ia != a.facts.end() && ia->first < ib->first)) {
      out += fmt::format("  {}:\n      A: {}\n      B: (absent)\n", ia->first, ia->second);
      ++ia;
    } else if (ia == a.facts.end() || ib->first < ia->first) {
      out += fmt::format("  {}:\n      A: (absent)\n      B: {}\n", ib->first, ib->second);
      ++ib;
    } else {
      if (!facts_match(ia->second, ib->second))
        out += fmt::format("  {}:\n      A: {}\n      B: {}\n", ia->first, ia->second, ib->second);
      ++ia;
      ++ib;
    }
  }
  return out;
}

}  // namespace fsdiff
