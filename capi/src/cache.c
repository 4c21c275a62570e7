/* The cache: call records and content-addressed values over a store.
 *
 * A hit reads one table (calls) in one read transaction when the result is
 * small enough to live inside the record, which is the common case. Stores
 * from many threads are queued and committed together by whichever thread
 * finds the writer idle (group commit), so durable writes share fsyncs.
 * docs/FORMAT.md describes every table and byte. This file opens and closes
 * caches and holds the hit path; cache.h lists the others. */
#include <limits.h>
#include <stddef.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sign.h"
#include "remote.h"
#include "stack.h"
#include "tier.h"

const char *const qv__table_names[T_COUNT] = {"meta", "values", "refs", "calls", "names", "atime", "lru", "hits", "funcs"};

#define FORMAT_VERSION 1
#define DEFAULT_INLINE_LIMIT 512
/* A memory cache without a limit of its own keeps this much: it lives in the
 * process's memory, and a long-running process must not grow without bound
 * (docs/DECISIONS.md). */
#define DEFAULT_MEMORY_MAX_BYTES ((uint64_t)256 << 20)
/* How often, at most, hits write their access times on their own when no
 * store does it for them; QUIVER_LRU_FLUSH_MS, read at open, overrides. */
#define TOUCH_FLUSH_NS ((int64_t)5000 * 1000000)

/* A forked child inherits the queue and its lock as some parent thread left
 * them. The first thread of the child to get here claims the repair with an
 * atomic, not a lock (a lock could itself be inherited held); others wait
 * for it. */
void qv__cache_after_fork(qv_cache *c) {
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
        /* the parent writes the hits it counted: counted here too, they would
         * be written twice */
        for (size_t s = 0; c->hit_rows && s < QV_SHARDS; s++)
            for (size_t i = 0; i < TOUCH_SLOTS; i++) atomic_store_explicit(&c->hit_rows[s][i].n, 0, memory_order_relaxed);
        /* and the access times it noted */
        for (size_t i = 0; i < TOUCH_SLOTS; i++) atomic_store_explicit(&c->touched[i].w[0], 0, memory_order_relaxed);
        atomic_store(&c->touch_since, 0);
        /* and the totals of the counts it has not written yet */
        for (int i = 0; i < QV_TOTALS; i++) atomic_store(&c->totalled[i], qv__handle_count(c, qv__total_base[i]));
        atomic_store(&c->bytes_pending, 0); /* and the size it has not written */
        qv__fn_after_fork(c);
        atomic_store(&c->fork_gen, gen);
        return;
    }
    while (atomic_load(&c->fork_gen) != gen) sched_yield();
}

/* ----------------------------------------------------------------- public */

/* Every cache with a store of its own that is open in this process. exit()
 * writes what each has counted and not written, as close would: a Lua
 * script ending in os.exit, a C program that never closes, a Python process
 * whose default cache outlives its interpreter. A process that ends in
 * _exit flushes for itself (qv_cache_flush; Python's pool workers do). */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static qv_cache *open_caches;
static pthread_once_t exit_flush_once = PTHREAD_ONCE_INIT;

void qv_cache_flush_all(void) {
    /* Bounded: a child of fork() may have inherited the lock held by a
     * thread it does not have; its counts are then lost, never its exit. */
    for (int tries = 0; pthread_mutex_trylock(&open_lock); tries++) {
        if (tries == 1000) return;
        sched_yield();
    }
    for (qv_cache *c = open_caches; c; c = c->open_next) qv__flush_pending_touches(c);
    pthread_mutex_unlock(&open_lock);
}

static void install_exit_flush(void) {
    atexit(qv_cache_flush_all);
}

static void track_open(qv_cache *c) {
    pthread_once(&exit_flush_once, install_exit_flush);
    pthread_mutex_lock(&open_lock);
    c->open_next = open_caches;
    if (open_caches) open_caches->open_prev = c;
    open_caches = c;
    c->tracked = 1;
    pthread_mutex_unlock(&open_lock);
}

static void untrack_open(qv_cache *c) {
    if (!c->tracked) return;
    pthread_mutex_lock(&open_lock);
    if (c->open_prev) c->open_prev->open_next = c->open_next;
    else open_caches = c->open_next;
    if (c->open_next) c->open_next->open_prev = c->open_prev;
    pthread_mutex_unlock(&open_lock);
}

/* Options structs grow by appending fields; a caller compiled against an
 * older version passes the smaller struct it knows. */
