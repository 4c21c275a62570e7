/* Many threads and many processes on one cache. Built twice: with ASan+UBSan
 * and with ThreadSanitizer, so the test side stays race-free: every worker
 * writes only its own struct, which the main thread reads after joining.
 * Worker threads and child processes never call cmocka (not thread-safe, and
 * a child must not unwind into the parent's runner); they count errors and
 * keep the first message, and the main thread asserts. */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char FN[] = "concurrency_fn";
static const char VER[] = "1";

/* ------------------------------------------------------------ helpers */

static qv_value *args_of(int64_t k) {
    qv_value *args, *v;
    if (qv_value_new_list(&args)) return NULL;
    if (qv_value_new_int(&v, k) || qv_value_list_append(args, v)) {
        qv_value_free(args);
        return NULL;
    }
    return args;
}

static int key_of(int64_t k, qv_digest *d) {
    qv_value *args = args_of(k);
    int bad = !args || qv_call_digest(d, FN, VER, args, NULL) != QV_OK;
    qv_value_free(args);
    return bad ? -1 : 0;
}

static int64_t result_of(int64_t k) {
    return k * 7 + 1;
}

/* f(k) = k*7+1 */
static qv_status store_int(qv_cache *c, int64_t k) {
    qv_value *args = args_of(k), *res = NULL;
    qv_status st = args ? qv_value_new_int(&res, result_of(k)) : QV_ENOMEM;
    if (!st) st = qv_cache_store_value(c, FN, VER, args, NULL, res, NULL);
    qv_value_free(args);
    qv_value_free(res);
    return st;
}

/* A byte string of len bytes determined by k. */
static void blob_fill(uint8_t *b, size_t len, int64_t k) {
    for (size_t j = 0; j < len; j++) b[j] = (uint8_t)(k * 31 + (int64_t)j * 7 + 3);
    for (size_t j = 0; j < 8 && j < len; j++) b[j] = (uint8_t)((uint64_t)k >> (8 * (7 - j)));
}

static qv_status store_blob(qv_cache *c, int64_t k, size_t len) {
    uint8_t *b = malloc(len);
    qv_value *args = args_of(k), *res = NULL;
    qv_status st = b && args ? QV_OK : QV_ENOMEM;
    if (!st) {
        blob_fill(b, len, k);
        st = qv_value_new_bytes(&res, b, len);
    }
    if (!st) st = qv_cache_store_value(c, FN, VER, args, NULL, res, NULL);
    free(b);
    qv_value_free(args);
    qv_value_free(res);
    return st;
}

enum { CHK_OK = 0, CHK_MISSING = 1, CHK_WRONG = 2, CHK_ERROR = 3 };

/* Checks the result's encoding through the zero-copy path. */
typedef struct {
    int64_t k;
    size_t blob; /* 0: an integer result */
} expect;

static qv_status compare_result(const void *data, size_t len, void *userdata) {
    const expect *e = userdata;
    qv_value *v;
    qv_status st = qv_value_decode(&v, data, len);
    if (st) return st;
    int ok;
    if (e->blob) {
        const uint8_t *d;
        size_t n;
        ok = qv_value_get_bytes(v, &d, &n) == QV_OK && n == e->blob;
        if (ok) {
            uint8_t *want = malloc(n);
            blob_fill(want, n, e->k);
            ok = memcmp(want, d, n) == 0;
            free(want);
        }
    } else {
        int64_t got;
        ok = qv_value_get_int(v, &got) == QV_OK && got == result_of(e->k);
    }
    qv_value_free(v);
    return ok ? QV_OK : QV_ETYPE;
}

static int check_key(qv_cache *c, int64_t k, size_t blob) {
    qv_digest key;
    if (key_of(k, &key)) return CHK_ERROR;
    expect e = {k, blob};
    qv_status st = qv_cache_get_with(c, &key, compare_result, &e);
    if (st == QV_NOTFOUND) return CHK_MISSING;
    if (st == QV_ETYPE) return CHK_WRONG;
    return st ? CHK_ERROR : CHK_OK;
}

static int check_int(qv_cache *c, int64_t k) {
    return check_key(c, k, 0);
}

