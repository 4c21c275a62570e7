/* The in-process store: per table a hash table of entries, so a lookup or a
 * store costs the same at ten thousand entries as at a million.
 *
 * A write transaction builds its changes privately (an overlay: one hash
 * table per table of new entries and deletion marks) and commit publishes
 * them in a short exclusive section: it raises a flag, waits for the lookups
 * in flight to finish, applies the overlay and lowers the flag. Readers never
 * wait for a write transaction, only for the publication of one, and never
 * write to a cache line another thread's readers use: each registers in its
 * thread shard's counter (as the LMDB store does for remaps). Read
 * transactions hold nothing a caller's code could wait on, because the cache
 * copies a hit's bytes out before calling anyone (DESIGN section 4).
 *
 * Ordered scans (queries, eviction, gc: rare) sort at scan time, and only as
 * far as the caller reads (an incremental quicksort).
 *
 * fork(): a child gets the tables as the last publication left them. Every
 * memory store is in a registry whose pthread_atfork handlers hold each
 * store's publication lock across fork(), so no child inherits a half-applied
 * commit; the child then forgets the readers and writer of threads it does
 * not have. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

typedef struct mentry {
    uint64_t hash;
    size_t klen, vlen;
    int dead;      /* in an overlay: the key is deleted */
    uint8_t kv[];  /* key, then value */
} mentry;

/* Open addressing with linear probing; a slot is empty, a tombstone, or an entry. */
#define TOMB ((mentry *)1)

typedef struct {
    mentry **slot;
    size_t cap;  /* a power of two, or 0 */
    size_t n;    /* entries */
    size_t used; /* entries and tombstones */
} htab;

typedef struct {
    _Atomic uint32_t active; /* read transactions of this shard's threads in flight */
} __attribute__((aligned(64))) reader_shard;

typedef struct mem_store {
    qv_store base;
    struct mem_store *next, *prev; /* the fork registry */
    int ntables;
    htab t[QV_STORE_MAX_TABLES];
    /* the write transaction: one at a time, under wlock */
    pthread_mutex_t wlock;
    htab overlay[QV_STORE_MAX_TABLES];
    int64_t delta[QV_STORE_MAX_TABLES]; /* entries the overlay adds (or removes) */
    /* publication */
    pthread_mutex_t publish_lock;
    _Atomic int publishing;
    reader_shard shards[QV_SHARDS];
} mem_store;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static mem_store *registry;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static uint64_t hash_key(const void *key, size_t klen) {
    return qv__hash64(key, klen);
}

static int same_key(const mentry *e, uint64_t h, const void *key, size_t klen) {
    return e->hash == h && e->klen == klen && memcmp(e->kv, key, klen) == 0;
}

/* The slot holding key, or NULL. */
static mentry **find(const htab *t, uint64_t h, const void *key, size_t klen) {
    if (!t->cap) return NULL;
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        mentry *e = t->slot[i];
        if (!e) return NULL;
        if (e != TOMB && same_key(e, h, key, klen)) return &t->slot[i];
    }
}

/* A table of cap slots holding t's entries; t's own array is left alone,
 * since readers may still be using it. */
static qv_status rehash(const htab *t, size_t cap, htab *out) {
    mentry **slot = calloc(cap, sizeof *slot);
    if (!slot) return qv__nomem();
    for (size_t i = 0; i < t->cap; i++) {
        mentry *e = t->slot[i];
        if (!e || e == TOMB) continue;
        size_t j = e->hash & (cap - 1);
        while (slot[j]) j = (j + 1) & (cap - 1);
        slot[j] = e;
    }
    *out = (htab){slot, cap, t->n, t->n};
    return QV_OK;
}

/* A table with room for `more` new keys at a load of at most 3/4, made
 * privately when t lacks it. *out is t itself when it has room. */
static qv_status with_room(const htab *t, size_t more, htab *out) {
    if (!more || (t->cap && (t->used + more) * 4 <= t->cap * 3)) {
        *out = *t;
        return QV_OK;
    }
    size_t cap = 16;
    while ((t->n + more) * 2 > cap) cap *= 2;
    return rehash(t, cap, out);
}

/* Insert e, whose key t lacks; t has room. */
static void insert_new(htab *t, mentry *e) {
    size_t i = e->hash & (t->cap - 1);
    while (t->slot[i] && t->slot[i] != TOMB) i = (i + 1) & (t->cap - 1);
    if (!t->slot[i]) t->used++;
    t->slot[i] = e;
    t->n++;
}

static void free_entries(htab *t) {
    for (size_t i = 0; i < t->cap; i++)
        if (t->slot[i] && t->slot[i] != TOMB) free(t->slot[i]);
    free(t->slot);
    *t = (htab){NULL, 0, 0, 0};
}

