// Sealer: AES-256-GCM over one page, for every page that leaves memory (the
// swap file today; issue 17's remote tier later). It knows nothing of where
// the page goes: the caller says what the sealed bytes are bound to.
//
// A page is sealed under the Sealer's key, with
//   - a nonce unique per seal under that key: the 64-bit `version` that
//     seal() draws from the Sealer's counter (never reused: the counter does
//     not wrap in 2^64 seals), padded to GCM's 96 bits;
//   - associated data: the four words of SealBinding (where the page is
//     stored, its file, its index in the file, and the version), so that
//     bytes sealed for one place, file, page or write open nowhere else;
//   - a 16-byte tag, which the caller keeps (not with the bytes: a tag kept
//     in memory is what makes an old image written back fail).
// open() is the inverse, in place; it fails (false) if anything changed:
// the bytes, the tag, or any word of the binding. A failed open leaves the
// buffer undefined: the caller zeroes it.
//
// The key: 32 random bytes (RAND_bytes) made by create(), held in one page
// of its own that is mlock()ed (kept out of the system's swap; a failure
// to lock is logged once, not fatal) and MADV_DONTDUMP (out of core dumps),
// never logged, and wiped (OPENSSL_cleanse) by the destructor. OpenSSL's
// expanded key schedule lives in per-thread cipher contexts on its heap:
// those are wiped when a context is re-keyed for another Sealer or its
// thread exits (EVP_CIPHER_CTX_free cleanses). The rest of the daemon's
// memory (its frames hold plaintext) is kept out of swap by the service
// unit's MemorySwapMax=0 (README, "Sealed swap").
//
// Threads: any thread may call seal()/open() concurrently; each thread uses
// its own cipher contexts. The Sealer must outlive every call.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace tmpfsd::swapdev {

struct SealContexts;  // seal.cc: a thread's cipher contexts

// What a sealed page is bound to: every word goes into the tag.
struct SealBinding {
  uint64_t where = 0;    // where it is stored: a swap slot, a remote key's hash
  uint64_t file = 0;     // the file it belongs to (a number unique in the mount)
  uint64_t index = 0;    // its page index in that file
  uint64_t version = 0;  // the nonce: drawn by seal(), given back to open()
};

using SealTag = std::array<std::byte, 16>;

class Sealer {
 public:
  static constexpr size_t kKeyBytes = 32;
  static constexpr size_t kTagBytes = sizeof(SealTag);

  // A Sealer with a fresh random key, or null and a sentence in *error
  // (no randomness, no memory).
  static std::unique_ptr<Sealer> create(std::string* error) noexcept;
  // A Sealer with `key` (kKeyBytes; empty: a fresh random one) whose
  // counter starts at `next_version` (>= 1): the key and counter() of a
  // Sealer of an earlier process (--persist), so that what it sealed opens
  // and no nonce is drawn twice under that key.
  static std::unique_ptr<Sealer> create_with(std::span<const std::byte> key, uint64_t next_version,
                                             std::string* error) noexcept;
  // The key, for an image that must read this Sealer's slots back
  // (--persist); `out` is the caller's to wipe.
  void copy_key(std::span<std::byte, kKeyBytes> out) const noexcept;
  // The counter's next value: a later Sealer with this key starts there.
  uint64_t counter() const { return next_version_.load(std::memory_order_relaxed); }
  ~Sealer();
  Sealer(const Sealer&) = delete;
  Sealer& operator=(const Sealer&) = delete;

  // Encrypts `in` into `out` (same length; they may be the same memory),
  // bound to b with a fresh version, which is stored in b.version; the tag
  // goes to *tag. False only if OpenSSL fails (then `out` holds nothing).
  bool seal(SealBinding& b, std::span<const std::byte> in, std::span<std::byte> out,
            SealTag* tag) noexcept;
  // Decrypts `page` in place if it is exactly what seal() made for `b`
  // (b.version as seal() returned it) with tag `tag`; false otherwise.
  bool open(const SealBinding& b, std::span<std::byte> page, const SealTag& tag) noexcept;

  // Seals made so far (the counter's next value - 1).
  uint64_t seals() const { return next_version_.load(std::memory_order_relaxed) - 1; }

 private:
  Sealer(unsigned char* key, uint64_t id) : key_(key), id_(id) {}
  SealContexts* contexts() noexcept;  // this thread's, keyed for this Sealer

  unsigned char* const key_;               // kKeyBytes in a locked page of its own
  const uint64_t id_;                      // tells the thread-local contexts whose key they hold
  std::atomic<uint64_t> next_version_{1};  // 0 is never a version: "no data"
};

}  // namespace tmpfsd::swapdev
