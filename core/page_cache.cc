// TEMPORARY stub (lead's, not committed): replaced by the pagecache branch.
#include "core/page_cache.h"
#include <cstring>
#include <map>
#include <mutex>
#include <atomic>
#include <vector>
namespace tmpfsd {
struct PageCache::State { PageCacheConfig cfg; std::atomic<uint64_t> pages{0}; std::vector<std::byte> zero; };
class FilePagesImpl { public: PageCache& c; std::mutex mu; std::map<uint64_t, std::unique_ptr<std::byte[]>> pages; explicit FilePagesImpl(PageCache& c):c(c){} };
Result<std::unique_ptr<PageCache>> PageCache::create(const PageCacheConfig& config) {
  auto st = std::make_unique<State>(); st->cfg = config; st->zero.resize(config.page_size);
  return std::unique_ptr<PageCache>(new PageCache(std::move(st)));
}
PageCache::PageCache(std::unique_ptr<State> s) : state_(std::move(s)) {}
PageCache::~PageCache() = default;
size_t PageCache::page_size() const { return state_->cfg.page_size; }
PageCacheStats PageCache::stats() const { PageCacheStats s; s.page_size = page_size(); s.pages_allocated = state_->pages; s.max_pages = state_->cfg.max_pages; return s; }
FilePages::FilePages(PageCache& c) : impl_(std::make_unique<FilePagesImpl>(c)) {}
FilePages::~FilePages() { impl_->c.state().pages -= impl_->pages.size(); }
void FilePages::read(uint64_t off, size_t len, ReadDone done) {
  std::lock_guard l(impl_->mu); size_t ps = impl_->c.page_size(); std::vector<iovec> iov;
  uint64_t end = off + len;
  while (off < end) { uint64_t idx = off / ps, po = off % ps; size_t n = std::min<uint64_t>(ps - po, end - off);
    auto it = impl_->pages.find(idx); void* base = it == impl_->pages.end() ? (void*)impl_->c.state().zero.data() : (void*)(it->second.get() + po);
    iov.push_back({base, n}); off += n; }
  done(Status{}, iov);
}
Status FilePages::write(uint64_t off, std::span<const std::byte> data) {
  std::lock_guard l(impl_->mu); size_t ps = impl_->c.page_size(); auto& st = impl_->c.state();
  uint64_t need = 0; for (uint64_t i = off / ps; i <= (off + data.size() - 1) / ps; ++i) if (!impl_->pages.count(i)) ++need;
  if (st.cfg.max_pages && st.pages + need > st.cfg.max_pages) return Errno{ENOSPC};
  size_t done = 0;
  while (done < data.size()) { uint64_t o = off + done, idx = o / ps, po = o % ps; size_t n = std::min<uint64_t>(ps - po, data.size() - done);
    auto& p = impl_->pages[idx]; if (!p) { p.reset(new std::byte[ps]()); st.pages++; }
    std::memcpy(p.get() + po, data.data() + done, n); done += n; }
  return {};
}
void FilePages::truncate(uint64_t, uint64_t new_size) {
  std::lock_guard l(impl_->mu); size_t ps = impl_->c.page_size();
  uint64_t first = (new_size + ps - 1) / ps;
  for (auto it = impl_->pages.lower_bound(first); it != impl_->pages.end();) { it = impl_->pages.erase(it); impl_->c.state().pages--; }
  if (new_size % ps) { auto it = impl_->pages.find(new_size / ps); if (it != impl_->pages.end()) std::memset(it->second.get() + new_size % ps, 0, ps - new_size % ps); }
}
void FilePages::punch_hole(uint64_t off, uint64_t len) {
  std::lock_guard l(impl_->mu); size_t ps = impl_->c.page_size(); uint64_t end = off + len;
  while (off < end) { uint64_t idx = off / ps, po = off % ps; size_t n = std::min<uint64_t>(ps - po, end - off);
    auto it = impl_->pages.find(idx);
    if (it != impl_->pages.end()) { if (n == ps) { impl_->pages.erase(it); impl_->c.state().pages--; } else std::memset(it->second.get() + po, 0, n); }
    off += n; }
}
Status FilePages::allocate(uint64_t off, uint64_t len) {
  std::lock_guard l(impl_->mu); size_t ps = impl_->c.page_size(); auto& st = impl_->c.state();
  for (uint64_t i = off / ps; i <= (off + len - 1) / ps; ++i) { auto& p = impl_->pages[i]; if (!p) { p.reset(new std::byte[ps]()); st.pages++; } }
  return {};
}
std::optional<uint64_t> FilePages::seek_data(uint64_t off, uint64_t size) const {
  size_t ps = impl_->c.page_size(); auto it = impl_->pages.lower_bound(off / ps);
  if (it == impl_->pages.end() || it->first * ps >= size) return std::nullopt; return std::max(off, it->first * ps);
}
std::optional<uint64_t> FilePages::seek_hole(uint64_t off, uint64_t size) const {
  size_t ps = impl_->c.page_size(); uint64_t i = off / ps;
  while (impl_->pages.count(i)) ++i; return std::min(size, std::max(off, i * ps));
}
uint64_t FilePages::pages() const { return impl_->pages.size(); }
}
