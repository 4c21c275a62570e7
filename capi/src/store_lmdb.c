/* The LMDB store. LMDB's rules, and how they are kept here:
 *  - one MDB_env per path per process: environments live in a registry keyed
 *    by the directory's real path and are shared, reference-counted;
 *  - never across fork(): a handle that sees a new fork generation abandons
 *    its environment (the parent still uses it) and opens a fresh one;
 *  - readers of dead processes are cleared with mdb_reader_check on open,
 *    when the reader table is full, and before the map grows (a dead
 *    reader's old snapshot keeps its pages from reuse);
 *  - MDB_NOTLS: pool and host threads come and go, so read transactions are
 *    kept per thread shard and renewed, not begun;
 *  - a full map grows (doubling), and MDB_MAP_RESIZED from another process's
 *    growth is adopted, only while no transaction of this process runs,
 *    because remapping moves every pointer into the map. Transactions
 *    register in their thread's shard (an atomic count on a cache line of its
 *    own) and a remap raises a flag and waits for the counts to drain, so
 *    readers on different cores never write to a shared line. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "store.h"

#define DEFAULT_MAP_SIZE ((uint64_t)1 << 40)
#define MIN_MAP_SIZE ((uint64_t)64 << 20)
/* Every thread shard of every process parks a read transaction, which keeps
 * its reader slot: LMDB's default of 126 slots is eight busy processes. The
 * first process to create lock.mdb sets the number for all. */
#define MAX_READERS 1024

typedef struct {
    _Atomic uint32_t active;   /* transactions of this shard's threads in flight */
    _Atomic(MDB_txn *) reader; /* a reset read transaction to renew */
} __attribute__((aligned(64))) reader_shard;

typedef struct lmdb_env {
    struct lmdb_env *next;
    char *path;
    int refs;
    uint64_t fork_gen;
    MDB_env *env;
    MDB_dbi dbi[QV_STORE_MAX_TABLES];
    int has_table[QV_STORE_MAX_TABLES]; /* read-only caches may lack tables */
    int ntables;
    int readonly;
    int nolock; /* read-only without the lock file: see env_create */
    uint32_t durability;
    _Atomic int remapping;
    pthread_mutex_t remap_lock; /* one remap at a time; readers wait on it */
    reader_shard shards[QV_SHARDS];
} lmdb_env;

typedef struct {
    qv_store base;
    lmdb_env *e;
    char *path;
    qv_store_config cfg;
    const char *tables[QV_STORE_MAX_TABLES];
} lmdb_store;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static lmdb_env *registry;
static uint64_t registry_gen;
static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;

/* Hold the registry across fork() so the child never inherits it locked. */
static void registry_prepare(void) {
    pthread_mutex_lock(&registry_lock);
}
static void registry_parent(void) {
    pthread_mutex_unlock(&registry_lock);
}
static void registry_child(void) {
    pthread_mutex_init(&registry_lock, NULL);
}
static void install_fork_handlers(void) {
    pthread_atfork(registry_prepare, registry_parent, registry_child);
}

/* Whether this thread's last QV_EFULL came from the disk (ENOSPC, or EFBIG
 * past RLIMIT_FSIZE) rather than the map: growing the map cannot help then,
 * and lm_grow, which the same thread calls next, says so. */
static _Thread_local int disk_full;

static qv_status lmdb_error(int rc, const char *what, const char *path) {
    if (rc == MDB_MAP_FULL) {
        disk_full = 0;
        return qv__error(QV_EFULL, "%s: the map of %s is full", what, path);
    }
    if (rc == ENOSPC || rc == EFBIG || rc == EDQUOT) {
        disk_full = 1;
        return qv__error(QV_EFULL, "%s: no space left for %s (%s)", what, path, mdb_strerror(rc));
    }
    if (rc == EACCES || rc == EROFS)
        return qv__error(QV_EIO, "%s: %s: %s (open the cache read-only if it is not yours to write)", what, path,
                         mdb_strerror(rc));
    if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH)
        return qv__error(QV_ECORRUPT, "%s: %s: %s", what, path, mdb_strerror(rc));
    if (rc > 0) return qv__error(QV_EIO, "%s: %s: %s", what, path, mdb_strerror(rc));
    return qv__error(QV_ESTORE, "%s: %s: %s", what, path, mdb_strerror(rc));
}

static unsigned int env_flags(uint32_t durability, int readonly) {
    unsigned int f = MDB_NOTLS | MDB_NORDAHEAD;
    if (readonly) f |= MDB_RDONLY;
    if (durability == QV_DURABILITY_SAFE) f |= MDB_NOMETASYNC;
    if (durability == QV_DURABILITY_FAST) f |= MDB_NOSYNC | MDB_NOMETASYNC;
    return f;
}

