/* Caches that are not a store of their own: the remote tier (remote.c, over
 * redis.c) and stacks (stack.c). A qv_cache whose tier is set answers every
 * public call through these operations (cache.c, commit.c, record.c,
 * maintenance.c and query.c dispatch at their entry); plain LMDB and memory
 * caches leave it NULL, so their hit path pays one predictable branch. */
#ifndef QV_TIER_H
#define QV_TIER_H

#include "cache.h"

typedef struct qv_tier_ops {
    qv_status (*contains)(qv_cache *c, const qv_digest *key);
    /* As qv__cache_get_with: cb runs with no lock or connection of quiver's
     * held, and a miss is QV_NOTFOUND. */
    qv_status (*get_with)(qv_cache *c, const qv_digest *key, qv_result_cb cb, void *userdata, int64_t *duration_ns);
    /* Store a record built by qv__record_prepare with this cache's inline
     * limit: p->key, p->record, and the values it references in p->refs. */
    qv_status (*put)(qv_cache *c, pending *p);
    qv_status (*load)(qv_cache *c, const qv_digest *key, qv_value **record);
    qv_status (*evict)(qv_cache *c, const qv_digest *key);
    qv_status (*stat)(qv_cache *c, int which, uint64_t *out);
    qv_status (*query)(qv_iter **out, qv_cache *c, const char *name);
    qv_status (*sync)(qv_cache *c);
    void (*close)(qv_cache *c); /* frees tier_state, not the qv_cache */
} qv_tier_ops;

/* cache.c: a new cache (one reference) whose every call goes through ops,
 * with path as qv_cache_path and the records of its stores built with
 * inline_limit (0: the default). state is the caller's to free on failure,
 * ops->close's once this succeeds. */
qv_status qv__cache_new_tier(qv_cache **out, const char *path, uint32_t inline_limit, const qv_tier_ops *ops,
                             void *state);

#endif
