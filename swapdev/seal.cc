#include "swapdev/seal.h"
#include "swapdev/seal_table.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tmpfsd::swapdev {

namespace {

std::atomic<uint64_t> g_next_sealer_id{1};

constexpr size_t kNonceBytes = 12;  // GCM's native IV length

void put64(unsigned char* at, uint64_t v) {
  for (int i = 0; i < 8; ++i) at[i] = static_cast<unsigned char>(v >> (8 * i));
}

std::array<unsigned char, 32> aad_of(const SealBinding& b) {
  std::array<unsigned char, 32> a;
  put64(a.data(), b.where);
  put64(a.data() + 8, b.file);
  put64(a.data() + 16, b.index);
  put64(a.data() + 24, b.version);
  return a;
}

std::array<unsigned char, kNonceBytes> nonce_of(uint64_t version) {
  std::array<unsigned char, kNonceBytes> n{};
  put64(n.data(), version);
  return n;
}

size_t page_bytes() { return static_cast<size_t>(::sysconf(_SC_PAGESIZE)); }

}  // namespace

// A thread's two cipher contexts, keyed for the Sealer whose id they hold.
struct SealContexts {
  EVP_CIPHER_CTX* enc = nullptr;
  EVP_CIPHER_CTX* dec = nullptr;
  uint64_t sealer = 0;  // 0: keyed for none

  void wipe() {
    EVP_CIPHER_CTX_reset(enc);  // cleanses the key schedule; re-keyed before use
    EVP_CIPHER_CTX_reset(dec);
    sealer = 0;
  }
  ~SealContexts() {
    EVP_CIPHER_CTX_free(enc);  // cleanses the key schedule
    EVP_CIPHER_CTX_free(dec);
  }
};

namespace {
thread_local SealContexts tl_contexts;
}  // namespace

std::unique_ptr<Sealer> Sealer::create(std::string* error) noexcept {
  return create_with({}, 1, error);
}

std::unique_ptr<Sealer> Sealer::create_with(std::span<const std::byte> key_in,
                                            uint64_t next_version, std::string* error) noexcept {
  if (!key_in.empty() && key_in.size() != kKeyBytes) {
    if (error)
      *error = fmt::format("a seal key of {} bytes, {} expected", key_in.size(), kKeyBytes);
    return nullptr;
  }
  if (next_version == 0 || next_version >= SealTable::kPoisoned) {
    if (error) *error = "a seal counter out of range";
    return nullptr;
  }
  const size_t pb = page_bytes();
  void* mem = ::mmap(nullptr, pb, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    if (error) *error = fmt::format("cannot map a page for the seal key: {}", std::strerror(errno));
    return nullptr;
  }
  if (::mlock(mem, pb) != 0)
    spdlog::warn("seal: cannot lock the key's page in memory ({}): it may reach the system's swap",
                 std::strerror(errno));
  ::madvise(mem, pb, MADV_DONTDUMP);
  auto* key = static_cast<unsigned char*>(mem);
  if (!key_in.empty()) {
    std::memcpy(key, key_in.data(), kKeyBytes);
  } else if (RAND_bytes(key, kKeyBytes) != 1) {
    OPENSSL_cleanse(key, kKeyBytes);
    ::munmap(mem, pb);
    if (error) *error = "cannot make a seal key: RAND_bytes failed";
    return nullptr;
  }
  try {
    std::unique_ptr<Sealer> s(new Sealer(key, g_next_sealer_id.fetch_add(1)));
    s->next_version_.store(next_version, std::memory_order_relaxed);
    return s;
  } catch (...) {
    OPENSSL_cleanse(key, kKeyBytes);
    ::munmap(mem, pb);
    if (error) *error = "out of memory making the sealer";
    return nullptr;
  }
}

void Sealer::copy_key(std::span<std::byte, kKeyBytes> out) const noexcept {
  std::memcpy(out.data(), key_, kKeyBytes);
}

Sealer::~Sealer() {
  // This thread's contexts hold the key schedule: wipe them now (other
  // threads' are wiped when re-keyed or when their thread exits).
  if (tl_contexts.sealer == id_) tl_contexts.wipe();
  OPENSSL_cleanse(key_, kKeyBytes);
  ::munlock(key_, page_bytes());
  ::munmap(key_, page_bytes());
}

SealContexts* Sealer::contexts() noexcept {
  SealContexts& c = tl_contexts;
  if (c.sealer == id_) return &c;
  if (!c.enc) c.enc = EVP_CIPHER_CTX_new();
  if (!c.dec) c.dec = EVP_CIPHER_CTX_new();
  if (!c.enc || !c.dec) return nullptr;
  c.sealer = 0;
  if (EVP_EncryptInit_ex(c.enc, EVP_aes_256_gcm(), nullptr, key_, nullptr) != 1 ||
      EVP_DecryptInit_ex(c.dec, EVP_aes_256_gcm(), nullptr, key_, nullptr) != 1)
    return nullptr;
  c.sealer = id_;
  return &c;
}

bool Sealer::seal(SealBinding& b, std::span<const std::byte> in, std::span<std::byte> out,
                  SealTag* tag) noexcept {
  if (in.size() != out.size() || in.size() > INT32_MAX) return false;
  SealContexts* c = contexts();
  if (!c) return false;
  b.version = next_version_.fetch_add(1, std::memory_order_relaxed);
  const auto nonce = nonce_of(b.version);
  const auto aad = aad_of(b);
  int len = 0;
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  if (EVP_EncryptInit_ex(c->enc, nullptr, nullptr, nullptr, nonce.data()) != 1 ||
      EVP_EncryptUpdate(c->enc, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(c->enc, o, &len, reinterpret_cast<const unsigned char*>(in.data()),
                        static_cast<int>(in.size())) != 1 ||
      EVP_EncryptFinal_ex(c->enc, o + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(c->enc, EVP_CTRL_GCM_GET_TAG, kTagBytes, tag->data()) != 1)
    return false;
  return true;
}

bool Sealer::open(const SealBinding& b, std::span<std::byte> page, const SealTag& tag) noexcept {
  if (page.size() > INT32_MAX || b.version == 0) return false;
  SealContexts* c = contexts();
  if (!c) return false;
  const auto nonce = nonce_of(b.version);
  const auto aad = aad_of(b);
  SealTag t = tag;  // EVP_CTRL_GCM_SET_TAG takes a non-const pointer
  int len = 0;
  auto* p = reinterpret_cast<unsigned char*>(page.data());
  return EVP_DecryptInit_ex(c->dec, nullptr, nullptr, nullptr, nonce.data()) == 1 &&
         EVP_DecryptUpdate(c->dec, nullptr, &len, aad.data(), static_cast<int>(aad.size())) == 1 &&
         EVP_DecryptUpdate(c->dec, p, &len, p, static_cast<int>(page.size())) == 1 &&
         EVP_CIPHER_CTX_ctrl(c->dec, EVP_CTRL_GCM_SET_TAG, kTagBytes, t.data()) == 1 &&
         EVP_DecryptFinal_ex(c->dec, p + len, &len) == 1;
}

}  // namespace tmpfsd::swapdev