static uint64_t stat_of(qv_cache *c, int which) {
    uint64_t n = 0;
    QVT_OK(qv_cache_stat(c, which, &n));
    return n;
}

/* What a worker saw; written only by its thread until joined. */
typedef struct {
    qv_cache *c;
    const char *dir; /* for workers that open their own handles */
    pthread_barrier_t *start;
    int t;
    int64_t lo, hi;     /* keys it stores */
    int64_t probe_max;  /* random reads over [0, probe_max) */
    size_t blob;        /* result size for blob workers */
    int may_evict;      /* a size limit: even a key just stored may be gone */
    const int *stop;    /* for readers: set (atomically) when writers are done */
    unsigned seed;
    int errors;
    char first[256];
    uint64_t stored, hits, misses;
} worker;

static void note(worker *w, const char *fmt, ...) {
    if (w->errors++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->first, sizeof w->first, fmt, ap);
        va_end(ap);
    }
}

static void start_all(pthread_t *th, worker *w, int n, void *(*fn)(void *)) {
    for (int i = 0; i < n; i++) assert_int_equal(pthread_create(&th[i], NULL, fn, &w[i]), 0);
}

static void join_all(pthread_t *th, worker *w, int n) {
    for (int i = 0; i < n; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < n; i++)
        if (w[i].errors) fail_msg("thread %d: %d errors; first: %s", w[i].t, w[i].errors, w[i].first);
}

/* Stores [lo, hi) (odd threads downwards, so neighbours reach their shared
 * keys at the same time), reading each back at once, and probes random keys:
 * a hit must carry the right result. */
static void *store_and_read(void *p) {
    worker *w = p;
    if (w->start) pthread_barrier_wait(w->start);
    int64_t n = w->hi - w->lo;
    for (int64_t i = 0; i < n; i++) {
        int64_t k = (w->t & 1) ? w->hi - 1 - i : w->lo + i;
        qv_status st = w->blob ? store_blob(w->c, k, w->blob) : store_int(w->c, k);
        if (st) {
            note(w, "store %lld: %s: %s", (long long)k, qv_status_name(st), qv_errmsg());
            continue;
        }
        w->stored++;
        int r = check_key(w->c, k, w->blob);
        if (r != CHK_OK && !(r == CHK_MISSING && w->may_evict))
            note(w, "key %lld just stored reads as %d: %s", (long long)k, r, qv_errmsg());
        int64_t q = (int64_t)(rand_r(&w->seed) % (unsigned)w->probe_max);
        r = check_key(w->c, q, w->blob);
        if (r == CHK_OK) w->hits++;
        else if (r == CHK_MISSING) w->misses++;
        else note(w, "probe of key %lld reads as %d: %s", (long long)q, r, qv_errmsg());
    }
    return NULL;
}

/* ------------------------------------------- 8 threads on one LMDB cache */

#define NT 8
#define K 200 /* thread t stores t*K .. t*K+2K-1 */
#define NKEYS ((NT + 1) * K)

static void fill_workers(worker *w, int n, qv_cache *c, pthread_barrier_t *bar, size_t blob) {
    memset(w, 0, (size_t)n * sizeof *w);
    for (int t = 0; t < n; t++) {
        w[t].c = c;
        w[t].start = bar;
        w[t].t = t;
        w[t].lo = (int64_t)t * K;
        w[t].hi = (int64_t)t * K + 2 * K;
        w[t].probe_max = NKEYS;
        w[t].blob = blob;
        w[t].seed = (unsigned)(t * 7919 + 17);
    }
}

