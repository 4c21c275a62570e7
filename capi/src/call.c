/* The one call runtime (DESIGN section 12): lookup, lease, run, store,
 * release. fn.c, ffi.c and the bindings differ only in how they encode the
 * call and run the function; what happens around it is decided here. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "lease.h"
#include "remote.h"
#include "stack.h"

qv_status qv_call_options_init(qv_call_options *opts, uint32_t version) {
    if (!opts || version == 0 || version > QV_CALL_OPTIONS_VERSION)
        return qv__error(QV_EINVAL, "qv_call_options_init: unsupported version %u", version);
    qv_call_options d = QV_CALL_OPTIONS_INIT;
    *opts = d;
    opts->version = version;
    return QV_OK;
}

static int64_t clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A hit; QV_NOTFOUND for a miss or an entry the host cannot use. */
static qv_status lookup(qv_cache *cache, const qv_digest *key, qv_result_cb hit, void *userdata) {
    return qv_cache_get_with(cache, key, hit, userdata);
}

static qv_status run_and_store(int *outcome, qv_cache *cache, const qv_digest *key, const void *call,
                               size_t call_len, const qv_call_options *o, qv_call_body body, void *userdata) {
    qv_store_info info = QV_STORE_INFO_INIT;
    info.start_ns = clock_ns(CLOCK_REALTIME);
    info.lang = o->lang;
    info.meta = o->meta;
    info.meta_len = o->meta_len;
    const void *result = NULL;
    size_t len = 0;
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    qv_error_set(QV_OK, NULL); /* so a body that fails without a word can be told apart */
    qv_status st = body(&result, &len, userdata);
    info.duration_ns = clock_ns(CLOCK_MONOTONIC) - t0;
    if (st == QV_OK && !result) st = qv__error(QV_EFAILED, "the function gave no result");
    if (st == QV_EENCODE) {
        if (!qv__error_is_set()) qv__error(st, "the result cannot be encoded, so it is not stored");
        *outcome = QV_EENCODE;
        return QV_OK;
    }
    if (st) {
        if (!qv__error_is_set()) qv__error(st, "the function failed with %s", qv_status_name(st));
        return st;
    }
    st = qv_cache_store(cache, key, call, call_len, result, len, &info);
    *outcome = st ? st : QV_CALL_STORED;
    return QV_OK;
}

/* A miss, counted by function; 1 when the lookup met key's entry corrupt:
 * the binding's own lookup (QV_CALL_MISSED) or ours. */
static int count_miss(qv_cache *cache, const qv_digest *key, const void *call, size_t call_len) {
    int corrupt = qv__fn_took_corrupt(key);
    size_t ns, ne;
    if (qv__call_name(call, call_len, &ns, &ne)) return corrupt; /* the store that follows says why */
    qv__fn_count(cache, (const uint8_t *)call + ns, ne - ns, FN_MISSES);
    if (corrupt) qv__fn_count(cache, (const uint8_t *)call + ns, ne - ns, FN_CORRUPT);
    return corrupt;
}

/* A lease on one tier: its lease table's, or Redis's for a remote tier. */
typedef struct {
    qv_leases *table;
    qv_lease lease;
    int table_held;
    qv_remote_lease *remote;
    int outcome; /* QV_LEASE_* */
} tier_lease;

/* The lease of a table: an LMDB or memory cache's, or a remote tier's
 * threads'. */
static void take_table_lease(tier_lease *l, qv_leases *table, const qv_digest *key, int64_t wait) {
    if (!(l->table = table)) return;
    if (qv__lease_acquire(table, key, wait, &l->outcome, &l->lease)) l->outcome = QV_LEASE_TIMEOUT;
    l->table_held = l->outcome == QV_LEASE_HELD;
}

static void take_lease(tier_lease *l, qv_cache *tier, const qv_digest *key, int64_t wait) {
    qv_cache *local, *remote;
    if (qv__stack_tiers(tier, &local, &remote)) return; /* a stack in a stack: its tiers are not ours to lease */
    if (!qv__remote_is(tier)) {
        take_table_lease(l, qv__leases_of(tier), key, wait);
        return;
    }
    /* this process's threads first, then every process's in Redis */
    take_table_lease(l, qv__remote_thread_leases(tier), key, wait);
    if ((!l->table || l->table_held) && qv__remote_lease_acquire(tier, key, wait, &l->outcome, &l->remote))
        l->outcome = QV_LEASE_TIMEOUT;
}

static void give_lease_back(tier_lease *l, const qv_digest *key) {
    qv__remote_lease_release(l->remote);
    if (l->table_held) qv__lease_release(l->table, key, &l->lease);
}

