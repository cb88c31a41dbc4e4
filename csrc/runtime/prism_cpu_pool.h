// prism_cpu_pool.h -- the worker threads that run generated kernels' grid
// blocks, compiled once into the runtime library (prism_cpu_runtime.cc), so
// every kernel library of a process shares one set of threads.
//
// Why not XLA's intra-op pool: its idle workers sleep, and waking a sleeping
// thread took ~40 us (median; p90 47 us, measured on the 2-core VM of
// prism_cpu.h's notes) -- a fifth of a 200 us kernel, during which the
// caller ran alone (with two blocks it often ran both).  These workers spin
// for a while after every job (kSpinMicros; PRISM_CPU_SPIN_US overrides it)
// while jobs come within that window, so the next kernel call finds them
// awake (~1 us); then they sleep on a condition variable and cost nothing.
//
// One job slot: a caller publishes its job and runs blocks itself; workers
// claim blocks one at a time from the job's counter, so a job finishes even
// if no worker joins (a second caller at the same time takes the slot over,
// and the first one's remaining blocks are its own).  A late worker touches
// only the heap-held job, whose counter tells it nothing is left.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PRISM_CPU_PAUSE() _mm_pause()
#else
#define PRISM_CPU_PAUSE() ((void)0)
#endif

namespace prism_jax {
namespace cpu {
namespace pool {

using BlockFn = void (*)(void* ctx, std::int64_t block);

inline constexpr std::int64_t kSpinMicros = 500;  // how long an idle worker stays awake after a job

struct Job {
  BlockFn fn = nullptr;
  void* ctx = nullptr;
  std::int64_t blocks = 0;
  std::atomic<std::int64_t> next{0};
  std::atomic<std::int64_t> done{0};
  std::atomic<std::int64_t> seats{0};  // workers that may still join (the caller's thread count - 1)

  void drain() {
    for (std::int64_t b; (b = next.fetch_add(1, std::memory_order_relaxed)) < blocks;) {
      fn(ctx, b);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

class SpinPool {
 public:
  SpinPool() : spin_(spin_duration()) {}

  // fn(ctx, b) for every b in [0, blocks), on the calling thread and up to
  // workers - 1 pool threads; returns when all are done.
  void run(std::int64_t workers, std::int64_t blocks, BlockFn fn, void* ctx) {
    grow(std::min<std::int64_t>(workers, blocks) - 1);
    auto job = std::make_shared<Job>();
    job->fn = fn;
    job->ctx = ctx;
    job->blocks = blocks;
    job->seats.store(workers - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      slot_ = job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    job->drain();
    for (int spin = 0; job->done.load(std::memory_order_acquire) < blocks; ++spin) {
      if (spin < 4096) {
        PRISM_CPU_PAUSE();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static std::chrono::microseconds spin_duration() {
    const char* env = std::getenv("PRISM_CPU_SPIN_US");
    return std::chrono::microseconds(env != nullptr ? std::atoll(env) : kSpinMicros);
  }

  // At least `threads` workers: as many as the callers ask for (XLA's
  // intra-op pool size by default, so the process's CPU limits hold), never
  // one per core of a big machine whose cores the process may not have.
  void grow(std::int64_t threads) {
    threads = std::min<std::int64_t>(threads, kMaxThreads);
    if (started_.load(std::memory_order_acquire) >= threads) return;
    std::lock_guard<std::mutex> lock(grow_mutex_);
    for (std::int64_t t = started_.load(std::memory_order_relaxed); t < threads; ++t) {
      std::thread([this] { work(); }).detach();
      started_.fetch_add(1, std::memory_order_release);
    }
  }

  // Returns once the generation has moved past `seen`: spinning for up to
  // `spin` first, then asleep.
  void wait_for_job(std::uint64_t seen, std::chrono::microseconds spin) {
    const auto deadline = std::chrono::steady_clock::now() + spin;
    for (unsigned i = 1; generation_.load(std::memory_order_acquire) == seen; ++i) {
      PRISM_CPU_PAUSE();
      if (i % 64 != 0 || std::chrono::steady_clock::now() < deadline) continue;
      std::unique_lock<std::mutex> lock(mutex_);
      sleepers_.fetch_add(1, std::memory_order_acq_rel);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      sleepers_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  // A worker spins only while jobs come close together: when the last one
  // came later than the spin window (it slept), the next wait sleeps at
  // once -- calls far apart, or a busy machine (another process's threads),
  // do not pay for spinning that finds nothing.
  void work() {
    std::uint64_t seen = 0;
    std::chrono::microseconds spin = spin_;
    for (;;) {
      const auto idle_from = std::chrono::steady_clock::now();
      wait_for_job(seen, spin);
      spin = std::chrono::steady_clock::now() - idle_from <= spin_ ? spin_ : std::chrono::microseconds(0);
      std::shared_ptr<Job> job;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        job = slot_;
        seen = generation_.load(std::memory_order_relaxed);
      }
      if (job && job->seats.fetch_sub(1, std::memory_order_acq_rel) > 0) job->drain();
    }
  }

  static constexpr std::int64_t kMaxThreads = 256;
  const std::chrono::microseconds spin_;
  std::mutex grow_mutex_;
  std::atomic<std::int64_t> started_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::shared_ptr<Job> slot_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> sleepers_{0};
};

// The process's pool: threads started as callers first need them and never
// stopped (they end with the process).
inline SpinPool& shared_pool() {
  static SpinPool* pool = new SpinPool();
  return *pool;
}

}  // namespace pool
}  // namespace cpu
}  // namespace prism_jax
