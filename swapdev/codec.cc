#include "swapdev/codec.h"

#include <lz4.h>
#include <zstd.h>

#include <cstring>

namespace tmpfsd::swapdev {

namespace {

struct ZstdContexts {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_DCtx* d = ZSTD_createDCtx();
  ZstdContexts() = default;
  ZstdContexts(const ZstdContexts&) = delete;
  ZstdContexts& operator=(const ZstdContexts&) = delete;
  ~ZstdContexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
};

ZstdContexts& zstd_contexts() {
  thread_local ZstdContexts ctx;
  return ctx;
}

}  // namespace

std::string_view codec_name(CodecKind k) { return k == CodecKind::kLz4 ? "lz4" : "zstd"; }

std::optional<CodecKind> parse_codec(std::string_view name) {
  if (name == "lz4") return CodecKind::kLz4;
  if (name == "zstd") return CodecKind::kZstd;
  return std::nullopt;
}

std::optional<uint64_t> same_filled(std::span<const std::byte> page) {
  const size_t n = page.size() / sizeof(uint64_t);
  if (n == 0) return std::nullopt;
  uint64_t first;
  std::memcpy(&first, page.data(), sizeof first);
  // Last word first: a page that differs usually differs somewhere late.
  uint64_t w;
  std::memcpy(&w, page.data() + (n - 1) * sizeof w, sizeof w);
  if (w != first) return std::nullopt;
  for (size_t i = 1; i < n - 1; ++i) {
    std::memcpy(&w, page.data() + i * sizeof w, sizeof w);
    if (w != first) return std::nullopt;
  }
  return first;
}

void fill_with(std::span<std::byte> page, uint64_t word) {
  if (word == 0) {
    std::memset(page.data(), 0, page.size());
    return;
  }
  for (size_t off = 0; off + sizeof word <= page.size(); off += sizeof word)
    std::memcpy(page.data() + off, &word, sizeof word);
}

size_t PageCodec::compress(std::span<const std::byte> page, std::span<std::byte> out) const {
  if (kind_ == CodecKind::kLz4) {
    const int n = LZ4_compress_default(reinterpret_cast<const char*>(page.data()),
                                       reinterpret_cast<char*>(out.data()),
                                       static_cast<int>(page.size()), static_cast<int>(out.size()));
    return n > 0 ? static_cast<size_t>(n) : 0;
  }
  const size_t n = ZSTD_compressCCtx(zstd_contexts().c, out.data(), out.size(), page.data(),
                                     page.size(), kZstdLevel);
  return ZSTD_isError(n) ? 0 : n;
}

bool PageCodec::decompress(std::span<const std::byte> in, std::span<std::byte> page) const {
  if (kind_ == CodecKind::kLz4) {
    const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data()),
                                      reinterpret_cast<char*>(page.data()),
                                      static_cast<int>(in.size()), static_cast<int>(page.size()));
    return n >= 0 && static_cast<size_t>(n) == page.size();
  }
  const size_t n =
      ZSTD_decompressDCtx(zstd_contexts().d, page.data(), page.size(), in.data(), in.size());
  return !ZSTD_isError(n) && n == page.size();
}

}  // namespace tmpfsd::swapdev