static size_t options_size(uint32_t version) {
    return version < 2 ? offsetof(qv_cache_options, timeout_ms) : sizeof(qv_cache_options);
}

qv_status qv__cache_options_copy(qv_cache_options *o, const qv_cache_options *opts) {
    qv_cache_options d = QV_CACHE_OPTIONS_INIT;
    *o = d;
    if (!opts) return QV_OK;
    if (opts->version == 0 || opts->version > QV_CACHE_OPTIONS_VERSION)
        return qv__error(QV_EINVAL, "qv_cache_options version %u is not supported (1..%d)", opts->version,
                         QV_CACHE_OPTIONS_VERSION);
    memcpy(o, opts, options_size(opts->version));
    return QV_OK;
}

qv_status qv_cache_options_init(qv_cache_options *opts, uint32_t version) {
    if (!opts) return qv__error(QV_EINVAL, "qv_cache_options_init: opts is NULL");
    if (version == 0 || version > QV_CACHE_OPTIONS_VERSION)
        return qv__error(QV_EINVAL, "qv_cache_options version %u is not supported (1..%d)", version,
                         QV_CACHE_OPTIONS_VERSION);
    qv_cache_options d = QV_CACHE_OPTIONS_INIT;
    d.version = version;
    memcpy(opts, &d, options_size(version)); /* a version 1 caller's struct is smaller */
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
    if (!st && !(st = qv__meta_put_uint(c, txn, "format", FORMAT_VERSION)) &&
        !(st = s->ops->put(s, txn, T_META, "created-by", 10, text, text_len)) &&
        !(st = qv__meta_put_uint(c, txn, "bytes", 0)))
        return s->ops->commit(s, txn);
    s->ops->abort(s, txn);
    return st;
}

static qv_status cache_new(qv_cache **out, const char *path, const qv_cache_options *opts, int memory) {
    if (!out) return qv__error(QV_EINVAL, "out is NULL");
    *out = NULL;
    qv_cache_options o;
    qv_status st = qv__cache_options_copy(&o, opts);
    if (st) return st;
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
    c->count_hits = !(o.flags & QV_CACHE_READONLY);
    if (c->count_hits) {
        size_t rows = QV_SHARDS * sizeof *c->hit_rows;
        if (!(c->hit_rows = aligned_alloc(64, rows))) {
            free(c);
            return qv__nomem();
        }
        memset(c->hit_rows, 0, rows);
    }
    const char *period = getenv("QUIVER_LRU_FLUSH_MS");
    c->touch_period_ns = period && *period ? (int64_t)strtoll(period, NULL, 10) * 1000000 : TOUCH_FLUSH_NS;
    pthread_mutex_init(&c->qlock, NULL);
    pthread_mutex_init(&c->fn_lock, NULL);
    atomic_init(&c->fork_gen, qv__fork_generation());
    atomic_init(&c->fixing_gen, qv__fork_generation());
    qv_store_config cfg = {qv__table_names,  T_COUNT,    o.durability, (o.flags & QV_CACHE_READONLY) != 0,
                           o.map_size, (o.flags & QV_CACHE_ALLOW_NETWORK_FS) != 0, 0};
    st = qv__signer_from_options(&c->signer, &o);
    if (st) {
        qv_cache_close(c);
        return st;
    }
    if (memory) {
        c->path = strdup(":memory:");
        st = c->path ? qv__store_memory_open(&c->store, &cfg) : qv__nomem();
    } else {
        st = qv__store_lmdb_open(&c->store, path, &cfg);
        if (!st && !cfg.readonly && qv__store_lmdb_readonly(c->store)) {
            /* a directory we cannot write: the store warned and opened read-only */
            c->flags |= QV_CACHE_READONLY;
            c->track_lru = c->count_hits = 0;
            cfg.readonly = 1;
        }
        if (!st) {
            char real[PATH_MAX];
            c->path = strdup(realpath(path, real) ? real : path);
            if (!c->path) st = qv__nomem();
        }
    }
    if (!st && c->signer) st = qv__store_signed_open(&c->store, c->store, c->signer, &cfg);
    if (!st) st = init_meta(c);
    if (!st) st = qv__sign_open_meta(c);
    if (!st && c->max_bytes && !(c->flags & QV_CACHE_READONLY)) st = qv__backfill_atimes(c);
    if (st) {
        qv_cache_close(c);
        return st;
    }
    track_open(c);
    *out = c;
    return QV_OK;
}

/* A cache that is no store of its own (tier.h): a remote tier or a stack.
 * state is the caller's to free when this fails. */
