/* Looking after a cache: evict, gc, verify (and repair), sync, statistics. */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sign.h"
#include "stack.h"
#include "tier.h"

/* ---------------------------------------------------------- maintenance */

static qv_status write_txn(qv_cache *c, wctx *w) {
    if (c->flags & QV_CACHE_READONLY) return qv__error(QV_EREADONLY, "the cache at %s was opened read-only", c->path);
    qv__cache_after_fork(c); /* a forked child writes none of its parent's pending change */
    *w = (wctx){.c = c};
    qv_status st = c->store->ops->write_begin(c->store, &w->txn);
    if (!st && (st = qv__bytes_begin(w, 1))) c->store->ops->abort(c->store, w->txn);
    return st;
}

static qv_status finish_write(wctx *w, qv_status st) {
    if (!st) st = qv__bytes_put(w);
    if (st) {
        w->c->store->ops->abort(w->c->store, w->txn);
        return st;
    }
    return qv__bytes_commit(w);
}

/* gc and verify walk one store's tables in one transaction: a remote tier
 * has no such transaction, and a stack's tiers are maintained one by one. */
static qv_status not_a_store(qv_cache *cache, const char *what) {
    return qv__error(QV_EINVAL, "%s: %s works on an LMDB or memory cache, not on a remote tier or stack", cache->path,
                     what);
}

qv_status qv_cache_evict(qv_cache *cache, const qv_digest *key) {
    if (!cache || !key) return qv__error(QV_EINVAL, "qv_cache_evict: NULL argument");
    if (cache->tier) return cache->tier->evict(cache, key);
    wctx w;
    qv_status st = write_txn(cache, &w);
    if (st) return st;
    st = qv__remove_call(&w, key);
    if (st == QV_NOTFOUND) {
        cache->store->ops->abort(cache->store, w.txn);
        return QV_NOTFOUND;
    }
    return finish_write(&w, st);
}

static int digest_cmp(const void *a, const void *b) {
    return memcmp(a, b, 16);
}

/* ------------------------------------------------------------- progress */

qv_status qv_maintenance_options_init(qv_maintenance_options *opts, uint32_t version) {
    if (!opts) return qv__error(QV_EINVAL, "qv_maintenance_options_init: opts is NULL");
    if (version == 0 || version > QV_MAINTENANCE_OPTIONS_VERSION)
        return qv__error(QV_EINVAL, "qv_maintenance_options version %u is not supported (1..%d)", version,
                         QV_MAINTENANCE_OPTIONS_VERSION);
    qv_maintenance_options d = QV_MAINTENANCE_OPTIONS_INIT;
    *opts = d;
    opts->version = version;
    return QV_OK;
}

static qv_status check_options(const qv_maintenance_options *opts, const char *fn) {
    if (opts && (opts->version == 0 || opts->version > QV_MAINTENANCE_OPTIONS_VERSION))
        return qv__error(QV_EINVAL, "%s: qv_maintenance_options version %u is not supported (1..%d)", fn,
                         opts->version, QV_MAINTENANCE_OPTIONS_VERSION);
    return QV_OK;
}

/* A phase of a pass: reported at its start, every 256 items, and its end. */
typedef struct {
    const qv_maintenance_options *opts; /* NULL: nobody listens */
    const char *phase;
    uint64_t done, total;
} progress;

static void progress_start(progress *p, const qv_maintenance_options *opts, const char *phase, uint64_t total) {
    *p = (progress){opts && opts->progress ? opts : NULL, phase, 0, total};
    if (p->opts) p->opts->progress(phase, 0, total, p->opts->userdata);
}

static void progress_step(progress *p) {
    /* the count read at the start is the same transaction's: only a bug
     * could pass it, and a bar past 100% would show that bug to a user */
    if (++p->done > p->total) p->total = p->done;
    if (p->opts && (p->done & 255) == 0) p->opts->progress(p->phase, p->done, p->total, p->opts->userdata);
}

static void progress_end(progress *p) {
    if (p->opts) p->opts->progress(p->phase, p->done, p->done, p->opts->userdata);
}

typedef struct {
    qv_scan_cb cb;
    void *userdata;
    progress *p;
} counted_scan;

static int counted_visit(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    counted_scan *c = userdata;
    progress_step(c->p);
    return c->cb(key, klen, val, vlen, c->userdata);
}