qv_status qv_call_run(int *outcome, qv_cache *cache, const qv_digest *key, const void *call, size_t call_len,
                      const qv_call_options *opts, qv_result_cb hit, qv_call_body body, void *userdata) {
    if (!outcome || !cache || !key || !call || !hit || !body)
        return qv__error(QV_EINVAL, "qv_call_run: outcome, cache, key, call, hit and body are required");
    qv_call_options o = QV_CALL_OPTIONS_INIT;
    if (opts) {
        if (opts->version == 0 || opts->version > QV_CALL_OPTIONS_VERSION)
            return qv__error(QV_EINVAL, "qv_call_run: unsupported options version %u", opts->version);
        o = *opts;
    }
    *outcome = QV_CALL_HIT;
    int bare_remote = qv__remote_is(cache);
    qv_status st;
    /* An unreachable remote tier is a miss: the call computes (and its store
     * fails softly) rather than fail (DESIGN section 12). */
    if (!(o.flags & (QV_CALL_MISSED | QV_CALL_RERUN)) && (st = lookup(cache, key, hit, userdata)) != QV_NOTFOUND &&
        !(st == QV_EIO && bare_remote))
        return st;
    int corrupt = !(o.flags & QV_CALL_RERUN) && count_miss(cache, key, call, call_len);

    /* A stack takes the lease of its local tier, then of its remote one; a
     * remote tier's lease is in Redis, an LMDB or memory cache's in its lease
     * table. A URL or a stack has no directory, so never a lease file. */
    qv_cache *first = cache, *second = NULL;
    if (qv__stack_tiers(cache, &first, &second) == 0) first = cache;
    tier_lease a = {NULL, {0}, 0, NULL, QV_LEASE_TIMEOUT}, b = a;
    int64_t wait = o.wait_timeout_ns == 0 ? -1 : o.wait_timeout_ns < 0 ? 0 : o.wait_timeout_ns;
    if (!(o.flags & QV_CALL_NO_DEDUP)) {
        take_lease(&a, first, key, wait);
        if (second && a.outcome != QV_LEASE_DONE) take_lease(&b, second, key, wait);
    }
    int got = a.outcome == QV_LEASE_DONE || b.outcome == QV_LEASE_DONE   ? QV_LEASE_DONE
              : a.outcome == QV_LEASE_HELD || b.outcome == QV_LEASE_HELD ? QV_LEASE_HELD
                                                                         : QV_LEASE_TIMEOUT;
    /* Stored while we took the lease, or by the holder we waited for. Not
     * there after a release: the holder failed, and we run it ourselves. A
     * bare remote tier's lease, taken, already says the call was not stored;
     * a lease taken at once over a corrupt entry, that it is still corrupt
     * (a second look would count it again). */
    st = QV_NOTFOUND;
    if (got != QV_LEASE_TIMEOUT &&
        !(got == QV_LEASE_HELD && ((o.flags & QV_CALL_RERUN) || bare_remote || corrupt))) {
        /* asked first, so this second look counts no second miss */
        st = qv_cache_contains(cache, key);
        if (st == QV_OK) st = lookup(cache, key, hit, userdata);
        if (st == QV_EIO && bare_remote) st = QV_NOTFOUND;
        (void)qv__fn_took_corrupt(key); /* a corrupt entry met here was counted with the miss */
    }
    if (st == QV_NOTFOUND) st = run_and_store(outcome, cache, key, call, call_len, &o, body, userdata);
    give_lease_back(&b, key);
    give_lease_back(&a, key);
    return st;
}

/* -------------------------------------------------------- the pass-through */

/* A future's result stored as its call's when it completes: the policy's, so
 * it lives here and futures know nothing of caches (DESIGN section 2). */

typedef struct {
    qv_cache *cache;
    uint8_t *call;
    size_t call_len;
    qv_store_info info;
    char *lang;
    uint8_t *meta;
} pending_store;

static void free_pending_store(void *p) {
    pending_store *s = p;
    qv_cache_close(s->cache);
    free(s->call);
    free(s->lang);
    free(s->meta);
    free(s);
}

static void store_when_done(qv_future *f, void *p) {
    pending_store *s = p;
    const void *data;
    size_t len;
    if (qv_future_state(f) != QV_FUTURE_DONE || qv_future_result(f, &data, &len)) return;
    /* nobody waits for this store: a failure leaves the cache as it was */
    qv_cache_store(s->cache, NULL, s->call, s->call_len, data, len, &s->info);
}

qv_status qv_future_store(qv_future *f, qv_cache *cache, const void *call, size_t call_len,
                          const qv_store_info *info) {
    if (!f || !cache || !call) return qv__error(QV_EINVAL, "qv_future_store: NULL argument");
    if (info && (info->version == 0 || info->version > QV_STORE_INFO_VERSION))
        return qv__error(QV_EINVAL, "qv_store_info version %u is not supported", info->version);
    pending_store *s = calloc(1, sizeof *s);
    if (!s) return qv__nomem();
    qv_store_info d = QV_STORE_INFO_INIT;
    s->info = info ? *info : d;
    s->call_len = call_len;
    if (!(s->call = malloc(call_len ? call_len : 1)) || (info && info->lang && !(s->lang = strdup(info->lang))) ||
        (info && info->meta && !(s->meta = malloc((size_t)info->meta_len)))) {
        s->cache = NULL;
        free_pending_store(s);
        return qv__nomem();
    }
    memcpy(s->call, call, call_len);
    if (s->meta) memcpy(s->meta, info->meta, (size_t)info->meta_len);
    s->info.lang = s->lang;
    s->info.meta = s->meta;
    s->cache = qv__cache_retain(cache);
    return qv_future_on_done(f, store_when_done, s, free_pending_store);
}
