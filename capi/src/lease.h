/* Leases: compute each call once. On a miss, the caller takes the lease on
 * the call's key; others who miss the same key wait for its release instead
 * of running the call too. A lease table is shared by every process that
 * opens the same cache directory (a small file mapped by all of them), or is
 * private to one process for a memory cache. It knows nothing of what the
 * keys mean. docs/DECISIONS.md ("Calls") says why it is built this way, and
 * docs/FORMAT.md 2.6 what the file holds. */
#ifndef QV_LEASE_H
#define QV_LEASE_H

#include "internal.h"

typedef struct qv_leases qv_leases;

/* What qv__lease_acquire found. */
#define QV_LEASE_HELD    0 /* the caller holds the lease: run, store, then release */
#define QV_LEASE_DONE    1 /* a holder released it while we waited: look the call up again */
#define QV_LEASE_TIMEOUT 2 /* waited the whole wait time, or cannot wait (the caller's own
                            * thread holds it, the table is full): run without a lease */

/* Proof of holding a lease: released only by the process that took it, and
 * only while nobody has taken it over. */
typedef struct qv_lease {
    uint64_t serial;
} qv_lease;

/* The table in dir/quiver.leases, created when missing; dir NULL: a table
 * private to this process (for memory caches). */
qv_status qv__leases_open(qv_leases **out, const char *dir);
void qv__leases_close(qv_leases *t);
/* The lease table of cache's directory, opened once per process and kept
 * until exit; every memory cache shares one private table. NULL when none
 * can be had (a directory we may not write): calls then run without one. */
qv_leases *qv__leases_of(qv_cache *cache);
/* Take the lease on key, or wait up to wait_ns (< 0: the default, 10 min)
 * for the holder to release it. A holder found dead (its process gone, or
 * silent past its heartbeat) is taken over: the caller then holds. */
qv_status qv__lease_acquire(qv_leases *t, const qv_digest *key, int64_t wait_ns, int *outcome, qv_lease *lease);
/* Give the lease back and wake its waiters; harmless when it is no longer
 * ours (taken over, or inherited across fork()). */
void qv__lease_release(qv_leases *t, const qv_digest *key, const qv_lease *lease);

#endif