static void threads_share_one_lmdb_cache(void **state) {
    char *dir = qvt_tempdir("conc-threads");
    qv_cache *c = NULL;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, NT);
    worker w[NT];
    pthread_t th[NT];
    fill_workers(w, NT, c, &bar, 0);
    start_all(th, w, NT, store_and_read);
    join_all(th, w, NT);
    pthread_barrier_destroy(&bar);

    uint64_t hits = 0;
    for (int t = 0; t < NT; t++) hits += w[t].hits;
    assert_int_equal(stat_of(c, QV_STAT_STORES), NT * 2 * K);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), NKEYS);
    /* every read-back was a hit, plus the probes that hit */
    assert_int_equal(stat_of(c, QV_STAT_HITS), NT * 2 * K + hits);
    printf("%d stores in %llu commits; %llu probe hits\n", NT * 2 * K,
           (unsigned long long)stat_of(c, QV_STAT_COMMITS), (unsigned long long)hits);
    qv_cache_close(c);

    /* a fresh handle (a fresh environment: the last handle closed) */
    QVT_OK(qv_cache_open(&c, dir, NULL));
    for (int64_t k = 0; k < NKEYS; k++) {
        int r = check_int(c, k);
        if (r != CHK_OK) fail_msg("key %lld reads as %d from a fresh handle: %s", (long long)k, r, qv_errmsg());
    }
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), NKEYS);
    uint64_t bad = 1;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* ------------------------------------------ 4 processes on one LMDB cache */

#define NP 4
#define KP 200 /* process p stores p*KP .. p*KP+2KP-1 */
#define NPKEYS ((NP + 1) * KP)

static int child_process(const char *dir, int p) {
    qv_cache *c = NULL;
    if (qv_cache_open(&c, dir, NULL)) {
        fprintf(stderr, "child %d: open: %s\n", p, qv_errmsg());
        return 10;
    }
    worker w;
    memset(&w, 0, sizeof w);
    w.c = c;
    w.t = p;
    w.lo = (int64_t)p * KP;
    w.hi = w.lo + 2 * KP;
    w.probe_max = NPKEYS;
    w.seed = (unsigned)getpid();
    store_and_read(&w);
    /* and everything this process stored is still right at the end */
    for (int64_t k = w.lo; k < w.hi; k++)
        if (check_int(c, k) != CHK_OK) {
            if (!w.errors++) snprintf(w.first, sizeof w.first, "key %lld at the end", (long long)k);
        }
    qv_cache_close(c);
    if (w.errors) {
        fprintf(stderr, "child %d: %d errors; first: %s\n", p, w.errors, w.first);
        return 11;
    }
    return 0;
}

static void processes_share_one_lmdb_cache(void **state) {
    char *dir = qvt_tempdir("conc-procs");
    qv_cache *c = NULL;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    QVT_OK(store_int(c, -1));
    assert_int_equal(check_int(c, -1), CHK_OK); /* a live read transaction here too */

    pid_t pids[NP];
    fflush(stdout);
    fflush(stderr);
    for (int p = 0; p < NP; p++) {
        pids[p] = fork();
        if (pids[p] < 0) fail_msg("fork: %s", strerror(errno));
        if (pids[p] == 0) _exit(child_process(dir, p));
    }
    /* This process reads while the children write: hits must be right. */
    int running = NP, status[NP], wrong = 0;
    uint64_t hits = 0, probes = 0;
    unsigned seed = 12345;
    char first[256] = "";
    for (int p = 0; p < NP; p++) status[p] = -1;
    while (running) {
        for (int i = 0; i < 20; i++, probes++) {
            int64_t q = (int64_t)(rand_r(&seed) % NPKEYS);
            int r = check_int(c, q);
            if (r == CHK_OK) hits++;
            else if (r != CHK_MISSING && !wrong++)
                snprintf(first, sizeof first, "key %lld reads as %d: %s", (long long)q, r, qv_errmsg());
        }
        for (int p = 0; p < NP; p++) {
            int ws;
            if (status[p] < 0 && waitpid(pids[p], &ws, WNOHANG) == pids[p]) {
                status[p] = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
                running--;
            }
        }
    }
    for (int p = 0; p < NP; p++)
        if (status[p] != 0) fail_msg("child %d exited with %d", p, status[p]);
    if (wrong) fail_msg("%d wrong reads in the parent; first: %s", wrong, first);
    printf("parent: %llu probes while the children wrote, %llu hits\n", (unsigned long long)probes,
           (unsigned long long)hits);

    /* every result, through the handle that was open all along... */
    for (int64_t k = 0; k < NPKEYS; k++) {
        int r = check_int(c, k);
        if (r != CHK_OK) fail_msg("key %lld reads as %d: %s", (long long)k, r, qv_errmsg());
    }
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), NPKEYS + 1);
    qv_cache_close(c);
    /* ...and through a fresh one */
    QVT_OK(qv_cache_open(&c, dir, NULL));
    for (int64_t k = -1; k < NPKEYS; k++) assert_int_equal(check_int(c, k), CHK_OK);
    uint64_t bad = 1;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------- group commit */