static int strength(uint32_t durability) {
    return durability == QV_DURABILITY_DURABLE ? 2 : durability == QV_DURABILITY_SAFE ? 1 : 0;
}

static qv_status open_tables(lmdb_env *e, const qv_store_config *cfg) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(e->env, NULL, e->readonly ? MDB_RDONLY : 0, &txn);
    if (rc) return lmdb_error(rc, "cannot begin a transaction", e->path);
    for (int i = 0; i < cfg->ntables; i++) {
        rc = mdb_dbi_open(txn, cfg->tables[i], e->readonly ? 0 : MDB_CREATE, &e->dbi[i]);
        if (rc == MDB_NOTFOUND && e->readonly) continue;
        if (rc) {
            mdb_txn_abort(txn);
            return lmdb_error(rc, "cannot open a table", e->path);
        }
        e->has_table[i] = 1;
    }
    e->ntables = cfg->ntables;
    if ((rc = mdb_txn_commit(txn))) return lmdb_error(rc, "cannot open the tables", e->path);
    return QV_OK;
}

static void env_destroy(lmdb_env *e) {
    for (int i = 0; i < QV_SHARDS; i++) {
        MDB_txn *t = atomic_exchange(&e->shards[i].reader, NULL);
        if (t) mdb_txn_abort(t);
    }
    if (e->env) mdb_env_close(e->env);
    pthread_mutex_destroy(&e->remap_lock);
    free(e->path);
    free(e);
}

/* Open e's LMDB environment at e->path, and its tables. map_size is where
 * to start: short of address space (ulimit -v, sanitizers' shadow maps),
 * a map that is not fixed starts smaller and grows when it fills. */
static qv_status env_open(lmdb_env *e, const qv_store_config *cfg, uint64_t map_size, int fixed) {
    int rc;
    for (;;) {
        if ((rc = mdb_env_create(&e->env))) {
            e->env = NULL;
            return lmdb_error(rc, "cannot create an LMDB environment", e->path);
        }
        mdb_env_set_maxdbs(e->env, QV_STORE_MAX_TABLES);
        mdb_env_set_maxreaders(e->env, MAX_READERS);
        mdb_env_set_mapsize(e->env, (size_t)map_size);
        unsigned int flags = env_flags(e->durability, e->readonly) | (e->nolock ? MDB_NOLOCK : 0);
        /* group members write what quiver creates; the umask still applies */
        rc = mdb_env_open(e->env, e->path, flags, 0664);
        if (rc == EACCES && e->readonly && !e->nolock) {
            /* A reader who may not write lock.mdb (someone else's cache)
             * reads without it: see lockless_get. */
            mdb_env_close(e->env);
            e->nolock = 1;
            continue;
        }
        if (rc != ENOMEM || fixed || map_size <= MIN_MAP_SIZE) break;
        mdb_env_close(e->env);
        map_size /= 4;
    }
    qv_status st = rc ? lmdb_error(rc, "cannot open the cache", e->path) : QV_OK;
    int dead;
    if (!st && !e->nolock) mdb_reader_check(e->env, &dead);
    if (!st) st = open_tables(e, cfg);
    if (st) {
        mdb_env_close(e->env);
        e->env = NULL;
    }
    return st;
}

static qv_status env_create(lmdb_env **out, const char *path, const qv_store_config *cfg) {
    lmdb_env *e = aligned_alloc(64, (sizeof *e + 63) & ~(size_t)63);
    if (e) memset(e, 0, sizeof *e);
    if (!e || !(e->path = strdup(path))) {
        free(e);
        return qv__nomem();
    }
    pthread_mutex_init(&e->remap_lock, NULL);
    e->readonly = cfg->readonly;
    e->durability = cfg->durability;
    e->fork_gen = qv__fork_generation();
    qv_status st = env_open(e, cfg, cfg->map_size ? cfg->map_size : DEFAULT_MAP_SIZE, cfg->map_size != 0);
    if (st) {
        env_destroy(e);
        return st;
    }
    *out = e;
    return QV_OK;
}

