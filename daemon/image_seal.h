// The hibernation image sealed under a key file (--persist-key FILE): what
// daemon/persist.cc writes to and reads from DIR/image when a key is given.
//
// The image stream (core/image.h) is cut into chunks as ImageWriter flushes
// them (at most 1 MiB), and each chunk is sealed with AES-256-GCM:
//
//   file    magic "tmpfsdS1" | salt (16 random bytes) | chunk ... | last chunk
//   chunk   length (u32) | flags (u32: 1 = last) | ciphertext | tag (16)
//
// The key of one image is SHA-256(key file's 32 bytes | salt), so a new
// salt per save gives every image a key of its own and the nonce can be the
// chunk's number. The associated data of a chunk is the magic, the salt, its
// number, flags and length: a chunk altered, dropped, moved, taken from
// another image, or a file cut at a chunk's end (no last chunk) does not
// open, and the load is refused with the reason. What sealing cannot tell
// is an older image of the same key put back whole: the files then are
// those of that stop.
//
// The key file holds 32 bytes, raw or as 64 hex digits (a newline after
// them is allowed); it is read once at start and the copy in memory is
// wiped when the daemon exits.
//
// Threads: the daemon's main thread only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"

namespace tmpfsd {

class ImageKey {
 public:
  static constexpr size_t kBytes = 32;
  // Null with `why` set when FILE cannot be read or holds no key.
  static std::unique_ptr<ImageKey> load(const std::string& file, std::string* why);
  ~ImageKey();
  ImageKey(const ImageKey&) = delete;
  ImageKey& operator=(const ImageKey&) = delete;
  const unsigned char* bytes() const { return key_.data(); }

 private:
  ImageKey() = default;
  std::array<unsigned char, kBytes> key_{};
};

// True if the file at `fd` (at offset 0) starts as a sealed image; the
// offset is left at 0.
bool is_sealed_image(int fd);

class SealedImageWriter {
 public:
  SealedImageWriter(int fd, const ImageKey& key);
  ~SealedImageWriter();
  SealedImageWriter(const SealedImageWriter&) = delete;
  SealedImageWriter& operator=(const SealedImageWriter&) = delete;
  // One chunk of the stream (the ImageWriter's sink); the header first.
  Status write(std::span<const std::byte> chunk);
  // The last chunk: after it, the file is whole.
  Status finish();

 private:
  Status seal(std::span<const std::byte> chunk, uint32_t flags);

  const int fd_;
  std::array<unsigned char, 32> key_{};  // this image's
  std::array<unsigned char, 16> salt_{};
  uint64_t next_ = 0;  // the next chunk's number
  bool header_written_ = false;
  Status err_;
  std::vector<unsigned char> out_;
};

class SealedImageReader {
 public:
  SealedImageReader(int fd, const ImageKey& key);
  ~SealedImageReader();
  SealedImageReader(const SealedImageReader&) = delete;
  SealedImageReader& operator=(const SealedImageReader&) = delete;
  // The ImageReader's source: plaintext, 0 after the last chunk; EBADMSG
  // with why() set when a chunk does not open or the file ends early.
  Result<size_t> read(std::span<std::byte> out);
  const std::string& why() const { return why_; }

 private:
  bool next_chunk();
  bool note(std::string why);  // sets why() (the first reason stays); false
  Result<size_t> fail(std::string why);

  const int fd_;
  const ImageKey& file_key_;
  std::array<unsigned char, 32> key_{};
  std::array<unsigned char, 16> salt_{};
  bool header_read_ = false, ended_ = false;
  uint64_t next_ = 0;
  std::vector<unsigned char> plain_;
  size_t pos_ = 0;
  std::string why_;
};

}  // namespace tmpfsd
