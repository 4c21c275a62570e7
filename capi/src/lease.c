/* Leases on call keys, shared by processes through one mapped file.
 *
 * The file is a header with a robust process-shared mutex (as LMDB's
 * lock.mdb has) and an open-addressed table of slots. The mutex guards only
 * a few loads and stores: no caller code ever runs under it. Each slot has a
 * sequence word that changes whenever the slot changes hands; waiters sleep
 * on it with a futex, which the kernel keys by file and offset, so a release
 * in one process wakes the waiters of every other at once. A waiter also
 * wakes every LIVENESS_NS to see whether the holder died. */
#define _GNU_SOURCE
#include "lease.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LEASE_MAGIC 0x3145534145564c51ull /* "QVLEASE1" little-endian */
#define LEASE_VERSION 1u
#define NSLOTS 4096u /* leases held at once on one cache; more run without one */
#define LIVENESS_NS 200000000ll      /* how often a waiter checks its holder */
#define BEAT_NS 1000000000ll         /* how often a holder's process proves it lives */
#define BEAT_STALE_NS 5000000000ll   /* silence that makes a holder dead when its pid cannot be checked */
#define DEFAULT_WAIT_NS 600000000000ll
#define RECHECK_NS 1000000000ll        /* how often a directory's lease file is looked at again */

enum { SLOT_FREE = 0, SLOT_HELD = 1, SLOT_GONE = 2 /* a tombstone: probing goes on past it */ };

typedef struct {
    uint8_t key[16];
    _Atomic uint32_t seq; /* the futex word */
    uint32_t state;
    int32_t pid, tid;
    uint64_t pid_start; /* the holder's start time (clock ticks after boot): pids are reused */
    uint64_t boot;      /* the holder's boot: a file that outlives a reboot holds no live lease */
    uint64_t pidns;     /* the holder's pid namespace: its pid means nothing in another */
    _Atomic int64_t beat_ns; /* CLOCK_REALTIME of the holder's last heartbeat */
    uint64_t serial;    /* which taking of the lease this is: a release must name it */
    uint32_t waited;    /* someone sleeps on seq: the release makes the wake-up call */
    uint32_t pad;
} slot;

typedef struct {
    uint64_t magic;
    uint32_t version, nslots;
    uint32_t tombstones;
    uint32_t pad;
    pthread_mutex_t lock;
    uint8_t reserved[128 - 24 - sizeof(pthread_mutex_t)];
} header;

_Static_assert(sizeof(header) == 128, "the lease file header is 128 bytes");
/* The file's layout is part of the format (docs/FORMAT.md): every process on
 * a cache, whatever build of quiver it runs, must agree on it. */
_Static_assert(sizeof(slot) == 80, "a lease slot is 80 bytes");
_Static_assert(offsetof(slot, boot) == 40, "a slot's boot id is at byte 40");

struct qv_leases {
    header *h;
    slot *slots;
    size_t map_len;
    int shared;           /* a file every process maps, or private memory */
    _Atomic uint64_t fork_gen; /* private tables start empty in a child */
    struct qv_leases *beat_next; /* the shared tables the heartbeat visits */
};

/* ------------------------------------------------------------------ who am I */

typedef struct {
    int32_t pid;
    uint64_t start, boot, pidns;
} identity;

static pthread_mutex_t self_lock = PTHREAD_MUTEX_INITIALIZER;
static identity self_cache;

/* Every lease table this process has opened, by cache directory: one mapping
 * per file, kept until exit, as the store keeps one environment per path. */
typedef struct table_entry {
    struct table_entry *next;
    qv_leases *table; /* NULL: the directory would not take a lease file */
    dev_t dev;        /* the file mapped: a directory removed and made */
    ino_t ino;        /* again is another table */
    int64_t checked_ns; /* when the file was last compared with it */
    char path[];
} table_entry;

static pthread_mutex_t tables_lock = PTHREAD_MUTEX_INITIALIZER;
static table_entry *tables;
static qv_leases *private_table;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
/* The heartbeat's (see below): every open shared table, and the fork
 * generation its thread runs in. */
static pthread_mutex_t beat_lock = PTHREAD_MUTEX_INITIALIZER;
static qv_leases *beat_tables;
static uint64_t beat_gen = UINT64_MAX; /* the fork generation the thread runs in */


/* Another thread may have held either lock at fork(): the child's copy of it
 * would never open. */