#define GC_PER_THREAD 30

static void *store_only(void *p) {
    worker *w = p;
    pthread_barrier_wait(w->start);
    for (int64_t k = w->lo; k < w->hi; k++) {
        qv_status st = store_int(w->c, k);
        if (st) note(w, "store %lld: %s: %s", (long long)k, qv_status_name(st), qv_errmsg());
        else w->stored++;
    }
    return NULL;
}

static void durable_stores_are_committed_in_groups(void **state) {
    char *dir = qvt_tempdir("conc-group");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.durability = QV_DURABILITY_DURABLE;
    qv_cache *c = NULL;
    QVT_OK(qv_cache_open(&c, dir, &o));
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, NT);
    worker w[NT];
    pthread_t th[NT];
    memset(w, 0, sizeof w);
    for (int t = 0; t < NT; t++) {
        w[t].c = c;
        w[t].start = &bar;
        w[t].t = t;
        w[t].lo = (int64_t)t * GC_PER_THREAD;
        w[t].hi = w[t].lo + GC_PER_THREAD;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    start_all(th, w, NT, store_only);
    join_all(th, w, NT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_barrier_destroy(&bar);

    uint64_t stores = stat_of(c, QV_STAT_STORES), commits = stat_of(c, QV_STAT_COMMITS);
    printf("%llu durable stores in %llu commits (%.2f per commit), %.0f ms\n", (unsigned long long)stores,
           (unsigned long long)commits, commits ? (double)stores / (double)commits : 0.0,
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    assert_int_equal(stores, NT * GC_PER_THREAD);
    assert_true(commits > 0);
    assert_true(commits < stores); /* batching happened */
    for (int64_t k = 0; k < NT * GC_PER_THREAD; k++) assert_int_equal(check_int(c, k), CHK_OK);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), NT * GC_PER_THREAD);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* --------------------------------------------------- the memory cache */

static void threads_share_one_memory_cache(void **state) {
    qv_cache *c = NULL;
    QVT_OK(qv_cache_open_memory(&c));
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, NT);
    worker w[NT];
    pthread_t th[NT];
    fill_workers(w, NT, c, &bar, 0);
    start_all(th, w, NT, store_and_read);
    join_all(th, w, NT);
    pthread_barrier_destroy(&bar);
    uint64_t hits = 0;
    for (int t = 0; t < NT; t++) hits += w[t].hits;
    for (int64_t k = 0; k < NKEYS; k++) {
        int r = check_int(c, k);
        if (r != CHK_OK) fail_msg("key %lld reads as %d: %s", (long long)k, r, qv_errmsg());
    }
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), NKEYS);
    assert_int_equal(stat_of(c, QV_STAT_STORES), NT * 2 * K);
    assert_int_equal(stat_of(c, QV_STAT_HITS), NT * 2 * K + hits + NKEYS);
    uint64_t bad = 1;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    qv_cache_close(c);
}

/* ------------------------------- the map grows while other threads read */

#define GROW_WRITERS 3
#define GROW_READERS 3
#define GROW_PER_WRITER 250
#define GROW_BLOB 2048

static void *read_until_stopped(void *p) {
    worker *w = p;
    pthread_barrier_wait(w->start);
    while (!__atomic_load_n(w->stop, __ATOMIC_ACQUIRE)) {
        int64_t q = (int64_t)(rand_r(&w->seed) % (unsigned)w->probe_max);
        int r = check_key(w->c, q, w->blob);
        if (r == CHK_OK) w->hits++;
        else if (r == CHK_MISSING) w->misses++;
        else note(w, "key %lld reads as %d while the map grows: %s", (long long)q, r, qv_errmsg());
    }
    return NULL;
}

