/* Stores: a record and its values written in one transaction, many
 * threads' stores committed together (group commit), reference counts. */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sign.h"
#include "tier.h"

#define MAX_FULL_RETRIES 16

/* ------------------------------------------------------------ write helpers */

qv_status qv__meta_get_uint(qv_cache *c, qv_txn *txn, const char *key, uint64_t *out) {
    const void *v;
    size_t n;
    *out = 0;
    qv_status st = c->store->ops->get(c->store, txn, T_META, key, strlen(key), &v, &n);
    if (st == QV_NOTFOUND) return QV_OK;
    if (st) return st;
    qv_decoder dec;
    qv_decoder_reset(&dec, v, n);
    qv_type t;
    int neg;
    if (qv_decoder_next(&dec, &t) || t != QV_TYPE_INT || qv_decoder_get_cbor_int(&dec, &neg, out) || neg)
        return qv__error(QV_ECORRUPT, "meta entry %s is not a count", key);
    return QV_OK;
}

qv_status qv__meta_put_uint(qv_cache *c, qv_txn *txn, const char *key, uint64_t v) {
    uint8_t buf[9];
    size_t n = qv__encode_uint(buf, v);
    return c->store->ops->put(c->store, txn, T_META, key, strlen(key), buf, n);
}

/* The size counter is read by every write but written only by those that
 * must: a store leaves its change in the handle's bytes_pending, and the
 * write that next carries the totals (once per touch period, and on sync
 * and close) puts it in, as do eviction and maintenance, which set the
 * counter themselves. So a store dirties no page of meta: one B-tree less
 * per commit (docs/DECISIONS.md, "The size counter"). */
uint64_t qv__bytes_add(uint64_t stored, int64_t pending) {
    if (pending < 0) return (uint64_t)-pending > stored ? 0 : stored - (uint64_t)-pending;
    return stored + (uint64_t)pending;
}

/* A base for w->bytes when the counter is not read: far above any size, so
 * that removals, which stop at 0, subtract in full. */
#define BYTES_UNREAD ((uint64_t)1 << 62)

/* w->bytes: the counter, with what this handle has not written yet; when
 * read is 0 (nothing in the transaction decides by it) only its changes. */
qv_status qv__bytes_begin(wctx *w, int read) {
    w->bytes_taken = atomic_load(&w->c->bytes_pending);
    w->bytes_written = 0;
    w->bytes_read = read;
    if (!read) {
        w->bytes = w->bytes_start = BYTES_UNREAD;
        return QV_OK;
    }
    uint64_t stored;
    qv_status st = qv__meta_get_uint(w->c, w->txn, "bytes", &stored);
    w->bytes = w->bytes_start = qv__bytes_add(stored, w->bytes_taken);
    return st;
}

qv_status qv__bytes_put(wctx *w) {
    uint64_t v = w->bytes, stored;
    if (!w->bytes_read) {
        qv_status st = qv__meta_get_uint(w->c, w->txn, "bytes", &stored);
        if (st) return st;
        v = qv__bytes_add(qv__bytes_add(stored, w->bytes_taken), (int64_t)(w->bytes - w->bytes_start));
    }
    qv_status st = qv__meta_put_uint(w->c, w->txn, "bytes", v);
    if (!st) w->bytes_written = 1;
    return st;
}

/* Commit w. What it wrote of the pending change leaves it, what it did not
 * write joins it, before the commit, while the write lock still keeps this
 * handle's other writes out: none reads a pending change its data already
 * holds. A failed commit gives it back. */
qv_status qv__bytes_commit(wctx *w) {
    int64_t d = w->bytes_written ? -w->bytes_taken : (int64_t)(w->bytes - w->bytes_start);
    atomic_fetch_add(&w->c->bytes_pending, d);
    qv_status st = w->c->store->ops->commit(w->c->store, w->txn);
    if (st) atomic_fetch_sub(&w->c->bytes_pending, d);
    return st;
}

qv_status qv__get_count(wctx *w, int table, const qv_digest *d, uint64_t *n) {
    const void *v;
    size_t len;
    qv_status st = w->c->store->ops->get(w->c->store, w->txn, table, d->bytes, 16, &v, &len);
    *n = 0;
    if (st) return st;
    if (len != 8) return qv__error(QV_ECORRUPT, "%s entry has %zu bytes, not 8", qv__table_names[table], len);
    *n = qv__get_be64(v);
    return QV_OK;
}

