/* What a process learns about fork(): handles compare a generation number
 * instead of calling getpid() (a system call) on every operation. */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"

static _Atomic uint64_t generation;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void in_child(void) {
    atomic_fetch_add(&generation, 1);
}

static void install(void) {
    pthread_atfork(NULL, NULL, in_child);
}

uint64_t qv__fork_generation(void) {
    pthread_once(&once, install);
    return atomic_load_explicit(&generation, memory_order_relaxed);
}

static _Atomic unsigned next_shard;
static _Thread_local int shard = -1;

/* Threads spread over QV_SHARDS slots round-robin, so a few threads never
 * share a cache line of per-thread counters or reader state. */
unsigned qv__thread_shard(void) {
    if (QV_UNLIKELY(shard < 0)) shard = (int)(atomic_fetch_add(&next_shard, 1) % QV_SHARDS);
    return (unsigned)shard;
}