static void map_grows_under_concurrent_readers(void **state) {
    char *dir = qvt_tempdir("conc-grow");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.map_size = (uint64_t)1 << 20;
    o.durability = QV_DURABILITY_FAST;
    qv_cache *c = NULL;
    QVT_OK(qv_cache_open(&c, dir, &o));
    uint64_t map0 = stat_of(c, QV_STAT_MAP_SIZE);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, GROW_WRITERS + GROW_READERS);
    worker w[GROW_WRITERS + GROW_READERS];
    pthread_t th[GROW_WRITERS + GROW_READERS];
    int stop = 0;
    memset(w, 0, sizeof w);
    for (int t = 0; t < GROW_WRITERS + GROW_READERS; t++) {
        w[t].c = c;
        w[t].start = &bar;
        w[t].t = t;
        w[t].blob = GROW_BLOB;
        w[t].probe_max = GROW_WRITERS * GROW_PER_WRITER;
        w[t].seed = (unsigned)(t * 31 + 5);
        w[t].stop = &stop;
        w[t].lo = (int64_t)t * GROW_PER_WRITER;
        w[t].hi = w[t].lo + GROW_PER_WRITER;
    }
    for (int t = 0; t < GROW_WRITERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, store_and_read, &w[t]), 0);
    for (int t = GROW_WRITERS; t < GROW_WRITERS + GROW_READERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, read_until_stopped, &w[t]), 0);
    for (int t = 0; t < GROW_WRITERS; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int t = GROW_WRITERS; t < GROW_WRITERS + GROW_READERS; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
    pthread_barrier_destroy(&bar);
    for (int t = 0; t < GROW_WRITERS + GROW_READERS; t++)
        if (w[t].errors) fail_msg("thread %d: %d errors; first: %s", t, w[t].errors, w[t].first);

    uint64_t map1 = stat_of(c, QV_STAT_MAP_SIZE), reads = 0;
    for (int t = GROW_WRITERS; t < GROW_WRITERS + GROW_READERS; t++) reads += w[t].hits + w[t].misses;
    printf("map %llu -> %llu bytes; readers made %llu lookups meanwhile\n", (unsigned long long)map0,
           (unsigned long long)map1, (unsigned long long)reads);
    assert_true(map1 > map0);
    assert_true(reads > 0);
    for (int64_t k = 0; k < GROW_WRITERS * GROW_PER_WRITER; k++) {
        int r = check_key(c, k, GROW_BLOB);
        if (r != CHK_OK) fail_msg("key %lld reads as %d: %s", (long long)k, r, qv_errmsg());
    }
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), GROW_WRITERS * GROW_PER_WRITER);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* ------------------ a size-limited cache: evictions, hits, syncs at once */

#define LIM_THREADS 4
#define LIM_KEYS 150