qv_status qv__put_count(wctx *w, int table, const qv_digest *d, uint64_t n) {
    uint8_t buf[8];
    qv__put_be64(buf, n);
    return w->c->store->ops->put(w->c->store, w->txn, table, d->bytes, 16, buf, 8);
}

static qv_status ref_value(wctx *w, const valref *r) {
    uint64_t n;
    qv_store *s = w->c->store;
    const void *v;
    size_t len;
    qv_status st = qv__get_count(w, T_REFS, &r->digest, &n);
    if (st && st != QV_NOTFOUND) return st;
    /* The value's own presence decides, so a count left without its value
     * (by a crash of a foreign writer, say) heals instead of poisoning; so
     * does a value whose signature fails, which is replaced. */
    st = s->ops->get(s, w->txn, T_VALUES, r->digest.bytes, 16, &v, &len);
    if (st == QV_NOTFOUND || st == QV__EFORGED) {
        if ((st = s->ops->put(s, w->txn, T_VALUES, r->digest.bytes, 16, r->data, r->len))) return st;
        w->bytes += r->len;
    } else if (st) {
        return st;
    }
    return qv__put_count(w, T_REFS, &r->digest, n + 1);
}

static qv_status unref_visit(int key, const uint8_t *item, size_t len, void *userdata) {
    wctx *w = userdata;
    if (!(key == R_RESULT || key == R_ARGS || key == R_KWARGS) || !qv__record_is_ref(item, len)) return QV_OK;
    qv_digest d;
    memcpy(d.bytes, item + 6, 16);
    uint64_t n;
    qv_status st = qv__get_count(w, T_REFS, &d, &n);
    if (st == QV_NOTFOUND) return QV_OK; /* gc repairs counts */
    if (st) return st;
    if (n > 1) return qv__put_count(w, T_REFS, &d, n - 1);
    const void *v;
    size_t vlen;
    qv_store *s = w->c->store;
    if (s->ops->get(s, w->txn, T_VALUES, d.bytes, 16, &v, &vlen) == QV_OK) {
        w->bytes -= vlen < w->bytes ? vlen : w->bytes;
        if ((st = s->ops->del(s, w->txn, T_VALUES, d.bytes, 16)) && st != QV_NOTFOUND) return st;
    }
    st = s->ops->del(s, w->txn, T_REFS, d.bytes, 16);
    return st == QV_NOTFOUND ? QV_OK : st;
}

/* Remove the access-time entries of a call. */
static qv_status drop_atime(wctx *w, const qv_digest *key) {
    qv_store *s = w->c->store;
    uint64_t t;
    qv_status st = qv__get_count(w, T_ATIME, key, &t);
    if (st == QV_NOTFOUND) return QV_OK;
    if (st) return st;
    uint8_t lk[24];
    qv__put_be64(lk, t);
    memcpy(lk + 8, key->bytes, 16);
    if ((st = s->ops->del(s, w->txn, T_LRU, lk, 24)) && st != QV_NOTFOUND) return st;
    st = s->ops->del(s, w->txn, T_ATIME, key->bytes, 16);
    return st == QV_NOTFOUND ? QV_OK : st;
}

qv_status qv__set_atime(wctx *w, const qv_digest *key, uint64_t t) {
    qv_status st = drop_atime(w, key);
    if (st) return st;
    uint8_t lk[24];
    qv__put_be64(lk, t);
    memcpy(lk + 8, key->bytes, 16);
    if ((st = w->c->store->ops->put(w->c->store, w->txn, T_LRU, lk, 24, "", 0))) return st;
    return qv__put_count(w, T_ATIME, key, t);
}

/* Remove a call and everything only it held. A record too broken to walk
 * still goes; its values are then reclaimed by gc. */