static mentry *new_entry(uint64_t h, const void *key, size_t klen, const void *val, size_t vlen, int dead) {
    mentry *e = malloc(sizeof *e + klen + vlen);
    if (!e) return NULL;
    e->hash = h;
    e->klen = klen;
    e->vlen = vlen;
    e->dead = dead;
    memcpy(e->kv, key, klen);
    if (vlen) memcpy(e->kv + klen, val, vlen);
    return e;
}

/* ------------------------------------------------------------- fork */

static void fork_prepare(void) {
    pthread_mutex_lock(&registry_lock);
    for (mem_store *m = registry; m; m = m->next) pthread_mutex_lock(&m->publish_lock);
}

static void fork_parent(void) {
    for (mem_store *m = registry; m; m = m->next) pthread_mutex_unlock(&m->publish_lock);
    pthread_mutex_unlock(&registry_lock);
}

/* The child has one thread: the readers counted are its parent's other
 * threads, and a write transaction open in one of them never ends here (its
 * overlay is abandoned, not freed: that thread may have been changing it). */
static void fork_child(void) {
    for (mem_store *m = registry; m; m = m->next) {
        pthread_mutex_unlock(&m->publish_lock);
        pthread_mutex_init(&m->wlock, NULL);
        for (int i = 0; i < QV_SHARDS; i++) atomic_store(&m->shards[i].active, 0);
        for (int k = 0; k < m->ntables; k++) {
            m->overlay[k] = (htab){NULL, 0, 0, 0};
            m->delta[k] = 0;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

static void install_fork_handlers(void) {
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ------------------------------------------------------- transactions */

static qv_status mem_read_begin(qv_store *s, qv_txn **txn) {
    mem_store *m = (mem_store *)s;
    reader_shard *sh = &m->shards[qv__thread_shard()];
    for (;;) {
        atomic_fetch_add(&sh->active, 1);
        if (QV_LIKELY(!atomic_load(&m->publishing))) break;
        atomic_fetch_sub(&sh->active, 1);
        pthread_mutex_lock(&m->publish_lock); /* held until the publication is done */
        pthread_mutex_unlock(&m->publish_lock);
    }
    *txn = (qv_txn *)sh;
    return QV_OK;
}

static void mem_read_end(qv_store *s, qv_txn *txn) {
    atomic_fetch_sub_explicit(&((reader_shard *)txn)->active, 1, memory_order_release);
}

static int is_write(mem_store *m, qv_txn *txn) {
    return txn == (qv_txn *)&m->wlock;
}

static qv_status mem_write_begin(qv_store *s, qv_txn **txn) {
    mem_store *m = (mem_store *)s;
    pthread_mutex_lock(&m->wlock);
    *txn = (qv_txn *)&m->wlock;
    return QV_OK;
}

static void drop_overlay(mem_store *m) {
    for (int k = 0; k < m->ntables; k++) {
        free_entries(&m->overlay[k]);
        m->delta[k] = 0;
    }
}

static void mem_abort(qv_store *s, qv_txn *txn) {
    mem_store *m = (mem_store *)s;
    drop_overlay(m);
    pthread_mutex_unlock(&m->wlock);
}

static qv_status mem_commit(qv_store *s, qv_txn *txn) {
    mem_store *m = (mem_store *)s;
    htab next[QV_STORE_MAX_TABLES];
    int k;
    size_t changes = 0;
    for (k = 0; k < m->ntables; k++) changes += m->overlay[k].n;
    if (!changes) { /* nothing to publish: readers need not drain */
        pthread_mutex_unlock(&m->wlock);
        return QV_OK;
    }
    /* Make room first, outside the exclusive section: new tables are built
     * beside the ones readers use and swapped in when publishing. */
    for (k = 0; k < m->ntables; k++) {
        qv_status st = with_room(&m->t[k], m->overlay[k].n, &next[k]);
        if (st) {
            while (k-- > 0)
                if (next[k].slot != m->t[k].slot) free(next[k].slot);
            mem_abort(s, txn);
            return st;
        }
    }
    pthread_mutex_lock(&m->publish_lock);
    atomic_store(&m->publishing, 1);
    for (int i = 0; i < QV_SHARDS; i++)
        while (atomic_load(&m->shards[i].active)) sched_yield();
    mentry **old_slots[QV_STORE_MAX_TABLES];
    for (k = 0; k < m->ntables; k++) {
        htab *t = &m->t[k], *o = &m->overlay[k];
        old_slots[k] = next[k].slot != t->slot ? t->slot : NULL;
        *t = next[k];
        /* each overlay slot ends up holding the entry its change replaced,
         * to be freed once readers are back */
        for (size_t i = 0; i < o->cap; i++) {
            mentry *e = o->slot[i];
            if (!e) continue;
            mentry **at = find(t, e->hash, e->kv, e->klen);
            mentry *gone = at ? *at : NULL;
            if (e->dead) {
                if (at) {
                    *at = TOMB;
                    t->n--;
                }
                o->slot[i] = gone;
                free(e);
            } else {
                if (at) *at = e;
                else insert_new(t, e);
                o->slot[i] = gone;
            }
        }
    }
    atomic_store(&m->publishing, 0);
    pthread_mutex_unlock(&m->publish_lock);
    for (k = 0; k < m->ntables; k++) {
        free(old_slots[k]);
        free_entries(&m->overlay[k]);
        m->delta[k] = 0;
    }
    pthread_mutex_unlock(&m->wlock);
    return QV_OK;
}

/* ------------------------------------------------------------ access */

/* The entry for key as txn sees it, or NULL. */
static const mentry *lookup(mem_store *m, qv_txn *txn, int table, const void *key, size_t klen) {
    uint64_t h = hash_key(key, klen);
    if (is_write(m, txn)) {
        mentry **o = find(&m->overlay[table], h, key, klen);
        if (o) return (*o)->dead ? NULL : *o;
    }
    mentry **e = find(&m->t[table], h, key, klen);
    return e ? *e : NULL;
}

static qv_status mem_get(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void **val,
                         size_t *vlen) {
    const mentry *e = lookup((mem_store *)s, txn, table, key, klen);
    if (!e) return QV_NOTFOUND;
    *val = e->kv + e->klen;
    *vlen = e->vlen;
    return QV_OK;
}

/* Record e (a new value or a deletion mark) in the overlay. */
static qv_status overlay_set(mem_store *m, int table, mentry *e) {
    htab *o = &m->overlay[table];
    mentry **at = find(o, e->hash, e->kv, e->klen);
    int present = at ? !(*at)->dead : find(&m->t[table], e->hash, e->kv, e->klen) != NULL;
    if (at) {
        free(*at);
        *at = e;
    } else {
        htab bigger;
        qv_status st = with_room(o, 1, &bigger);
        if (st) {
            free(e);
            return st;
        }
        if (bigger.slot != o->slot) free(o->slot);
        *o = bigger;
        insert_new(o, e);
    }
    m->delta[table] += (e->dead ? 0 : 1) - present;
    return QV_OK;
}

static qv_status mem_put(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void *val,
                         size_t vlen) {
    mentry *e = new_entry(hash_key(key, klen), key, klen, val, vlen, 0);
    return e ? overlay_set((mem_store *)s, table, e) : qv__nomem();
}

static qv_status mem_put_new(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void *val,
                             size_t vlen) {
    if (lookup((mem_store *)s, txn, table, key, klen)) return QV__EEXISTS;
    return mem_put(s, txn, table, key, klen, val, vlen);
}

static qv_status mem_del(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen) {
    mem_store *m = (mem_store *)s;
    if (!lookup(m, txn, table, key, klen)) return QV_NOTFOUND;
    mentry *e = new_entry(hash_key(key, klen), key, klen, NULL, 0, 1);
    return e ? overlay_set(m, table, e) : qv__nomem();
}

static qv_status mem_count(qv_store *s, qv_txn *txn, int table, uint64_t *n) {
    mem_store *m = (mem_store *)s;
    *n = m->t[table].n + (is_write(m, txn) ? (uint64_t)m->delta[table] : 0);
    return QV_OK;
}

/* ------------------------------------------------------------- scans */

/* A scan sorts these: the key's first 8 bytes, big-endian, decide most
 * comparisons without a visit to the entry (a cache miss each). */
typedef struct {
    uint64_t prefix;
    mentry *e;
} sort_item;

static sort_item item_of(mentry *e) {
    uint8_t b[8] = {0};
    memcpy(b, e->kv, e->klen < 8 ? e->klen : 8);
    return (sort_item){qv__get_be64(b), e};
}

static int cmp_item(const sort_item *a, const sort_item *b) {
    if (a->prefix != b->prefix) return a->prefix < b->prefix ? -1 : 1;
    size_t n = a->e->klen < b->e->klen ? a->e->klen : b->e->klen;
    int c = memcmp(a->e->kv, b->e->kv, n);
    return c ? c : (a->e->klen > b->e->klen) - (a->e->klen < b->e->klen);
}

static int cmp_item_qsort(const void *a, const void *b) {
    return cmp_item(a, b);
}

static int before(const mentry *e, const void *from, size_t flen) {
    size_t n = e->klen < flen ? e->klen : flen;
    int c = memcmp(e->kv, from, n);
    return c < 0 || (c == 0 && e->klen < flen);
}

static void swap(sort_item *a, sort_item *b) {
    sort_item t = *a;
    *a = *b;
    *b = t;
}

static int emit(const sort_item *it, qv_scan_cb cb, void *userdata) {
    const mentry *e = it->e;
    return cb(e->kv, e->klen, e->kv + e->klen, e->vlen, userdata);
}

/* Hand out v[0..n) in key order, sorting only as far as the callback reads:
 * an incremental quicksort (Paredes and Navarro), O(n + k log k) for the
 * first k entries. stack holds the positions of pivots already in place;
 * v[idx..top) is still unsorted. */
static void scan_list(sort_item *v, size_t n, qv_scan_cb cb, void *userdata) {
    size_t stack[64];
    int top = 0;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    stack[top++] = n;
    for (size_t idx = 0; idx < n;) {
        size_t end = stack[top - 1];
        if (end == idx) { /* a pivot, in place */
            top--;
            if (emit(&v[idx++], cb, userdata)) return;
            continue;
        }
        if (end - idx <= 32 || top == (int)(sizeof stack / sizeof *stack)) {
            qsort(v + idx, end - idx, sizeof *v, cmp_item_qsort);
            for (; idx < end; idx++)
                if (emit(&v[idx], cb, userdata)) return;
            continue;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        swap(&v[idx + rng % (end - idx)], &v[end - 1]);
        size_t p = idx;
        for (size_t i = idx; i < end - 1; i++)
            if (cmp_item(&v[i], &v[end - 1]) < 0) swap(&v[p++], &v[i]);
        swap(&v[p], &v[end - 1]);
        stack[top++] = p;
    }
}

static qv_status mem_scan(qv_store *s, qv_txn *txn, int table, const void *from, size_t flen, qv_scan_cb cb,
                          void *userdata) {
    mem_store *m = (mem_store *)s;
    const htab *t = &m->t[table], *o = is_write(m, txn) ? &m->overlay[table] : NULL;
    size_t cap = t->n + (o ? o->n : 0), n = 0;
    sort_item *v = malloc((cap ? cap : 1) * sizeof *v);
    if (!v) return qv__nomem();
    for (size_t i = 0; i < t->cap; i++) {
        mentry *e = t->slot[i];
        if (!e || e == TOMB || (from && before(e, from, flen))) continue;
        if (o && find(o, e->hash, e->kv, e->klen)) continue; /* the overlay's version counts */
        v[n++] = item_of(e);
    }
    for (size_t i = 0; o && i < o->cap; i++) {
        mentry *e = o->slot[i];
        if (e && !e->dead && !(from && before(e, from, flen))) v[n++] = item_of(e);
    }
    scan_list(v, n, cb, userdata);
    free(v);
    return QV_OK;
}

/* ------------------------------------------------------------- misc */

static qv_status mem_grow(qv_store *s) {
    return qv__error(QV_EFULL, "memory store is full");
}

static qv_status mem_sync(qv_store *s) {
    return QV_OK;
}

static uint64_t mem_map_size(qv_store *s) {
    return 0;
}

static void mem_close(qv_store *s) {
    mem_store *m = (mem_store *)s;
    pthread_mutex_lock(&registry_lock);
    if (m->prev) m->prev->next = m->next;
    else registry = m->next;
    if (m->next) m->next->prev = m->prev;
    pthread_mutex_unlock(&registry_lock);
    for (int k = 0; k < m->ntables; k++) {
        free_entries(&m->t[k]);
        free_entries(&m->overlay[k]);
    }
    pthread_mutex_destroy(&m->wlock);
    pthread_mutex_destroy(&m->publish_lock);
    free(m);
}

static const qv_store_ops memory_ops = {
    mem_read_begin, mem_read_end, mem_write_begin, mem_commit, mem_abort,    mem_get,  mem_put, mem_put_new,
    mem_del,        mem_scan,     mem_count,       mem_grow,   mem_sync,     mem_map_size, mem_close,
};

qv_status qv__store_memory_open(qv_store **out, const qv_store_config *cfg) {
    *out = NULL;
    if (cfg->ntables > QV_STORE_MAX_TABLES) return qv__error(QV_EINVAL, "too many tables");
    mem_store *m = aligned_alloc(64, (sizeof *m + 63) & ~(size_t)63);
    if (!m) return qv__nomem();
    memset(m, 0, sizeof *m);
    m->base.ops = &memory_ops;
    m->ntables = cfg->ntables;
    pthread_mutex_init(&m->wlock, NULL);
    pthread_mutex_init(&m->publish_lock, NULL);
    for (int i = 0; i < QV_SHARDS; i++) atomic_init(&m->shards[i].active, 0);
    atomic_init(&m->publishing, 0);
    pthread_once(&fork_once, install_fork_handlers);
    pthread_mutex_lock(&registry_lock);
    m->next = registry;
    if (registry) registry->prev = m;
    registry = m;
    pthread_mutex_unlock(&registry_lock);
    *out = &m->base;
    return QV_OK;
}