/* Called with registry_lock held. */
static qv_status env_acquire(lmdb_env **out, const char *path, const qv_store_config *cfg) {
    uint64_t gen = qv__fork_generation();
    if (registry_gen != gen) {
        /* A child of fork(): the registry's environments are the parent's.
         * Forget them without closing; closing would touch the parent's locks. */
        registry = NULL;
        registry_gen = gen;
    }
    for (lmdb_env *e = registry; e; e = e->next) {
        if (strcmp(e->path, path) == 0) {
            if (e->readonly && !cfg->readonly)
                return qv__error(QV_EMISUSE, "%s is already open read-only in this process; close it first", path);
            if (strength(cfg->durability) > strength(e->durability)) {
                /* the strongest durability any handle asked for wins (and a
                 * reopen after a failed one, env_reopen, takes it) */
                if (e->env) {
                    mdb_env_set_flags(e->env, MDB_NOSYNC | MDB_NOMETASYNC, 0);
                    mdb_env_set_flags(e->env, env_flags(cfg->durability, 0) & (MDB_NOSYNC | MDB_NOMETASYNC), 1);
                }
                e->durability = cfg->durability;
            }
            e->refs++;
            *out = e;
            return QV_OK;
        }
    }
    qv_status st = env_create(out, path, cfg);
    if (st) return st;
    (*out)->refs = 1;
    (*out)->next = registry;
    registry = *out;
    return QV_OK;
}

