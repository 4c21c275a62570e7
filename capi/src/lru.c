/* Approximate LRU: access times noted by hits and written in batches, and
 * eviction of the least recently used calls down to the size limit. The
 * same batches carry each call's hit count and last hit time (the hits
 * table). */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "sign.h"

#define ATIME_RESOLUTION_NS 1000000000ull

static int64_t coarse_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline uint64_t hit_tag(uint64_t b) {
    return (b >> 32 | 1) << 32;
}

qv_status qv__get_hits(qv_cache *c, qv_txn *txn, const qv_digest *key, uint64_t *hits, int64_t *last_ns) {
    const void *v;
    size_t len;
    *hits = 0;
    *last_ns = 0;
    qv_status st = c->store->ops->get(c->store, txn, T_HITS, key->bytes, 16, &v, &len);
    if (st) return st;
    if (len != 16) return qv__error(QV_ECORRUPT, "hits entry has %zu bytes, not 16", len);
    *hits = qv__get_be64(v);
    *last_ns = (int64_t)qv__get_be64((const uint8_t *)v + 8);
    return QV_OK;
}

/* Take slot i's counts for the key whose tag is tag from every shard's row:
 * the hits and the monotonic time of the last. Another key's counts stay for
 * when that key holds the slot again. */
static uint64_t take_hits(qv_cache *c, size_t i, uint64_t tag, int64_t *last) {
    uint64_t sum = 0;
    *last = 0;
    for (size_t s = 0; s < QV_SHARDS; s++) {
        hit_slot *h = &c->hit_rows[s][i];
        uint64_t n = atomic_load_explicit(&h->n, memory_order_relaxed);
        while ((n & ~(uint64_t)UINT32_MAX) == tag &&
               !atomic_compare_exchange_weak_explicit(&h->n, &n, 0, memory_order_relaxed, memory_order_relaxed)) {
        }
        if ((n & ~(uint64_t)UINT32_MAX) != tag) continue;
        sum += (uint32_t)n;
        int64_t t = atomic_load_explicit(&h->t, memory_order_relaxed);
        if (t > *last) *last = t;
    }
    return sum;
}

/* Add hits to a call's count, and to its function's in fns with the time
 * they saved; a key that names no call (a torn slot) is skipped. */
static qv_status add_hits(wctx *w, fn_tally *fns, const qv_digest *key, uint64_t hits, int64_t last_ns) {
    qv_store *s = w->c->store;
    const void *v;
    size_t len, rs, re, ns, ne;
    qv_status st = s->ops->get(s, w->txn, T_CALLS, key->bytes, 16, &v, &len);
    if (st == QV_NOTFOUND || st == QV__EFORGED) return QV_OK;
    uint64_t n;
    int64_t last;
    if (st) return st;
    const uint8_t *rec = v; /* until the next put */
    if (qv__record_result(rec, len, &rs, &re) == QV_OK && qv__record_name(rec, len, &ns, &ne) == QV_OK) {
        int64_t ran = qv__record_duration(rec, len, re);
        /* a count lost to memory is only a count */
        uint64_t saved;
        if (__builtin_mul_overflow(hits, ran > 0 ? (uint64_t)ran : 0, &saved)) saved = UINT64_MAX;
        if (qv__tally_add(fns, rec + ns, ne - ns, FN_HITS, hits) == QV_OK && saved)
            qv__tally_add(fns, rec + ns, ne - ns, FN_SAVED_NS, saved);
    }
    /* a malformed count (a damaged or foreign row) starts again from these
     * hits: it must not fail the commit that carries other callers' stores */
    if ((st = qv__get_hits(w->c, w->txn, key, &n, &last)) == QV_ECORRUPT) n = 0, last = 0;
    else if (st && st != QV_NOTFOUND) return st;
    uint8_t buf[16];
    qv__put_be64(buf, n + hits);
    qv__put_be64(buf + 8, (uint64_t)(last_ns > last ? last_ns : last));
    return s->ops->put(s, w->txn, T_HITS, key->bytes, 16, buf, 16);
}

