#include "daemon/image_seal.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include <fmt/core.h>

#include "daemon/fd_io.h"

namespace tmpfsd {

namespace {

constexpr unsigned char kMagic[8] = {'t', 'm', 'p', 'f', 's', 'd', 'S', '1'};
constexpr size_t kTag = 16;
constexpr uint32_t kLast = 1;
constexpr size_t kMaxChunk = (size_t{1} << 20) + 64;  // ImageWriter's buffer, and its trailer

void put32(unsigned char* at, uint32_t v) {
  for (int i = 0; i < 4; ++i) at[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t get32(const unsigned char* at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{at[i]} << (8 * i);
  return v;
}

// This image's key: SHA-256(file key | salt).
bool derive(const unsigned char* file_key, const std::array<unsigned char, 16>& salt,
            std::array<unsigned char, 32>* out) {
  unsigned char in[ImageKey::kBytes + 16];
  std::memcpy(in, file_key, ImageKey::kBytes);
  std::memcpy(in + ImageKey::kBytes, salt.data(), salt.size());
  unsigned int n = 0;
  const bool ok = EVP_Digest(in, sizeof in, out->data(), &n, EVP_sha256(), nullptr) == 1;
  OPENSSL_cleanse(in, sizeof in);
  return ok && n == out->size();
}

// magic | salt | number | flags | length
std::array<unsigned char, 40> aad_of(const std::array<unsigned char, 16>& salt, uint64_t number,
                                     uint32_t flags, uint32_t length) {
  std::array<unsigned char, 40> a{};
  std::memcpy(a.data(), kMagic, 8);
  std::memcpy(a.data() + 8, salt.data(), 16);
  put32(a.data() + 24, static_cast<uint32_t>(number));
  put32(a.data() + 28, static_cast<uint32_t>(number >> 32));
  put32(a.data() + 32, flags);
  put32(a.data() + 36, length);
  return a;
}

std::array<unsigned char, 12> nonce_of(uint64_t number) {
  std::array<unsigned char, 12> n{};
  put32(n.data(), static_cast<uint32_t>(number));
  put32(n.data() + 4, static_cast<uint32_t>(number >> 32));
  return n;
}

// Seals (enc) or opens `in` into `out` (same length); `tag` is written or
// checked. False: the seal does not open (or OpenSSL failed).
bool gcm(bool enc, const std::array<unsigned char, 32>& key, uint64_t number,
         std::span<const unsigned char> aad, const unsigned char* in, size_t n, unsigned char* out,
         unsigned char* tag) {
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  if (!c) return false;
  const auto iv = nonce_of(number);
  int len = 0;
  bool ok =
      EVP_CipherInit_ex(c, EVP_aes_256_gcm(), nullptr, key.data(), iv.data(), enc ? 1 : 0) == 1 &&
      EVP_CipherUpdate(c, nullptr, &len, aad.data(), static_cast<int>(aad.size())) == 1 &&
      (n == 0 || EVP_CipherUpdate(c, out, &len, in, static_cast<int>(n)) == 1);
  if (ok && !enc) ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kTag, tag) == 1;
  if (ok) ok = EVP_CipherFinal_ex(c, out + (n == 0 ? 0 : len), &len) == 1;
  if (ok && enc) ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, kTag, tag) == 1;
  EVP_CIPHER_CTX_free(c);  // cleanses the key schedule
  return ok;
}

// This file's buffers are unsigned char (OpenSSL's); fd_io.h's take bytes.
Status write_bytes(int fd, const unsigned char* p, size_t n) {
  return write_all(fd, {reinterpret_cast<const std::byte*>(p), n});
}
// Exactly n bytes, or fewer at the end of the file; -errno on an error.
ssize_t read_bytes(int fd, unsigned char* p, size_t n) {
  const Result<size_t> r = read_full(fd, {reinterpret_cast<std::byte*>(p), n});
  return r ? static_cast<ssize_t>(*r) : -r.code();
}

}  // namespace

std::unique_ptr<ImageKey> ImageKey::load(const std::string& file, std::string* why) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *why = fmt::format("--persist-key {}: {}", file, std::strerror(errno));
    return nullptr;
  }
  unsigned char buf[80];
  const ssize_t n = read_bytes(fd, buf, sizeof buf);
  ::close(fd);
  std::unique_ptr<ImageKey> k(new ImageKey);
  auto hex = [](unsigned char c) { return std::isdigit(c) ? c - '0' : std::tolower(c) - 'a' + 10; };
  bool ok = false;
  if (n == static_cast<ssize_t>(kBytes)) {
    std::memcpy(k->key_.data(), buf, kBytes);
    ok = true;
  } else if (n == 64 || (n == 65 && buf[64] == '\n')) {
    ok = true;
    for (size_t i = 0; i < 64 && ok; ++i) ok = std::isxdigit(buf[i]) != 0;
    for (size_t i = 0; i < kBytes && ok; ++i)
      k->key_[i] = static_cast<unsigned char>(hex(buf[2 * i]) << 4 | hex(buf[2 * i + 1]));
  }
  OPENSSL_cleanse(buf, sizeof buf);
  if (!ok) {
    *why = fmt::format(
        "--persist-key {}: not a key (32 bytes, or 64 hex digits; make one with "
        "'head -c 32 /dev/urandom > FILE')",
        file);
    return nullptr;
  }
  return k;
}