static void env_release(lmdb_env *e) {
    pthread_mutex_lock(&registry_lock);
    if (e->fork_gen != qv__fork_generation()) {
        /* the parent's environment: not ours to close */
        pthread_mutex_unlock(&registry_lock);
        return;
    }
    if (--e->refs == 0) {
        for (lmdb_env **p = &registry; *p; p = &(*p)->next) {
            if (*p == e) {
                *p = e->next;
                break;
            }
        }
        env_destroy(e);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* After fork() the handle's environment belongs to the parent. */
static qv_status check_fork(lmdb_store *s) {
    if (QV_LIKELY(s->e->fork_gen == qv__fork_generation())) return QV_OK;
    pthread_mutex_lock(&registry_lock);
    qv_status st = QV_OK;
    if (s->e->fork_gen != qv__fork_generation()) {
        lmdb_env *e;
        if (!(st = env_acquire(&e, s->path, &s->cfg))) s->e = e;
    }
    pthread_mutex_unlock(&registry_lock);
    return st;
}

/* Register a transaction of this thread; waits while a remap runs. */
static void enter(lmdb_env *e, reader_shard *sh) {
    for (;;) {
        atomic_fetch_add(&sh->active, 1);
        if (QV_LIKELY(!atomic_load(&e->remapping))) return;
        atomic_fetch_sub(&sh->active, 1);
        pthread_mutex_lock(&e->remap_lock); /* held until the remap is done */
        pthread_mutex_unlock(&e->remap_lock);
    }
}

static void leave(reader_shard *sh) {
    atomic_fetch_sub_explicit(&sh->active, 1, memory_order_release);
}

/* Stop new transactions and wait for running ones; the caller runs none. */
static void remap_begin(lmdb_env *e) {
    pthread_mutex_lock(&e->remap_lock);
    atomic_store(&e->remapping, 1);
    for (int i = 0; i < QV_SHARDS; i++)
        while (atomic_load(&e->shards[i].active)) sched_yield();
}

static void remap_end(lmdb_env *e) {
    atomic_store(&e->remapping, 0);
    pthread_mutex_unlock(&e->remap_lock);
}

/* Adopt a map size another process grew to. */
static qv_status adopt_map_size(lmdb_env *e) {
    remap_begin(e);
    int rc = mdb_env_set_mapsize(e->env, 0);
    remap_end(e);
    return rc ? lmdb_error(rc, "cannot adopt the new map size", e->path) : QV_OK;
}

/* LMDB 0.9 stops an environment whose meta page could not be written (a
 * full copy-on-write disk can do that) until it is opened again: every
 * transaction is MDB_PANIC. What was committed before is whole on disk, so
 * the environment is closed and opened again, with no transaction of this
 * process running. e->env is NULL when that failed; the next transaction
 * tries again. */
static qv_status env_reopen(lmdb_env *e, const qv_store_config *cfg) {
    remap_begin(e);
    MDB_txn *probe;
    int rc = e->env ? mdb_txn_begin(e->env, NULL, MDB_RDONLY, &probe) : MDB_PANIC;
    qv_status st = QV_OK;
    if (rc == 0) {
        mdb_txn_abort(probe); /* another thread reopened it */
    } else if (rc == MDB_PANIC) {
        uint64_t map_size = DEFAULT_MAP_SIZE;
        if (e->env) {
            MDB_envinfo info;
            mdb_env_info(e->env, &info);
            map_size = info.me_mapsize;
            for (int i = 0; i < QV_SHARDS; i++) {
                MDB_txn *t = atomic_exchange(&e->shards[i].reader, NULL);
                if (t) mdb_txn_abort(t);
            }
            mdb_env_close(e->env);
            e->env = NULL;
        }
        memset(e->has_table, 0, sizeof e->has_table);
        st = env_open(e, cfg, map_size, 0);
    }
    remap_end(e);
    return st;
}

static qv_status lm_read_begin(qv_store *base, qv_txn **txn) {
    lmdb_store *s = (lmdb_store *)base;
    qv_status st = check_fork(s);
    if (st) return st;
    lmdb_env *e = s->e;
    reader_shard *sh = &e->shards[qv__thread_shard()];
    for (int attempt = 0;; attempt++) {
        enter(e, sh);
        if (QV_UNLIKELY(!e->env)) { /* a reopen failed */
            leave(sh);
            if (attempt < 3 && !(st = env_reopen(e, &s->cfg))) continue;
            return st ? st : qv__error(QV_ESTORE, "%s: the environment could not be reopened", e->path);
        }
        MDB_txn *t = atomic_exchange_explicit(&sh->reader, NULL, memory_order_acquire);
        int rc = t ? mdb_txn_renew(t) : mdb_txn_begin(e->env, NULL, MDB_RDONLY, &t);
        if (QV_LIKELY(rc == 0)) {
            *txn = (qv_txn *)t;
            return QV_OK;
        }
        if (t) mdb_txn_abort(t);
        leave(sh);
        if (rc == MDB_MAP_RESIZED && attempt < 3) {
            if ((st = adopt_map_size(e))) return st;
            continue;
        }
        int dead = 0;
        if (rc == MDB_READERS_FULL && attempt < 3 && !mdb_reader_check(e->env, &dead) && dead > 0) continue;
        if (rc == MDB_PANIC && attempt < 3) {
            if ((st = env_reopen(e, &s->cfg))) return st;
            continue;
        }
        return lmdb_error(rc, "cannot begin a read transaction", e->path);
    }
}

static void lm_read_end(qv_store *base, qv_txn *txn) {
    lmdb_env *e = ((lmdb_store *)base)->e;
    reader_shard *sh = &e->shards[qv__thread_shard()];
    MDB_txn *t = (MDB_txn *)txn, *expected = NULL;
    mdb_txn_reset(t);
    if (!atomic_compare_exchange_strong_explicit(&sh->reader, &expected, t, memory_order_release,
                                                 memory_order_relaxed))
        mdb_txn_abort(t); /* another thread of the shard parked one already */
    leave(sh);
}

static qv_status lm_write_begin(qv_store *base, qv_txn **txn) {
    lmdb_store *s = (lmdb_store *)base;
    qv_status st = check_fork(s);
    if (st) return st;
    lmdb_env *e = s->e;
    if (e->readonly) return qv__error(QV_EREADONLY, "the cache at %s was opened read-only", e->path);
    reader_shard *sh = &e->shards[qv__thread_shard()];
    for (int attempt = 0;; attempt++) {
        enter(e, sh);
        MDB_txn *t;
        int rc = e->env ? mdb_txn_begin(e->env, NULL, 0, &t) : MDB_PANIC;
        if (rc == 0) {
            *txn = (qv_txn *)t;
            return QV_OK;
        }
        leave(sh);
        if (rc == MDB_MAP_RESIZED && attempt < 3) {
            if ((st = adopt_map_size(e))) return st;
            continue;
        }
        if (rc == MDB_PANIC && attempt < 3) {
            if ((st = env_reopen(e, &s->cfg))) return st;
            continue;
        }
        return lmdb_error(rc, "cannot begin a write transaction", e->path);
    }
}

/* LMDB reports any short write as EIO, and a write the disk filled halfway
 * is one: tell that from a failing disk by the room left afterwards (under
 * a megabyte on the filesystem, or data.mdb at RLIMIT_FSIZE). */
static int out_of_room(lmdb_env *e) {
    struct statvfs v;
    if (statvfs(e->path, &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize < ((uint64_t)1 << 20)) return 1;
    struct rlimit rl;
    char data[PATH_MAX];
    struct stat sb;
    snprintf(data, sizeof data, "%s/data.mdb", e->path);
    return getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && stat(data, &sb) == 0 &&
           (uint64_t)sb.st_size + ((uint64_t)1 << 20) >= (uint64_t)rl.rlim_cur;
}

static qv_status lm_commit(qv_store *base, qv_txn *txn) {
    lmdb_env *e = ((lmdb_store *)base)->e;
    int rc = mdb_txn_commit((MDB_txn *)txn);
    leave(&e->shards[qv__thread_shard()]);
    if (rc == EIO && out_of_room(e)) rc = ENOSPC;
    return rc ? lmdb_error(rc, "cannot commit", e->path) : QV_OK;
}

static void lm_abort(qv_store *base, qv_txn *txn) {
    lmdb_env *e = ((lmdb_store *)base)->e;
    mdb_txn_abort((MDB_txn *)txn);
    leave(&e->shards[qv__thread_shard()]);
}

/* A reader without the lock file is in no reader table, so a writer may
 * reuse the pages of its snapshot S. A writer takes pages freed by commit F
 * only once the last commit is F + 1 or later, and S's pages are freed at
 * the earliest by S + 1, so they are rewritten at the earliest while commit
 * S + 3 writes, after S + 2. Such a reader copies what it finds, then checks
 * that the last commit is still at most S + 1, and otherwise reads again
 * from a fresh snapshot. Two copies per thread alternate: a hit looks up a
 * value under a key inside the record it read just before. */
typedef struct {
    uint8_t *p[2];
    size_t cap[2];
    int next;
} copies;

static pthread_key_t copies_key;
static pthread_once_t copies_once = PTHREAD_ONCE_INIT;

static void copies_free(void *p) {
    copies *c = p;
    free(c->p[0]);
    free(c->p[1]);
    free(c);
}

static void copies_init(void) {
    pthread_key_create(&copies_key, copies_free);
}

/* This thread's copies, freed when it exits. */
static copies *thread_copies(void) {
    pthread_once(&copies_once, copies_init);
    copies *c = pthread_getspecific(copies_key);
    if (!c && (c = calloc(1, sizeof *c)) && pthread_setspecific(copies_key, c)) {
        free(c);
        c = NULL;
    }
    return c;
}

/* Whether snapshot t's pages are all still as they were committed. */
static int snapshot_whole(lmdb_env *e, MDB_txn *t) {
    MDB_envinfo info;
    mdb_env_info(e->env, &info);
    return info.me_last_txnid <= mdb_txn_id(t) + 1;
}

static qv_status lockless_get(lmdb_env *e, MDB_txn *t, int table, const void *key, size_t klen, const void **val,
                              size_t *vlen) {
    copies *c = thread_copies();
    if (!c) return qv__nomem();
    for (int attempt = 0; attempt < 64; attempt++) {
        MDB_val k = {klen, (void *)key}, v = {0, NULL};
        int rc = mdb_get(t, e->dbi[table], &k, &v);
        int i = c->next;
        /* the search, and so rc and v, are to be trusted only if the pages
         * it walked were whole; the copy, only if they still are after it */
        if (snapshot_whole(e, t)) {
            if (rc == MDB_NOTFOUND) return QV_NOTFOUND;
            if (rc) return lmdb_error(rc, "cannot read", e->path);
            if (v.mv_size > c->cap[i]) {
                uint8_t *p = realloc(c->p[i], v.mv_size);
                if (!p) return qv__nomem();
                c->p[i] = p;
                c->cap[i] = v.mv_size;
            }
            if (v.mv_size) memcpy(c->p[i], v.mv_data, v.mv_size);
            if (snapshot_whole(e, t)) {
                c->next = !i;
                *val = c->p[i];
                *vlen = v.mv_size;
                return QV_OK;
            }
        }
        mdb_txn_reset(t);
        if ((rc = mdb_txn_renew(t))) return lmdb_error(rc, "cannot read a stable snapshot", e->path);
    }
    return qv__error(QV_EIO, "%s: writers commit faster than a reader without the lock file can read", e->path);
}

static qv_status lm_get(qv_store *base, qv_txn *txn, int table, const void *key, size_t klen, const void **val,
                        size_t *vlen) {
    lmdb_env *e = ((lmdb_store *)base)->e;
    if (QV_UNLIKELY(!e->has_table[table])) return QV_NOTFOUND;
    if (QV_UNLIKELY(e->nolock)) return lockless_get(e, (MDB_txn *)txn, table, key, klen, val, vlen);
    MDB_val k = {klen, (void *)key}, v;
    int rc = mdb_get((MDB_txn *)txn, e->dbi[table], &k, &v);
    if (QV_LIKELY(rc == 0)) {
        *val = v.mv_data;
        *vlen = v.mv_size;
        return QV_OK;
    }
    if (rc == MDB_NOTFOUND) return QV_NOTFOUND;
    return lmdb_error(rc, "cannot read", e->path);
}

static qv_status lm_write(qv_store *base, qv_txn *txn, int table, const void *key, size_t klen, const void *val,
                          size_t vlen, unsigned flags) {
    lmdb_env *e = ((lmdb_store *)base)->e;
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    int rc = mdb_put((MDB_txn *)txn, e->dbi[table], &k, &v, flags);
    if (rc == MDB_KEYEXIST) return QV__EEXISTS;
    return rc ? lmdb_error(rc, "cannot write", e->path) : QV_OK;
}

static qv_status lm_put(qv_store *base, qv_txn *txn, int table, const void *key, size_t klen, const void *val,
                        size_t vlen) {
    return lm_write(base, txn, table, key, klen, val, vlen, 0);
}

static qv_status lm_put_new(qv_store *base, qv_txn *txn, int table, const void *key, size_t klen, const void *val,
                            size_t vlen) {
    return lm_write(base, txn, table, key, klen, val, vlen, MDB_NOOVERWRITE);
}

static qv_status lm_del(qv_store *base, qv_txn *txn, int table, const void *key, size_t klen) {
    lmdb_env *e = ((lmdb_store *)base)->e;
    MDB_val k = {klen, (void *)key};
    int rc = mdb_del((MDB_txn *)txn, e->dbi[table], &k, NULL);
    if (rc == MDB_NOTFOUND) return QV_NOTFOUND;
    return rc ? lmdb_error(rc, "cannot delete", e->path) : QV_OK;
}

static qv_status lm_scan(qv_store *base, qv_txn *txn, int table, const void *from, size_t flen, qv_scan_cb cb,
                         void *userdata) {
    lmdb_env *e = ((lmdb_store *)base)->e;
    if (!e->has_table[table]) return QV_OK;
    MDB_cursor *c;
    int rc = mdb_cursor_open((MDB_txn *)txn, e->dbi[table], &c);
    if (rc) return lmdb_error(rc, "cannot open a cursor", e->path);
    MDB_val k = {flen, (void *)from}, v;
    rc = mdb_cursor_get(c, &k, &v, from ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0) {
        if (cb(k.mv_data, k.mv_size, v.mv_data, v.mv_size, userdata)) break;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "cannot scan", e->path);
    return QV_OK;
}

static qv_status lm_count(qv_store *base, qv_txn *txn, int table, uint64_t *n) {
    lmdb_env *e = ((lmdb_store *)base)->e;
    *n = 0;
    if (!e->has_table[table]) return QV_OK;
    MDB_stat st;
    int rc = mdb_stat((MDB_txn *)txn, e->dbi[table], &st);
    if (rc) return lmdb_error(rc, "cannot count", e->path);
    *n = st.ms_entries;
    return QV_OK;
}

/* Whether size bytes of address space can be mapped now. LMDB 0.9 unmaps
 * the old map before it maps the new one and, when that fails, leaves the
 * environment with no map at all (the next transaction would crash), so a
 * map grows only to a size just shown to fit. */
static int address_space_for(size_t size) {
    void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return 0;
    munmap(p, size);
    return 1;
}

static qv_status lm_grow(qv_store *base) {
    lmdb_env *e = ((lmdb_store *)base)->e;
    if (disk_full) {
        disk_full = 0;
        return qv__error(QV_EFULL, "%s: the disk is full; a larger map would not help", e->path);
    }
    if (!e->env) return QV_OK; /* the next transaction reopens it */
    /* pages a dead reader pins may be all the room the writer needs */
    int dead = 0;
    mdb_reader_check(e->env, &dead);
    if (dead > 0) return QV_OK;
    remap_begin(e);
    MDB_envinfo info;
    mdb_env_info(e->env, &info);
    size_t size = info.me_mapsize;
    int rc = size > SIZE_MAX / 2 || !address_space_for(size * 2) ? MDB_MAP_FULL : mdb_env_set_mapsize(e->env, size * 2);
    remap_end(e);
    return rc ? lmdb_error(rc, "cannot grow the map", e->path) : QV_OK;
}

static qv_status lm_sync(qv_store *base) {
    lmdb_env *e = ((lmdb_store *)base)->e;
    if (e->readonly || !e->env) return QV_OK;
    int rc = mdb_env_sync(e->env, 1);
    return rc ? lmdb_error(rc, "cannot sync", e->path) : QV_OK;
}

static uint64_t lm_map_size(qv_store *base) {
    MDB_env *env = ((lmdb_store *)base)->e->env;
    MDB_envinfo info;
    if (!env) return 0;
    mdb_env_info(env, &info);
    return info.me_mapsize;
}

static void lm_close(qv_store *base) {
    lmdb_store *s = (lmdb_store *)base;
    env_release(s->e);
    free(s->path);
    free(s);
}

static const qv_store_ops lmdb_ops = {
    lm_read_begin, lm_read_end, lm_write_begin, lm_commit, lm_abort,    lm_get,   lm_put, lm_put_new,
    lm_del,        lm_scan,     lm_count,       lm_grow,   lm_sync,     lm_map_size, lm_close,
};

/* ------------------------------------------------- the cache's directory */

/* Filesystems whose byte-range locks or shared mappings do not hold across
 * machines, so LMDB's lock file (a reader table and a writer mutex in shared
 * memory) does not: docs/DECISIONS.md, "Storage faults", says why these. */
static const struct {
    unsigned long magic;
    const char *name;
} network_fs[] = {
    {0x6969, "NFS"},          {0x517B, "SMB"},         {0xFF534D42, "CIFS"},     {0xFE534D42, "SMB2"},
    {0x0BD00BD0, "Lustre"},   {0x47504653, "GPFS"},    {0x00C36400, "CephFS"},   {0x19830326, "BeeGFS"},
    {0x01021997, "9p"},       {0x6B414653, "AFS"},     {0x5346414F, "OpenAFS"},  {0x73757245, "Coda"},
    {0x564C, "NCP"},
};
#define FUSE_MAGIC 0x65735546UL
/* FUSE filesystems are told apart by their subtype ("fuse.sshfs"). */
static const char *const network_fuse[] = {"sshfs",   "s3fs",   "glusterfs", "ceph-fuse", "rclone",
                                           "gcsfuse", "goofys", "juicefs",   "moosefs",   "lizardfs"};

/* The subtype of the FUSE mount holding dev, from /proc/self/mountinfo. */
static void fuse_subtype(dev_t dev, char *out, size_t cap) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) return;
    char *line = NULL;
    size_t n = 0;
    while (getline(&line, &n, f) > 0) {
        unsigned maj, min;
        char *sep = strstr(line, " - ");
        if (!sep || sscanf(line, "%*d %*d %u:%u", &maj, &min) != 2 || maj != major(dev) || min != minor(dev)) continue;
        char type[128];
        if (sscanf(sep + 3, "%127s", type) == 1 && !strncmp(type, "fuse.", 5)) snprintf(out, cap, "%s", type + 5);
        break;
    }
    free(line);
    fclose(f);
}

/* The name of the network filesystem dir is on, or NULL. QUIVER_TEST_FSTYPE
 * ("0x6969", "fuse.sshfs") stands in for the real one so that tests in
 * every language can play NFS; it can only claim what allow_network_fs
 * already lets a caller claim. */
static const char *network_fs_name(const char *dir, const struct stat *sb, char *buf, size_t cap) {
    unsigned long magic;
    char subtype[64] = "";
    const char *fake = getenv("QUIVER_TEST_FSTYPE");
    if (fake && *fake) {
        magic = strncmp(fake, "fuse.", 5) ? strtoul(fake, NULL, 0) : FUSE_MAGIC;
        if (magic == FUSE_MAGIC) snprintf(subtype, sizeof subtype, "%s", fake + 5);
    } else {
        struct statfs fs;
        if (statfs(dir, &fs) != 0) return NULL;
        magic = (uint32_t)fs.f_type;
        if (magic == FUSE_MAGIC) fuse_subtype(sb->st_dev, subtype, sizeof subtype);
    }
    for (size_t i = 0; i < sizeof network_fs / sizeof network_fs[0]; i++)
        if (magic == network_fs[i].magic) return network_fs[i].name;
    for (size_t i = 0; magic == FUSE_MAGIC && i < sizeof network_fuse / sizeof network_fuse[0]; i++) {
        if (!strcmp(subtype, network_fuse[i])) {
            snprintf(buf, cap, "FUSE (%s)", subtype);
            return buf;
        }
    }
    return NULL;
}

/* What quiver creates in a directory its group may write, the group may
 * write too (README, "Shared machines and filesystems"): it takes the
 * directory's group, as a setgid directory would give it, and group read
 * and write whatever the umask says. Only what this user owns. */
static void share_with(const char *path, const struct stat *dir) {
    if (!(dir->st_mode & (S_IWGRP | S_ISGID))) return;
    struct stat sb;
    if (stat(path, &sb) != 0 || sb.st_uid != geteuid()) return;
    /* not a member of the directory's group: the file keeps ours */
    if (sb.st_gid != dir->st_gid && chown(path, (uid_t)-1, dir->st_gid) == 0) stat(path, &sb);
    mode_t add = S_IRGRP | S_IWGRP | (S_ISDIR(sb.st_mode) ? S_IXGRP : 0);
    if ((sb.st_mode & add) != add) chmod(path, (sb.st_mode & 07777) | add);
}

void qv__share_with_group(const char *path) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    struct stat sb;
    if (stat(dir, &sb) == 0) share_with(path, &sb);
}

