// ImageWriter and ImageReader: the byte stream of a hibernation image
// (docs/design.md, "Surviving a restart"), and nothing of what it holds.
//
// An image is a sequence of fixed-width integers (host byte order: an image
// is read back by the same machine's daemon) and length-prefixed strings,
// ended by a trailer: kTrailerMagic and the XXH3-64 of every byte before
// it. The writer buffers and hands full buffers to a sink (the daemon's
// file, a test's string); the reader pulls from a source and checks the
// trailer at finish(), so an image cut short, grown or altered anywhere is
// refused with the reason, before anything is served from it.
//
// Threads: one thread per writer or reader.
#pragma once

#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace tmpfsd {

class ImageWriter {
 public:
  // sink(bytes) stores them all or returns an error (positive errno).
  using Sink = std::function<Status(std::span<const std::byte>)>;
  explicit ImageWriter(Sink sink);
  ~ImageWriter();
  ImageWriter(const ImageWriter&) = delete;
  ImageWriter& operator=(const ImageWriter&) = delete;

  void u32(uint32_t v) { bytes(&v, sizeof v); }
  void u64(uint64_t v) { bytes(&v, sizeof v); }
  void str(std::string_view s) {
    u64(s.size());
    bytes(s.data(), s.size());
  }
  void bytes(const void* p, size_t n);
  // Writes the trailer and flushes; the first sink error, if any.
  Status finish();

 private:
  void flush();

  Sink sink_;
  std::vector<std::byte> buf_;
  XXH3_state_t* hash_;
  Status err_;
};

class ImageReader {
 public:
  // source(out) fills up to out.size() bytes and returns how many (0: the
  // end), or an error.
  using Source = std::function<Result<size_t>(std::span<std::byte>)>;
  explicit ImageReader(Source source);
  ~ImageReader();
  ImageReader(const ImageReader&) = delete;
  ImageReader& operator=(const ImageReader&) = delete;

  // Each fails (false, with why() set) past the end or on a source error.
  bool u32(uint32_t* v) { return bytes(v, sizeof *v); }
  bool u64(uint64_t* v) { return bytes(v, sizeof *v); }
  // A string of at most `max` bytes.
  bool str(std::string* s, size_t max);
  bool bytes(void* p, size_t n);
  // Reads the trailer: true if it is there, matches every byte read, and
  // nothing follows it.
  bool finish();
  // Marks the image bad with a reason (the caller's checks of what it read).
  bool fail(std::string why);
  const std::string& why() const { return why_; }

 private:
  bool fill();

  Source source_;
  std::vector<std::byte> buf_;
  size_t pos_ = 0, end_ = 0;
  XXH3_state_t* hash_;
  std::string why_;
};

}  // namespace tmpfsd
