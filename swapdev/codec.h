// PageCodec: how a page is squeezed for the compressed pool (zpool.h), and
// the test that spares it the pool altogether.
//
// A page whose 8-byte words are all equal (zeros above all: a freshly
// extended file, a sparse region written with zeros) is "same-filled": it
// is kept as its word, with no pool bytes and no slot (zswap does the same).
// Any other page is compressed with lz4 (liblz4, the default acceleration)
// or zstd (libzstd at kZstdLevel), and kept only if it shrinks to at most
// `limit` bytes: a page that compresses worse costs pool bytes and CPU on
// every fault for too little, and goes to the swap file instead.
//
// Compression contexts are per thread (zstd's are large to build: one per
// call would dominate a 4 KiB page).
//
// Threads: any thread may call any function concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace tmpfsd::swapdev {

enum class CodecKind : uint8_t { kLz4, kZstd };

// "lz4" or "zstd".
std::string_view codec_name(CodecKind k);
std::optional<CodecKind> parse_codec(std::string_view name);

// The word every 8-byte word of `page` equals, or nullopt. `page`'s size is
// a multiple of 8.
std::optional<uint64_t> same_filled(std::span<const std::byte> page);
// Fills `page` with `word`.
void fill_with(std::span<std::byte> page, uint64_t word);

class PageCodec {
 public:
  static constexpr int kZstdLevel = 1;

  explicit PageCodec(CodecKind kind) : kind_(kind) {}
  CodecKind kind() const { return kind_; }

  // Compresses `page` into `out` and returns the compressed size, or 0 if it
  // does not fit in out.size() bytes (the caller's limit).
  size_t compress(std::span<const std::byte> page, std::span<std::byte> out) const;
  // Decompresses `in` into `page`; true only if it yields exactly
  // page.size() bytes.
  bool decompress(std::span<const std::byte> in, std::span<std::byte> page) const;

 private:
  CodecKind kind_;
};

}  // namespace tmpfsd::swapdev