/* A whole-table scan reported as one phase. */
static qv_status scan_phase(qv_store *s, qv_txn *txn, int table, const qv_maintenance_options *opts,
                            const char *phase, qv_scan_cb cb, void *userdata) {
    uint64_t total = 0;
    qv_status st = opts && opts->progress ? s->ops->count(s, txn, table, &total) : QV_OK;
    if (st) return st;
    progress p;
    progress_start(&p, opts, phase, total);
    counted_scan c = {cb, userdata, &p};
    if ((st = s->ops->scan(s, txn, table, NULL, 0, counted_visit, &c))) return st;
    progress_end(&p);
    return QV_OK;
}

typedef struct {
    key_list refs;
    uint64_t bytes;
    qv_status st;
} mark_ctx;

static qv_status mark_visit(int key, const uint8_t *item, size_t len, void *userdata) {
    if ((key == R_RESULT || key == R_ARGS || key == R_KWARGS) && qv__record_is_ref(item, len)) {
        if (qv__collect_key(item + 6, 16, NULL, 0, &((mark_ctx *)userdata)->refs)) return qv__nomem();
    }
    return QV_OK;
}

static int mark_record(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    mark_ctx *m = userdata;
    m->bytes += vlen;
    qv__record_walk(val, vlen, mark_visit, m); /* broken records are verify's business */
    return 0;
}

int qv__collect_all(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    return qv__collect_key(key, klen, val, vlen, userdata);
}

qv_status qv_cache_gc(qv_cache *cache, uint64_t *values_freed) {
    return qv_cache_gc_ext(cache, NULL, values_freed);
}

qv_status qv_cache_gc_ext(qv_cache *cache, const qv_maintenance_options *opts, uint64_t *values_freed) {
    if (values_freed) *values_freed = 0;
    if (!cache) return qv__error(QV_EINVAL, "qv_cache_gc: cache is NULL");
    qv_status st = check_options(opts, "qv_cache_gc_ext");
    if (st) return st;
    if (cache->tier) return not_a_store(cache, "gc");
    wctx w;
    if ((st = write_txn(cache, &w))) return st;
    qv_store *s = cache->store;
    mark_ctx m = {{NULL, 0, 0, 0, 0}, 0, QV_OK};
    key_list values = {NULL, 0, 0, 0, 0};
    if (!(st = scan_phase(s, w.txn, T_CALLS, opts, "marking calls", mark_record, &m)))
        st = s->ops->scan(s, w.txn, T_VALUES, NULL, 0, qv__collect_all, &values);
    /* an incomplete mark phase would free values still in use */
    if (!st && (m.refs.failed || values.failed)) st = qv__nomem();
    if (m.refs.n) qsort(m.refs.keys, m.refs.n, sizeof(qv_digest), digest_cmp);
    uint64_t freed = 0, bytes = m.bytes;
    progress sweep;
    progress_start(&sweep, st ? NULL : opts, "sweeping values", values.n);
    for (size_t i = 0; !st && i < values.n; i++) {
        progress_step(&sweep);
        qv_digest *d = &values.keys[i];
        size_t lo = 0, hi = m.refs.n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (memcmp(m.refs.keys[mid].bytes, d->bytes, 16) < 0) lo = mid + 1;
            else hi = mid;
        }
        size_t uses = 0;
        while (lo + uses < m.refs.n && memcmp(m.refs.keys[lo + uses].bytes, d->bytes, 16) == 0) uses++;
        if (uses == 0) {
            if (!(st = s->ops->del(s, w.txn, T_VALUES, d->bytes, 16))) {
                st = s->ops->del(s, w.txn, T_REFS, d->bytes, 16);
                if (st == QV_NOTFOUND) st = QV_OK;
                freed++;
            }
        } else {
            const void *v;
            size_t n;
            st = s->ops->get(s, w.txn, T_VALUES, d->bytes, 16, &v, &n);
            if (st == QV__EFORGED) n = 0; /* kept for its counts: the next store of it replaces it */
            if (!st || st == QV__EFORGED) {
                bytes += n;
                st = qv__put_count(&w, T_REFS, d, uses);
            }
        }
    }
    if (!st) progress_end(&sweep);
    free(m.refs.keys);
    free(values.keys);
    w.bytes = bytes;
    if ((st = finish_write(&w, st))) return st;
    if (values_freed) *values_freed = freed;
    return QV_OK;
}

