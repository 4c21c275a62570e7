/* The cache: call records and content-addressed values over a store.
 *
 * A hit reads one table (calls) in one read transaction when the result is
 * small enough to live inside the record, which is the common case. Stores
 * from many threads are queued and committed together by whichever thread
 * finds the writer idle (group commit), so durable writes share fsyncs.
 * docs/FORMAT.md describes every table and byte. */
#include <limits.h>
#include <stdio.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

enum { T_META, T_VALUES, T_REFS, T_CALLS, T_NAMES, T_ATIME, T_LRU, T_COUNT };
static const char *const table_names[T_COUNT] = {"meta", "values", "refs", "calls", "names", "atime", "lru"};

#define FORMAT_VERSION 1
#define DEFAULT_INLINE_LIMIT 512
/* A memory cache without a limit of its own keeps this much: it lives in the
 * process's memory, and a long-running process must not grow without bound
 * (docs/DECISIONS.md). */
#define DEFAULT_MEMORY_MAX_BYTES ((uint64_t)256 << 20)
#define TOUCH_SLOTS 1024 /* a power of two */
/* How often, at most, hits write their access times on their own when no
 * store does it for them; QUIVER_LRU_FLUSH_MS, read at open, overrides. */
#define TOUCH_FLUSH_NS ((int64_t)5000 * 1000000)
#define MAX_FULL_RETRIES 16

/* Keys of a call record, a CBOR map with small integer keys. The result and
 * its run time come first so that a hit reads no further than it needs. */
enum { R_RESULT, R_DURATION, R_START, R_NAME, R_VERSION, R_ARGS, R_KWARGS, R_LANG, R_META, R_COUNT };
static const char *const record_keys[R_COUNT] = {"result",  "duration_ns", "start_ns", "name", "version",
                                                 "args",    "kwargs",      "lang",     "meta"};

/* The head of a value reference: tag QV_TAG_REF, then a 16-byte string. */
static const uint8_t ref_head[6] = {0xda, 0x51, 0x56, 0x00, 0x03, 0x50};
#define REF_LEN 22

typedef struct {
    qv_digest digest;
    const uint8_t *data;
    size_t len;
} valref;

typedef struct pending {
    struct pending *next;
    qv_digest key;
    const uint8_t *record;
    size_t record_len;
    valref *refs;
    size_t nrefs;
    uint8_t name_key[24];
    qv_status status;
    char message[256]; /* the committing thread's error, for the owner's thread */
    int done;
    pthread_cond_t wake; /* its owner sleeps on its own condition */
} pending;

typedef struct {
    _Atomic uint64_t w[2]; /* a digest's two halves; w[0] == 0: empty */
} touch_slot;

struct qv_cache {
    _Atomic int refs; /* the host's handle, plus every context and future using it */
    qv_store *store;
    char *path;
    uint32_t durability, flags, inline_limit;
    int memory; /* the memory store */
    uint64_t max_bytes;
    /* per-handle counters, one cache line per thread shard: hits from many
     * threads must not write to one shared line */
    struct {
        _Atomic uint64_t n[QV_STAT_COUNT];
    } __attribute__((aligned(64))) stats[QV_SHARDS];
    /* group commit */
    pthread_mutex_t qlock;
    pending *head, *tail;
    size_t queued;
    int writer_busy;
    pending *gatherer; /* a leader waiting for its batch to fill */
    size_t gather_target;
    _Atomic uint64_t fork_gen;
    _Atomic uint64_t fixing_gen; /* the fork generation whose repair a thread has claimed */
    /* Recently hit keys, for approximate LRU (only with a size limit and
     * writes allowed). A key goes into the slot its digest picks, as two
     * words written without a lock: a hit on a key already in its slot only
     * reads, so a hot key keeps the line shared between cores. A torn or
     * overwritten slot loses a touch, or names a key that does not exist and
     * is skipped: approximate either way, never wrong. */
    int track_lru;
    int64_t touch_period_ns;
    _Atomic int64_t touch_since; /* monotonic time of the oldest unwritten touch; 0: none */
    touch_slot touched[TOUCH_SLOTS];
};