/* Add what this handle counted since it last did to the cache's totals.
 * Marked as added before the commit: a transaction that then fails loses
 * those counts rather than adding them twice. */
static qv_status add_totals(wctx *w) {
    qv_cache *c = w->c;
    for (int i = 0; i < QV_TOTALS; i++) {
        uint64_t n = qv__handle_count(c, qv__total_base[i]), was = atomic_load(&c->totalled[i]), total;
        if (n <= was) continue;
        qv_status st = qv__meta_get_uint(c, w->txn, qv__total_key[i], &total);
        if (st || (st = qv__meta_put_uint(c, w->txn, qv__total_key[i], total + (n - was)))) return st;
        atomic_store(&c->totalled[i], n);
    }
    return QV_OK;
}

static qv_status flush_hits(wctx *w, fn_tally *fns, uint64_t now);

qv_status qv__flush_touches(wctx *w, uint64_t now, int counts) {
    qv_cache *c = w->c;
    qv_status st = QV_OK;
    uint64_t last = atomic_load_explicit(&c->counts_written_ns, memory_order_relaxed);
    if (counts || now - last >= (uint64_t)c->touch_period_ns) {
        atomic_store_explicit(&c->counts_written_ns, now, memory_order_relaxed);
        if ((st = add_totals(w)) || (st = qv__fn_flush(w)) || (st = qv__bytes_put(w))) return st;
    }
    if (!c->count_hits || !atomic_exchange(&c->touch_since, 0)) return QV_OK;
    fn_tally fns = {NULL, 0, 0};
    if (!(st = flush_hits(w, &fns, now))) st = qv__tally_write(w, &fns);
    qv__tally_free(&fns);
    return st;
}

static qv_status flush_hits(wctx *w, fn_tally *fns, uint64_t now) {
    qv_cache *c = w->c;
    int64_t mono = coarse_ns();
    for (size_t i = 0; i < TOUCH_SLOTS; i++) {
        if (!atomic_load_explicit(&c->touched[i].w[0], memory_order_relaxed)) continue;
        uint64_t a = atomic_exchange_explicit(&c->touched[i].w[0], 0, memory_order_relaxed);
        uint64_t b = atomic_exchange_explicit(&c->touched[i].w[1], 0, memory_order_relaxed);
        qv_digest key;
        memcpy(key.bytes, &a, 8);
        memcpy(key.bytes + 8, &b, 8);
        int64_t last;
        uint64_t hits = take_hits(c, i, hit_tag(b), &last);
        qv_status st;
        /* a monotonic time to wall-clock time, through the two clocks' now */
        /* last is 0 when a flush came between a hit's count and its time */
        if (hits && (st = add_hits(w, fns, &key, hits, last ? (int64_t)now - (mono - last) : 0))) return st;
        if (!c->track_lru) continue;
        uint64_t t;
        st = qv__get_count(w, T_ATIME, &key, &t);
        if (st == QV_NOTFOUND || (st == QV_OK && t + ATIME_RESOLUTION_NS > now)) continue;
        if (st || (st = qv__set_atime(w, &key, now))) return st;
    }
    return QV_OK;
}

int qv__collect_key(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    key_list *l = userdata;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        qv_digest *k = realloc(l->keys, cap * sizeof *k);
        if (!k) {
            l->failed = 1;
            return 1;
        }
        l->keys = k;
        l->cap = cap;
    }
    const uint8_t *kb = key;
    if (klen != 16 && klen != 24) return 0; /* not ours: verify reports it */
    memcpy(l->keys[l->n++].bytes, klen == 24 ? kb + 8 : kb, 16);
    return l->want && l->n >= l->want;
}

#define EVICT_BATCH 8192