qv_status qv__remove_call(wctx *w, const qv_digest *key) {
    qv_store *s = w->c->store;
    const void *v;
    size_t len;
    qv_status st = s->ops->get(s, w->txn, T_CALLS, key->bytes, 16, &v, &len);
    if (st == QV__EFORGED) {
        /* a forged record cannot be trusted to name its values or its name:
         * gc reclaims what only it held */
        if ((st = s->ops->del(s, w->txn, T_CALLS, key->bytes, 16))) return st;
        if ((st = s->ops->del(s, w->txn, T_HITS, key->bytes, 16)) && st != QV_NOTFOUND) return st;
        return drop_atime(w, key);
    }
    if (st) return st;
    /* copy: deleting invalidates v */
    uint8_t *rec = malloc(len ? len : 1);
    if (!rec) return qv__nomem();
    memcpy(rec, v, len);
    size_t ns, ne;
    int named = qv__record_walk(rec, len, unref_visit, w) == QV_OK && qv__record_name(rec, len, &ns, &ne) == QV_OK;
    uint8_t nk[24];
    if (named) {
        qv__put_be64(nk, qv__hash64(rec + ns, ne - ns));
        memcpy(nk + 8, key->bytes, 16);
        /* a count lost to memory is only a count */
        if (w->evicted) qv__tally_add(w->evicted, rec + ns, ne - ns, FN_EVICTIONS, 1);
    }
    free(rec);
    if ((st = s->ops->del(s, w->txn, T_CALLS, key->bytes, 16))) return st;
    w->bytes -= len < w->bytes ? len : w->bytes;
    if (named && (st = s->ops->del(s, w->txn, T_NAMES, nk, 24)) && st != QV_NOTFOUND) return st;
    if ((st = s->ops->del(s, w->txn, T_HITS, key->bytes, 16)) && st != QV_NOTFOUND) return st;
    return drop_atime(w, key);
}

static qv_status apply(wctx *w, pending *p, uint64_t now) {
    if (!p->record) return QV_OK; /* a request to write the touches only */
    qv_store *s = w->c->store;
    qv_status st = s->ops->put_new(s, w->txn, T_CALLS, p->key.bytes, 16, p->record, p->record_len);
    if (st == QV__EEXISTS) {
        /* a rerun replaces the record, and first releases what it held (a
         * value both hold is put back below) */
        if ((st = qv__remove_call(w, &p->key))) return st;
        st = s->ops->put(s, w->txn, T_CALLS, p->key.bytes, 16, p->record, p->record_len);
    }
    if (st) return st;
    w->bytes += p->record_len;
    for (size_t i = 0; i < p->nrefs; i++)
        if ((st = ref_value(w, &p->refs[i]))) return st;
    if ((st = s->ops->put(s, w->txn, T_NAMES, p->name_key, 24, "", 0))) return st;
    /* access times exist for eviction: without a limit they are not kept */
    return w->c->max_bytes ? qv__set_atime(w, &p->key, now) : QV_OK;
}

/* One write transaction for a list of pending stores; grows or evicts and
 * retries when the store is full. A list of touch requests only (a hit's
 * timer) also writes the counts; stores leave them to their period. */
static qv_status commit_list(qv_cache *c, pending *list, uint64_t *bytes_after) {
    qv_status st = QV_OK;
    int touches_only = 1;
    for (pending *p = list; p; p = p->next)
        if (p->record) touches_only = 0;
    for (int attempt = 0; attempt < MAX_FULL_RETRIES; attempt++) {
        wctx w = {.c = c};
        if ((st = c->store->ops->write_begin(c->store, &w.txn))) return st;
        uint64_t now = (uint64_t)qv__now_ns();
        st = qv__bytes_begin(&w, c->max_bytes != 0); /* eviction decides by it */
        for (pending *p = list; !st && p; p = p->next) st = apply(&w, p, now);
        if (!st) st = qv__flush_touches(&w, now, touches_only);
        /* under a size limit the counter stays exact in every commit: a
         * process that ends without closing cannot leave it short */
        if (!st && c->max_bytes && !w.bytes_written) st = qv__bytes_put(&w);
        if (!st) {
            st = qv__bytes_commit(&w);
            if (!st) {
                qv__cache_count(c, QV_STAT_COMMITS, 1);
                *bytes_after = w.bytes;
                return QV_OK;
            }
        } else {
            c->store->ops->abort(c->store, w.txn);
        }
        if (st != QV_EFULL) return st;
        /* Full: make room by evicting when there is a limit, else grow. */
        uint64_t evicted = 0;
        if (c->max_bytes && w.bytes > 0) {
            qv_status est = qv__evict_to(c, w.bytes / 2, &evicted);
            if (est && est != QV_EFULL) return est;
        }
        if (!evicted && (st = c->store->ops->grow(c->store))) return st;
    }
    return st;
}