ImageKey::~ImageKey() { OPENSSL_cleanse(key_.data(), key_.size()); }

bool is_sealed_image(int fd) {
  unsigned char m[8];
  const bool sealed = ::pread(fd, m, sizeof m, 0) == sizeof m && std::memcmp(m, kMagic, 8) == 0;
  return sealed;
}

SealedImageWriter::SealedImageWriter(int fd, const ImageKey& key) : fd_(fd) {
  if (RAND_bytes(salt_.data(), static_cast<int>(salt_.size())) != 1 ||
      !derive(key.bytes(), salt_, &key_))
    err_ = Errno{EIO};
}

SealedImageWriter::~SealedImageWriter() { OPENSSL_cleanse(key_.data(), key_.size()); }

Status SealedImageWriter::seal(std::span<const std::byte> chunk, uint32_t flags) {
  if (!err_) return err_;
  if (!header_written_) {
    unsigned char h[24];
    std::memcpy(h, kMagic, 8);
    std::memcpy(h + 8, salt_.data(), 16);
    if (!(err_ = write_bytes(fd_, h, sizeof h))) return err_;
    header_written_ = true;
  }
  const auto n = static_cast<uint32_t>(chunk.size());
  out_.resize(8 + n + kTag);
  put32(out_.data(), n);
  put32(out_.data() + 4, flags);
  const auto aad = aad_of(salt_, next_, flags, n);
  if (!gcm(true, key_, next_, aad, reinterpret_cast<const unsigned char*>(chunk.data()), n,
           out_.data() + 8, out_.data() + 8 + n))
    return err_ = Errno{EIO};
  ++next_;
  return err_ = write_bytes(fd_, out_.data(), out_.size());
}

Status SealedImageWriter::write(std::span<const std::byte> chunk) { return seal(chunk, 0); }
Status SealedImageWriter::finish() { return seal({}, kLast); }

SealedImageReader::SealedImageReader(int fd, const ImageKey& key) : fd_(fd), file_key_(key) {}

SealedImageReader::~SealedImageReader() {
  OPENSSL_cleanse(key_.data(), key_.size());
  if (!plain_.empty()) OPENSSL_cleanse(plain_.data(), plain_.size());
}

bool SealedImageReader::note(std::string why) {
  if (why_.empty()) why_ = std::move(why);
  return false;
}

Result<size_t> SealedImageReader::fail(std::string why) {
  note(std::move(why));
  return Errno{EBADMSG};
}

bool SealedImageReader::next_chunk() {
  unsigned char head[8];
  const ssize_t h = read_bytes(fd_, head, sizeof head);
  if (h < 0) return note(fmt::format("read error: {}", std::strerror(static_cast<int>(-h))));
  if (h < static_cast<ssize_t>(sizeof head))
    return note("the sealed image ends too soon (cut short?)");
  const uint32_t n = get32(head), flags = get32(head + 4);
  if (n > kMaxChunk || (flags & ~kLast) != 0)
    return note("a chunk of the sealed image is malformed");
  std::vector<unsigned char> sealed(n + kTag);
  const ssize_t r = read_bytes(fd_, sealed.data(), sealed.size());
  if (r < static_cast<ssize_t>(sealed.size()))
    return note("the sealed image ends too soon (cut short?)");
  plain_.resize(n);
  pos_ = 0;
  const auto aad = aad_of(salt_, next_, flags, n);
  if (!gcm(false, key_, next_, aad, sealed.data(), n, plain_.data(), sealed.data() + n))
    return note(
        fmt::format("chunk {} of the sealed image does not open: another key, or the "
                    "image was altered",
                    next_));
  ++next_;
  if (flags & kLast) {
    ended_ = true;
    unsigned char extra;
    if (read_bytes(fd_, &extra, 1) != 0) return note("bytes after the sealed image's end");
  }
  return true;
}

Result<size_t> SealedImageReader::read(std::span<std::byte> out) {
  if (!why_.empty()) return Errno{EBADMSG};
  if (!header_read_) {
    unsigned char h[24];
    if (read_bytes(fd_, h, sizeof h) != static_cast<ssize_t>(sizeof h) ||
        std::memcmp(h, kMagic, 8) != 0)
      return fail("not a sealed tmpfsd image");
    std::memcpy(salt_.data(), h + 8, 16);
    if (!derive(file_key_.bytes(), salt_, &key_)) return fail("cannot derive the image's key");
    header_read_ = true;
  }
  while (pos_ == plain_.size()) {
    if (ended_) return size_t{0};
    if (!next_chunk()) return Errno{EBADMSG};
  }
  const size_t n = std::min(out.size(), plain_.size() - pos_);
  std::memcpy(out.data(), plain_.data() + pos_, n);
  pos_ += n;
  return n;
}

}  // namespace tmpfsd