qv_status qv__cache_new_tier(qv_cache **out, const char *path, uint32_t inline_limit, const struct qv_tier_ops *ops,
                             void *state) {
    *out = NULL;
    qv_cache *c = aligned_alloc(64, (sizeof *c + 63) & ~(size_t)63);
    if (!c) return qv__nomem();
    memset(c, 0, sizeof *c);
    if (!(c->path = strdup(path))) {
        free(c);
        return qv__nomem();
    }
    atomic_init(&c->refs, 1);
    c->inline_limit = inline_limit ? inline_limit : DEFAULT_INLINE_LIMIT;
    pthread_mutex_init(&c->qlock, NULL);
    pthread_mutex_init(&c->fn_lock, NULL);
    atomic_init(&c->fork_gen, qv__fork_generation());
    atomic_init(&c->fixing_gen, qv__fork_generation());
    c->tier = ops;
    c->tier_state = state;
    *out = c;
    return QV_OK;
}

qv_status qv_cache_open(qv_cache **out, const char *path, const qv_cache_options *opts) {
    if (!path) {
        if (out) *out = NULL;
        return qv__error(QV_EINVAL, "qv_cache_open: path is NULL");
    }
    /* A URL is never a directory: "redis://h/0" must not become ./redis:/h/0 */
    if (strstr(path, "://")) {
        if (!strncmp(path, "redis://", 8) || !strncmp(path, "unix://", 7)) return qv__remote_open(out, path, opts);
        if (out) *out = NULL;
        return qv__error(QV_EINVAL, "%s: not a cache; a URL opens a remote tier only as redis://host[:port][/db] "
                                    "or unix:///path/to/redis.sock",
                         path);
    }
    return cache_new(out, path, opts, strcmp(path, ":memory:") == 0);
}

qv_status qv_cache_open_memory(qv_cache **out) {
    return cache_new(out, NULL, NULL, 1);
}

const char *qv_cache_path(const qv_cache *cache) {
    return cache ? cache->path : NULL;
}

int qv_cache_readonly(const qv_cache *cache) {
    qv_cache *local, *remote;
    if (!cache) return 0;
    if (qv__stack_tiers((qv_cache *)cache, &local, &remote)) return qv_cache_readonly(local) && qv_cache_readonly(remote);
    return (cache->flags & QV_CACHE_READONLY) != 0;
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
    untrack_open(cache); /* first: exit() must not flush it while it goes */
    if (cache->tier) cache->tier->close(cache);
    if (cache->store) {
        qv__flush_pending_touches(cache);
        cache->store->ops->close(cache->store);
    }
    qv_store *shared = atomic_load(&cache->shared);
    if (shared) shared->ops->close(shared);
    qv__signer_free(cache->signer);
    free(cache->hit_rows);
    qv__tally_free(&cache->fn_pending);
    pthread_mutex_destroy(&cache->fn_lock);
    pthread_mutex_destroy(&cache->qlock);
    free(cache->path);
    free(cache);
}

qv_status qv_cache_contains(qv_cache *cache, const qv_digest *key) {
    if (!cache || !key) return qv__error(QV_EINVAL, "qv_cache_contains: NULL argument");
    if (cache->tier) return cache->tier->contains(cache, key);
    qv_txn *txn;
    qv_status st = cache->store->ops->read_begin(cache->store, &txn);
    if (st) return st;
    const void *v;
    size_t n;
    st = cache->store->ops->get(cache->store, txn, T_CALLS, key->bytes, 16, &v, &n);
    cache->store->ops->read_end(cache->store, txn);
    return st == QV__EFORGED ? QV_NOTFOUND : st;
}

qv_status qv__corrupt_miss(qv_cache *c, const qv_digest *key, const char *what) {
    char hex[33];
    qv_digest_hex(key, hex);
    qv__cache_count(c, QV_STAT_CORRUPT, 1);
    qv__cache_count(c, QV_STAT_MISSES, 1);
    qv__fn_note_corrupt(key);
    qv__error(QV_ECORRUPT, "%s: entry %s is corrupt (%s); treated as a miss", c->path, hex, what);
    return QV_NOTFOUND;
}

/* An entry whose signature failed: someone without the secret wrote it. */
qv_status qv__forged_miss(qv_cache *c, const qv_digest *key) {
    char hex[33], why[256];
    qv_digest_hex(key, hex);
    snprintf(why, sizeof why, "%s", qv_errmsg());
    qv__cache_count(c, QV_STAT_FORGED, 1);
    qv__cache_count(c, QV_STAT_MISSES, 1);
    qv__fn_note_corrupt(key);
    qv__error(QV_ECORRUPT, "%s: entry %s is forged (%s); treated as a miss", c->path, hex, why);
    return QV_NOTFOUND;
}