static void reset_locks_in_child(void) {
    pthread_mutex_init(&self_lock, NULL);
    pthread_mutex_init(&tables_lock, NULL);
    pthread_mutex_init(&beat_lock, NULL);
}

static void install_fork_handler(void) {
    pthread_atfork(NULL, NULL, reset_locks_in_child);
}

/* Field 22 of /proc/PID/stat, the process's start time; 0 when it is gone,
 * or a zombie: dead, though its parent has not reaped it yet. */
static uint64_t process_start(int32_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    /* the command name may hold spaces and parentheses: count from the last ')' */
    char *p = strrchr(buf, ')');
    if (!p || !p[1] || !p[2] || p[2] == 'Z' || p[2] == 'X') return 0; /* field 3, the state */
    int field = 2;
    for (; *p && field < 22; p++)
        if (*p == ' ') field++;
    return strtoull(p, NULL, 10);
}

static uint64_t boot_id(void) {
    char buf[64] = {0};
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : 0;
    if (fd >= 0) close(fd);
    return qv__hash64(buf, n > 0 ? (size_t)n : 0);
}

static uint64_t pid_namespace(void) {
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Read once per process: a child after fork() is a new process, which the
 * fork generation tells without a system call. */
static _Atomic uint64_t self_gen = UINT64_MAX;

static identity me(void) {
    uint64_t gen = qv__fork_generation();
    pthread_mutex_lock(&self_lock);
    if (atomic_load(&self_gen) != gen) {
        int32_t pid = (int32_t)getpid();
        self_cache.pid = pid;
        self_cache.start = process_start(pid);
        self_cache.boot = boot_id();
        self_cache.pidns = pid_namespace();
        atomic_store(&self_gen, gen);
    }
    identity id = self_cache;
    pthread_mutex_unlock(&self_lock);
    return id;
}

/* gettid() is a system call; a thread keeps its id, except the thread that
 * called fork(), which is another thread in the child. */
static _Thread_local int32_t tid_cached;
static _Thread_local uint64_t tid_gen = UINT64_MAX;

static int32_t my_tid(void) {
    uint64_t gen = qv__fork_generation();
    if (tid_gen != gen) {
        tid_cached = (int32_t)gettid();
        tid_gen = gen;
    }
    return tid_cached;
}

static int64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int holder_alive(const slot *s, const identity *id) {
    if (s->boot != id->boot) return 0;
    if (s->pidns == id->pidns) {
        if (s->pid == id->pid) return s->pid_start == id->start;
        return process_start(s->pid) == s->pid_start;
    }
    return now_ns(CLOCK_REALTIME) - atomic_load(&s->beat_ns) < BEAT_STALE_NS;
}

/* ---------------------------------------------------------------- the table */

static void futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t ns, int shared) {
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    syscall(SYS_futex, word, shared ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, expected, &ts, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word, int shared) {
    syscall(SYS_futex, word, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static qv_status table_lock(qv_leases *t) {
    int rc = pthread_mutex_lock(&t->h->lock);
    if (rc == EOWNERDEAD) rc = pthread_mutex_consistent(&t->h->lock); /* its holder died between two stores: harmless */
    return rc ? qv__error(QV_EIO, "lease table lock: %s", strerror(rc)) : QV_OK;
}

static void table_unlock(qv_leases *t) {
    pthread_mutex_unlock(&t->h->lock);
}

static uint32_t home(const qv_digest *key) {
    uint32_t h;
    memcpy(&h, key->bytes, sizeof h); /* a digest is uniformly distributed already */
    return h & (NSLOTS - 1);
}

/* The key's held slot, else where it would go (the first tombstone or free
 * slot on its path); UINT32_MAX for either when there is none. */
static void probe(qv_leases *t, const qv_digest *key, uint32_t *found, uint32_t *vacant) {
    *found = *vacant = UINT32_MAX;
    for (uint32_t i = 0, at = home(key); i < NSLOTS; i++, at = (at + 1) & (NSLOTS - 1)) {
        slot *s = &t->slots[at];
        if (s->state == SLOT_FREE) {
            if (*vacant == UINT32_MAX) *vacant = at;
            return;
        }
        if (s->state == SLOT_GONE) {
            if (*vacant == UINT32_MAX) *vacant = at;
        } else if (memcmp(s->key, key->bytes, 16) == 0) {
            *found = at;
            return;
        }
    }
}

static _Atomic uint64_t serials;

static void take(slot *s, const qv_digest *key, const identity *id) {
    memcpy(s->key, key->bytes, 16);
    s->state = SLOT_HELD;
    s->pid = id->pid;
    s->tid = my_tid();
    s->pid_start = id->start;
    s->boot = id->boot;
    s->pidns = id->pidns;
    atomic_store(&s->beat_ns, now_ns(CLOCK_REALTIME));
    s->serial = atomic_fetch_add(&serials, 1) + 1;
    s->waited = 0;
    atomic_fetch_add(&s->seq, 1);
}

/* Tombstones lengthen every probe; when they pile up, slots whose holder died
 * are dropped and the rest re-placed. Every slot's sequence moves, so waiters
 * wake, find their key again and sleep on its new slot. */
static void compact(qv_leases *t, const identity *id) {
    slot *keep = malloc(sizeof(slot) * NSLOTS);
    if (!keep) return;
    uint32_t n = 0;
    for (uint32_t i = 0; i < NSLOTS; i++) {
        slot *s = &t->slots[i];
        if (s->state == SLOT_HELD && holder_alive(s, id)) memcpy(&keep[n++], s, sizeof *s);
        if (s->state != SLOT_FREE) s->state = SLOT_FREE;
    }
    for (uint32_t k = 0; k < n; k++) {
        qv_digest key;
        memcpy(key.bytes, keep[k].key, 16);
        uint32_t found, vacant;
        probe(t, &key, &found, &vacant);
        slot *s = &t->slots[vacant];
        uint32_t seq = atomic_load(&s->seq);
        memcpy(s, &keep[k], sizeof *s);
        atomic_store(&s->seq, seq);
    }
    t->h->tombstones = 0;
    for (uint32_t i = 0; i < NSLOTS; i++) {
        atomic_fetch_add(&t->slots[i].seq, 1);
        futex_wake(&t->slots[i].seq, t->shared);
    }
    free(keep);
}

/* ------------------------------------------------------------ the heartbeat */

/* One thread per process, started when it first takes a lease on a shared
 * table, proves every second that the holders of this process live, for
 * waiters in other pid namespaces (containers sharing a cache directory),
 * which cannot check a pid. One thread for every table: a process may open
 * thousands of caches. */

static void *beat_main(void *unused) {
    for (;;) {
        struct timespec pause = {BEAT_NS / 1000000000, BEAT_NS % 1000000000};
        nanosleep(&pause, NULL);
        int32_t pid = (int32_t)getpid();
        int64_t now = now_ns(CLOCK_REALTIME);
        pthread_mutex_lock(&beat_lock);
        for (qv_leases *t = beat_tables; t; t = t->beat_next) {
            if (table_lock(t)) continue;
            for (uint32_t i = 0; i < NSLOTS; i++) {
                slot *s = &t->slots[i];
                if (s->state == SLOT_HELD && s->pid == pid) atomic_store(&s->beat_ns, now);
            }
            table_unlock(t);
        }
        pthread_mutex_unlock(&beat_lock);
    }
    return NULL;
}

/* Started on the first lease taken, and again in a child after fork(), where
 * the parent's thread does not exist. */
static void beat_start(void) {
    uint64_t gen = qv__fork_generation();
    pthread_mutex_lock(&beat_lock);
    if (beat_gen != gen) {
        pthread_attr_t attr;
        pthread_t thread;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&thread, &attr, beat_main, NULL) == 0) beat_gen = gen;
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_unlock(&beat_lock);
}

/* ------------------------------------------------------------- open, close */

static qv_status init_header(header *h) {
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (!rc) rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!rc) rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!rc) rc = pthread_mutex_init(&h->lock, &a);
    pthread_mutexattr_destroy(&a);
    if (rc) return qv__error(QV_EIO, "lease table: cannot make its lock: %s", strerror(rc));
    h->version = LEASE_VERSION;
    h->nslots = NSLOTS;
    h->magic = LEASE_MAGIC;
    return QV_OK;
}

