// Mutexes the compiler can check: clang's thread-safety attributes (as
// LevelDB's port/thread_annotations.h and Abseil's) and thin wrappers of
// the standard mutexes that carry them. Every lock of core/ and swapdev/ is
// one of these, the data it guards is marked GUARDED_BY, and a function
// that needs a lock held says REQUIRES. tools/check-tsa builds the tree
// with clang -Wthread-safety -Werror=thread-safety; with g++ the attributes
// are empty and the wrappers cost nothing.
//
// Lives in swapdev/, the lowest layer, so that core/ and swapdev/ share it
// (swapdev/ must not include core/).
//
// Condition variables: std::condition_variable wants a
// std::unique_lock<std::mutex>; UniqueLock hands out its own (native()) for
// wait calls. The analysis does not see a wait drop and re-take the lock,
// which is what a condition wait means to its caller anyway.
#pragma once

#include <mutex>
#include <shared_mutex>

#if defined(__clang__)
#define TMPFSD_TSA(x) __attribute__((x))
#else
#define TMPFSD_TSA(x)
#endif

#define CAPABILITY(x) TMPFSD_TSA(capability(x))
#define SCOPED_CAPABILITY TMPFSD_TSA(scoped_lockable)
#define GUARDED_BY(x) TMPFSD_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) TMPFSD_TSA(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) TMPFSD_TSA(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) TMPFSD_TSA(acquired_after(__VA_ARGS__))
#define REQUIRES(...) TMPFSD_TSA(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) TMPFSD_TSA(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) TMPFSD_TSA(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) TMPFSD_TSA(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) TMPFSD_TSA(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) TMPFSD_TSA(release_shared_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) TMPFSD_TSA(release_generic_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) TMPFSD_TSA(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) TMPFSD_TSA(locks_excluded(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) TMPFSD_TSA(assert_capability(x))
#define RETURN_CAPABILITY(x) TMPFSD_TSA(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS TMPFSD_TSA(no_thread_safety_analysis)

namespace tmpfsd {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // For code that must say "held here" to the analysis (a callback that the
  // caller runs under this lock).
  void assert_held() const ASSERT_CAPABILITY(this) {}

  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

class CAPABILITY("shared_mutex") SharedMutex {
 public:
  SharedMutex() = default;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }
  void lock_shared() ACQUIRE_SHARED() { mu_.lock_shared(); }
  void unlock_shared() RELEASE_SHARED() { mu_.unlock_shared(); }

 private:
  std::shared_mutex mu_;
};

// std::lock_guard for Mutex.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

// std::unique_lock<std::mutex> for Mutex, for condition waits and for
// sections that drop the lock in the middle.
class SCOPED_CAPABILITY UniqueLock {
 public:
  explicit UniqueLock(Mutex& mu) ACQUIRE(mu) : lock_(mu.native()) {}
  ~UniqueLock() RELEASE() {}
  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;

  void lock() ACQUIRE() { lock_.lock(); }
  void unlock() RELEASE() { lock_.unlock(); }
  std::unique_lock<std::mutex>& native() { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};

// std::unique_lock<std::shared_mutex> (exclusive) for SharedMutex.
class SCOPED_CAPABILITY WriterLock {
 public:
  explicit WriterLock(SharedMutex& mu) ACQUIRE(mu) : mu_(&mu) { mu_->lock(); }
  // Try-locks; owns_lock() says whether it got it.
  WriterLock(SharedMutex& mu, std::try_to_lock_t) TRY_ACQUIRE(true, mu)
      : mu_(&mu), held_(mu.try_lock()) {}
  ~WriterLock() RELEASE() {
    if (held_) mu_->unlock();
  }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

  void lock() ACQUIRE() {
    mu_->lock();
    held_ = true;
  }
  void unlock() RELEASE() {
    held_ = false;
    mu_->unlock();
  }
  bool owns_lock() const { return held_; }

 private:
  SharedMutex* mu_;
  bool held_ = true;
};

// std::shared_lock for SharedMutex.
class SCOPED_CAPABILITY ReaderLock {
 public:
  explicit ReaderLock(SharedMutex& mu) ACQUIRE_SHARED(mu) : mu_(mu) { mu_.lock_shared(); }
  ~ReaderLock() RELEASE() { mu_.unlock_shared(); }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  SharedMutex& mu_;
};

}  // namespace tmpfsd