/* The run time recorded after the result: key R_DURATION and an integer. */
#define HIT_STACK_BYTES 1024

/* Find key's result and copy it out of the store: into buf when it fits in
 * cap bytes, else into *heap (the caller frees it). The transaction ends
 * before this returns, so whatever the caller runs next (a decoder that makes
 * a memoized call of its own, which may store and grow the map) holds no
 * transaction and no store lock. */
static inline __attribute__((always_inline)) qv_status read_result(qv_cache *cache, const qv_digest *key, uint8_t *buf,
                                                                  size_t cap, const uint8_t **out, size_t *out_len,
                                                                  uint8_t **heap, int64_t *duration_ns) {
    /* before counting: a forked child's totals start from what it inherited */
    qv__cache_after_fork(cache);
    qv_store *s = cache->store;
    qv_txn *txn;
    qv_status st = s->ops->read_begin(s, &txn);
    if (st) return st;
    const void *v;
    size_t n, rs, re;
    st = s->ops->get(s, txn, T_CALLS, key->bytes, 16, &v, &n);
    if (st) {
        s->ops->read_end(s, txn);
        if (st == QV_NOTFOUND) qv__cache_count(cache, QV_STAT_MISSES, 1);
        if (st == QV__EFORGED) return qv__forged_miss(cache, key);
        return st;
    }
    const uint8_t *rec = v;
    if ((st = qv__record_result(rec, n, &rs, &re))) {
        s->ops->read_end(s, txn);
        return qv__corrupt_miss(cache, key, qv_errmsg());
    }
    const uint8_t *data = rec + rs;
    size_t len = re - rs;
    if (duration_ns) *duration_ns = qv__record_duration(rec, n, re);
    if (qv__record_is_ref(data, len)) {
        if ((st = s->ops->get(s, txn, T_VALUES, data + 6, 16, &v, &len)) || qv_validate(v, len)) {
            s->ops->read_end(s, txn);
            if (st == QV__EFORGED) return qv__forged_miss(cache, key);
            if (st && st != QV_NOTFOUND) return st;
            return qv__corrupt_miss(cache, key, st ? "its result value is missing" : "its result value is invalid");
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
    unsigned shard = qv__thread_shard(); /* once: a thread-local read in a shared library is a call */
    atomic_fetch_add_explicit(&cache->stats[shard].n[QV_STAT_HITS], 1, memory_order_relaxed);
    if (cache->count_hits) qv__touch(cache, key, shard);
    return QV_OK;
}

qv_status qv_cache_get_with(qv_cache *cache, const qv_digest *key, qv_result_cb cb, void *userdata) {
    return qv__cache_get_with(cache, key, cb, userdata, NULL);
}

qv_status qv__cache_get_with(qv_cache *cache, const qv_digest *key, qv_result_cb cb, void *userdata,
                             int64_t *duration_ns) {
    if (QV_UNLIKELY(!cache || !key || !cb)) return qv__error(QV_EINVAL, "qv_cache_get_with: NULL argument");
    if (QV_UNLIKELY(cache->tier != NULL)) return cache->tier->get_with(cache, key, cb, userdata, duration_ns);
    uint8_t buf[HIT_STACK_BYTES], *heap = NULL;
    const uint8_t *data;
    size_t len;
    qv_status st = read_result(cache, key, buf, sizeof buf, &data, &len, &heap, duration_ns);
    if (st) return st;
    st = cb(data, len, userdata);
    if (QV_UNLIKELY(heap != NULL)) free(heap);
    return st;
}

typedef struct {
    void **data;
    size_t *len;
} copy_out;

static qv_status copy_result(const void *data, size_t len, void *userdata) {
    copy_out *out = userdata;
    if (!(*out->data = malloc(len))) return qv__nomem();
    memcpy(*out->data, data, len);
    *out->len = len;
    return QV_OK;
}

qv_status qv_cache_get(qv_cache *cache, const qv_digest *key, void **data, size_t *len) {
    if (!data || !len) return qv__error(QV_EINVAL, "qv_cache_get: NULL output");
    *data = NULL;
    *len = 0;
    if (!cache || !key) return qv__error(QV_EINVAL, "qv_cache_get: NULL argument");
    if (cache->tier) {
        copy_out out = {data, len};
        return cache->tier->get_with(cache, key, copy_result, &out, NULL);
    }
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