static qv_status map_file(qv_leases *t, const char *dir) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/quiver.leases", dir) >= sizeof path)
        return qv__error(QV_EINVAL, "lease table: the path is too long");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return qv__error(QV_EIO, "lease table %s: %s", path, strerror(errno));
    qv_status st = QV_OK;
    /* One process sizes and initialises the file; the others wait on flock. */
    if (flock(fd, LOCK_EX) != 0) st = qv__error(QV_EIO, "lease table %s: flock: %s", path, strerror(errno));
    struct stat sb;
    if (!st && fstat(fd, &sb) != 0) st = qv__error(QV_EIO, "lease table %s: %s", path, strerror(errno));
    int fresh = !st && sb.st_size < (off_t)t->map_len;
    if (fresh && ftruncate(fd, (off_t)t->map_len) != 0)
        st = qv__error(QV_EIO, "lease table %s: cannot size it: %s", path, strerror(errno));
    if (fresh) qv__share_with_group(path); /* the group's processes wait in it too */
    void *p = MAP_FAILED;
    if (!st && (p = mmap(NULL, t->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED)
        st = qv__error(QV_EIO, "lease table %s: mmap: %s", path, strerror(errno));
    if (!st) {
        t->h = p;
        if (t->h->magic != LEASE_MAGIC) {
            memset(p, 0, t->map_len); /* new, or from another version: nobody holds a lease in it */
            st = init_header(t->h);
        } else if (t->h->version != LEASE_VERSION || t->h->nslots != NSLOTS) {
            st = qv__error(QV_ECORRUPT, "lease table %s: version %u with %u slots, expected %u with %u", path,
                           t->h->version, t->h->nslots, LEASE_VERSION, NSLOTS);
        }
        if (st) munmap(p, t->map_len);
    }
    flock(fd, LOCK_UN);
    close(fd); /* the mapping keeps the file */
    return st;
}

qv_status qv__leases_open(qv_leases **out, const char *dir) {
    *out = NULL;
    pthread_once(&fork_once, install_fork_handler);
    qv_leases *t = calloc(1, sizeof *t);
    if (!t) return qv__nomem();
    t->map_len = sizeof(header) + sizeof(slot) * NSLOTS;
    t->shared = dir != NULL;
    qv_status st;
    if (t->shared) {
        st = map_file(t, dir);
    } else {
        t->h = calloc(1, t->map_len);
        st = t->h ? init_header(t->h) : qv__nomem();
        if (st) free(t->h);
    }
    if (st) {
        free(t);
        return st;
    }
    t->slots = (slot *)(t->h + 1);
    t->fork_gen = qv__fork_generation();
    if (t->shared) {
        pthread_mutex_lock(&beat_lock);
        t->beat_next = beat_tables;
        beat_tables = t;
        pthread_mutex_unlock(&beat_lock);
    }
    *out = t;
    return QV_OK;
}

void qv__leases_close(qv_leases *t) {
    if (!t) return;
    if (t->shared) { /* out of the heartbeat's list before the mapping goes */
        pthread_mutex_lock(&beat_lock);
        qv_leases **p = &beat_tables;
        while (*p && *p != t) p = &(*p)->beat_next;
        if (*p) *p = t->beat_next;
        pthread_mutex_unlock(&beat_lock);
    }
    if (t->shared) {
        munmap(t->h, t->map_len);
    } else {
        pthread_mutex_destroy(&t->h->lock);
        free(t->h);
    }
    free(t);
}

/* -------------------------------------------------------- acquire, release */

/* A private table copied into a child by fork() holds the parent's leases,
 * whose calls do not run here, and perhaps a lock another thread held: the
 * child starts afresh (while it still has one thread, normally). */
static void forget_parent(qv_leases *t) {
    uint64_t gen = qv__fork_generation(), was = atomic_load(&t->fork_gen);
    if (t->shared || was == gen || !atomic_compare_exchange_strong(&t->fork_gen, &was, gen)) return;
    memset(t->h, 0, t->map_len);
    init_header(t->h);
}

qv_status qv__lease_acquire(qv_leases *t, const qv_digest *key, int64_t wait_ns, int *outcome, qv_lease *lease) {
    if (!t || !key || !outcome || !lease) return qv__error(QV_EINVAL, "qv__lease_acquire: NULL argument");
    forget_parent(t);
    identity id = me();
    int64_t deadline = now_ns(CLOCK_MONOTONIC) + (wait_ns < 0 ? DEFAULT_WAIT_NS : wait_ns);
    qv_status st;
    for (;;) {
        if ((st = table_lock(t))) return st;
        uint32_t found, vacant;
        probe(t, key, &found, &vacant);
        if (found == UINT32_MAX || !holder_alive(&t->slots[found], &id)) {
            uint32_t at = found != UINT32_MAX ? found : vacant;
            if (at == UINT32_MAX) {
                table_unlock(t);
                *outcome = QV_LEASE_TIMEOUT; /* every slot held: compute without one */
                return QV_OK;
            }
            slot *s = &t->slots[at];
            if (s->state == SLOT_GONE) t->h->tombstones--;
            take(s, key, &id);
            lease->serial = s->serial;
            table_unlock(t);
            if (t->shared) beat_start();
            *outcome = QV_LEASE_HELD;
            return QV_OK;
        }
        slot *s = &t->slots[found];
        int64_t left = deadline - now_ns(CLOCK_MONOTONIC);
        if ((s->pid == id.pid && s->tid == my_tid()) || left <= 0) {
            table_unlock(t); /* our own thread holds it (a call inside itself): waiting would never end */
            *outcome = QV_LEASE_TIMEOUT;
            return QV_OK;
        }
        uint32_t seq = atomic_load(&s->seq);
        s->waited = 1;
        table_unlock(t);
        futex_wait(&s->seq, seq, left < LIVENESS_NS ? left : LIVENESS_NS, t->shared);
        if ((st = table_lock(t))) return st;
        probe(t, key, &found, &vacant);
        table_unlock(t);
        if (found == UINT32_MAX) {
            *outcome = QV_LEASE_DONE; /* released: its result is stored, or its holder failed */
            return QV_OK;
        }
        /* still held (by the same holder, or one that took over): check it and wait again */
    }
}

void qv__lease_release(qv_leases *t, const qv_digest *key, const qv_lease *lease) {
    if (!t || !key || !lease) return;
    identity id = me();
    if (table_lock(t)) return;
    uint32_t at, vacant;
    probe(t, key, &at, &vacant);
    slot *s = at == UINT32_MAX ? NULL : &t->slots[at];
    /* Ours: this process (a child after fork() inherits no lease) and this
     * taking of it (not one that took over from us, thinking us dead). */
    if (s && s->pid == id.pid && s->serial == lease->serial) {
        /* A free next slot ends every probe through this one: it can be free too. */
        int last = t->slots[(at + 1) & (NSLOTS - 1)].state == SLOT_FREE;
        s->state = last ? SLOT_FREE : SLOT_GONE;
        if (!last) t->h->tombstones++;
        atomic_fetch_add(&s->seq, 1);
        if (s->waited) futex_wake(&s->seq, t->shared); /* a system call only when someone waits */
        if (t->h->tombstones > NSLOTS / 4) compact(t, &id);
    }
    table_unlock(t);
}

qv_leases *qv__leases_of(qv_cache *cache) {
    pthread_once(&fork_once, install_fork_handler);
    const char *path = qv_cache_path(cache);
    if (!path) return NULL;
    qv_leases *found = NULL;
    pthread_mutex_lock(&tables_lock);
    if (strcmp(path, ":memory:") == 0) {
        if (!private_table && qv__leases_open(&private_table, NULL)) private_table = NULL;
        found = private_table;
        pthread_mutex_unlock(&tables_lock);
        return found;
    }
    /* The newest entry for path comes first. A file is looked at again once
     * a second, not on every miss (a stat costs a microsecond): a table
     * found stale a moment late only shares fewer leases, and a waiter
     * always looks the call up again, so no answer is ever wrong. */
    table_entry *e = tables;
    while (e && strcmp(e->path, path)) e = e->next;
    int64_t now = now_ns(CLOCK_MONOTONIC);
    if (!e || now - e->checked_ns >= RECHECK_NS) {
        char file[4096];
        struct stat sb;
        snprintf(file, sizeof file, "%s/quiver.leases", path);
        int have = stat(file, &sb) == 0;
        /* the same file, or still none in a directory that takes none */
        int same = e && (e->table ? have && e->dev == sb.st_dev && e->ino == sb.st_ino : !have);
        if (!same) {
            /* A replaced file leaves its old entry behind: another thread
             * may still wait in it, and a mapping is cheap. */
            table_entry *fresh = malloc(sizeof *fresh + strlen(path) + 1);
            if (fresh) {
                strcpy(fresh->path, path);
                if (qv__leases_open(&fresh->table, path) || stat(file, &sb) != 0) {
                    qv__leases_close(fresh->table);
                    fresh->table = NULL;
                }
                fresh->dev = fresh->table ? sb.st_dev : 0;
                fresh->ino = fresh->table ? sb.st_ino : 0;
                fresh->next = tables;
                tables = fresh;
            }
            e = fresh;
        }
        if (e) e->checked_ns = now;
    }
    found = e ? e->table : NULL;
    pthread_mutex_unlock(&tables_lock);
    return found;
}
