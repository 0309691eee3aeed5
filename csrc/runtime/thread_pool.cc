#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "pyruntime/isa.h"

namespace pyrt {
namespace {

int initial_spin_us() {
  const char* env = std::getenv("PYRUNTIME_SPIN");
  if (env && *env) return std::atoi(env) > 0 ? std::atoi(env) : 0;
  return 200;
}

std::atomic<int> g_spin_us{initial_spin_us()};

inline void cpu_relax() { __builtin_ia32_pause(); }

// Spins for up to g_spin_us until done() holds; returns whether it did.
template <typename Pred>
bool spin_until(Pred done) {
  const int us = g_spin_us.load(std::memory_order_relaxed);
  if (us <= 0) return done();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  for (int i = 0;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 255) == 255 && std::chrono::steady_clock::now() > deadline) return done();
  }
}

class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { worker(i + 1); });
  }

  int size() const { return int(threads_.size()) + 1; }

  bool try_run(int n, const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> submit(submit_, std::try_to_lock);
    if (!submit.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &fn;
      job_n_ = n;
      error_ = nullptr;
      pending_.store(n - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    run_guarded(fn, 0);
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lk(mu_);
      done_.wait(lk, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void run_guarded(const std::function<void(int)>& fn, int tid) {
    try {
      fn(tid);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      if (!error_) error_ = std::current_exception();
    }
  }

  void worker(int tid) {
    uint64_t seen = 0;
    for (;;) {
      auto fresh = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(fresh)) {
        std::unique_lock<std::mutex> lk(mu_);
        wake_.wait(lk, fresh);
      }
      const std::function<void(int)>* job;
      int n;
      {
        // Generation and job are published together under mu_: read them together.
        std::lock_guard<std::mutex> lk(mu_);
        seen = generation_.load(std::memory_order_acquire);
        job = job_;
        n = job_n_;
      }
      if (tid >= n) continue;
      run_guarded(*job, tid);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(mu_);
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> threads_;  // never joined: the pool lives as long as the process
  std::mutex submit_, mu_;
  std::condition_variable wake_, done_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int)>* job_ = nullptr;
  int job_n_ = 0;
  std::exception_ptr error_;
};

std::atomic<Pool*> g_pool{nullptr};
std::mutex* g_create_mutex = new std::mutex;

void after_fork_in_child() {
  // The parent's workers do not exist here; their pool (and any mutex they held) is
  // abandoned, not destroyed, and a new one is built on first use.
  g_pool.store(nullptr);
  g_create_mutex = new std::mutex;
}

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  static const bool registered = [] { return pthread_atfork(nullptr, nullptr, after_fork_in_child) == 0; }();
  (void)registered;
  std::lock_guard<std::mutex> lk(*g_create_mutex);
  p = g_pool.load(std::memory_order_acquire);
  if (!p) {
    p = new Pool(max_threads() - 1);
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

}  // namespace

int max_threads() { return cpu_info().cores; }

void parallel_run(int n, const std::function<void(int)>& fn) {
  if (n <= 1) {
    fn(0);
    return;
  }
  Pool& p = pool();
  if (n <= p.size() && p.try_run(n, fn)) return;
  for (int tid = 0; tid < n; ++tid) fn(tid);
}

void set_spin_microseconds(int us) { g_spin_us.store(us > 0 ? us : 0); }
int default_spin_microseconds() {
  static const int initial = initial_spin_us();
  return initial;
}
int spin_microseconds() { return g_spin_us.load(); }

}  // namespace pyrt