static qv_status make_directory(const char *path) {
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return qv__error(QV_EINVAL, "cache path is empty or too long");
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            /* a setgid parent's bit and group pass to the new directory */
            if (mkdir(buf, 0755) == 0) qv__share_with_group(buf);
            else if (errno != EEXIST)
                return qv__error(QV_EIO, "cannot create the cache directory %s: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    return QV_OK;
}

/* Whether this process may write dir/name, creating it if absent; errno
 * says why not. */
static int may_write(const char *dir, const char *name, int *exists) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    *exists = faccessat(AT_FDCWD, p, F_OK, AT_EACCESS) == 0;
    return faccessat(AT_FDCWD, *exists ? p : dir, W_OK, AT_EACCESS) == 0;
}

int qv__store_lmdb_readonly(const qv_store *s) {
    return ((const lmdb_store *)s)->e->readonly;
}

qv_status qv__store_lmdb_open(qv_store **out, const char *path, const qv_store_config *cfg) {
    *out = NULL;
    if (cfg->ntables > QV_STORE_MAX_TABLES) return qv__error(QV_EINVAL, "too many tables");
    qv_status st;
    if (!cfg->readonly && (st = make_directory(path))) return st;
    char real[PATH_MAX];
    if (!realpath(path, real)) return qv__error(QV_EIO, "cannot open the cache at %s: %s", path, strerror(errno));
    struct stat sb;
    if (stat(real, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return qv__error(QV_EINVAL, "cache path %s is not a directory", real);
    char fuse[80];
    const char *remote = cfg->allow_network_fs ? NULL : network_fs_name(real, &sb, fuse, sizeof fuse);
    if (remote)
        return qv__error(QV_EINVAL,
                         "%s is on %s, a network filesystem, where LMDB's locks do not hold between machines and "
                         "the cache could be corrupted: share a cache between machines through the remote tier "
                         "(redis://host), or, if one machine alone uses this directory, open it with "
                         "QV_CACHE_ALLOW_NETWORK_FS (Python allow_network_fs=True, Lua {allow_network_fs = true})",
                         real, remote);
    int had_data, had_lock;
    int writable = may_write(real, "data.mdb", &had_data);
    writable = writable && may_write(real, "lock.mdb", &had_lock);
    char why[128] = "";
    if (!writable) snprintf(why, sizeof why, "%s", strerror(errno));
    /* no cache to read: falling back would only hide why none can be made */
    if (!writable && !cfg->readonly && !had_data)
        return qv__error(QV_EIO, "cannot create a cache in %s: %s", real, why);
    lmdb_store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(real))) {
        free(s);
        return qv__nomem();
    }
    s->base.ops = &lmdb_ops;
    s->cfg = *cfg;
    /* A directory this process cannot write opens read-only (DESIGN
     * section 12: hits work, misses run unstored), with one warning. */
    int fell_back = !cfg->readonly && !writable;
    if (fell_back) s->cfg.readonly = 1;
    for (int i = 0; i < cfg->ntables; i++) s->tables[i] = cfg->tables[i];
    s->cfg.tables = s->tables;
    pthread_once(&fork_handlers_once, install_fork_handlers);
    pthread_mutex_lock(&registry_lock);
    st = env_acquire(&s->e, real, &s->cfg);
    pthread_mutex_unlock(&registry_lock);
    if (st) {
        free(s->path);
        free(s);
        return st;
    }
    /* a read-only open may create lock.mdb too; share_with skips a file
     * this user does not own */
    char file[PATH_MAX];
    snprintf(file, sizeof file, "%s/data.mdb", real);
    if (!had_data && !s->cfg.readonly) share_with(file, &sb);
    snprintf(file, sizeof file, "%s/lock.mdb", real);
    if (!had_lock && !s->e->nolock) share_with(file, &sb);
    static const char bypass[] = "lock.mdb is not writable by this user either, so reads go around LMDB's reader "
                                 "table, each checked against the writers' commits (a scan, such as verify, while "
                                 "another process writes may see its changes half made)";
    if (fell_back)
        qv__warn("%s: this user cannot write here (%s), so the cache is open read-only: hits work, new results are "
                 "not stored%s%s (README, \"Shared machines and filesystems\")",
                 real, why, s->e->nolock ? "; " : "", s->e->nolock ? bypass : "");
    else if (s->e->nolock && !cfg->quiet)
        qv__warn("%s: %s (README, \"Shared machines and filesystems\")", real, bypass);
    *out = &s->base;
    return QV_OK;
}
