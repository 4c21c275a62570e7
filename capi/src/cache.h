/* The cache's own declarations, shared by its files (never installed):
 * cache.c (open, close, the hit path), record.c (the call record), commit.c
 * (stores and group commit), lru.c (access times and eviction),
 * maintenance.c (evict, gc, verify, stats) and query.c. */
#ifndef QV_CACHE_H
#define QV_CACHE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "store.h"

enum { T_META, T_VALUES, T_REFS, T_CALLS, T_NAMES, T_ATIME, T_LRU, T_HITS, T_FUNCS, T_COUNT };
_Static_assert(T_COUNT <= QV_STORE_MAX_TABLES, "the store holds at most QV_STORE_MAX_TABLES tables");
extern const char *const qv__table_names[T_COUNT];

#define TOUCH_SLOTS 1024 /* a power of two */

/* Keys of a call record, a CBOR map with small integer keys. The result and
 * its run time come first so that a hit reads no further than it needs. */
enum { R_RESULT, R_DURATION, R_START, R_NAME, R_VERSION, R_ARGS, R_KWARGS, R_LANG, R_META, R_COUNT };

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
    /* the name's encoding, in the caller's call buffer (alive until done);
     * NULL when the record was not built from a call (a stack's copies) */
    const uint8_t *name;
    size_t name_len;
    qv_status status;
    char message[256]; /* the committing thread's error, for the owner's thread */
    int done;
    pthread_cond_t wake; /* its owner sleeps on its own condition */
} pending;

typedef struct {
    _Atomic uint64_t w[2]; /* a digest's two halves; w[0] == 0: empty */
} touch_slot;

/* Hits on the key of one touch slot, counted by one thread shard: n is the
 * key's tag (the high half of w[1], low bit set, so never 0) in its high 32
 * bits and the count in its low 32; t the coarse monotonic time of the last
 * of them. A hit that finds another key's tag starts the count over, losing
 * that key's unwritten hits; a count is only ever written for the key whose
 * tag it carries, so a flush never credits a key with another's hits (but for
 * two keys in one slot with equal 31-bit tags). */
typedef struct {
    _Atomic uint64_t n;
    _Atomic int64_t t;
} hit_slot;

/* Counts per function (fnstats.c; the funcs table, docs/FORMAT.md): a row per
 * function name, keyed like the names index by the hash of the name's
 * encoding. The order is the row format's: counters are only appended. */
enum { FN_HITS, FN_MISSES, FN_STORES, FN_EVICTIONS, FN_CORRUPT, FN_SAVED_NS, FN_COUNT };

typedef struct {
    uint64_t hash;  /* qv__hash64 of name; 0: an empty slot */
    uint8_t *name;  /* the name's CBOR text item, owned */
    size_t name_len;
    uint64_t n[FN_COUNT];
} fn_row;

/* Counts not yet written, by function: an open-addressed table. */
typedef struct {
    fn_row *rows;
    size_t used, cap; /* cap a power of two, or 0 */
} fn_tally;

struct qv_cache {
    _Atomic int refs; /* the host's handle, plus every context and future using it */
    qv_store *store;  /* NULL when tier is set */
    /* The store of shared counters and dicts (shared.c), opened at first use:
     * an environment of its own that never waits for the disk. */
    _Atomic(qv_store *) shared;
    /* A remote tier or a stack (tier.h): every public call goes through it. */
    const struct qv_tier_ops *tier;
    void *tier_state;
    /* Signs records and values (sign.h); NULL: unsigned. Owned and freed at
     * close. A remote tier sets its own; a stack has none (qv_cache_signed
     * asks its tiers). */
    struct qv_signer *signer;
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
    /* Hits per call, for the hits table: every writable handle counts (and
     * so touches; track_lru implies it). Each thread shard counts in its own
     * row, so a hot key hit from many threads writes no line another core
     * reads; the flush that writes the touches adds the rows' counts. */
    int count_hits;
    hit_slot (*hit_rows)[TOUCH_SLOTS]; /* QV_SHARDS rows; NULL unless count_hits */
    int64_t touch_period_ns;
    _Atomic int64_t touch_since; /* monotonic time of the oldest unwritten touch; 0: none */
    touch_slot touched[TOUCH_SLOTS];
    /* Of this handle's counts, what it has added to the cache's totals
     * (QV_STAT_TOTAL_*); changed only inside write transactions. */
    _Atomic uint64_t totalled[QV_STAT_TOTAL_CORRUPT - QV_STAT_TOTAL_HITS + 1];
    /* Misses, stores and corrupt entries by function, not yet written: the
     * same writes that carry the totals carry them (count_hits handles only). */
    pthread_mutex_t fn_lock;
    fn_tally fn_pending;
    _Atomic int fn_dirty;
    _Atomic uint64_t counts_written_ns; /* wall clock of the last write of totals and fn counts */
    /* How much this handle's stores have changed the size counter ("bytes"
     * in meta) since it was last written: a store leaves its change here,
     * and the writes that carry the totals carry it (commit.c). */
    _Atomic int64_t bytes_pending;
    /* the caches open in this process, which exit() flushes (cache.c) */
    qv_cache *open_prev, *open_next;
    int tracked;
};

