// One intra-op pool per process. The calling thread always takes part as thread 0, so
// threads=1 never touches the pool. Workers spin briefly after a job (back-to-back calls
// skip the wake-up cost), then sleep on a condition variable: an idle service burns no
// core. After fork() the child builds a fresh pool on first use.
#pragma once
#include <functional>

namespace pyrt {

// Threads one call may use at most: the CPUs this process may use.
int max_threads();

// Runs fn(tid) for every tid in [0, n). While another caller holds the pool, the caller
// runs every tid itself: the same partition, so the same bits, and no oversubscription.
void parallel_run(int n, const std::function<void(int)>& fn);

// How long idle workers spin before sleeping; 0 turns spinning off.
void set_spin_microseconds(int us);
int spin_microseconds();
// The spin at start-up: PYRUNTIME_SPIN, else 200 us.
int default_spin_microseconds();

}  // namespace pyrt
