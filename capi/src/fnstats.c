/* Counts per function: what `quiver stats` shows by name. A handle tallies
 * misses, stores and corrupt entries in memory and writes them with the
 * touches of its hits (lru.c), so no count costs a write of its own; hits,
 * the time they saved and evictions are added inside the write transactions
 * that find them out. The funcs table holds a row per function:
 *   key:   the 8-byte big-endian hash of the name's encoding (the names
 *          index's prefix)
 *   value: k (1 byte), k big-endian uint64 counters in FN_* order, then the
 *          name's CBOR text item (docs/FORMAT.md). */
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "sign.h"
#include "stack.h"

/* Counts never wrap: a saturated counter is at least right in saying "a lot". */
static uint64_t saturating_add(uint64_t a, uint64_t b) {
    return a + b < a ? UINT64_MAX : a + b;
}

static fn_row *slot_of(const fn_tally *t, uint64_t hash) {
    size_t i = (size_t)hash & (t->cap - 1);
    while (t->rows[i].hash && t->rows[i].hash != hash) i = (i + 1) & (t->cap - 1);
    return &t->rows[i];
}

static qv_status tally_grow(fn_tally *t) {
    size_t cap = t->cap ? t->cap * 2 : 16;
    fn_row *rows = calloc(cap, sizeof *rows);
    if (!rows) return qv__nomem();
    fn_tally bigger = {rows, t->used, cap};
    for (size_t i = 0; i < t->cap; i++)
        if (t->rows[i].hash) *slot_of(&bigger, t->rows[i].hash) = t->rows[i];
    free(t->rows);
    *t = bigger;
    return QV_OK;
}

static uint64_t name_hash(const uint8_t *name, size_t len) {
    uint64_t h = qv__hash64(name, len);
    return h ? h : 1; /* 0 marks an empty slot; the row's key keeps the true hash */
}

qv_status qv__tally_add(fn_tally *t, const uint8_t *name, size_t len, int which, uint64_t n) {
    if ((t->used + 1) * 2 > t->cap && tally_grow(t)) return QV_ENOMEM;
    uint64_t hash = name_hash(name, len);
    fn_row *r = slot_of(t, hash);
    if (!r->hash) {
        if (!(r->name = malloc(len ? len : 1))) return qv__nomem();
        memcpy(r->name, name, len);
        r->name_len = len;
        r->hash = hash;
        t->used++;
    }
    r->n[which] = saturating_add(r->n[which], n);
    return QV_OK;
}

void qv__tally_free(fn_tally *t) {
    for (size_t i = 0; i < t->cap; i++) free(t->rows[i].name);
    free(t->rows);
    memset(t, 0, sizeof *t);
}

/* A row's counters; a malformed row (damaged, or foreign) counts from 0 again
 * rather than fail the commit that carries other callers' stores. */
static void row_counts(const uint8_t *v, size_t len, uint64_t n[FN_COUNT]) {
    memset(n, 0, FN_COUNT * sizeof *n);
    if (len < 1 || len < 1 + (size_t)v[0] * 8) return;
    for (int i = 0; i < FN_COUNT && i < v[0]; i++) n[i] = qv__get_be64(v + 1 + 8 * i);
}

static qv_status add_row(wctx *w, const fn_row *r) {
    qv_store *s = w->c->store;
    uint8_t key[8];
    qv__put_be64(key, qv__hash64(r->name, r->name_len));
    const void *v;
    size_t len;
    uint64_t n[FN_COUNT];
    qv_status st = s->ops->get(s, w->txn, T_FUNCS, key, 8, &v, &len);
    if (st == QV_OK) row_counts(v, len, n);
    else if (st == QV_NOTFOUND || st == QV__EFORGED) memset(n, 0, sizeof n), len = 0;
    else return st;
    /* counters a newer quiver appended after ours are kept as they are */
    const uint8_t *old = v;
    size_t k = FN_COUNT;
    if (st == QV_OK && len >= 1 && old[0] > FN_COUNT && len >= 1 + (size_t)old[0] * 8) k = old[0];
    size_t head = 1 + 8 * k;
    uint8_t *row = malloc(head + r->name_len);
    if (!row) return qv__nomem();
    row[0] = (uint8_t)k;
    for (int i = 0; i < FN_COUNT; i++) qv__put_be64(row + 1 + 8 * i, saturating_add(n[i], r->n[i]));
    if (k > FN_COUNT) memcpy(row + 1 + 8 * FN_COUNT, old + 1 + 8 * FN_COUNT, 8 * (k - FN_COUNT));
    memcpy(row + head, r->name, r->name_len);
    st = s->ops->put(s, w->txn, T_FUNCS, key, 8, row, head + r->name_len);
    free(row);
    return st;
}

qv_status qv__tally_write(wctx *w, const fn_tally *t) {
    qv_status st = QV_OK;
    for (size_t i = 0; !st && i < t->cap; i++)
        if (t->rows[i].hash) st = add_row(w, &t->rows[i]);
    return st;
}

void qv__fn_count(qv_cache *c, const uint8_t *name, size_t len, int which) {
    qv_cache *local, *remote;
    while (c->tier) /* a stack counts in its local tier; a remote tier keeps no counts */
        if (!qv__stack_tiers(c, &local, &remote) || !(c = local)) return;
    if (!c->count_hits) return;
    qv__cache_after_fork(c);
    pthread_mutex_lock(&c->fn_lock);
    if (qv__tally_add(&c->fn_pending, name, len, which, 1) == QV_OK) atomic_store(&c->fn_dirty, 1);
    pthread_mutex_unlock(&c->fn_lock);
}

