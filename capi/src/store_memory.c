/* The in-process store: per table a sorted array of entries under one
 * reader-writer lock. Lookups are binary searches; inserts move memory, which
 * stays cheap at the sizes a process-private cache reaches. A write
 * transaction applies changes at once and keeps an undo log for abort. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

typedef struct {
    uint8_t *key; /* key and value share one allocation */
    size_t klen;
    uint8_t *val;
    size_t vlen;
} mentry;

typedef struct {
    mentry *e;
    size_t n, cap;
} mtable;

typedef struct {
    int table;
    mentry old; /* the entry before the change; key NULL when there was none */
    uint8_t *key;
    size_t klen;
} undo;

typedef struct {
    qv_store base;
    pthread_rwlock_t lock;
    int ntables;
    mtable t[QV_STORE_MAX_TABLES];
    undo *log;
    size_t nlog, logcap;
    _Atomic uint64_t fork_gen;
} mem_store;

/* The transaction handle carries nothing: the lock is the transaction. */
static qv_txn *const TXN = (qv_txn *)1;

static int cmp_key(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : (alen > blen) - (alen < blen);
}

/* Index of the first entry >= key; *found when equal. */
static size_t lower_bound(const mtable *t, const void *key, size_t klen, int *found) {
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_key(t->e[mid].key, t->e[mid].klen, key, klen) < 0) lo = mid + 1;
        else hi = mid;
    }
    *found = lo < t->n && cmp_key(t->e[lo].key, t->e[lo].klen, key, klen) == 0;
    return lo;
}

/* After fork() another thread's lock state is meaningless: start afresh. */
static void after_fork(mem_store *m) {
    uint64_t gen = qv__fork_generation();
    if (QV_LIKELY(atomic_load_explicit(&m->fork_gen, memory_order_relaxed) == gen)) return;
    pthread_rwlock_init(&m->lock, NULL);
    atomic_store(&m->fork_gen, gen);
}

static qv_status mem_read_begin(qv_store *s, qv_txn **txn) {
    mem_store *m = (mem_store *)s;
    after_fork(m);
    pthread_rwlock_rdlock(&m->lock);
    *txn = TXN;
    return QV_OK;
}

static void mem_read_end(qv_store *s, qv_txn *txn) {
    pthread_rwlock_unlock(&((mem_store *)s)->lock);
}

static qv_status mem_write_begin(qv_store *s, qv_txn **txn) {
    mem_store *m = (mem_store *)s;
    after_fork(m);
    pthread_rwlock_wrlock(&m->lock);
    m->nlog = 0;
    *txn = TXN;
    return QV_OK;
}

static qv_status log_change(mem_store *m, int table, const mentry *old, const void *key, size_t klen) {
    if (m->nlog == m->logcap) {
        size_t cap = m->logcap ? m->logcap * 2 : 64;
        undo *l = realloc(m->log, cap * sizeof *l);
        if (!l) return qv__nomem();
        m->log = l;
        m->logcap = cap;
    }
    undo *u = &m->log[m->nlog];
    u->table = table;
    u->old = old ? *old : (mentry){0};
    u->key = NULL;
    if (!old) {
        if (!(u->key = malloc(klen ? klen : 1))) return qv__nomem();
        memcpy(u->key, key, klen);
        u->klen = klen;
    }
    m->nlog++;
    return QV_OK;
}

static qv_status mem_commit(qv_store *s, qv_txn *txn) {
    mem_store *m = (mem_store *)s;
    for (size_t i = 0; i < m->nlog; i++) {
        free(m->log[i].old.key);
        free(m->log[i].key);
    }
    m->nlog = 0;
    pthread_rwlock_unlock(&m->lock);
    return QV_OK;
}

static void remove_at(mtable *t, size_t i) {
    memmove(t->e + i, t->e + i + 1, (t->n - i - 1) * sizeof(mentry));
    t->n--;
}

static qv_status insert_at(mtable *t, size_t i, mentry e) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        mentry *ne = realloc(t->e, cap * sizeof *ne);
        if (!ne) return qv__nomem();
        t->e = ne;
        t->cap = cap;
    }
    memmove(t->e + i + 1, t->e + i, (t->n - i) * sizeof(mentry));
    t->e[i] = e;
    t->n++;
    return QV_OK;
}