/* One write transaction of eviction: the oldest calls, counted by function
 * in w->evicted; *more when the cache is still above target. */
static qv_status evict_round(wctx *w, uint64_t target, uint64_t *evicted, int *more) {
    qv_cache *c = w->c;
    qv_store *s = c->store;
    *more = 0;
    qv_status st = s->ops->write_begin(s, &w->txn);
    if (st) return st;
    if ((st = qv__bytes_begin(w, 1)) || w->bytes <= target) {
        s->ops->abort(s, w->txn);
        return st;
    }
    /* Enough of the oldest for the whole excess at the average size of a
     * call, so that a big cache evicts in one round or a few rather than in
     * thousands of 64 (each round scans the index; a memory store's scan
     * visits every entry), but on LMDB not so many that one write
     * transaction dirties more pages than LMDB allows. */
    uint64_t calls = 0, batch = c->memory ? UINT64_MAX : EVICT_BATCH;
    size_t want = 64;
    if (s->ops->count(s, w->txn, T_CALLS, &calls) == QV_OK && calls) {
        uint64_t n = (w->bytes - target) / (w->bytes / calls + 1) + 64;
        want = (size_t)(n < batch ? n : batch);
    }
    key_list oldest = {NULL, 0, 0, want, 0};
    st = s->ops->scan(s, w->txn, T_LRU, NULL, 0, qv__collect_key, &oldest);
    if (!st && oldest.n == 0) /* calls without access times: take any */
        st = s->ops->scan(s, w->txn, T_CALLS, NULL, 0, qv__collect_key, &oldest);
    size_t i;
    for (i = 0; !st && i < oldest.n && w->bytes > target; i++) st = qv__remove_call(w, &oldest.keys[i]);
    size_t removed = i;
    int none = oldest.n == 0;
    free(oldest.keys);
    if (!st) st = qv__bytes_put(w);
    if (!st) st = qv__tally_write(w, w->evicted);
    if (st) {
        s->ops->abort(s, w->txn);
        return st;
    }
    if ((st = qv__bytes_commit(w))) return st;
    *evicted += removed;
    qv__cache_count(c, QV_STAT_EVICTIONS, removed);
    *more = !none && w->bytes > target;
    return QV_OK;
}

/* Evict least recently used calls until bytes <= target. */
qv_status qv__evict_to(qv_cache *c, uint64_t target, uint64_t *evicted) {
    qv__cache_after_fork(c);
    *evicted = 0;
    int more = 1;
    qv_status st = QV_OK;
    while (!st && more) {
        fn_tally fns = {NULL, 0, 0};
        wctx w = {.c = c, .evicted = &fns};
        st = evict_round(&w, target, evicted, &more);
        qv__tally_free(&fns);
    }
    return st;
}

typedef struct {
    wctx w;
    key_list missing;
} backfill_ctx;

static int missing_atime(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    backfill_ctx *b = userdata;
    uint64_t t;
    if (klen == 16 && qv__get_count(&b->w, T_ATIME, (const qv_digest *)key, &t) == QV_NOTFOUND)
        qv__collect_key(key, klen, NULL, 0, &b->missing);
    return 0;
}

/* Calls stored while the cache had no size limit have no access time: give
 * them the oldest (0), so they are the first to go once a limit applies. */
qv_status qv__backfill_atimes(qv_cache *c) {
    backfill_ctx b = {{.c = c}, {NULL, 0, 0, 0, 0}};
    qv_store *s = c->store;
    uint64_t calls, atimes;
    qv_status st = s->ops->write_begin(s, &b.w.txn);
    if (st) return st;
    if (!(st = s->ops->count(s, b.w.txn, T_CALLS, &calls)) && !(st = s->ops->count(s, b.w.txn, T_ATIME, &atimes)) &&
        atimes < calls) {
        st = s->ops->scan(s, b.w.txn, T_CALLS, NULL, 0, missing_atime, &b);
        if (!st && b.missing.failed) st = qv__nomem();
        for (size_t i = 0; !st && i < b.missing.n; i++) st = qv__set_atime(&b.w, &b.missing.keys[i], 0);
    }
    free(b.missing.keys);
    if (st) {
        s->ops->abort(s, b.w.txn);
        return st;
    }
    return s->ops->commit(s, b.w.txn);
}

