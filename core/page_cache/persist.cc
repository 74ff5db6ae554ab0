// FilePagesImpl::bindings and adopt: a file's pages to and from --persist's
// lazy image (docs/design.md, "Surviving a restart"). The image names each
// page's slot; a start puts the page back as swapped, with no Pmap and no
// frame, and reads it only when it is touched.
#include "core/page_cache/file_pages.h"

namespace tmpfsd {

void FilePagesImpl::bindings(std::vector<FilePages::Binding>* out) const {
  using B = FilePages::Binding;
  ReaderLock lock(mu_);
  index_.visit_range(0, UINT64_MAX, [&](uint64_t page, uint64_t w) {
    const PagePlace place = PagePlace::from_word(w);
    B b{.page = page, .slot = {}, .kind = B::kCopy};
    if (place.is_swapped()) {
      b.slot = place.slot();
      b.kind = B::kSlot;
    } else if (place.is_zero()) {
      b.kind = place.zero_uptodate() ? B::kZeroUptodate : B::kZero;
    } else if (place.is_pmap()) {
      const Pmap* p = place.pmap();
      const Frame* f = p->frame();
      if (p->read_error() && f && f->has_slot()) {
        b.slot = f->swap_slot();  // the slot is the page; the frame is garbage
        b.kind = B::kSlot;
      } else if (!p->dirty() && !p->writeback() && !p->read_pending() && f && f->has_slot()) {
        b.slot = f->swap_slot();
        b.kind = B::kSlot;
      } else if (!p->dirty() && !p->writeback() && !p->read_pending() && f && !f->has_slot()) {
        b.kind = p->uptodate() ? B::kCopy : B::kZero;  // clean, no slot: zeros unless written
      }
    }  // remote: kCopy (the pool is not kept)
    out->push_back(b);
    return true;
  });
}

Status FilePagesImpl::adopt(std::span<const FilePages::Binding> bs) {
  using B = FilePages::Binding;
  uint64_t swapped = 0;
  for (size_t i = 0; i < bs.size(); ++i) {
    const B& b = bs[i];
    if (b.kind == B::kCopy || (i > 0 && b.page <= bs[i - 1].page) ||
        (b.kind == B::kSlot && (!b.slot.valid() || b.slot.value > PagePlace::kMaxSlot)))
      return Errno{EINVAL};
    swapped += b.kind == B::kSlot;
  }
  WriterLock lock(mu_);
  if (!index_.empty()) return Errno{EINVAL};
  if (!st_.reserve_pages(bs.size())) return Errno{ENOSPC};
  index_.set_sorted(bs.begin(), bs.end(), [](const B& b) {
    return (b.kind == B::kSlot ? PagePlace::swapped(b.slot)
                               : PagePlace::zero(b.kind == B::kZeroUptodate))
        .word();
  });
  st_.pages_swapped.fetch_add(swapped, std::memory_order_relaxed);
  publish_pages_locked();
  return Status::ok();
}

}  // namespace tmpfsd