static void set_status(pending *p, qv_status st) {
    p->status = st;
    if (st) snprintf(p->message, sizeof p->message, "%s", qv_errmsg());
}

static void commit_batch(qv_cache *c, pending *batch) {
    uint64_t bytes = 0;
    qv_status st = commit_list(c, batch, &bytes);
    if (st && batch->next) {
        /* One bad store must not fail the others: retry them one by one. */
        for (pending *p = batch; p; p = p->next) {
            pending *next = p->next;
            p->next = NULL;
            set_status(p, commit_list(c, p, &bytes));
            p->next = next;
        }
    } else {
        for (pending *p = batch; p; p = p->next) set_status(p, st);
    }
    for (pending *p = batch; p; p = p->next) {
        size_t ns, ne;
        if (p->status || !p->record) continue;
        qv__cache_count(c, QV_STAT_STORES, 1);
        if (p->name) qv__fn_count(c, p->name, p->name_len, FN_STORES);
        else if (qv__record_name(p->record, p->record_len, &ns, &ne) == QV_OK)
            qv__fn_count(c, p->record + ns, ne - ns, FN_STORES);
    }
    if (c->max_bytes && bytes > c->max_bytes) {
        uint64_t evicted;
        qv__evict_to(c, c->max_bytes - c->max_bytes / 10, &evicted);
    }
}

/* How long a leader waits for the stores it expects before committing:
 * far below a synced commit's cost, so waiting pays when a sync follows. */
#define GATHER_NS 50000

/* Queue a store; the first thread to find the writer idle commits everything
 * queued so far, the others wait for it. A leader first waits briefly for as
 * many stores as were in flight last time, since their threads are about to
 * come back with their next ones. Each waiter sleeps on its own condition, so
 * a commit wakes exactly the threads it served, and the next leader. */
qv_status qv__group_commit(qv_cache *c, pending *p) {
    return qv__group_commit_many(c, &p, 1);
}

/* ps are queued together, so the batch that takes one takes them all: their
 * owner waits on the first, which is also the one a finished leader wakes
 * when the group heads the queue (a stack's worker storing what it
 * gathered, stack.c). */
qv_status qv__group_commit_many(qv_cache *c, pending **ps, size_t count) {
    qv__cache_after_fork(c);
    for (size_t i = 0; i < count; i++) {
        ps[i]->next = NULL;
        ps[i]->done = 0;
        pthread_cond_init(&ps[i]->wake, NULL);
    }
    pending *p = ps[0];
    pthread_mutex_lock(&c->qlock);
    for (size_t i = 0; i < count; i++) {
        if (c->tail) c->tail->next = ps[i];
        else c->head = ps[i];
        c->tail = ps[i];
    }
    c->queued += count;
    if (c->gatherer && c->queued >= c->gather_target) pthread_cond_signal(&c->gatherer->wake);
    while (!p->done) {
        if (c->writer_busy) {
            pthread_cond_wait(&p->wake, &c->qlock);
            continue;
        }
        c->writer_busy = 1;
        if (c->durability != QV_DURABILITY_FAST && c->queued < c->gather_target) {
            struct timespec deadline;
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_nsec += GATHER_NS;
            if (deadline.tv_nsec >= 1000000000) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000;
            }
            c->gatherer = p;
            while (c->queued < c->gather_target)
                if (pthread_cond_timedwait(&p->wake, &c->qlock, &deadline)) break;
            c->gatherer = NULL;
        }
        pending *batch = c->head;
        size_t n = c->queued;
        c->head = c->tail = NULL;
        c->queued = 0;
        pthread_mutex_unlock(&c->qlock);
        commit_batch(c, batch);
        pthread_mutex_lock(&c->qlock);
        /* those served will be back, with the ones queued meanwhile */
        c->gather_target = n + c->queued;
        for (pending *b = batch; b;) {
            pending *next = b->next;
            b->done = 1; /* its owner may free b once it has the lock */
            if (b != p) pthread_cond_signal(&b->wake);
            b = next;
        }
        c->writer_busy = 0;
        if (c->head) pthread_cond_signal(&c->head->wake); /* the next leader */
    }
    pthread_mutex_unlock(&c->qlock);
    qv_status st = QV_OK;
    for (size_t i = 0; i < count; i++) {
        pthread_cond_destroy(&ps[i]->wake);
        if (!st && ps[i]->status) qv__error(st = ps[i]->status, "%s", ps[i]->message);
    }
    return st;
}