static int totals_pending(qv_cache *c) {
    if (atomic_load_explicit(&c->fn_dirty, memory_order_relaxed) || atomic_load(&c->bytes_pending)) return 1;
    for (int i = 0; i < QV_TOTALS; i++)
        if (qv__handle_count(c, qv__total_base[i]) > atomic_load_explicit(&c->totalled[i], memory_order_relaxed))
            return 1;
    return 0;
}

void qv__flush_pending_touches(qv_cache *c) {
    qv__cache_after_fork(c); /* first: a forked child has nothing of its parent's to write */
    if (!c->count_hits || (!atomic_load_explicit(&c->touch_since, memory_order_relaxed) && !totals_pending(c))) return;
    wctx w = {.c = c};
    if (c->store->ops->write_begin(c->store, &w.txn)) return;
    if (qv__bytes_begin(&w, 0) == QV_OK && qv__flush_touches(&w, (uint64_t)qv__now_ns(), 1) == QV_OK) {
        qv__bytes_commit(&w);
    } else {
        c->store->ops->abort(c->store, w.txn);
    }
}

/* Note a hit for LRU and count it. Touches are written by the next commit, and by a hit
 * that finds the oldest of them older than touch_period_ns: it joins the
 * group commit with nothing to store but the touches, so a read-mostly
 * handle keeps its hot keys from being evicted by another handle or process
 * that stores. One hit per period pays for it, and no thread is needed. */
/* read_result has called qv__cache_after_fork: a forked child does not count
 * on from its parent's counts. */
void qv__touch(qv_cache *c, const qv_digest *key, unsigned shard) {
    uint64_t a, b;
    memcpy(&a, key->bytes, 8);
    memcpy(&b, key->bytes + 8, 8);
    if (QV_UNLIKELY(!a)) a = 1; /* 0 marks an empty slot; such a key is skipped when written */
    touch_slot *slot = &c->touched[a & (TOUCH_SLOTS - 1)];
    if (atomic_load_explicit(&slot->w[0], memory_order_relaxed) != a ||
        atomic_load_explicit(&slot->w[1], memory_order_relaxed) != b) {
        atomic_store_explicit(&slot->w[1], b, memory_order_relaxed);
        atomic_store_explicit(&slot->w[0], a, memory_order_relaxed);
    }
    int64_t now = coarse_ns(), since = atomic_load_explicit(&c->touch_since, memory_order_relaxed);
    /* This shard's row: a compare-and-swap, so a count a flush takes in
     * between is never added again; losing the race loses this hit. */
    hit_slot *h = &c->hit_rows[shard][a & (TOUCH_SLOTS - 1)];
    uint64_t n = atomic_load_explicit(&h->n, memory_order_relaxed), tag = hit_tag(b);
    uint64_t next = (n & ~(uint64_t)UINT32_MAX) != tag ? tag | 1 : (uint32_t)n != UINT32_MAX ? n + 1 : n;
    if (atomic_compare_exchange_strong_explicit(&h->n, &n, next, memory_order_relaxed, memory_order_relaxed))
        atomic_store_explicit(&h->t, now, memory_order_relaxed);
    if (!since) {
        atomic_compare_exchange_strong(&c->touch_since, &since, now);
    } else if (now - since >= c->touch_period_ns && atomic_compare_exchange_strong(&c->touch_since, &since, now)) {
        pending p;
        memset(&p, 0, sizeof p);
        qv__group_commit(c, &p); /* a failure costs these touches, nothing else */
    }
}