static void mem_abort(qv_store *s, qv_txn *txn) {
    mem_store *m = (mem_store *)s;
    /* Undo in reverse: each step restores the entry one change replaced. */
    for (size_t k = m->nlog; k-- > 0;) {
        undo *u = &m->log[k];
        mtable *t = &m->t[u->table];
        const uint8_t *key = u->old.key ? u->old.key : u->key;
        size_t klen = u->old.key ? u->old.klen : u->klen;
        int found;
        size_t i = lower_bound(t, key, klen, &found);
        if (found) {
            free(t->e[i].key);
            if (u->old.key) t->e[i] = u->old;
            else remove_at(t, i);
        } else if (u->old.key) {
            /* room for it was there before the change, so this cannot fail */
            insert_at(t, i, u->old);
        }
        free(u->key);
    }
    m->nlog = 0;
    pthread_rwlock_unlock(&m->lock);
}

static qv_status mem_get(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void **val,
                         size_t *vlen) {
    mem_store *m = (mem_store *)s;
    mtable *t = &m->t[table];
    int found;
    size_t i = lower_bound(t, key, klen, &found);
    if (!found) return QV_NOTFOUND;
    *val = t->e[i].val;
    *vlen = t->e[i].vlen;
    return QV_OK;
}

static qv_status mem_put(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void *val,
                         size_t vlen) {
    mem_store *m = (mem_store *)s;
    mtable *t = &m->t[table];
    uint8_t *mem = malloc(klen + vlen + 1);
    if (!mem) return qv__nomem();
    memcpy(mem, key, klen);
    if (vlen) memcpy(mem + klen, val, vlen);
    mentry e = {mem, klen, mem + klen, vlen};
    int found;
    size_t i = lower_bound(t, key, klen, &found);
    qv_status st = log_change(m, table, found ? &t->e[i] : NULL, key, klen);
    if (!st && found) {
        t->e[i] = e; /* the old allocation now belongs to the undo log */
        return QV_OK;
    }
    if (!st && (st = insert_at(t, i, e))) {
        free(m->log[--m->nlog].key);
    }
    if (st) free(mem);
    return st;
}

static qv_status mem_del(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen) {
    mem_store *m = (mem_store *)s;
    mtable *t = &m->t[table];
    int found;
    size_t i = lower_bound(t, key, klen, &found);
    if (!found) return QV_NOTFOUND;
    qv_status st = log_change(m, table, &t->e[i], key, klen);
    if (st) return st;
    remove_at(t, i);
    return QV_OK;
}

static qv_status mem_scan(qv_store *s, qv_txn *txn, int table, const void *from, size_t flen, qv_scan_cb cb,
                          void *userdata) {
    mem_store *m = (mem_store *)s;
    mtable *t = &m->t[table];
    int found;
    size_t i = from ? lower_bound(t, from, flen, &found) : 0;
    for (; i < t->n; i++)
        if (cb(t->e[i].key, t->e[i].klen, t->e[i].val, t->e[i].vlen, userdata)) break;
    return QV_OK;
}

static qv_status mem_count(qv_store *s, qv_txn *txn, int table, uint64_t *n) {
    *n = ((mem_store *)s)->t[table].n;
    return QV_OK;
}

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
    for (int k = 0; k < m->ntables; k++) {
        for (size_t i = 0; i < m->t[k].n; i++) free(m->t[k].e[i].key);
        free(m->t[k].e);
    }
    free(m->log);
    pthread_rwlock_destroy(&m->lock);
    free(m);
}

static const qv_store_ops memory_ops = {
    mem_read_begin, mem_read_end, mem_write_begin, mem_commit, mem_abort, mem_get, mem_put,
    mem_del,        mem_scan,     mem_count,       mem_grow,   mem_sync,  mem_map_size, mem_close,
};

qv_status qv__store_memory_open(qv_store **out, const qv_store_config *cfg) {
    *out = NULL;
    if (cfg->ntables > QV_STORE_MAX_TABLES) return qv__error(QV_EINVAL, "too many tables");
    mem_store *m = calloc(1, sizeof *m);
    if (!m) return qv__nomem();
    m->base.ops = &memory_ops;
    m->ntables = cfg->ntables;
    pthread_rwlock_init(&m->lock, NULL);
    atomic_init(&m->fork_gen, qv__fork_generation());
    *out = &m->base;
    return QV_OK;
}