qv_status qv_cache_store(qv_cache *cache, const qv_digest *key, const void *call, size_t call_len, const void *result,
                         size_t result_len, const qv_store_info *info) {
    if (!cache || !call || !result) return qv__error(QV_EINVAL, "qv_cache_store: NULL argument");
    if (cache->flags & QV_CACHE_READONLY)
        return qv__error(QV_EREADONLY, "the cache at %s was opened read-only", cache->path);
    if (info && (info->version == 0 || info->version > QV_STORE_INFO_VERSION))
        return qv__error(QV_EINVAL, "qv_store_info version %u is not supported", info->version);
    qv_encoder *enc = qv__thread_encoder_for(QV_ENCODER_RECORDS);
    if (!enc) return qv__nomem();
    pending p;
    record_builder b = {enc, cache->inline_limit, NULL, 0, 0, 0};
    qv_status st = qv__record_prepare(&p, &b, key, call, call_len, result, result_len, info);
    if (!st) {
        p.refs = b.refs;
        p.nrefs = b.nrefs;
        st = cache->tier ? cache->tier->put(cache, &p) : qv__group_commit(cache, &p);
    }
    free(b.refs);
    return st;
}

qv_status qv__record_prepare(pending *p, record_builder *b, const qv_digest *key, const void *call, size_t call_len,
                             const void *result, size_t result_len, const qv_store_info *info) {
    qv_status st = qv_validate(result, result_len);
    if (st) return qv__error(st, "the result is not one canonical item: %s", qv_errmsg());
    memset(p, 0, sizeof *p);
    /* A key that is not the call's digest would file the result under
     * another call: every language would get it for that call. Hashing the
     * call again costs little next to a commit (docs/DECISIONS.md). */
    qv_digest_bytes(&p->key, call, call_len);
    if (key && memcmp(key->bytes, p->key.bytes, 16) != 0) {
        char given[33], actual[33];
        qv_digest_hex(key, given);
        qv_digest_hex(&p->key, actual);
        return qv__error(QV_EINVAL, "qv_cache_store: key %s is not the digest of the call encoding (%s)", given, actual);
    }
    st = qv__record_build(b, p, call, call_len, result, result_len, info);
    if (!st && b->may_be_deep && qv_validate(p->record, p->record_len) != QV_OK) {
        /* Inline items nested near the depth limit would put the record past
         * it: store every item by reference, each then a value of its own. */
        b->inline_limit = 0;
        b->nrefs = 0;
        st = qv__record_build(b, p, call, call_len, result, result_len, info);
    }
    return st;
}

qv_status qv_cache_store_value(qv_cache *cache, const char *name, const char *version, const qv_value *args,
                               const qv_value *kwargs, const qv_value *result, const qv_store_info *info) {
    if (!cache || !name || !args || !result) return qv__error(QV_EINVAL, "qv_cache_store_value: NULL argument");
    if (qv_value_type(args) != QV_TYPE_LIST) return qv__error(QV_ETYPE, "args must be a list");
    if (kwargs && qv_value_type(kwargs) != QV_TYPE_MAP) return qv__error(QV_ETYPE, "kwargs must be a map");
    void *call = NULL, *res = NULL;
    size_t call_len, res_len;
    qv_encoder *enc;
    qv_status st = qv_encoder_new(&enc);
    if (st) return st;
    const void *p;
    if (!(st = qv_encoder_call_head(enc, name, strlen(name), version, version ? strlen(version) : 0)) &&
        !(st = qv_encoder_value(enc, args))) {
        if (kwargs) st = qv_encoder_value(enc, kwargs);
        else if (!(st = qv_encoder_map_begin(enc))) st = qv_encoder_map_end(enc);
    }
    if (!st && !(st = qv_encoder_finish(enc, &p, &call_len))) {
        if ((call = malloc(call_len))) memcpy(call, p, call_len);
        else st = qv__nomem();
    }
    qv_encoder_free(enc);
    if (!st) st = qv_value_encode(result, &res, &res_len);
    if (!st) st = qv_cache_store(cache, NULL, call, call_len, res, res_len, info);
    free(call);
    qv_free(res);
    return st;
}
