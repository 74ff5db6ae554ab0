// Tests swapdev/codec.{h,cc}: both codecs round-trip, an
// incompressible page is refused at the limit, same-filled pages are found.
#include "swapdev/codec.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace tmpfsd::swapdev {
namespace {

std::vector<std::byte> text_page(size_t n) {
  std::vector<std::byte> p(n);
  const std::string words = "int main(void) { return tmpfsd_page_cache_lookup(inode, index); }\n";
  for (size_t i = 0; i < n; ++i)
    p[i] = static_cast<std::byte>(words[(i * 7 + i / 61) % words.size()]);
  return p;
}

std::vector<std::byte> random_page(size_t n, uint32_t seed) {
  std::vector<std::byte> p(n);
  std::mt19937 rng(seed);
  for (auto& b : p) b = static_cast<std::byte>(rng());
  return p;
}

}  // namespace

TEST_CASE("PageCodec: lz4 and zstd round-trip a compressible page, refuse a random one") {
  for (CodecKind k : {CodecKind::kLz4, CodecKind::kZstd}) {
    INFO(codec_name(k));
    PageCodec codec(k);
    const auto page = text_page(4096);
    std::vector<std::byte> out(3072);
    const size_t n = codec.compress(page, out);
    REQUIRE(n > 0);
    CHECK(n < 2048);
    std::vector<std::byte> back(4096);
    REQUIRE(codec.decompress({out.data(), n}, back));
    CHECK(back == page);

    const auto noise = random_page(4096, 7);
    CHECK(codec.compress(noise, out) == 0);  // does not fit in 3/4 of a page

    // A damaged stream never yields a whole page of wrong bytes silently.
    std::vector<std::byte> bad(out.begin(), out.begin() + static_cast<long>(n));
    codec.compress(page, out);
    bad.resize(n / 2);
    CHECK_FALSE(codec.decompress(bad, back));
  }
  CHECK(parse_codec("lz4") == CodecKind::kLz4);
  CHECK(parse_codec("zstd") == CodecKind::kZstd);
  CHECK_FALSE(parse_codec("gzip"));
}

TEST_CASE("same_filled: zeros and repeated words, not a page that differs anywhere") {
  std::vector<std::byte> p(4096);
  CHECK(same_filled(p) == uint64_t{0});
  const uint64_t w = 0x0123456789abcdefULL;
  fill_with(p, w);
  CHECK(same_filled(p) == w);
  for (size_t at : {size_t{0}, size_t{8}, size_t{2047}, size_t{4095}}) {
    auto q = p;
    q[at] ^= std::byte{1};
    INFO(at);
    CHECK_FALSE(same_filled(q));
  }
  fill_with(p, 0);
  CHECK(std::all_of(p.begin(), p.end(), [](std::byte b) { return b == std::byte{0}; }));
}

}  // namespace tmpfsd::swapdev