/* QV_STAT_TOTAL_HITS + i adds up qv__total_base[i] across handles: the
 * meta entry "total.<name of the base>" holds it (lru.c writes it). */
#define QV_TOTALS 5
static const int qv__total_base[QV_TOTALS] = {QV_STAT_HITS, QV_STAT_MISSES, QV_STAT_STORES, QV_STAT_EVICTIONS,
                                              QV_STAT_CORRUPT};
static const char *const qv__total_key[QV_TOTALS] = {"total.hits", "total.misses", "total.stores",
                                                     "total.evictions", "total.corrupt"};

static inline uint64_t qv__handle_count(qv_cache *c, int which) {
    uint64_t n = 0;
    for (int i = 0; i < QV_SHARDS; i++) n += atomic_load_explicit(&c->stats[i].n[which], memory_order_relaxed);
    return n;
}

static inline void qv__cache_count(qv_cache *c, int which, uint64_t n) {
    atomic_fetch_add_explicit(&c->stats[qv__thread_shard()].n[which], n, memory_order_relaxed);
}

static inline int64_t qv__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef qv_status (*record_visit)(int key, const uint8_t *item, size_t len, void *userdata);

typedef struct {
    qv_encoder *enc;
    uint32_t inline_limit;
    valref *refs;
    size_t nrefs, cap;
    /* an item inlined whole is long enough to nest near QV_MAX_DEPTH (an
     * item of n bytes nests at most n deep), so the record must be checked */
    int may_be_deep;
} record_builder;

typedef struct {
    qv_cache *c;
    qv_txn *txn;
    uint64_t bytes;    /* the size counter as this transaction sees it (qv__bytes_begin) */
    fn_tally *evicted; /* set while evicting for size: qv__remove_call counts the calls by function */
    uint64_t bytes_start;
    int64_t bytes_taken; /* of c->bytes_pending, what bytes_start holds */
    int bytes_read;      /* else bytes_start is a base, not the counter */
    int bytes_written;
} wctx;

typedef struct {
    qv_digest *keys;
    size_t n, cap, want;
    int failed; /* out of memory: the list is incomplete */
} key_list;

typedef struct {
    qv_cache *c;
    qv_txn *txn;
    qv_hasher *h;
    key_list bad_calls, bad_values;
    int ok;
} verify_ctx;

/* *o: the defaults, overwritten by as much of opts (may be NULL) as its
 * version has; QV_EINVAL for a version this library does not know. */
qv_status qv__cache_options_copy(qv_cache_options *o, const qv_cache_options *opts);
/* A lookup that met an unreadable entry, or one whose tag failed (written
 * without the secret): counted, explained in qv_errmsg(), and a miss. */
qv_status qv__corrupt_miss(qv_cache *c, const qv_digest *key, const char *what);
qv_status qv__forged_miss(qv_cache *c, const qv_digest *key);
void qv__cache_after_fork(qv_cache *c);
int qv__record_is_ref(const uint8_t *p, size_t len);
qv_status qv__record_result(const uint8_t *rec, size_t len, size_t *start, size_t *end);
qv_status qv__record_walk(const uint8_t *rec, size_t len, record_visit visit, void *userdata);
qv_status qv__record_build(record_builder *b, pending *p, const uint8_t *call, size_t call_len,
                           const uint8_t *result, size_t result_len, const qv_store_info *info);
