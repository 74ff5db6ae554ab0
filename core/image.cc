#include "core/image.h"

#include <algorithm>
#include <cstring>

#include <fmt/core.h>

namespace tmpfsd {

namespace {
constexpr size_t kBuffer = size_t{1} << 20;
constexpr uint64_t kTrailerMagic = 0x646e452d6567616dULL;  // "mage-End"
}  // namespace

ImageWriter::ImageWriter(Sink sink) : sink_(std::move(sink)), hash_(XXH3_createState()) {
  buf_.reserve(kBuffer);
  XXH3_64bits_reset(hash_);
}

ImageWriter::~ImageWriter() { XXH3_freeState(hash_); }

void ImageWriter::bytes(const void* p, size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  XXH3_64bits_update(hash_, b, n);
  while (n > 0) {
    const size_t take = std::min(n, kBuffer - buf_.size());
    buf_.insert(buf_.end(), b, b + take);
    b += take;
    n -= take;
    if (buf_.size() == kBuffer) flush();
  }
}

void ImageWriter::flush() {
  if (err_.is_ok() && !buf_.empty()) err_ = sink_(buf_);
  buf_.clear();
}

Status ImageWriter::finish() {
  const uint64_t sum = XXH3_64bits_digest(hash_);
  const uint64_t trailer[2] = {kTrailerMagic, sum};
  const auto* t = reinterpret_cast<const std::byte*>(trailer);
  buf_.insert(buf_.end(), t, t + sizeof trailer);
  flush();
  return err_;
}

ImageReader::ImageReader(Source source)
    : source_(std::move(source)), buf_(kBuffer), hash_(XXH3_createState()) {
  XXH3_64bits_reset(hash_);
}

ImageReader::~ImageReader() { XXH3_freeState(hash_); }

bool ImageReader::fail(std::string why) {
  if (why_.empty()) why_ = std::move(why);
  return false;
}

bool ImageReader::fill() {
  if (!why_.empty()) return false;
  auto r = source_(buf_);
  if (!r) return fail(fmt::format("read error: {}", std::strerror(r.code())));
  pos_ = 0;
  end_ = *r;
  return end_ > 0;
}

bool ImageReader::bytes(void* p, size_t n) {
  auto* out = static_cast<std::byte*>(p);
  while (n > 0) {
    if (pos_ == end_ && !fill()) return fail("the image ends too soon (cut short?)");
    const size_t take = std::min(n, end_ - pos_);
    std::memcpy(out, buf_.data() + pos_, take);
    XXH3_64bits_update(hash_, out, take);
    pos_ += take;
    out += take;
    n -= take;
  }
  return true;
}

bool ImageReader::str(std::string* s, size_t max) {
  uint64_t n;
  if (!u64(&n)) return false;
  if (n > max) return fail(fmt::format("a string of {} bytes, at most {} expected", n, max));
  s->resize(n);
  return bytes(s->data(), n);
}

bool ImageReader::finish() {
  if (!why_.empty()) return false;
  const uint64_t expect = XXH3_64bits_digest(hash_);
  uint64_t trailer[2];
  if (!bytes(trailer, sizeof trailer)) return false;
  if (trailer[0] != kTrailerMagic) return fail("no trailer where the image should end");
  if (trailer[1] != expect) return fail("checksum mismatch: the image was altered");
  if (pos_ != end_ || fill()) return fail("bytes after the image's trailer");
  return why_.empty();  // fill() may have failed on a read error
}

}  // namespace tmpfsd