static void count(qv_cache *c, int which, uint64_t n) {
    atomic_fetch_add_explicit(&c->stats[qv__thread_shard()].n[which], n, memory_order_relaxed);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A forked child inherits the queue and its lock as some parent thread left
 * them. The first thread of the child to get here claims the repair with an
 * atomic, not a lock (a lock could itself be inherited held); others wait
 * for it. */
static void after_fork(qv_cache *c) {
    uint64_t gen = qv__fork_generation();
    if (QV_LIKELY(atomic_load_explicit(&c->fork_gen, memory_order_acquire) == gen)) return;
    uint64_t claimed = atomic_load(&c->fixing_gen);
    if (claimed != gen && atomic_compare_exchange_strong(&c->fixing_gen, &claimed, gen)) {
        pthread_mutex_init(&c->qlock, NULL);
        c->head = c->tail = NULL;
        c->queued = 0;
        c->gatherer = NULL;
        c->gather_target = 0;
        c->writer_busy = 0;
        atomic_store(&c->fork_gen, gen);
        return;
    }
    while (atomic_load(&c->fork_gen) != gen) sched_yield();
}

/* ----------------------------------------------------------------- records */

static int is_ref(const uint8_t *p, size_t len) {
    return len == REF_LEN && memcmp(p, ref_head, sizeof ref_head) == 0;
}

/* The result's span inside a record, validated. */
static qv_status record_result(const uint8_t *rec, size_t len, size_t *start, size_t *end) {
    /* a map of at least R_COUNT entries (later formats may add fields), key 0 first */
    size_t head = len ? (rec[0] & 31) < 24 ? 1 : (rec[0] & 31) == 24 ? 2 : 0 : 0;
    if (!head || len < head + 2 || rec[0] >> 5 != 5 || (head == 1 && (rec[0] & 31) < R_COUNT) || rec[head] != R_RESULT)
        return qv__error(QV_ECORRUPT, "record does not start with its result");
    qv_decoder dec;
    qv_decoder_reset(&dec, rec + head + 1, len - head - 1);
    /* the decoder sees the result as a whole item followed by more bytes */
    qv_status st = qv__decoder_item_span(&dec, start, end);
    if (st) return qv__error(QV_ECORRUPT, "record's result is invalid: %s", qv_errmsg());
    *start += head + 1;
    *end += head + 1;
    return QV_OK;
}

typedef qv_status (*record_visit)(int key, const uint8_t *item, size_t len, void *userdata);

/* Visit the top-level entries of a record; args items and kwargs values are
 * visited one by one (key R_ARGS / R_KWARGS), everything else whole. */
static qv_status record_walk(const uint8_t *rec, size_t len, record_visit visit, void *userdata) {
    qv_decoder dec;
    qv_decoder_reset(&dec, rec, len);
    qv_type t;
    uint64_t n, inner;
    size_t s, e;
    qv_status st;
    if ((st = qv_decoder_next(&dec, &t)) || t != QV_TYPE_MAP) goto bad;
    qv_decoder_get_count(&dec, &n);
    for (uint64_t i = 0; i < n; i++) {
        int64_t k;
        if ((st = qv_decoder_next(&dec, &t)) || t != QV_TYPE_INT || qv_decoder_get_int(&dec, &k)) goto bad;
        if (k == R_ARGS || k == R_KWARGS) {
            if ((st = qv_decoder_next(&dec, &t)) || t != (k == R_ARGS ? QV_TYPE_LIST : QV_TYPE_MAP)) goto bad;
            qv_decoder_get_count(&dec, &inner);
            for (uint64_t j = 0; j < inner; j++) {
                if (k == R_KWARGS && (st = qv__decoder_item_span(&dec, &s, &e))) goto bad;
                if ((st = qv__decoder_item_span(&dec, &s, &e))) goto bad;
                if ((st = visit((int)k, rec + s, e - s, userdata))) return st;
            }
        } else {
            if ((st = qv__decoder_item_span(&dec, &s, &e))) goto bad;
            if ((st = visit((int)k, rec + s, e - s, userdata))) return st;
        }
    }
    if (qv_decoder_next(&dec, &t) != QV_NOTFOUND) goto bad;
    return QV_OK;
bad:
    return qv__error(QV_ECORRUPT, "call record is malformed");
}

typedef struct {
    qv_encoder *enc;
    uint32_t inline_limit;
    valref *refs;
    size_t nrefs, cap;
} record_builder;

/* Small items go inline; large ones (and anything that looks like a
 * reference) go to the values table by digest. */
static qv_status emit_item(record_builder *b, const uint8_t *p, size_t len) {
    if (len <= b->inline_limit && !(len >= 5 && memcmp(p, ref_head, 5) == 0)) return qv__encoder_raw(b->enc, p, len);
    if (!b->inline_limit && len <= 16) return qv__encoder_raw(b->enc, p, len); /* too small to nest deeply */
    if (b->nrefs == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4;
        valref *r = realloc(b->refs, cap * sizeof *r);
        if (!r) return qv__nomem();
        b->refs = r;
        b->cap = cap;
    }
    valref *r = &b->refs[b->nrefs++];
    qv_digest_bytes(&r->digest, p, len);
    r->data = p;
    r->len = len;
    qv_status st = qv_encoder_tag(b->enc, QV_TAG_REF);
    return st ? st : qv_encoder_bytes(b->enc, r->digest.bytes, 16);
}

static qv_status bad_call(const char *why) {
    return qv__error(QV_EINVAL, "call encoding is not [\"" QV_CALL_MARKER "\", name, version, args, kwargs]: %s", why);
}

static qv_status build_record(record_builder *b, pending *p, const uint8_t *call, size_t call_len,
                              const uint8_t *result, size_t result_len, const qv_store_info *info) {
    qv_decoder dec;
    qv_decoder_reset(&dec, call, call_len);
    qv_type t;
    uint64_t n;
    const uint8_t *s;
    size_t len, ns, ne, vs, ve;
    qv_status st;
    if ((st = qv_decoder_next(&dec, &t))) return st;
    if (t != QV_TYPE_LIST || (qv_decoder_get_count(&dec, &n), n != 5)) return bad_call("not a 5-item list");
    if ((st = qv_decoder_next(&dec, &t))) return st;
    if (t != QV_TYPE_TEXT ||
        (qv_decoder_get_data(&dec, &s, &len), len != sizeof QV_CALL_MARKER - 1 || memcmp(s, QV_CALL_MARKER, len)))
        return bad_call("the first item is not \"" QV_CALL_MARKER "\"");
    if ((st = qv__decoder_item_span(&dec, &ns, &ne))) return st;
    if (call[ns] >> 5 != 3) return bad_call("the name is not text");
    if ((st = qv__decoder_item_span(&dec, &vs, &ve))) return st;
    if (call[vs] >> 5 != 3 && call[vs] != 0xf6) return bad_call("the version is neither text nor null");

    qv_encoder *enc = b->enc;
    int64_t start = info && info->start_ns ? info->start_ns : now_ns();
    qv_encoder_reset(enc);
    if ((st = qv_encoder_map_begin(enc)) || (st = qv_encoder_uint(enc, R_RESULT)) ||
        (st = emit_item(b, result, result_len)) || (st = qv_encoder_uint(enc, R_DURATION)) ||
        (st = qv_encoder_int(enc, info ? info->duration_ns : 0)) || (st = qv_encoder_uint(enc, R_START)) ||
        (st = qv_encoder_int(enc, start)) || (st = qv_encoder_uint(enc, R_NAME)) ||
        (st = qv__encoder_raw(enc, call + ns, ne - ns)) || (st = qv_encoder_uint(enc, R_VERSION)) ||
        (st = qv__encoder_raw(enc, call + vs, ve - vs)) || (st = qv_encoder_uint(enc, R_ARGS)))
        return st;

    if ((st = qv_decoder_next(&dec, &t))) return st;
    if (t != QV_TYPE_LIST) return bad_call("args is not a list");
    qv_decoder_get_count(&dec, &n);
    if ((st = qv_encoder_list(enc, n))) return st;
    for (uint64_t i = 0; i < n; i++) {
        size_t a, e;
        if ((st = qv__decoder_item_span(&dec, &a, &e)) || (st = emit_item(b, call + a, e - a))) return st;
    }
    if ((st = qv_encoder_uint(enc, R_KWARGS))) return st;
    if ((st = qv_decoder_next(&dec, &t))) return st;
    if (t != QV_TYPE_MAP) return bad_call("kwargs is not a map");
    qv_decoder_get_count(&dec, &n);
    if ((st = qv_encoder_map_begin(enc))) return st;
    for (uint64_t i = 0; i < n; i++) {
        size_t a, e;
        if ((st = qv__decoder_item_span(&dec, &a, &e)) || (st = qv__encoder_raw(enc, call + a, e - a))) return st;
        if ((st = qv__decoder_item_span(&dec, &a, &e)) || (st = emit_item(b, call + a, e - a))) return st;
    }
    if ((st = qv_encoder_map_end(enc))) return st;
    if (qv_decoder_next(&dec, &t) != QV_NOTFOUND) return bad_call("trailing items");

    const char *lang = info && info->lang ? info->lang : "c";
    if ((st = qv_encoder_uint(enc, R_LANG)) || (st = qv_encoder_text(enc, lang, strlen(lang))) ||
        (st = qv_encoder_uint(enc, R_META)))
        return st;
    if (info && info->meta) {
        if (info->meta_len == 0 || (((const uint8_t *)info->meta)[0] >> 5) != 5)
            return qv__error(QV_EINVAL, "metadata must be the encoding of a map");
        if ((st = qv_encoder_encoded(enc, info->meta, (size_t)info->meta_len))) return st;
    } else if ((st = qv_encoder_map_begin(enc)) || (st = qv_encoder_map_end(enc))) {
        return st;
    }
    if ((st = qv_encoder_map_end(enc))) return st;
    const void *rec;
    if ((st = qv_encoder_finish(enc, &rec, &p->record_len))) return st;
    p->record = rec;
    uint64_t h = qv__hash64(call + ns, ne - ns);
    qv__put_be64(p->name_key, h);
    memcpy(p->name_key + 8, p->key.bytes, 16);
    return QV_OK;
}

/* ------------------------------------------------------------ write helpers */

typedef struct {
    qv_cache *c;
    qv_txn *txn;
    uint64_t bytes;
} wctx;

static qv_status meta_get_uint(qv_cache *c, qv_txn *txn, const char *key, uint64_t *out) {
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

static qv_status meta_put_uint(qv_cache *c, qv_txn *txn, const char *key, uint64_t v) {
    uint8_t buf[9];
    size_t n = qv__encode_uint(buf, v);
    return c->store->ops->put(c->store, txn, T_META, key, strlen(key), buf, n);
}

static qv_status get_count(wctx *w, int table, const qv_digest *d, uint64_t *n) {
    const void *v;
    size_t len;
    qv_status st = w->c->store->ops->get(w->c->store, w->txn, table, d->bytes, 16, &v, &len);
    *n = 0;
    if (st) return st;
    if (len != 8) return qv__error(QV_ECORRUPT, "%s entry has %zu bytes, not 8", table_names[table], len);
    *n = qv__get_be64(v);
    return QV_OK;
}

static qv_status put_count(wctx *w, int table, const qv_digest *d, uint64_t n) {
    uint8_t buf[8];
    qv__put_be64(buf, n);
    return w->c->store->ops->put(w->c->store, w->txn, table, d->bytes, 16, buf, 8);
}

static qv_status ref_value(wctx *w, const valref *r) {
    uint64_t n;
    qv_store *s = w->c->store;
    const void *v;
    size_t len;
    qv_status st = get_count(w, T_REFS, &r->digest, &n);
    if (st && st != QV_NOTFOUND) return st;
    /* The value's own presence decides, so a count left without its value
     * (by a crash of a foreign writer, say) heals instead of poisoning. */
    if ((st = s->ops->get(s, w->txn, T_VALUES, r->digest.bytes, 16, &v, &len)) == QV_NOTFOUND) {
        if ((st = s->ops->put(s, w->txn, T_VALUES, r->digest.bytes, 16, r->data, r->len))) return st;
        w->bytes += r->len;
    } else if (st) {
        return st;
    }
    return put_count(w, T_REFS, &r->digest, n + 1);
}

static qv_status unref_visit(int key, const uint8_t *item, size_t len, void *userdata) {
    wctx *w = userdata;
    if (!(key == R_RESULT || key == R_ARGS || key == R_KWARGS) || !is_ref(item, len)) return QV_OK;
    qv_digest d;
    memcpy(d.bytes, item + 6, 16);
    uint64_t n;
    qv_status st = get_count(w, T_REFS, &d, &n);
    if (st == QV_NOTFOUND) return QV_OK; /* gc repairs counts */
    if (st) return st;
    if (n > 1) return put_count(w, T_REFS, &d, n - 1);
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

typedef struct {
    uint64_t hash;
    int found;
} name_probe;

static qv_status name_visit(int key, const uint8_t *item, size_t len, void *userdata) {
    if (key != R_NAME) return QV_OK;
    name_probe *np = userdata;
    np->hash = qv__hash64(item, len);
    np->found = 1;
    return QV_OK;
}

/* Remove the access-time entries of a call. */
static qv_status drop_atime(wctx *w, const qv_digest *key) {
    qv_store *s = w->c->store;
    uint64_t t;
    qv_status st = get_count(w, T_ATIME, key, &t);
    if (st == QV_NOTFOUND) return QV_OK;
    if (st) return st;
    uint8_t lk[24];
    qv__put_be64(lk, t);
    memcpy(lk + 8, key->bytes, 16);
    if ((st = s->ops->del(s, w->txn, T_LRU, lk, 24)) && st != QV_NOTFOUND) return st;
    st = s->ops->del(s, w->txn, T_ATIME, key->bytes, 16);
    return st == QV_NOTFOUND ? QV_OK : st;
}

static qv_status set_atime(wctx *w, const qv_digest *key, uint64_t t) {
    qv_status st = drop_atime(w, key);
    if (st) return st;
    uint8_t lk[24];
    qv__put_be64(lk, t);
    memcpy(lk + 8, key->bytes, 16);
    if ((st = w->c->store->ops->put(w->c->store, w->txn, T_LRU, lk, 24, "", 0))) return st;
    return put_count(w, T_ATIME, key, t);
}

/* Remove a call and everything only it held. A record too broken to walk
 * still goes; its values are then reclaimed by gc. */
static qv_status remove_call(wctx *w, const qv_digest *key) {
    qv_store *s = w->c->store;
    const void *v;
    size_t len;
    qv_status st = s->ops->get(s, w->txn, T_CALLS, key->bytes, 16, &v, &len);
    if (st) return st;
    /* copy: deleting invalidates v */
    uint8_t *rec = malloc(len ? len : 1);
    if (!rec) return qv__nomem();
    memcpy(rec, v, len);
    name_probe np = {0, 0};
    if (record_walk(rec, len, unref_visit, w) == QV_OK) record_walk(rec, len, name_visit, &np);
    free(rec);
    if ((st = s->ops->del(s, w->txn, T_CALLS, key->bytes, 16))) return st;
    w->bytes -= len < w->bytes ? len : w->bytes;
    if (np.found) {
        uint8_t nk[24];
        qv__put_be64(nk, np.hash);
        memcpy(nk + 8, key->bytes, 16);
        if ((st = s->ops->del(s, w->txn, T_NAMES, nk, 24)) && st != QV_NOTFOUND) return st;
    }
    return drop_atime(w, key);
}

static qv_status apply(wctx *w, pending *p, uint64_t now) {
    if (!p->record) return QV_OK; /* a request to write the touches only */
    qv_store *s = w->c->store;
    const void *v;
    size_t len;
    qv_status st = s->ops->get(s, w->txn, T_CALLS, p->key.bytes, 16, &v, &len);
    if (st == QV_OK) st = remove_call(w, &p->key); /* a rerun replaces the record */
    if (st && st != QV_NOTFOUND) return st;
    for (size_t i = 0; i < p->nrefs; i++)
        if ((st = ref_value(w, &p->refs[i]))) return st;
    if ((st = s->ops->put(s, w->txn, T_CALLS, p->key.bytes, 16, p->record, p->record_len))) return st;
    w->bytes += p->record_len;
    if ((st = s->ops->put(s, w->txn, T_NAMES, p->name_key, 24, "", 0))) return st;
    /* access times exist for eviction: without a limit they are not kept */
    return w->c->max_bytes ? set_atime(w, &p->key, now) : QV_OK;
}

/* Access times move only when a second has passed, so hot keys do not
 * rewrite the index on every commit. */
#define ATIME_RESOLUTION_NS 1000000000ull

static qv_status flush_touches(wctx *w, uint64_t now) {
    qv_cache *c = w->c;
    if (!c->track_lru || !atomic_exchange(&c->touch_since, 0)) return QV_OK;
    for (size_t i = 0; i < TOUCH_SLOTS; i++) {
        if (!atomic_load_explicit(&c->touched[i].w[0], memory_order_relaxed)) continue;
        uint64_t a = atomic_exchange_explicit(&c->touched[i].w[0], 0, memory_order_relaxed);
        uint64_t b = atomic_exchange_explicit(&c->touched[i].w[1], 0, memory_order_relaxed);
        qv_digest key;
        memcpy(key.bytes, &a, 8);
        memcpy(key.bytes + 8, &b, 8);
        uint64_t t;
        qv_status st = get_count(w, T_ATIME, &key, &t);
        if (st == QV_NOTFOUND || (st == QV_OK && t + ATIME_RESOLUTION_NS > now)) continue;
        if (st || (st = set_atime(w, &key, now))) return st;
    }
    return QV_OK;
}

typedef struct {
    qv_digest *keys;
    size_t n, cap, want;
    int failed; /* out of memory: the list is incomplete */
} key_list;

static int collect_key(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
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

/* Evict least recently used calls until bytes <= target. */
static qv_status evict_to(qv_cache *c, uint64_t target, uint64_t *evicted) {
    *evicted = 0;
    for (;;) {
        wctx w = {c, NULL, 0};
        qv_status st = c->store->ops->write_begin(c->store, &w.txn);
        if (st) return st;
        if ((st = meta_get_uint(c, w.txn, "bytes", &w.bytes))) {
            c->store->ops->abort(c->store, w.txn);
            return st;
        }
        if (w.bytes <= target) {
            c->store->ops->abort(c->store, w.txn);
            return QV_OK;
        }
        /* Enough of the oldest for the whole excess at the average size of a
         * call, so that a big cache evicts in one round or a few rather than
         * in thousands of 64 (each round scans the index; a memory store's
         * scan visits every entry), but on LMDB not so many that one write
         * transaction dirties more pages than LMDB allows. */
        uint64_t calls = 0, batch = c->memory ? UINT64_MAX : EVICT_BATCH;
        size_t want = 64;
        if (c->store->ops->count(c->store, w.txn, T_CALLS, &calls) == QV_OK && calls) {
            uint64_t n = (w.bytes - target) / (w.bytes / calls + 1) + 64;
            want = (size_t)(n < batch ? n : batch);
        }
        key_list oldest = {NULL, 0, 0, want, 0};
        st = c->store->ops->scan(c->store, w.txn, T_LRU, NULL, 0, collect_key, &oldest);
        if (!st && oldest.n == 0) /* calls without access times: take any */
            st = c->store->ops->scan(c->store, w.txn, T_CALLS, NULL, 0, collect_key, &oldest);
        size_t i;
        for (i = 0; !st && i < oldest.n && w.bytes > target; i++) st = remove_call(&w, &oldest.keys[i]);
        size_t removed = i;
        int none = oldest.n == 0;
        free(oldest.keys);
        if (!st) st = meta_put_uint(c, w.txn, "bytes", w.bytes);
        if (st) {
            c->store->ops->abort(c->store, w.txn);
            return st;
        }
        if ((st = c->store->ops->commit(c->store, w.txn))) return st;
        *evicted += removed;
        count(c, QV_STAT_EVICTIONS, removed);
        if (none || w.bytes <= target) return QV_OK;
    }
}

/* One write transaction for a list of pending stores; grows or evicts and
 * retries when the store is full. */
static qv_status commit_list(qv_cache *c, pending *list, uint64_t *bytes_after) {
    qv_status st = QV_OK;
    for (int attempt = 0; attempt < MAX_FULL_RETRIES; attempt++) {
        wctx w = {c, NULL, 0};
        if ((st = c->store->ops->write_begin(c->store, &w.txn))) return st;
        uint64_t now = (uint64_t)now_ns();
        st = meta_get_uint(c, w.txn, "bytes", &w.bytes);
        for (pending *p = list; !st && p; p = p->next) st = apply(&w, p, now);
        if (!st) st = flush_touches(&w, now);
        if (!st) st = meta_put_uint(c, w.txn, "bytes", w.bytes);
        if (!st) {
            st = c->store->ops->commit(c->store, w.txn);
            if (!st) {
                count(c, QV_STAT_COMMITS, 1);
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
            qv_status est = evict_to(c, w.bytes / 2, &evicted);
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
    for (pending *p = batch; p; p = p->next)
        if (!p->status && p->record) count(c, QV_STAT_STORES, 1);
    if (c->max_bytes && bytes > c->max_bytes) {
        uint64_t evicted;
        evict_to(c, c->max_bytes - c->max_bytes / 10, &evicted);
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
static qv_status group_commit(qv_cache *c, pending *p) {
    after_fork(c);
    p->next = NULL;
    p->done = 0;
    pthread_cond_init(&p->wake, NULL);
    pthread_mutex_lock(&c->qlock);
    if (c->tail) c->tail->next = p;
    else c->head = p;
    c->tail = p;
    c->queued++;
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
    pthread_cond_destroy(&p->wake);
    if (p->status) qv__error(p->status, "%s", p->message);
    return p->status;
}

/* ----------------------------------------------------------------- public */

qv_status qv_cache_options_init(qv_cache_options *opts, uint32_t version) {
    if (!opts) return qv__error(QV_EINVAL, "qv_cache_options_init: opts is NULL");
    if (version == 0 || version > QV_CACHE_OPTIONS_VERSION)
        return qv__error(QV_EINVAL, "qv_cache_options version %u is not supported (1..%d)", version,
                         QV_CACHE_OPTIONS_VERSION);
    qv_cache_options d = QV_CACHE_OPTIONS_INIT;
    *opts = d;
    opts->version = version;
    return QV_OK;
}

qv_status qv_store_info_init(qv_store_info *info, uint32_t version) {
    if (!info) return qv__error(QV_EINVAL, "qv_store_info_init: info is NULL");
    if (version == 0 || version > QV_STORE_INFO_VERSION)
        return qv__error(QV_EINVAL, "qv_store_info version %u is not supported (1..%d)", version, QV_STORE_INFO_VERSION);
    qv_store_info d = QV_STORE_INFO_INIT;
    *info = d;
    info->version = version;
    return QV_OK;
}

static qv_status init_meta(qv_cache *c) {
    qv_store *s = c->store;
    qv_txn *txn;
    qv_status st = s->ops->read_begin(s, &txn);
    if (st) return st;
    const void *v;
    size_t n;
    st = s->ops->get(s, txn, T_META, "format", 6, &v, &n);
    int present = st == QV_OK;
    uint64_t format = 0;
    if (present && (n != 1 || *(const uint8_t *)v >= 24)) st = QV_ECORRUPT;
    else if (present) format = *(const uint8_t *)v;
    s->ops->read_end(s, txn);
    if (st == QV_ECORRUPT) return qv__error(QV_ECORRUPT, "%s: the meta table's format entry is unreadable", c->path);
    if (present && format != FORMAT_VERSION)
        return qv__error(QV_ECORRUPT, "%s: cache format %u is not supported (this quiver reads format %d)", c->path,
                         (unsigned)format, FORMAT_VERSION);
    if (present || (c->flags & QV_CACHE_READONLY)) return QV_OK;
    if ((st = s->ops->write_begin(s, &txn))) return st;
    /* another process may have initialised it since we looked */
    if (s->ops->get(s, txn, T_META, "format", 6, &v, &n) == QV_OK) {
        s->ops->abort(s, txn);
        return init_meta(c);
    }
    static const char created_by[] = "quiver " QV_VERSION_STRING;
    qv_encoder *enc = qv__thread_encoder_for(QV_ENCODER_RECORDS);
    const void *text;
    size_t text_len;
    if (!enc) st = qv__nomem();
    else {
        qv_encoder_reset(enc);
        if (!(st = qv_encoder_text(enc, created_by, sizeof created_by - 1))) st = qv_encoder_finish(enc, &text, &text_len);
    }
    if (!st && !(st = meta_put_uint(c, txn, "format", FORMAT_VERSION)) &&
        !(st = s->ops->put(s, txn, T_META, "created-by", 10, text, text_len)) &&
        !(st = meta_put_uint(c, txn, "bytes", 0)))
        return s->ops->commit(s, txn);
    s->ops->abort(s, txn);
    return st;
}

typedef struct {
    wctx w;
    key_list missing;
} backfill_ctx;

static int missing_atime(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    backfill_ctx *b = userdata;
    uint64_t t;
    if (klen == 16 && get_count(&b->w, T_ATIME, (const qv_digest *)key, &t) == QV_NOTFOUND)
        collect_key(key, klen, NULL, 0, &b->missing);
    return 0;
}

/* Calls stored while the cache had no size limit have no access time: give
 * them the oldest (0), so they are the first to go once a limit applies. */
static qv_status backfill_atimes(qv_cache *c) {
    backfill_ctx b = {{c, NULL, 0}, {NULL, 0, 0, 0, 0}};
    qv_store *s = c->store;
    uint64_t calls, atimes;
    qv_status st = s->ops->write_begin(s, &b.w.txn);
    if (st) return st;
    if (!(st = s->ops->count(s, b.w.txn, T_CALLS, &calls)) && !(st = s->ops->count(s, b.w.txn, T_ATIME, &atimes)) &&
        atimes < calls) {
        st = s->ops->scan(s, b.w.txn, T_CALLS, NULL, 0, missing_atime, &b);
        if (!st && b.missing.failed) st = qv__nomem();
        for (size_t i = 0; !st && i < b.missing.n; i++) st = set_atime(&b.w, &b.missing.keys[i], 0);
    }
    free(b.missing.keys);
    if (st) {
        s->ops->abort(s, b.w.txn);
        return st;
    }
    return s->ops->commit(s, b.w.txn);
}

static qv_status cache_new(qv_cache **out, const char *path, const qv_cache_options *opts, int memory) {
    if (!out) return qv__error(QV_EINVAL, "out is NULL");
    *out = NULL;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    if (opts) {
        if (opts->version == 0 || opts->version > QV_CACHE_OPTIONS_VERSION)
            return qv__error(QV_EINVAL, "qv_cache_options version %u is not supported (1..%d)", opts->version,
                             QV_CACHE_OPTIONS_VERSION);
        o = *opts;
    }
    if (o.durability > QV_DURABILITY_FAST) return qv__error(QV_EINVAL, "unknown durability %u", o.durability);
    qv_cache *c = aligned_alloc(64, (sizeof *c + 63) & ~(size_t)63);
    if (!c) return qv__nomem();
    memset(c, 0, sizeof *c);
    atomic_init(&c->refs, 1);
    c->durability = o.durability;
    c->memory = memory;
    c->flags = o.flags;
    c->inline_limit = o.inline_limit ? o.inline_limit : DEFAULT_INLINE_LIMIT;
    c->max_bytes = o.max_bytes ? o.max_bytes : memory ? DEFAULT_MEMORY_MAX_BYTES : 0;
    c->track_lru = c->max_bytes && !(o.flags & QV_CACHE_READONLY);
    const char *period = getenv("QUIVER_LRU_FLUSH_MS");
    c->touch_period_ns = period && *period ? (int64_t)strtoll(period, NULL, 10) * 1000000 : TOUCH_FLUSH_NS;
    pthread_mutex_init(&c->qlock, NULL);
    atomic_init(&c->fork_gen, qv__fork_generation());
    atomic_init(&c->fixing_gen, qv__fork_generation());
    qv_store_config cfg = {table_names, T_COUNT, o.durability, (o.flags & QV_CACHE_READONLY) != 0, o.map_size};
    qv_status st;
    if (memory) {
        c->path = strdup(":memory:");
        st = c->path ? qv__store_memory_open(&c->store, &cfg) : qv__nomem();
    } else {
        st = qv__store_lmdb_open(&c->store, path, &cfg);
        if (!st) {
            char real[PATH_MAX];
            c->path = strdup(realpath(path, real) ? real : path);
            if (!c->path) st = qv__nomem();
        }
    }
    if (!st) st = init_meta(c);
    if (!st && c->max_bytes && !(c->flags & QV_CACHE_READONLY)) st = backfill_atimes(c);
    if (st) {
        qv_cache_close(c);
        return st;
    }
    *out = c;
    return QV_OK;
}

qv_status qv_cache_open(qv_cache **out, const char *path, const qv_cache_options *opts) {
    if (!path) {
        if (out) *out = NULL;
        return qv__error(QV_EINVAL, "qv_cache_open: path is NULL");
    }
    return cache_new(out, path, opts, strcmp(path, ":memory:") == 0);
}

qv_status qv_cache_open_memory(qv_cache **out) {
    return cache_new(out, NULL, NULL, 1);
}

const char *qv_cache_path(const qv_cache *cache) {
    return cache ? cache->path : NULL;
}

static void flush_pending_touches(qv_cache *c) {
    if (!c->track_lru || !atomic_load_explicit(&c->touch_since, memory_order_relaxed)) return;
    wctx w = {c, NULL, 0};
    if (c->store->ops->write_begin(c->store, &w.txn)) return;
    if (flush_touches(&w, (uint64_t)now_ns()) == QV_OK) c->store->ops->commit(c->store, w.txn);
    else c->store->ops->abort(c->store, w.txn);
}

qv_cache *qv__cache_retain(qv_cache *cache) {
    if (cache) atomic_fetch_add_explicit(&cache->refs, 1, memory_order_relaxed);
    return cache;
}

/* Closing drops the host's reference; the cache lives on while contexts or
 * futures still refer to it (SQLite's zombie rule), so a garbage-collected
 * host can finalize in any order. */
void qv_cache_close(qv_cache *cache) {
    if (!cache || atomic_fetch_sub_explicit(&cache->refs, 1, memory_order_acq_rel) != 1) return;
    if (cache->store) {
        flush_pending_touches(cache);
        cache->store->ops->close(cache->store);
    }
    pthread_mutex_destroy(&cache->qlock);
    free(cache->path);
    free(cache);
}

qv_status qv_cache_contains(qv_cache *cache, const qv_digest *key) {
    if (!cache || !key) return qv__error(QV_EINVAL, "qv_cache_contains: NULL argument");
    qv_txn *txn;
    qv_status st = cache->store->ops->read_begin(cache->store, &txn);
    if (st) return st;
    const void *v;
    size_t n;
    st = cache->store->ops->get(cache->store, txn, T_CALLS, key->bytes, 16, &v, &n);
    cache->store->ops->read_end(cache->store, txn);
    return st;
}

static int64_t coarse_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Note a hit for LRU. Touches are written by the next commit, and by a hit
 * that finds the oldest of them older than touch_period_ns: it joins the
 * group commit with nothing to store but the touches, so a read-mostly
 * handle keeps its hot keys from being evicted by another handle or process
 * that stores. One hit per period pays for it, and no thread is needed. */
static void touch(qv_cache *c, const qv_digest *key) {
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
    if (!since) {
        atomic_compare_exchange_strong(&c->touch_since, &since, now);
    } else if (now - since >= c->touch_period_ns && atomic_compare_exchange_strong(&c->touch_since, &since, now)) {
        pending p;
        memset(&p, 0, sizeof p);
        group_commit(c, &p); /* a failure costs these touches, nothing else */
    }
}

static qv_status corrupt_miss(qv_cache *c, const qv_digest *key, const char *what) {
    char hex[33];
    qv_digest_hex(key, hex);
    count(c, QV_STAT_CORRUPT, 1);
    count(c, QV_STAT_MISSES, 1);
    qv__error(QV_ECORRUPT, "%s: entry %s is corrupt (%s); treated as a miss", c->path, hex, what);
    return QV_NOTFOUND;
}

/* The run time recorded after the result: key R_DURATION and an integer. */
static int64_t record_duration(const uint8_t *rec, size_t len, size_t result_end) {
    qv_decoder dec;
    qv_type t;
    int64_t key, d;
    qv_decoder_reset(&dec, rec + result_end, len - result_end);
    if (qv_decoder_next(&dec, &t) || qv_decoder_get_int(&dec, &key) || key != R_DURATION) return 0;
    qv_decoder_reset(&dec, rec + result_end + 1, len - result_end - 1);
    if (qv_decoder_next(&dec, &t) || qv_decoder_get_int(&dec, &d)) return 0;
    return d;
}

/* Results this small are copied to the stack on a hit, larger ones to the heap. */
#define HIT_STACK_BYTES 1024

/* Find key's result and copy it out of the store: into buf when it fits in
 * cap bytes, else into *heap (the caller frees it). The transaction ends
 * before this returns, so whatever the caller runs next (a decoder that makes
 * a memoized call of its own, which may store and grow the map) holds no
 * transaction and no store lock. */
static inline __attribute__((always_inline)) qv_status read_result(qv_cache *cache, const qv_digest *key, uint8_t *buf,
                                                                  size_t cap, const uint8_t **out, size_t *out_len,
                                                                  uint8_t **heap, int64_t *duration_ns) {
    qv_store *s = cache->store;
    qv_txn *txn;
    qv_status st = s->ops->read_begin(s, &txn);
    if (st) return st;
    const void *v;
    size_t n, rs, re;
    st = s->ops->get(s, txn, T_CALLS, key->bytes, 16, &v, &n);
    if (st) {
        s->ops->read_end(s, txn);
        if (st == QV_NOTFOUND) count(cache, QV_STAT_MISSES, 1);
        return st;
    }
    const uint8_t *rec = v;
    if ((st = record_result(rec, n, &rs, &re))) {
        s->ops->read_end(s, txn);
        return corrupt_miss(cache, key, qv_errmsg());
    }
    const uint8_t *data = rec + rs;
    size_t len = re - rs;
    if (duration_ns) *duration_ns = record_duration(rec, n, re);
    if (is_ref(data, len)) {
        if ((st = s->ops->get(s, txn, T_VALUES, data + 6, 16, &v, &len)) || qv_validate(v, len)) {
            s->ops->read_end(s, txn);
            if (st && st != QV_NOTFOUND) return st;
            return corrupt_miss(cache, key, st ? "its result value is missing" : "its result value is invalid");
        }
        data = v;
    }
    uint8_t *copy = buf;
    if (len > cap && !(copy = *heap = malloc(len))) {
        s->ops->read_end(s, txn);
        return qv__nomem();
    }
    memcpy(copy, data, len);
    s->ops->read_end(s, txn);
    *out = copy;
    *out_len = len;
    count(cache, QV_STAT_HITS, 1);
    if (cache->track_lru) touch(cache, key);
    return QV_OK;
}

qv_status qv_cache_get_with(qv_cache *cache, const qv_digest *key, qv_result_cb cb, void *userdata) {
    return qv__cache_get_with(cache, key, cb, userdata, NULL);
}

qv_status qv__cache_get_with(qv_cache *cache, const qv_digest *key, qv_result_cb cb, void *userdata,
                             int64_t *duration_ns) {
    if (QV_UNLIKELY(!cache || !key || !cb)) return qv__error(QV_EINVAL, "qv_cache_get_with: NULL argument");
    uint8_t buf[HIT_STACK_BYTES], *heap = NULL;
    const uint8_t *data;
    size_t len;
    qv_status st = read_result(cache, key, buf, sizeof buf, &data, &len, &heap, duration_ns);
    if (st) return st;
    st = cb(data, len, userdata);
    if (QV_UNLIKELY(heap != NULL)) free(heap);
    return st;
}

qv_status qv_cache_get(qv_cache *cache, const qv_digest *key, void **data, size_t *len) {
    if (!data || !len) return qv__error(QV_EINVAL, "qv_cache_get: NULL output");
    *data = NULL;
    *len = 0;
    if (!cache || !key) return qv__error(QV_EINVAL, "qv_cache_get: NULL argument");
    uint8_t *heap = NULL;
    const uint8_t *p;
    /* a result has at least one byte, so every hit lands in heap */
    qv_status st = read_result(cache, key, NULL, 0, &p, len, &heap, NULL);
    if (!st) *data = heap;
    return st;
}

static qv_status decode_result(const void *data, size_t len, void *userdata) {
    return qv_value_decode(userdata, data, len);
}

qv_status qv_cache_get_value(qv_cache *cache, const qv_digest *key, qv_value **out) {
    if (!out) return qv__error(QV_EINVAL, "qv_cache_get_value: out is NULL");
    *out = NULL;
    return qv_cache_get_with(cache, key, decode_result, out);
}

qv_status qv_cache_store(qv_cache *cache, const qv_digest *key, const void *call, size_t call_len, const void *result,
                         size_t result_len, const qv_store_info *info) {
    if (!cache || !call || !result) return qv__error(QV_EINVAL, "qv_cache_store: NULL argument");
    if (cache->flags & QV_CACHE_READONLY)
        return qv__error(QV_EREADONLY, "the cache at %s was opened read-only", cache->path);
    if (info && (info->version == 0 || info->version > QV_STORE_INFO_VERSION))
        return qv__error(QV_EINVAL, "qv_store_info version %u is not supported", info->version);
    qv_status st = qv_validate(result, result_len);
    if (st) return qv__error(st, "the result is not one canonical item: %s", qv_errmsg());
    pending p;
    memset(&p, 0, sizeof p);
    /* A key that is not the call's digest would file the result under
     * another call: every language would get it for that call. Hashing the
     * call again costs little next to a commit (docs/DECISIONS.md). */
    qv_digest_bytes(&p.key, call, call_len);
    if (key && memcmp(key->bytes, p.key.bytes, 16) != 0) {
        char given[33], actual[33];
        qv_digest_hex(key, given);
        qv_digest_hex(&p.key, actual);
        return qv__error(QV_EINVAL, "qv_cache_store: key %s is not the digest of the call encoding (%s)", given, actual);
    }
    qv_encoder *enc = qv__thread_encoder_for(QV_ENCODER_RECORDS);
    if (!enc) return qv__nomem();
    record_builder b = {enc, cache->inline_limit, NULL, 0, 0};
    st = build_record(&b, &p, call, call_len, result, result_len, info);
    if (!st && qv_validate(p.record, p.record_len) != QV_OK) {
        /* Inline items nested near the depth limit would put the record past
         * it: store every item by reference, each then a value of its own. */
        b.inline_limit = 0;
        b.nrefs = 0;
        st = build_record(&b, &p, call, call_len, result, result_len, info);
    }
    if (!st) {
        p.refs = b.refs;
        p.nrefs = b.nrefs;
        st = group_commit(cache, &p);
    }
    free(b.refs);
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

/* ------------------------------------------------------------------- load */

/* A record item, with a value reference replaced by the value itself. */
static qv_status resolve(qv_cache *c, qv_txn *txn, const qv_value *item, qv_value **out) {
    uint64_t tag;
    const qv_value *content;
    const uint8_t *d;
    size_t n;
    if (qv_value_get_tag(item, &tag, &content) == QV_OK && tag == QV_TAG_REF &&
        qv_value_get_bytes(content, &d, &n) == QV_OK && n == 16) {
        const void *v;
        qv_status st = c->store->ops->get(c->store, txn, T_VALUES, d, 16, &v, &n);
        if (st == QV_NOTFOUND) return qv__error(QV_ECORRUPT, "a value the record refers to is missing");
        if (st) return st;
        if (qv_value_decode(out, v, n)) return qv__error(QV_ECORRUPT, "a value the record refers to: %s", qv_errmsg());
        return QV_OK;
    }
    return qv_value_clone(out, item);
}

static qv_status resolve_field(qv_cache *c, qv_txn *txn, int key, const qv_value *item, qv_value **out) {
    qv_status st;
    if (key == R_ARGS || key == R_KWARGS) {
        size_t n = qv_value_count(item);
        if ((st = key == R_ARGS ? qv_value_new_list(out) : qv_value_new_map(out))) return st;
        for (size_t i = 0; i < n; i++) {
            qv_value *v, *k = NULL;
            if (key == R_ARGS) st = resolve(c, txn, qv_value_list_get(item, i), &v);
            else if (!(st = qv_value_clone(&k, qv_value_map_key(item, i)))) {
                if ((st = resolve(c, txn, qv_value_map_value(item, i), &v))) qv_value_free(k);
            }
            if (!st) st = key == R_ARGS ? qv_value_list_append(*out, v) : qv_value_map_set(*out, k, v);
            if (st) break;
        }
    } else if (key == R_RESULT) {
        return resolve(c, txn, item, out);
    } else {
        return qv_value_clone(out, item);
    }
    if (st) {
        qv_value_free(*out);
        *out = NULL;
    }
    return st;
}

/* The record with text keys and every reference resolved. */
static qv_status load_record(qv_cache *c, qv_txn *txn, const void *data, size_t len, qv_value **out) {
    qv_value *raw;
    qv_status st = qv_value_decode(&raw, data, len);
    if (st) return qv__error(QV_ECORRUPT, "call record is malformed: %s", qv_errmsg());
    if (qv_value_type(raw) != QV_TYPE_MAP || qv_value_count(raw) < R_COUNT) {
        qv_value_free(raw);
        return qv__error(QV_ECORRUPT, "call record is not a map of %d fields", R_COUNT);
    }
    if (!(st = qv_value_new_map(out))) {
        for (size_t i = 0; !st && i < qv_value_count(raw); i++) {
            int64_t k;
            if (qv_value_get_int(qv_value_map_key(raw, i), &k) || k < 0) {
                st = qv__error(QV_ECORRUPT, "call record has a key that is not a field number");
            } else if (k < R_COUNT) { /* fields of a newer format are skipped */
                qv_value *key, *v;
                if (!(st = resolve_field(c, txn, (int)k, qv_value_map_value(raw, i), &v))) {
                    if ((st = qv_value_new_text(&key, record_keys[k], strlen(record_keys[k])))) qv_value_free(v);
                    else st = qv_value_map_set(*out, key, v);
                }
            }
        }
        if (st) {
            qv_value_free(*out);
            *out = NULL;
        }
    }
    qv_value_free(raw);
    return st;
}

qv_status qv_cache_load(qv_cache *cache, const qv_digest *key, qv_value **record) {
    if (!record) return qv__error(QV_EINVAL, "qv_cache_load: record is NULL");
    *record = NULL;
    if (!cache || !key) return qv__error(QV_EINVAL, "qv_cache_load: NULL argument");
    qv_txn *txn;
    qv_status st = cache->store->ops->read_begin(cache->store, &txn);
    if (st) return st;
    const void *v;
    size_t n;
    if (!(st = cache->store->ops->get(cache->store, txn, T_CALLS, key->bytes, 16, &v, &n)))
        st = load_record(cache, txn, v, n, record);
    cache->store->ops->read_end(cache->store, txn);
    if (st == QV_ECORRUPT) {
        char hex[33], why[512];
        qv_digest_hex(key, hex);
        snprintf(why, sizeof why, "%s", qv_errmsg());
        return qv__error(QV_ECORRUPT, "%s: entry %s is corrupt: %s", cache->path, hex, why);
    }
    return st;
}

/* ---------------------------------------------------------- maintenance */

static qv_status write_txn(qv_cache *c, wctx *w) {
    if (c->flags & QV_CACHE_READONLY) return qv__error(QV_EREADONLY, "the cache at %s was opened read-only", c->path);
    w->c = c;
    qv_status st = c->store->ops->write_begin(c->store, &w->txn);
    if (!st && (st = meta_get_uint(c, w->txn, "bytes", &w->bytes))) c->store->ops->abort(c->store, w->txn);
    return st;
}

static qv_status finish_write(wctx *w, qv_status st) {
    if (!st) st = meta_put_uint(w->c, w->txn, "bytes", w->bytes);
    if (st) {
        w->c->store->ops->abort(w->c->store, w->txn);
        return st;
    }
    return w->c->store->ops->commit(w->c->store, w->txn);
}

qv_status qv_cache_evict(qv_cache *cache, const qv_digest *key) {
    if (!cache || !key) return qv__error(QV_EINVAL, "qv_cache_evict: NULL argument");
    wctx w;
    qv_status st = write_txn(cache, &w);
    if (st) return st;
    st = remove_call(&w, key);
    if (st == QV_NOTFOUND) {
        cache->store->ops->abort(cache->store, w.txn);
        return QV_NOTFOUND;
    }
    return finish_write(&w, st);
}

static int digest_cmp(const void *a, const void *b) {
    return memcmp(a, b, 16);
}

typedef struct {
    key_list refs;
    uint64_t bytes;
    qv_status st;
} mark_ctx;

static qv_status mark_visit(int key, const uint8_t *item, size_t len, void *userdata) {
    if ((key == R_RESULT || key == R_ARGS || key == R_KWARGS) && is_ref(item, len)) {
        if (collect_key(item + 6, 16, NULL, 0, &((mark_ctx *)userdata)->refs)) return qv__nomem();
    }
    return QV_OK;
}

static int mark_record(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    mark_ctx *m = userdata;
    m->bytes += vlen;
    record_walk(val, vlen, mark_visit, m); /* broken records are verify's business */
    return 0;
}

static int collect_all(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    return collect_key(key, klen, val, vlen, userdata);
}

qv_status qv_cache_gc(qv_cache *cache, uint64_t *values_freed) {
    if (values_freed) *values_freed = 0;
    if (!cache) return qv__error(QV_EINVAL, "qv_cache_gc: cache is NULL");
    wctx w;
    qv_status st = write_txn(cache, &w);
    if (st) return st;
    qv_store *s = cache->store;
    mark_ctx m = {{NULL, 0, 0, 0, 0}, 0, QV_OK};
    key_list values = {NULL, 0, 0, 0, 0};
    if (!(st = s->ops->scan(s, w.txn, T_CALLS, NULL, 0, mark_record, &m)))
        st = s->ops->scan(s, w.txn, T_VALUES, NULL, 0, collect_all, &values);
    /* an incomplete mark phase would free values still in use */
    if (!st && (m.refs.failed || values.failed)) st = qv__nomem();
    if (m.refs.n) qsort(m.refs.keys, m.refs.n, sizeof(qv_digest), digest_cmp);
    uint64_t freed = 0, bytes = m.bytes;
    for (size_t i = 0; !st && i < values.n; i++) {
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
            if (!(st = s->ops->get(s, w.txn, T_VALUES, d->bytes, 16, &v, &n))) {
                bytes += n;
                st = put_count(&w, T_REFS, d, uses);
            }
        }
    }
    free(m.refs.keys);
    free(values.keys);
    w.bytes = bytes;
    if ((st = finish_write(&w, st))) return st;
    if (values_freed) *values_freed = freed;
    return QV_OK;
}

typedef struct {
    qv_cache *c;
    qv_txn *txn;
    qv_hasher *h;
    key_list bad_calls, bad_values;
    int ok;
} verify_ctx;

static qv_status verify_visit(int key, const uint8_t *item, size_t len, void *userdata) {
    verify_ctx *v = userdata;
    if (!((key == R_RESULT || key == R_ARGS || key == R_KWARGS) && is_ref(item, len))) return QV_OK;
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
        return collect_key(key, 16, NULL, 0, &v->bad_values);
    return 0;
}

static void hash_head(qv_hasher *h, int major, uint64_t n) {
    uint8_t b[9];
    size_t len = qv__encode_uint(b, n);
    b[0] |= (uint8_t)(major << 5);
    qv__hasher_update(h, b, len);
}

/* An argument as it was in the call: a value reference resolved. */
static qv_status hash_item(verify_ctx *v, const uint8_t *item, size_t len) {
    if (is_ref(item, len)) {
        const void *val;
        qv_status st = v->c->store->ops->get(v->c->store, v->txn, T_VALUES, item + 6, 16, &val, &len);
        if (st) return st;
        item = val;
    }
    qv__hasher_update(v->h, item, len);
    return QV_OK;
}

/* The digest of the call a record says it holds, rebuilt from its name,
 * version, args and kwargs (fields R_NAME..R_KWARGS, in that order). */
static qv_status record_call_digest(verify_ctx *v, const uint8_t *rec, size_t len, qv_digest *out) {
    static const uint8_t head[] = {0x85, 0x6e, 'q', 'u', 'i', 'v', 'e', 'r', '/', 'c', 'a', 'l', 'l', '/', 'v', '1'};
    qv_decoder dec;
    qv_decoder_reset(&dec, rec, len);
    qv_type t;
    uint64_t n, inner;
    size_t s, e;
    int want = R_NAME;
    qv__hasher_reset(v->h);
    qv__hasher_update(v->h, head, sizeof head);
    if (qv_decoder_next(&dec, &t) || t != QV_TYPE_MAP) return QV_ECORRUPT;
    qv_decoder_get_count(&dec, &n);
    for (uint64_t i = 0; i < n; i++) {
        int64_t k;
        if (qv_decoder_next(&dec, &t) || t != QV_TYPE_INT || qv_decoder_get_int(&dec, &k)) return QV_ECORRUPT;
        if (k >= R_NAME && k <= R_KWARGS && k != want++) return QV_ECORRUPT;
        if (k == R_ARGS || k == R_KWARGS) {
            if (qv_decoder_next(&dec, &t) || t != (k == R_ARGS ? QV_TYPE_LIST : QV_TYPE_MAP)) return QV_ECORRUPT;
            qv_decoder_get_count(&dec, &inner);
            hash_head(v->h, k == R_ARGS ? 4 : 5, inner);
            for (uint64_t j = 0; j < inner; j++) {
                if (k == R_KWARGS) {
                    if (qv__decoder_item_span(&dec, &s, &e)) return QV_ECORRUPT;
                    qv__hasher_update(v->h, rec + s, e - s);
                }
                if (qv__decoder_item_span(&dec, &s, &e) || hash_item(v, rec + s, e - s)) return QV_ECORRUPT;
            }
        } else {
            if (qv__decoder_item_span(&dec, &s, &e)) return QV_ECORRUPT;
            if (k == R_NAME || k == R_VERSION) qv__hasher_update(v->h, rec + s, e - s);
        }
    }
    if (want != R_KWARGS + 1) return QV_ECORRUPT;
    qv__hasher_digest(v->h, out);
    return QV_OK;
}

static int verify_call(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    verify_ctx *v = userdata;
    size_t s, e;
    qv_digest call;
    v->ok = klen == 16 && qv_validate(val, vlen) == QV_OK && record_result(val, vlen, &s, &e) == QV_OK;
    if (v->ok && record_walk(val, vlen, verify_visit, v) != QV_OK) v->ok = 0;
    /* a record filed under a key that is not its call's digest answers the wrong call */
    if (v->ok && (record_call_digest(v, val, vlen, &call) || memcmp(call.bytes, key, 16))) v->ok = 0;
    if (!v->ok) return collect_key(key, 16, NULL, 0, &v->bad_calls);
    return 0;
}

qv_status qv_cache_verify(qv_cache *cache, int repair, uint64_t *bad) {
    if (bad) *bad = 0;
    if (!cache) return qv__error(QV_EINVAL, "qv_cache_verify: cache is NULL");
    qv_store *s = cache->store;
    wctx w = {cache, NULL, 0};
    qv_hasher *h = qv__hasher_new();
    if (!h) return qv__nomem();
    qv_status st = repair ? write_txn(cache, &w) : s->ops->read_begin(s, &w.txn);
    if (st) {
        qv__hasher_free(h);
        return st;
    }
    verify_ctx v = {cache, w.txn, h, {NULL, 0, 0, 0, 0}, {NULL, 0, 0, 0, 0}, 1};
    if (!(st = s->ops->scan(s, w.txn, T_VALUES, NULL, 0, verify_value, &v)))
        st = s->ops->scan(s, w.txn, T_CALLS, NULL, 0, verify_call, &v);
    if (!st && (v.bad_calls.failed || v.bad_values.failed)) st = qv__nomem();
    uint64_t nbad = v.bad_calls.n + v.bad_values.n;
    if (repair) {
        for (size_t i = 0; !st && i < v.bad_calls.n; i++) st = remove_call(&w, &v.bad_calls.keys[i]);
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
    if (repair && nbad) return qv_cache_gc(cache, NULL);
    return QV_OK;
}

qv_status qv_cache_sync(qv_cache *cache) {
    if (!cache) return qv__error(QV_EINVAL, "qv_cache_sync: cache is NULL");
    flush_pending_touches(cache);
    return cache->store->ops->sync(cache->store);
}

static const char *const stat_names[QV_STAT_COUNT] = {
    "hits", "misses", "entries", "values", "bytes", "max_bytes", "stores", "commits", "evictions", "corrupt", "map_size",
};

const char *qv_stat_name(int which) {
    return which >= 0 && which < QV_STAT_COUNT ? stat_names[which] : NULL;
}

qv_status qv_cache_stat(qv_cache *cache, int which, uint64_t *out) {
    if (!cache || !out) return qv__error(QV_EINVAL, "qv_cache_stat: NULL argument");
    if (which < 0 || which >= QV_STAT_COUNT) return qv__error(QV_EINVAL, "unknown statistic %d", which);
    qv_store *s = cache->store;
    qv_txn *txn;
    qv_status st = QV_OK;
    switch (which) {
    case QV_STAT_ENTRIES:
    case QV_STAT_VALUES:
    case QV_STAT_BYTES:
        if ((st = s->ops->read_begin(s, &txn))) return st;
        if (which == QV_STAT_BYTES) st = meta_get_uint(cache, txn, "bytes", out);
        else st = s->ops->count(s, txn, which == QV_STAT_ENTRIES ? T_CALLS : T_VALUES, out);
        s->ops->read_end(s, txn);
        return st;
    case QV_STAT_MAX_BYTES:
        *out = cache->max_bytes;
        return QV_OK;
    case QV_STAT_MAP_SIZE:
        *out = s->ops->map_size(s);
        return QV_OK;
    default:
        *out = 0;
        for (int i = 0; i < QV_SHARDS; i++) *out += atomic_load_explicit(&cache->stats[i].n[which], memory_order_relaxed);
        return QV_OK;
    }
}

/* ------------------------------------------------------------------ query */

struct qv_iter {
    qv_digest *keys;
    size_t n, pos;
};

typedef struct {
    key_list keys;
    uint8_t prefix[8];
} name_scan;

static int collect_name(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    name_scan *ns = userdata;
    if (klen != 24 || memcmp(key, ns->prefix, 8) != 0) return 1;
    return collect_key(key, klen, val, vlen, &ns->keys);
}

typedef struct {
    const uint8_t *name;
    size_t len;
    int match;
} name_check;

static qv_status name_check_visit(int key, const uint8_t *item, size_t len, void *userdata) {
    name_check *nc = userdata;
    if (key == R_NAME) nc->match = len == nc->len && memcmp(item, nc->name, len) == 0;
    return QV_OK;
}

qv_status qv_cache_query(qv_iter **out, qv_cache *cache, const char *name) {
    if (!out) return qv__error(QV_EINVAL, "qv_cache_query: out is NULL");
    *out = NULL;
    if (!cache) return qv__error(QV_EINVAL, "qv_cache_query: cache is NULL");
    qv_iter *it = calloc(1, sizeof *it);
    if (!it) return qv__nomem();
    qv_store *s = cache->store;
    qv_txn *txn;
    qv_status st = s->ops->read_begin(s, &txn);
    if (st) {
        free(it);
        return st;
    }
    name_scan ns = {{NULL, 0, 0, 0, 0}, {0}};
    if (!name) {
        st = s->ops->scan(s, txn, T_CALLS, NULL, 0, collect_all, &ns.keys);
    } else {
        /* the index is keyed by a hash of the name's encoding: confirm each */
        size_t nlen = strlen(name);
        uint8_t *enc = malloc(nlen + 9);
        size_t hl = 0;
        if (!enc) st = qv__nomem();
        else {
            qv_encoder *e = qv__thread_encoder_for(QV_ENCODER_RECORDS);
            const void *p;
            if (!e) st = qv__nomem();
            else {
                qv_encoder_reset(e);
                if (!(st = qv_encoder_text(e, name, nlen)) && !(st = qv_encoder_finish(e, &p, &hl))) memcpy(enc, p, hl);
            }
        }
        if (!st) {
            qv__put_be64(ns.prefix, qv__hash64(enc, hl));
            st = s->ops->scan(s, txn, T_NAMES, ns.prefix, 8, collect_name, &ns);
        }
        size_t kept = 0;
        for (size_t i = 0; !st && i < ns.keys.n; i++) {
            const void *v;
            size_t n;
            name_check nc = {enc, hl, 0};
            if (s->ops->get(s, txn, T_CALLS, ns.keys.keys[i].bytes, 16, &v, &n) == QV_OK &&
                record_walk(v, n, name_check_visit, &nc) == QV_OK && nc.match)
                ns.keys.keys[kept++] = ns.keys.keys[i];
        }
        ns.keys.n = kept;
        free(enc);
    }
    s->ops->read_end(s, txn);
    if (!st && ns.keys.failed) st = qv__nomem();
    if (st) {
        free(ns.keys.keys);
        free(it);
        return st;
    }
    it->keys = ns.keys.keys;
    it->n = ns.keys.n;
    *out = it;
    return QV_OK;
}

qv_status qv_iter_next(qv_iter *iter, qv_digest *key) {
    if (!iter || !key) return qv__error(QV_EINVAL, "qv_iter_next: NULL argument");
    if (iter->pos >= iter->n) return QV_NOTFOUND;
    *key = iter->keys[iter->pos++];
    return QV_OK;
}

size_t qv_iter_count(const qv_iter *iter) {
    return iter ? iter->n : 0;
}

void qv_iter_free(qv_iter *iter) {
    if (!iter) return;
    free(iter->keys);
    free(iter);
}