static qv_status verify_visit(int key, const uint8_t *item, size_t len, void *userdata) {
    verify_ctx *v = userdata;
    if (!((key == R_RESULT || key == R_ARGS || key == R_KWARGS) && qv__record_is_ref(item, len))) return QV_OK;
    const void *val;
    size_t n;
    qv_digest d, actual;
    memcpy(d.bytes, item + 6, 16);
    if (v->c->store->ops->get(v->c->store, v->txn, T_VALUES, d.bytes, 16, &val, &n) != QV_OK) v->ok = 0;
    else {
        qv_digest_bytes(&actual, val, n);
        if (memcmp(actual.bytes, d.bytes, 16) || qv_validate(val, n)) v->ok = 0;
    }
    return QV_OK;
}

static int verify_value(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    verify_ctx *v = userdata;
    qv_digest actual;
    qv_digest_bytes(&actual, val, vlen);
    if (klen != 16 || memcmp(actual.bytes, key, 16) || qv_validate(val, vlen))
        return qv__collect_key(key, 16, NULL, 0, &v->bad_values);
    return 0;
}

static int verify_call(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    verify_ctx *v = userdata;
    size_t s, e;
    qv_digest call;
    v->ok = klen == 16 && qv_validate(val, vlen) == QV_OK && qv__record_result(val, vlen, &s, &e) == QV_OK;
    if (v->ok && qv__record_walk(val, vlen, verify_visit, v) != QV_OK) v->ok = 0;
    /* a record filed under a key that is not its call's digest answers the wrong call */
    if (v->ok && (qv__record_call_digest(v, val, vlen, &call) || memcmp(call.bytes, key, 16))) v->ok = 0;
    if (!v->ok) return qv__collect_key(key, 16, NULL, 0, &v->bad_calls);
    return 0;
}

qv_status qv_cache_verify(qv_cache *cache, int repair, uint64_t *bad) {
    qv_maintenance_options opts = QV_MAINTENANCE_OPTIONS_INIT;
    opts.flags = repair ? QV_MAINTENANCE_REPAIR : 0;
    return qv_cache_verify_ext(cache, &opts, bad);
}

qv_status qv_cache_verify_ext(qv_cache *cache, const qv_maintenance_options *opts, uint64_t *bad) {
    if (bad) *bad = 0;
    if (!cache) return qv__error(QV_EINVAL, "qv_cache_verify: cache is NULL");
    qv_status st = check_options(opts, "qv_cache_verify_ext");
    if (st) return st;
    if (cache->tier) return not_a_store(cache, "verify");
    int repair = opts && (opts->flags & QV_MAINTENANCE_REPAIR);
    qv_store *s = cache->store;
    wctx w = {.c = cache};
    qv_hasher *h = qv__hasher_new();
    if (!h) return qv__nomem();
    st = repair ? write_txn(cache, &w) : s->ops->read_begin(s, &w.txn);
    if (st) {
        qv__hasher_free(h);
        return st;
    }
    verify_ctx v = {cache, w.txn, h, {NULL, 0, 0, 0, 0}, {NULL, 0, 0, 0, 0}, 1};
    if (!(st = scan_phase(s, w.txn, T_VALUES, opts, "checking values", verify_value, &v)))
        st = scan_phase(s, w.txn, T_CALLS, opts, "checking calls", verify_call, &v);
    if (!st && (v.bad_calls.failed || v.bad_values.failed)) st = qv__nomem();
    uint64_t nbad = v.bad_calls.n + v.bad_values.n;
    if (repair) {
        for (size_t i = 0; !st && i < v.bad_calls.n; i++) st = qv__remove_call(&w, &v.bad_calls.keys[i]);
        for (size_t i = 0; !st && i < v.bad_values.n; i++) {
            st = s->ops->del(s, w.txn, T_VALUES, v.bad_values.keys[i].bytes, 16);
            if (st == QV_NOTFOUND) st = QV_OK;
        }
        st = finish_write(&w, st);
    } else {
        s->ops->read_end(s, w.txn);
    }
    qv__hasher_free(h);
    free(v.bad_calls.keys);
    free(v.bad_values.keys);
    if (st) return st;
    if (bad) *bad = nbad;
    /* counts and sizes are recomputed after removing anything */
    if (repair && nbad) return qv_cache_gc_ext(cache, opts, NULL);
    return QV_OK;
}

qv_status qv_cache_flush(qv_cache *cache) {
    if (!cache) return qv__error(QV_EINVAL, "qv_cache_flush: cache is NULL");
    qv_cache *local, *remote;
    if (cache->tier) return qv__stack_tiers(cache, &local, &remote) && local ? qv_cache_flush(local) : QV_OK;
    qv__flush_pending_touches(cache);
    return QV_OK;
}