qv_status qv__fn_flush(wctx *w) {
    qv_cache *c = w->c;
    if (!atomic_exchange(&c->fn_dirty, 0)) return QV_OK;
    pthread_mutex_lock(&c->fn_lock);
    fn_tally t = c->fn_pending;
    memset(&c->fn_pending, 0, sizeof c->fn_pending);
    pthread_mutex_unlock(&c->fn_lock);
    qv_status st = qv__tally_write(w, &t);
    qv__tally_free(&t);
    return st;
}

void qv__fn_after_fork(qv_cache *c) {
    pthread_mutex_init(&c->fn_lock, NULL);
    /* the parent's names are the parent's to free; the child only forgets them */
    memset(&c->fn_pending, 0, sizeof c->fn_pending);
    atomic_store(&c->fn_dirty, 0);
}

typedef struct {
    uint8_t (*keys)[8];
    size_t n, cap;
    int failed;
} row_keys;

static int collect_row_key(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    row_keys *l = userdata;
    (void)val, (void)vlen;
    if (klen != 8) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        uint8_t(*keys)[8] = realloc(l->keys, cap * sizeof *keys);
        if (!keys) return l->failed = 1;
        l->keys = keys;
        l->cap = cap;
    }
    memcpy(l->keys[l->n++], key, 8);
    return 0;
}

qv_status qv__fn_reset(wctx *w) {
    qv_cache *c = w->c;
    qv_store *s = c->store;
    row_keys l = {NULL, 0, 0, 0};
    pthread_mutex_lock(&c->fn_lock);
    qv__tally_free(&c->fn_pending);
    atomic_store(&c->fn_dirty, 0);
    pthread_mutex_unlock(&c->fn_lock);
    qv_status st = s->ops->scan(s, w->txn, T_FUNCS, NULL, 0, collect_row_key, &l);
    if (!st && l.failed) st = qv__nomem();
    for (size_t i = 0; !st && i < l.n; i++) st = s->ops->del(s, w->txn, T_FUNCS, l.keys[i], 8);
    free(l.keys);
    return st;
}

static _Thread_local struct {
    int set;
    qv_digest key;
} last_corrupt;

void qv__fn_note_corrupt(const qv_digest *key) {
    last_corrupt.set = 1;
    last_corrupt.key = *key;
}

int qv__fn_took_corrupt(const qv_digest *key) {
    if (!last_corrupt.set) return 0;
    last_corrupt.set = 0;
    return memcmp(last_corrupt.key.bytes, key->bytes, 16) == 0;
}

/* ------------------------------------------------------------------ public */

typedef struct {
    uint8_t *name; /* the text itself, not its item */
    size_t len;
    qv_function_stats stats;
} fn_report;

typedef struct {
    fn_report *rows;
    size_t n, cap;
    int failed;
} report_list;

static int collect_row(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    report_list *l = userdata;
    const uint8_t *v = val;
    if (klen != 8 || vlen < 1 || vlen < 1 + (size_t)v[0] * 8) return 0; /* not a row: skipped, as writers count it from 0 again */
    size_t at = 1 + (size_t)v[0] * 8;
    qv_decoder dec;
    qv_type t;
    const uint8_t *text;
    size_t len;
    qv_decoder_reset(&dec, v + at, vlen - at);
    if (qv_decoder_next(&dec, &t) || t != QV_TYPE_TEXT || qv_decoder_get_data(&dec, &text, &len)) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        fn_report *rows = realloc(l->rows, cap * sizeof *rows);
        if (!rows) return l->failed = 1;
        l->rows = rows;
        l->cap = cap;
    }
    fn_report *r = &l->rows[l->n];
    if (!(r->name = malloc(len ? len : 1))) return l->failed = 1;
    memcpy(r->name, text, len);
    r->len = len;
    uint64_t n[FN_COUNT];
    row_counts(v, vlen, n);
    r->stats = (qv_function_stats){n[FN_HITS], n[FN_MISSES], n[FN_STORES], n[FN_EVICTIONS], n[FN_CORRUPT], n[FN_SAVED_NS]};
    l->n++;
    return 0;
}

qv_status qv_cache_function_stats(qv_cache *cache, qv_function_stats_cb cb, void *userdata) {
    if (!cache || !cb) return qv__error(QV_EINVAL, "qv_cache_function_stats: NULL argument");
    qv_cache *local, *remote;
    if (cache->tier) return qv__stack_tiers(cache, &local, &remote) ? qv_cache_function_stats(local, cb, userdata) : QV_OK;
    qv_store *s = cache->store;
    qv_txn *txn;
    report_list l = {NULL, 0, 0, 0};
    qv_status st = s->ops->read_begin(s, &txn);
    if (st) return st;
    st = s->ops->scan(s, txn, T_FUNCS, NULL, 0, collect_row, &l);
    s->ops->read_end(s, txn);
    if (!st && l.failed) st = qv__nomem();
    for (size_t i = 0; !st && i < l.n; i++)
        if (cb((const char *)l.rows[i].name, l.rows[i].len, &l.rows[i].stats, userdata)) break;
    for (size_t i = 0; i < l.n; i++) free(l.rows[i].name);
    free(l.rows);
    return st;
}
