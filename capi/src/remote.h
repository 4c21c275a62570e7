/* The remote tier (remote.c): what cache.c needs to open one, and what the
 * call runtime (call.c) needs for leases that hold across machines. */
#ifndef QV_REMOTE_H
#define QV_REMOTE_H

#include "internal.h"

/* Open the remote tier named by url (redis:// or unix://); qv_cache_open's
 * rules. */
qv_status qv__remote_open(qv_cache **out, const char *url, const qv_cache_options *opts);
/* 1 when cache is a bare remote tier. */
int qv__remote_is(const qv_cache *cache);

/* A hit's bytes, kept for a stack's copy into its local tier so that the
 * copy needs no second read: the record's payload and, for a result stored
 * by reference, the value's (else NULL). malloc'd; the caller frees both. */
typedef struct qv_remote_entry {
    uint8_t *record, *value;
    size_t record_len, value_len;
} qv_remote_entry;
/* qv_cache_get_with on a bare remote tier that also fills *keep on a hit
 * (left empty when out of memory: the copy is then fetched again). */
qv_status qv__remote_get_entry(qv_cache *cache, const qv_digest *key, qv_result_cb cb, void *userdata,
                               int64_t *duration_ns, qv_remote_entry *keep);

/* A lease on a call's key in Redis (<prefix>l:<hex>, SET NX PX with a random
 * token), renewed by a background thread while held. The outcome is one of
 * lease.h's QV_LEASE_*: HELD when taken and the call was not stored at that
 * moment; DONE when the call is stored (maybe after waiting); TIMEOUT after
 * wait_ns (< 0: 10 minutes; 0: no wait), or when the server is unreachable
 * or refuses (the caller then runs without a lease). */
typedef struct qv_remote_lease qv_remote_lease;
qv_status qv__remote_lease_acquire(qv_cache *cache, const qv_digest *key, int64_t wait_ns, int *outcome,
                                   qv_remote_lease **lease);
/* Give it back (only when still ours) and free it; NULL is harmless. */
void qv__remote_lease_release(qv_remote_lease *lease);
/* A lease table private to this process and this tier: its threads take the
 * lease here first, so that a thread waits for another of its process
 * woken at once, never polling Redis. */
struct qv_leases *qv__remote_thread_leases(qv_cache *cache);

#endif