qv_status qv_cache_sync(qv_cache *cache) {
    if (!cache) return qv__error(QV_EINVAL, "qv_cache_sync: cache is NULL");
    if (cache->tier) return cache->tier->sync(cache);
    qv__flush_pending_touches(cache);
    return cache->store->ops->sync(cache->store);
}

static const char *const stat_names[QV_STAT_COUNT] = {
    "hits", "misses", "entries", "values", "bytes", "max_bytes", "stores", "commits",
    "evictions", "corrupt", "map_size", "remote_hits", "remote_errors", "dropped", "forged",
    "total_hits", "total_misses", "total_stores", "total_evictions", "total_corrupt",
};

const char *qv_stat_name(int which) {
    return which >= 0 && which < QV_STAT_COUNT ? stat_names[which] : NULL;
}

qv_status qv_cache_stat(qv_cache *cache, int which, uint64_t *out) {
    if (!cache || !out) return qv__error(QV_EINVAL, "qv_cache_stat: NULL argument");
    if (which < 0 || which >= QV_STAT_COUNT) return qv__error(QV_EINVAL, "unknown statistic %d", which);
    if (cache->tier) return cache->tier->stat(cache, which, out);
    qv_store *s = cache->store;
    qv_txn *txn;
    qv_status st = QV_OK;
    switch (which) {
    case QV_STAT_ENTRIES:
    case QV_STAT_VALUES:
    case QV_STAT_BYTES:
        if ((st = s->ops->read_begin(s, &txn))) return st;
        if (which == QV_STAT_BYTES) {
            qv__cache_after_fork(cache);
            st = qv__meta_get_uint(cache, txn, "bytes", out);
            *out = qv__bytes_add(*out, atomic_load(&cache->bytes_pending)); /* this handle's, not written yet */
        } else st = s->ops->count(s, txn, which == QV_STAT_ENTRIES ? T_CALLS : T_VALUES, out);
        s->ops->read_end(s, txn);
        return st;
    case QV_STAT_MAX_BYTES:
        *out = cache->max_bytes;
        return QV_OK;
    case QV_STAT_MAP_SIZE:
        *out = s->ops->map_size(s);
        return QV_OK;
    case QV_STAT_TOTAL_HITS:
    case QV_STAT_TOTAL_MISSES:
    case QV_STAT_TOTAL_STORES:
    case QV_STAT_TOTAL_EVICTIONS:
    case QV_STAT_TOTAL_CORRUPT: {
        int i = which - QV_STAT_TOTAL_HITS;
        if ((st = s->ops->read_begin(s, &txn))) return st;
        st = qv__meta_get_uint(cache, txn, qv__total_key[i], out);
        s->ops->read_end(s, txn);
        uint64_t n = qv__handle_count(cache, qv__total_base[i]), was = atomic_load(&cache->totalled[i]);
        if (n > was) *out += n - was; /* this handle's, not written yet */
        return st;
    }
    default:
        *out = 0;
        for (int i = 0; i < QV_SHARDS; i++) *out += atomic_load_explicit(&cache->stats[i].n[which], memory_order_relaxed);
        return QV_OK;
    }
}

qv_status qv_cache_reset_totals(qv_cache *cache) {
    if (!cache) return qv__error(QV_EINVAL, "qv_cache_reset_totals: cache is NULL");
    if (cache->tier) return not_a_store(cache, "qv_cache_reset_totals");
    qv__cache_after_fork(cache);
    qv_store *s = cache->store;
    qv_txn *txn;
    qv_status st = s->ops->write_begin(s, &txn);
    if (st) return st;
    /* hits counted before and not yet written go to their calls now, and so
     * never into the counts that start again from 0 */
    wctx w = {.c = cache, .txn = txn};
    if ((st = qv__bytes_begin(&w, 0)) || (st = qv__flush_touches(&w, (uint64_t)qv__now_ns(), 1))) {
        s->ops->abort(s, txn);
        return st;
    }
    uint64_t now[QV_TOTALS];
    for (int i = 0; !st && i < QV_TOTALS; i++) {
        now[i] = qv__handle_count(cache, qv__total_base[i]);
        st = qv__meta_put_uint(cache, txn, qv__total_key[i], 0);
    }
    if (!st) st = qv__fn_reset(&w);
    if (st) {
        s->ops->abort(s, txn);
        return st;
    }
    if ((st = qv__bytes_commit(&w))) return st;
    for (int i = 0; i < QV_TOTALS; i++) atomic_store(&cache->totalled[i], now[i]);
    return QV_OK;
}