static void *sync_until_stopped(void *p) {
    worker *w = p;
    pthread_barrier_wait(w->start);
    while (!__atomic_load_n(w->stop, __ATOMIC_ACQUIRE)) {
        qv_status st = qv_cache_sync(w->c);
        if (st) note(w, "sync: %s: %s", qv_status_name(st), qv_errmsg());
        w->hits++;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void limited_cache_under_threads(void **state) {
    char *dir = qvt_tempdir("conc-limit");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.max_bytes = 64 * 1024;
    o.durability = QV_DURABILITY_FAST;
    qv_cache *c = NULL;
    setenv("QUIVER_LRU_FLUSH_MS", "1", 1); /* hits write their touches too, among the stores */
    QVT_OK(qv_cache_open(&c, dir, &o));
    unsetenv("QUIVER_LRU_FLUSH_MS");
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, LIM_THREADS + 1);
    worker w[LIM_THREADS + 1];
    pthread_t th[LIM_THREADS + 1];
    int stop = 0;
    memset(w, 0, sizeof w);
    for (int t = 0; t <= LIM_THREADS; t++) {
        w[t].c = c;
        w[t].start = &bar;
        w[t].t = t;
        w[t].blob = 600; /* stored by digest */
        w[t].lo = (int64_t)t * LIM_KEYS / 2; /* overlapping */
        w[t].hi = w[t].lo + LIM_KEYS;
        w[t].probe_max = LIM_THREADS * LIM_KEYS;
        w[t].seed = (unsigned)(t + 99);
        w[t].stop = &stop;
        w[t].may_evict = 1;
    }
    for (int t = 0; t < LIM_THREADS; t++) assert_int_equal(pthread_create(&th[t], NULL, store_and_read, &w[t]), 0);
    assert_int_equal(pthread_create(&th[LIM_THREADS], NULL, sync_until_stopped, &w[LIM_THREADS]), 0);
    for (int t = 0; t < LIM_THREADS; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    assert_int_equal(pthread_join(th[LIM_THREADS], NULL), 0);
    pthread_barrier_destroy(&bar);
    for (int t = 0; t <= LIM_THREADS; t++)
        if (w[t].errors) fail_msg("thread %d: %d errors; first: %s", t, w[t].errors, w[t].first);

    uint64_t bytes = stat_of(c, QV_STAT_BYTES), evictions = stat_of(c, QV_STAT_EVICTIONS);
    printf("%llu bytes (limit %llu), %llu evictions, %llu entries\n", (unsigned long long)bytes,
           (unsigned long long)o.max_bytes, (unsigned long long)evictions,
           (unsigned long long)stat_of(c, QV_STAT_ENTRIES));
    assert_true(bytes <= o.max_bytes);
    assert_true(evictions > 0);
    uint64_t bad = 1;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    /* whatever survived is right */
    int present = 0;
    for (int64_t k = 0; k < LIM_THREADS * LIM_KEYS; k++) {
        int r = check_key(c, k, 600);
        if (r != CHK_OK && r != CHK_MISSING) fail_msg("key %lld reads as %d: %s", (long long)k, r, qv_errmsg());
        present += r == CHK_OK;
    }
    assert_int_equal(present, stat_of(c, QV_STAT_ENTRIES));
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* -------------- handles of one path opened and closed by several threads */

#define OC_THREADS 4
#define OC_ROUNDS 15

static void *open_use_close(void *p) {
    worker *w = p;
    pthread_barrier_wait(w->start);
    for (int r = 0; r < OC_ROUNDS; r++) {
        qv_cache *c = NULL;
        qv_status st = qv_cache_open(&c, w->dir, NULL);
        if (st) {
            note(w, "open: %s: %s", qv_status_name(st), qv_errmsg());
            continue;
        }
        for (int i = 0; i < 4; i++) {
            int64_t k = (int64_t)w->t * 1000 + r * 4 + i;
            if ((st = store_int(c, k))) note(w, "store %lld: %s", (long long)k, qv_errmsg());
            else if (check_int(c, k) != CHK_OK) note(w, "key %lld just stored is not there", (long long)k);
            else w->stored++;
        }
        qv_cache_close(c);
    }
    return NULL;
}

static void handles_opened_and_closed_concurrently(void **state) {
    char *dir = qvt_tempdir("conc-openclose");
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, OC_THREADS);
    worker w[OC_THREADS];
    pthread_t th[OC_THREADS];
    memset(w, 0, sizeof w);
    for (int t = 0; t < OC_THREADS; t++) {
        w[t].dir = dir;
        w[t].start = &bar;
        w[t].t = t;
    }
    start_all(th, w, OC_THREADS, open_use_close);
    join_all(th, w, OC_THREADS);
    pthread_barrier_destroy(&bar);
    qv_cache *c = NULL;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    for (int t = 0; t < OC_THREADS; t++)
        for (int64_t k = (int64_t)t * 1000; k < (int64_t)t * 1000 + OC_ROUNDS * 4; k++)
            assert_int_equal(check_int(c, k), CHK_OK);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), OC_THREADS * OC_ROUNDS * 4);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

int main(void) {
    if (getenv("QVT_FILTER")) cmocka_set_test_filter(getenv("QVT_FILTER")); /* run only the tests matching it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(threads_share_one_lmdb_cache),
        cmocka_unit_test(processes_share_one_lmdb_cache),
        cmocka_unit_test(durable_stores_are_committed_in_groups),
        cmocka_unit_test(threads_share_one_memory_cache),
        cmocka_unit_test(map_grows_under_concurrent_readers),
        cmocka_unit_test(limited_cache_under_threads),
        cmocka_unit_test(handles_opened_and_closed_concurrently),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