int64_t qv__record_duration(const uint8_t *rec, size_t len, size_t result_end);
qv_status qv__record_call_digest(verify_ctx *v, const uint8_t *rec, size_t len, qv_digest *out);
qv_status qv__meta_get_uint(qv_cache *c, qv_txn *txn, const char *key, uint64_t *out);
qv_status qv__meta_put_uint(qv_cache *c, qv_txn *txn, const char *key, uint64_t v);
qv_status qv__bytes_begin(wctx *w, int read);
qv_status qv__bytes_put(wctx *w);
qv_status qv__bytes_commit(wctx *w);
uint64_t qv__bytes_add(uint64_t stored, int64_t pending);
qv_status qv__get_count(wctx *w, int table, const qv_digest *d, uint64_t *n);
qv_status qv__put_count(wctx *w, int table, const qv_digest *d, uint64_t n);
qv_status qv__set_atime(wctx *w, const qv_digest *key, uint64_t t);
qv_status qv__remove_call(wctx *w, const qv_digest *key);
qv_status qv__group_commit(qv_cache *c, pending *p);
/* Commit count stores together: the first failure; each p->status is its own. */
qv_status qv__group_commit_many(qv_cache *c, pending **ps, size_t count);
/* Where qv__record_load finds the values a record refers to: QV_NOTFOUND
 * when missing (the record is then corrupt). */
typedef qv_status (*qv_value_lookup)(const uint8_t digest[16], const void **data, size_t *len, void *userdata);
/* A record as qv_cache_load gives it: text keys, every reference resolved. */
qv_status qv__record_load(const void *data, size_t len, qv_value_lookup lookup, void *userdata, qv_value **out);
/* An iterator over keys (malloc'd, taken over, freed even on failure). */
qv_status qv__iter_new(qv_iter **out, qv_digest *keys, size_t n);
/* The record of a call (p->key set to its digest), built with the given
 * inline limit; b->refs is the caller's to free. */
qv_status qv__record_prepare(pending *p, record_builder *b, const qv_digest *key, const void *call, size_t call_len, const void *result,
                             size_t result_len, const qv_store_info *info);
/* Write the touches of hits; and the totals and per-function counts when
 * counts is set or touch_period_ns has passed since they were last written
 * (a store's commit need not carry them: three more tables written). */
qv_status qv__flush_touches(wctx *w, uint64_t now, int counts);
/* A call's written hit count and last hit time (wall clock, ns); QV_NOTFOUND:
 * never counted. */
qv_status qv__get_hits(qv_cache *c, qv_txn *txn, const qv_digest *key, uint64_t *hits, int64_t *last_ns);
int qv__collect_key(const void *key, size_t klen, const void *val, size_t vlen, void *userdata);
qv_status qv__evict_to(qv_cache *c, uint64_t target, uint64_t *evicted);
qv_status qv__backfill_atimes(qv_cache *c);
void qv__flush_pending_touches(qv_cache *c);
/* Note a hit on key by a thread of the given shard (qv__thread_shard). */
void qv__touch(qv_cache *c, const qv_digest *key, unsigned shard);
int qv__collect_all(const void *key, size_t klen, const void *val, size_t vlen, void *userdata);
/* The span of the name (its CBOR text item) in a record, or in a call's
 * encoding [QV_CALL_MARKER, name, ...]. */
qv_status qv__record_name(const uint8_t *rec, size_t len, size_t *start, size_t *end);
qv_status qv__call_name(const uint8_t *call, size_t len, size_t *start, size_t *end);

/* fnstats.c. Add n to counter which of the function named by the CBOR text
 * item name; QV_ENOMEM leaves the tally as it was. */
qv_status qv__tally_add(fn_tally *t, const uint8_t *name, size_t len, int which, uint64_t n);
void qv__tally_free(fn_tally *t);
/* Add a tally's counts to the funcs table in w's transaction. */
qv_status qv__tally_write(wctx *w, const fn_tally *t);
/* Count for c's function name (a stack's in its local tier; a read-only
 * handle or a remote tier counts nothing);
 * written with the next flush. Best effort: out of memory loses the count. */
void qv__fn_count(qv_cache *c, const uint8_t *name, size_t len, int which);
/* Write the handle's pending counts (the tally is emptied first: a failed
 * transaction loses them rather than writing them twice). */
qv_status qv__fn_flush(wctx *w);
/* Remove every function's counts, written and pending (qv_cache_reset_totals). */
qv_status qv__fn_reset(wctx *w);
/* The forked child's tally starts empty: the parent writes what it counted. */
void qv__fn_after_fork(qv_cache *c);
/* A lookup met key's entry corrupt or forged on this thread; the runtime
 * asks, after the miss, whether it was this key's (and forgets it). */
void qv__fn_note_corrupt(const qv_digest *key);
int qv__fn_took_corrupt(const qv_digest *key);

#endif
