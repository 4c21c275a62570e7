/* What a process learns about fork(): handles compare a generation number
 * instead of calling getpid() (a system call) on every operation. */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"

_Atomic uint64_t qv__forks;

static void in_child(void) {
    atomic_fetch_add(&qv__forks, 1);
}

/* At load, not at first use: the hit path reads the generation with one
 * load, never through a pthread_once. */
__attribute__((constructor)) static void install(void) {
    pthread_atfork(NULL, NULL, in_child);
}

static _Atomic unsigned next_shard;
_Thread_local int qv__shard = -1;

/* Threads spread over QV_SHARDS slots round-robin, so a few threads never
 * share a cache line of per-thread counters or reader state. */
unsigned qv__thread_shard_first(void) {
    qv__shard = (int)(atomic_fetch_add(&next_shard, 1) % QV_SHARDS);
    return (unsigned)qv__shard;
}
