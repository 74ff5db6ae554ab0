// Persist: --persist DIR, the file system kept across a stop and a start
// (docs/design.md, "Surviving a restart").
//
// DIR holds `image` (core/namespace_image.cc: the tree, attributes and
// data), `lock`, and `swap`, the swap file, kept (set_swap): an image then
// holds each page's slot in it instead of the data, and a start binds the
// pages to their slots and reads nothing until a page is touched (lazy
// restore). Slots the restored image names are pinned for the daemon's
// life (swapdev/slot_device.h: never rewritten, their frees held), so a
// crash still leaves that image whole; the swap file may so hold up to
// twice the data. A stop writes every page that is only in memory to a
// slot and fdatasyncs the swap file before the image is renamed in. A daemon holds the lock (flock,
// exclusive) from before it loads the image until after it has saved the next one, so a second
// daemon on the same DIR waits for the first to finish saving (the usual
// case: `umount; mount` returns before the old daemon has written its
// image) and refuses after kLockWait.
//
// A save writes `image.new`, fsyncs it, renames it over `image` and fsyncs
// DIR: at every instant DIR holds the previous image or the new one, whole.
// A daemon that dies without saving (kill -9, power loss) leaves the last
// clean image; a start then restores that. An image that fails its checks
// is refused with the reason and nothing is mounted.
//
// With --persist-key FILE the image is sealed (daemon/image_seal.h); an
// image written without a key is still read with one (and sealed at the
// next save), a sealed one is refused without its key.
//
// Threads: the daemon's main thread only.
#pragma once

#include <chrono>
#include <memory>
#include <string>

namespace tmpfsd {

class ImageKey;
class Namespace;
namespace swapdev {
class UringSwapDevice;
}

class Persist {
 public:
  static constexpr std::chrono::seconds kLockWait{120};

  // Creates DIR (0700) if needed, reads the key file if one is named
  // (empty: none), and takes DIR's lock. Null with `why` set on failure.
  // `inherited_lock` (>= 0): DIR's lock descriptor handed over by the daemon
  // this one takes the mount over from (daemon/restart.h), locked already.
  static std::unique_ptr<Persist> open(const std::string& dir, const std::string& key_file,
                                       std::string* why, int inherited_lock = -1);
  ~Persist();  // releases the lock
  Persist(const Persist&) = delete;
  Persist& operator=(const Persist&) = delete;

  // DIR/swap's device (null: the swap file is elsewhere, or there is
  // none): load() and save() use it for lazy images. Before load().
  void set_swap(swapdev::UringSwapDevice* dev) { swap_ = dev; }

  // Fills `ns` (fresh) from DIR/image; true with nothing done when there is
  // none. False with `why` on a bad image, or one that does not fit this
  // mount's limits.
  bool load(Namespace& ns, std::string* why);
  // Writes DIR/image as described above; false with `why` (the previous
  // image stays).
  bool save(Namespace& ns, std::string* why);

  const std::string& dir() const { return dir_; }
  int lock_fd() const { return lock_fd_; }
  // The image in DIR now (the one restored, or the last saved): its size
  // in bytes and age in seconds; false when there is none.
  bool image_info(uint64_t* bytes, uint64_t* age_seconds) const;

 private:
  Persist(std::string dir, int dir_fd, int lock_fd, std::unique_ptr<ImageKey> key);

  const std::string dir_;
  const int dir_fd_;
  const int lock_fd_;
  const std::unique_ptr<ImageKey> key_;  // null: the image is not sealed
  swapdev::UringSwapDevice* swap_ = nullptr;
};

}  // namespace tmpfsd
