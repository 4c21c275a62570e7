/* Stacks (qv_cache_stack): over two LMDB caches, then over a real
 * redis-server started by the test on a free loopback port. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

/* ------------------------------------------------------------- helpers */

typedef struct {
    uint8_t call[128], result[2048];
    size_t call_len, result_len;
    qv_digest key;
} entry;

/* The call "stack.f"(x) and a result of len bytes (a byte string: above the
 * inline limit it is a value of its own). */
static entry make_entry(const char *name, int64_t x, size_t len) {
    entry e;
    qvt_call c = qvt_make_call(name, x);
    memcpy(e.call, c.bytes, c.len);
    e.call_len = c.len;
    e.key = c.key;
    qv_encoder *enc;
    const void *data;
    QVT_OK(qv_encoder_new(&enc));
    uint8_t payload[2000];
    assert_true(len <= sizeof payload);
    for (size_t i = 0; i < len; i++) payload[i] = (uint8_t)(x + (int64_t)i);
    if (len >= sizeof x) memcpy(payload, &x, sizeof x); /* distinct calls, distinct values */
    QVT_OK(qv_encoder_bytes(enc, payload, len));
    QVT_OK(qv_encoder_finish(enc, &data, &e.result_len));
    memcpy(e.result, data, e.result_len);
    qv_encoder_free(enc);
    return e;
}

static qv_status store(qv_cache *c, const entry *e) {
    return qv_cache_store(c, &e->key, e->call, e->call_len, e->result, e->result_len, NULL);
}

static void assert_result(qv_cache *c, const entry *e) {
    void *data;
    size_t len;
    QVT_OK(qv_cache_get(c, &e->key, &data, &len));
    assert_int_equal(len, e->result_len);
    assert_memory_equal(data, e->result, len);
    qv_free(data);
}

static uint64_t stat_of(qv_cache *c, int which) {
    uint64_t n;
    QVT_OK(qv_cache_stat(c, which, &n));
    return n;
}

/* Whole records, as qv_cache_load gives them, compared by their encoding;
 * not the hit counts it adds (a remote tier keeps none). */
static void assert_same_record(qv_cache *a, qv_cache *b, const qv_digest *key) {
    static const char *const fields[] = {"name", "version", "args", "kwargs", "result",
                                         "start_ns", "duration_ns", "lang", "meta"};
    qv_value *ra, *rb;
    QVT_OK(qv_cache_load(a, key, &ra));
    QVT_OK(qv_cache_load(b, key, &rb));
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        void *ea, *eb;
        size_t la, lb;
        assert_non_null(qv_value_map_find(ra, fields[i]));
        assert_non_null(qv_value_map_find(rb, fields[i]));
        QVT_OK(qv_value_encode(qv_value_map_find(ra, fields[i]), &ea, &la));
        QVT_OK(qv_value_encode(qv_value_map_find(rb, fields[i]), &eb, &lb));
        assert_int_equal(la, lb);
        assert_memory_equal(ea, eb, la);
        qv_free(ea);
        qv_free(eb);
    }
    qv_value_free(ra);
    qv_value_free(rb);
}

/* Warnings, collected for the test to read. */
typedef struct {
    pthread_mutex_t lock;
    int n;
    char last[1024], all[8192];
    uint64_t dropped; /* the sum of the counts the drop warnings give */
} warnings;

static warnings seen = {PTHREAD_MUTEX_INITIALIZER, 0, "", "", 0};

static void on_warning(const char *message, void *userdata) {
    warnings *w = userdata;
    pthread_mutex_lock(&w->lock);
    w->n++;
    snprintf(w->last, sizeof w->last, "%s", message);
    size_t used = strlen(w->all);
    snprintf(w->all + used, sizeof w->all - used, "[%s]\n", message);
    const char *p = strstr(message, "): ");
    unsigned long long n;
    if (strstr(message, "dropped") && p && sscanf(p + 3, "%llu", &n) == 1) w->dropped += n;
    pthread_mutex_unlock(&w->lock);
}

static void warnings_reset(void) {
    pthread_mutex_lock(&seen.lock);
    seen.n = 0;
    seen.last[0] = seen.all[0] = '\0';
    seen.dropped = 0;
    pthread_mutex_unlock(&seen.lock);
    qv_set_warning_handler(on_warning, &seen, NULL);
}

static int warnings_count(void) {
    pthread_mutex_lock(&seen.lock);
    int n = seen.n;
    pthread_mutex_unlock(&seen.lock);
    return n;
}

/* Warnings whose text contains what. */
static int warnings_with(const char *what) {
    pthread_mutex_lock(&seen.lock);
    int n = 0;
    for (const char *p = seen.all; (p = strstr(p, what)); p++) n++;
    pthread_mutex_unlock(&seen.lock);
    return n;
}

#define assert_warnings(n)                                                                    \
    do {                                                                                      \
        int got_ = warnings_count();                                                          \
        if (got_ != (n)) fail_msg("%d warnings, not %d:\n%s", got_, (int)(n), seen.all);      \
    } while (0)

typedef struct {
    char *ldir, *rdir;
    qv_cache *local, *remote;
} two;

static two open_two(uint32_t remote_durability) {
    two t;
    t.ldir = qvt_tempdir("stack-local");
    t.rdir = qvt_tempdir("stack-remote");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.durability = QV_DURABILITY_FAST;
    QVT_OK(qv_cache_open(&t.local, t.ldir, &o));
    o.durability = remote_durability;
    QVT_OK(qv_cache_open(&t.remote, t.rdir, &o));
    return t;
}

static void close_two(two *t) {
    qv_cache_close(t->local);
    qv_cache_close(t->remote);
    qvt_rmtree(t->ldir);
    qvt_rmtree(t->rdir);
    free(t->ldir);
    free(t->rdir);
}

/* ------------------------------------------------------- over two LMDBs */

static void test_path_and_options(void **state) {
    two t = open_two(QV_DURABILITY_FAST);
    qv_cache *s;
    QVT_OK(qv_cache_stack(&s, t.local, t.remote, NULL));
    char want[4096];
    snprintf(want, sizeof want, "stack(%s, %s)", qv_cache_path(t.local), qv_cache_path(t.remote));
    assert_string_equal(qv_cache_path(s), want);
    qv_cache_close(s);
    qv_stack_options o;
    QVT_OK(qv_stack_options_init(&o, QV_STACK_OPTIONS_VERSION));
    assert_int_equal(qv_stack_options_init(&o, 99), QV_EINVAL);
    o.flags = 0x80;
    assert_int_equal(qv_cache_stack(&s, t.local, t.remote, &o), QV_EINVAL);
    assert_null(s);
    assert_int_equal(qv_cache_stack(&s, t.local, t.local, NULL), QV_EINVAL);
    assert_int_equal(qv_cache_stack(&s, t.local, NULL, NULL), QV_EINVAL);
    close_two(&t);
}

/* The stack holds both tiers: closing them first leaves it working. */
static void test_tiers_retained(void **state) {
    two t = open_two(QV_DURABILITY_FAST);
    qv_cache *s;
    QVT_OK(qv_cache_stack(&s, t.local, t.remote, NULL));
    qv_cache_close(t.local);
    qv_cache_close(t.remote);
    entry e = make_entry("stack.f", 1, 8);
    QVT_OK(store(s, &e));
    assert_result(s, &e);
    qv_cache_close(s);
    qvt_rmtree(t.ldir);
    qvt_rmtree(t.rdir);
    free(t.ldir);
    free(t.rdir);
}

static void test_read_through_copies_into_local(void **state) {
    two t = open_two(QV_DURABILITY_FAST);
    entry small = make_entry("stack.f", 1, 8), big = make_entry("stack.f", 2, 1500);
    QVT_OK(store(t.remote, &small));
    QVT_OK(store(t.remote, &big));
    qv_cache *s;
    QVT_OK(qv_cache_stack(&s, t.local, t.remote, NULL));
    assert_int_equal(qv_cache_contains(t.local, &small.key), QV_NOTFOUND);
    QVT_OK(qv_cache_contains(s, &small.key));
    assert_result(s, &small);
    assert_result(s, &big);
    assert_int_equal(stat_of(s, QV_STAT_REMOTE_HITS), 2);
    assert_int_equal(stat_of(s, QV_STAT_HITS), 2);
    QVT_OK(qv_cache_sync(s)); /* waits for the copies */
    QVT_OK(qv_cache_contains(t.local, &small.key));
    QVT_OK(qv_cache_contains(t.local, &big.key));
    assert_same_record(t.local, t.remote, &small.key);
    assert_same_record(t.local, t.remote, &big.key);
    /* now a local hit */
    assert_result(s, &small);
    assert_int_equal(stat_of(s, QV_STAT_REMOTE_HITS), 2);
    assert_int_equal(stat_of(s, QV_STAT_HITS), 3);
    entry none = make_entry("stack.f", 3, 8);
    void *data;
    size_t len;
    assert_int_equal(qv_cache_get(s, &none.key, &data, &len), QV_NOTFOUND);
    assert_int_equal(qv_cache_contains(s, &none.key), QV_NOTFOUND);
    assert_int_equal(stat_of(s, QV_STAT_MISSES), 1);
    /* entries come from local */
    assert_int_equal(stat_of(s, QV_STAT_ENTRIES), 2);
    qv_cache_close(s);
    close_two(&t);
}

static void test_write_through(void **state) {
    two t = open_two(QV_DURABILITY_FAST);
    qv_cache *s;
    QVT_OK(qv_cache_stack(&s, t.local, t.remote, NULL));
    entry e = make_entry("stack.f", 1, 8), big = make_entry("stack.f", 2, 1500);
    QVT_OK(store(s, &e));
    QVT_OK(store(s, &big));
    QVT_OK(qv_cache_contains(t.local, &e.key));
    QVT_OK(qv_cache_contains(t.remote, &e.key));
    assert_result(t.remote, &big);
    assert_same_record(t.local, t.remote, &big.key);
    assert_int_equal(stat_of(s, QV_STAT_STORES), 2);
    qv_value *rec;
    QVT_OK(qv_cache_load(s, &e.key, &rec));
    qv_value_free(rec);
    qv_cache_close(s);
    close_two(&t);
}

/* A local store failure is the stack store's: a read-only local tier. */
/* Any cache over any other: memory over LMDB, and a stack under a stack. */
static void test_memory_over_lmdb_and_stacked_stacks(void **state) {
    two t = open_two(QV_DURABILITY_FAST);
    qv_cache *mem, *s, *top;
    QVT_OK(qv_cache_open_memory(&mem));
    QVT_OK(qv_cache_stack(&s, t.local, t.remote, NULL));
    QVT_OK(qv_cache_stack(&top, mem, s, NULL));
    char want[4096];
    snprintf(want, sizeof want, "stack(:memory:, %s)", qv_cache_path(s));
    assert_string_equal(qv_cache_path(top), want);
    entry deep = make_entry("stack.n", 1, 1500), fresh = make_entry("stack.n", 2, 8);
    QVT_OK(store(t.remote, &deep));
    assert_result(top, &deep); /* memory, LMDB miss; the bottom answers */
    assert_int_equal(stat_of(top, QV_STAT_REMOTE_HITS), 1);
    assert_int_equal(stat_of(s, QV_STAT_REMOTE_HITS), 1);
    QVT_OK(qv_cache_sync(top));
    QVT_OK(qv_cache_sync(s));
    QVT_OK(qv_cache_contains(mem, &deep.key));
    QVT_OK(qv_cache_contains(t.local, &deep.key));
    QVT_OK(store(top, &fresh));
    QVT_OK(qv_cache_contains(mem, &fresh.key));
    QVT_OK(qv_cache_contains(t.local, &fresh.key));
    QVT_OK(qv_cache_contains(t.remote, &fresh.key));
    qv_cache_close(s);
    qv_cache_close(mem);
    qv_cache_close(top);
    close_two(&t);
}

static void test_local_failure_is_the_status(void **state) {
    two t = open_two(QV_DURABILITY_FAST);
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags = QV_CACHE_READONLY;
    qv_cache *ro, *s;
    QVT_OK(qv_cache_open(&ro, t.ldir, &o));
    QVT_OK(qv_cache_stack(&s, ro, t.remote, NULL));
    entry e = make_entry("stack.f", 1, 8);
    assert_int_equal(store(s, &e), QV_EREADONLY);
    assert_int_equal(qv_cache_contains(t.remote, &e.key), QV_NOTFOUND);
    /* reads through a read-only local still work; the copy is skipped */
    QVT_OK(store(t.remote, &e));
    assert_result(s, &e);
    QVT_OK(qv_cache_sync(s));
    assert_int_equal(qv_cache_contains(ro, &e.key), QV_NOTFOUND);
    qv_cache_close(s);
    qv_cache_close(ro);
    close_two(&t);
}

static void test_load_query_evict(void **state) {
    two t = open_two(QV_DURABILITY_FAST);
    entry a = make_entry("stack.a", 1, 8), b = make_entry("stack.b", 2, 8), c = make_entry("stack.a", 3, 1500);
    QVT_OK(store(t.local, &a));
    QVT_OK(store(t.remote, &b));
    qv_cache *s;
    QVT_OK(qv_cache_stack(&s, t.local, t.remote, NULL));
    QVT_OK(store(s, &c));
    qv_value *rec;
    QVT_OK(qv_cache_load(s, &a.key, &rec));
    qv_value_free(rec);
    QVT_OK(qv_cache_load(s, &b.key, &rec)); /* from remote */
    qv_value_free(rec);
    entry none = make_entry("stack.a", 4, 8);
    assert_int_equal(qv_cache_load(s, &none.key, &rec), QV_NOTFOUND);

    qv_iter *it;
    QVT_OK(qv_cache_query(&it, s, NULL));
    assert_int_equal(qv_iter_count(it), 3); /* c is in both tiers: once */
    qv_iter_free(it);
    QVT_OK(qv_cache_query(&it, s, "stack.a"));
    assert_int_equal(qv_iter_count(it), 2);
    qv_iter_free(it);
    QVT_OK(qv_cache_query(&it, s, "stack.b"));
    assert_int_equal(qv_iter_count(it), 1);
    qv_digest k;
    QVT_OK(qv_iter_next(it, &k));
    assert_memory_equal(&k, &b.key, sizeof k);
    qv_iter_free(it);

    QVT_OK(qv_cache_evict(s, &c.key));
    assert_int_equal(qv_cache_contains(t.local, &c.key), QV_NOTFOUND);
    assert_int_equal(qv_cache_contains(t.remote, &c.key), QV_NOTFOUND);
    QVT_OK(qv_cache_evict(s, &b.key)); /* in remote only */
    assert_int_equal(qv_cache_contains(s, &b.key), QV_NOTFOUND);
    assert_int_equal(qv_cache_evict(s, &none.key), QV_NOTFOUND);
    /* maintenance is the tiers' own */
    uint64_t n;
    assert_int_equal(qv_cache_gc(s, &n), QV_EINVAL);
    qv_cache_close(s);
    close_two(&t);
}

static void test_async_drains_at_close(void **state) {
    warnings_reset();
    two t = open_two(QV_DURABILITY_FAST);
    qv_stack_options o = QV_STACK_OPTIONS_INIT;
    o.flags = QV_STACK_ASYNC;
    qv_cache *s;
    QVT_OK(qv_cache_stack(&s, t.local, t.remote, &o));
    enum { N = 300 };
    for (int i = 0; i < N; i++) {
        entry e = make_entry("stack.f", i, i % 3 ? 8 : 1000);
        QVT_OK(store(s, &e));
    }
    assert_int_equal(stat_of(s, QV_STAT_STORES), N);
    assert_int_equal(stat_of(s, QV_STAT_DROPPED), 0);
    qv_cache_close(s);
    assert_int_equal(stat_of(t.remote, QV_STAT_ENTRIES), N);
    entry e = make_entry("stack.f", 42, 8);
    assert_same_record(t.local, t.remote, &e.key);
    assert_warnings(0);
    qv_set_warning_handler(NULL, NULL, NULL);
    close_two(&t);
}

/* A remote slower than local (an fsync per commit) and a queue of one: stores
 * are dropped, counted, and told in warnings whose counts add up. */
static void test_async_tiny_queue_drops(void **state) {
    warnings_reset();
    two t = open_two(QV_DURABILITY_DURABLE);
    qv_stack_options o = QV_STACK_OPTIONS_INIT;
    o.flags = QV_STACK_ASYNC;
    o.queue_limit = 1;
    qv_cache *s;
    QVT_OK(qv_cache_stack(&s, t.local, t.remote, &o));
    enum { N = 400 };
    for (int i = 0; i < N; i++) {
        entry e = make_entry("stack.f", i, 8);
        QVT_OK(store(s, &e)); /* a drop is no failure of the store */
    }
    uint64_t dropped = stat_of(s, QV_STAT_DROPPED);
    assert_true(dropped > 0);
    qv_cache_close(s);
    assert_int_equal(stat_of(t.local, QV_STAT_ENTRIES), N);
    assert_int_equal(stat_of(t.remote, QV_STAT_ENTRIES), N - dropped);
    pthread_mutex_lock(&seen.lock);
    assert_true(seen.n >= 1);
    assert_int_equal(seen.dropped, dropped);
    assert_non_null(strstr(seen.last, "dropped"));
    pthread_mutex_unlock(&seen.lock);
    qv_set_warning_handler(NULL, NULL, NULL);
    close_two(&t);
}

typedef struct {
    qv_cache *s;
    int id;
    char why[512]; /* the first failure: cmocka's asserts belong to the main thread */
} worker;

enum { THREADS = 4 };

static int per_thread(void) {
    return getenv("QV_SMALL") ? 60 : 300;
}

static int same_result(qv_cache *c, const entry *e) {
    void *data;
    size_t len;
    if (qv_cache_get(c, &e->key, &data, &len)) return 0;
    int same = len == e->result_len && !memcmp(data, e->result, len);
    qv_free(data);
    return same;
}

static void *store_and_read(void *arg) {
    worker *w = arg;
    int n = per_thread();
    for (int i = 0; i < n && !w->why[0]; i++) {
        /* half the keys are every thread's, half this thread's own */
        int64_t x = i % 2 ? i : 100000 * (w->id + 1) + i;
        entry e = make_entry("stack.t", x, i % 5 ? 8 : 700);
        void *data;
        size_t len;
        qv_status st = qv_cache_get(w->s, &e.key, &data, &len);
        if (st == QV_OK) {
            if (len != e.result_len || memcmp(data, e.result, len))
                snprintf(w->why, sizeof w->why, "a wrong result for %d", i);
            qv_free(data);
        } else if (st != QV_NOTFOUND) {
            snprintf(w->why, sizeof w->why, "get %d: %s", i, qv_errmsg());
        } else if ((st = store(w->s, &e))) {
            snprintf(w->why, sizeof w->why, "store %d: %s", i, qv_errmsg());
        }
        if (!w->why[0] && !same_result(w->s, &e)) snprintf(w->why, sizeof w->why, "no result for %d", i);
    }
    return NULL;
}

/* THREADS threads storing and reading through a stack over local and
 * remote, some keys in remote only beforehand. */
static void run_threads_over(qv_cache *local, qv_cache *remote, uint32_t flags) {
    for (int i = 1; i < per_thread(); i += 4) {
        entry e = make_entry("stack.t", i, i % 5 ? 8 : 700);
        QVT_OK(store(remote, &e));
    }
    qv_stack_options o = QV_STACK_OPTIONS_INIT;
    o.flags = flags;
    o.queue_limit = 1 << 20; /* one worker commits one store at a time: 4 threads outpace it */
    qv_cache *s;
    QVT_OK(qv_cache_stack(&s, local, remote, &o));
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){s, i, ""};
        assert_int_equal(pthread_create(&th[i], NULL, store_and_read, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++)
        if (w[i].why[0]) fail_msg("thread %d: %s", i, w[i].why);
    QVT_OK(qv_cache_sync(s));
    int n = per_thread();
    uint64_t want = (uint64_t)n / 2 + (uint64_t)THREADS * (n - n / 2);
    assert_int_equal(stat_of(s, QV_STAT_ENTRIES), want);
    assert_int_equal(stat_of(s, QV_STAT_DROPPED), 0);
    qv_cache_close(s);
    assert_int_equal(stat_of(remote, QV_STAT_ENTRIES), want);
}

static void run_threads(uint32_t flags) {
    two t = open_two(QV_DURABILITY_FAST);
    run_threads_over(t.local, t.remote, flags);
    close_two(&t);
}

static void test_threads_sync(void **state) {
    run_threads(0);
}

static void test_threads_async(void **state) {
    run_threads(QV_STACK_ASYNC);
}

/* A child of fork() has no worker of the parent's: its own queue works, and
 * the parent's drains as before. */
static void test_fork_child_has_its_own_worker(void **state) {
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
    skip(); /* ThreadSanitizer does not follow a fork with threads running */
#endif
#endif
    two t = open_two(QV_DURABILITY_FAST);
    qv_stack_options o = QV_STACK_OPTIONS_INIT;
    o.flags = QV_STACK_ASYNC;
    qv_cache *s;
    QVT_OK(qv_cache_stack(&s, t.local, t.remote, &o));
    entry e = make_entry("stack.f", 1, 8), f = make_entry("stack.f", 2, 8);
    QVT_OK(store(s, &e));
    /* the worker idle: sanitizer allocators hang a child forked mid-malloc
     * (tests/c/test_fork.c) */
    QVT_OK(qv_cache_sync(s));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int ok = store(s, &f) == QV_OK && qv_cache_sync(s) == QV_OK && qv_cache_contains(t.remote, &f.key) == QV_OK;
        qv_cache_close(s);
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    QVT_OK(qv_cache_sync(s));
    QVT_OK(qv_cache_contains(t.remote, &e.key));
    QVT_OK(qv_cache_contains(t.remote, &f.key));
    qv_cache_close(s);
    close_two(&t);
}

/* ------------------------------------------------------- over a redis */

typedef struct {
    pid_t pid;
    int port;
    char url[128];
} redis;

static int redis_answers(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    char buf[16] = "";
    if (ok) ok = write(fd, "PING\r\n", 6) == 6 && read(fd, buf, sizeof buf - 1) > 0 && !strncmp(buf, "+PONG", 5);
    close(fd);
    return ok;
}

static void redis_start_with(redis *r, int port, const char *maxmemory) {
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    r->port = port;
    snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d/0?timeout_ms=300", port);
    r->pid = fork();
    assert_true(r->pid >= 0);
    if (r->pid == 0) {
        if (maxmemory)
            execl("/usr/bin/redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--logfile", "/dev/null", "--maxmemory", maxmemory, "--maxmemory-policy",
                  "noeviction", (char *)NULL);
        else
            execl("/usr/bin/redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--logfile", "/dev/null", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500 && !redis_answers(port); i++) usleep(10000);
    assert_true(redis_answers(port));
}

static void redis_start(redis *r, int port) {
    redis_start_with(r, port, NULL);
}

static void redis_stop(redis *r) {
    if (r->pid <= 0) return;
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

static redis *running; /* killed by the teardown when a test fails midway */

static int redis_teardown(void **state) {
    if (running) redis_stop(running);
    running = NULL;
    qv_set_warning_handler(NULL, NULL, NULL);
    return 0;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_redis_stack_works(void **state) {
    static redis r;
    running = &r;
    redis_start(&r, qvt_free_port());
    char *dir = qvt_tempdir("stack-redis"), *dir2 = qvt_tempdir("stack-redis2");
    qv_cache *local, *local2, *remote, *s, *s2;
    QVT_OK(qv_cache_open(&local, dir, NULL));
    QVT_OK(qv_cache_open(&local2, dir2, NULL));
    QVT_OK(qv_cache_open(&remote, r.url, NULL));
    QVT_OK(qv_cache_stack(&s, local, remote, NULL));
    QVT_OK(qv_cache_stack(&s2, local2, remote, NULL));
    entry e = make_entry("stack.r", 1, 8), big = make_entry("stack.r", 2, 1500);
    QVT_OK(store(s, &e));
    QVT_OK(store(s, &big));
    /* the other "machine" reads through the shared tier */
    assert_result(s2, &e);
    assert_result(s2, &big);
    assert_int_equal(stat_of(s2, QV_STAT_REMOTE_HITS), 2);
    QVT_OK(qv_cache_sync(s2));
    QVT_OK(qv_cache_contains(local2, &big.key));
    assert_same_record(local, local2, &big.key);
    qv_iter *it;
    QVT_OK(qv_cache_query(&it, s2, "stack.r"));
    assert_int_equal(qv_iter_count(it), 2);
    qv_iter_free(it);
    qv_cache_close(s);
    qv_cache_close(s2);
    qv_cache_close(remote);
    qv_cache_close(local);
    qv_cache_close(local2);
    redis_stop(&r);
    running = NULL;
    qvt_rmtree(dir);
    qvt_rmtree(dir2);
    free(dir);
    free(dir2);
}

/* Redis killed mid-run: the stack goes on from local with one warning and no
 * call slower than the timeout; restarted, remote writes resume. */
static void test_redis_killed_and_restarted(void **state) {
    static redis r;
    running = &r;
    int port = qvt_free_port();
    redis_start(&r, port);
    warnings_reset();
    char *dir = qvt_tempdir("stack-redis");
    qv_cache *local, *remote, *s;
    QVT_OK(qv_cache_open(&local, dir, NULL));
    QVT_OK(qv_cache_open(&remote, r.url, NULL));
    QVT_OK(qv_cache_stack(&s, local, remote, NULL));
    entry before = make_entry("stack.k", 0, 8);
    QVT_OK(store(s, &before));
    redis_stop(&r);
    int64_t slowest = 0;
    for (int i = 1; i <= 40; i++) {
        entry e = make_entry("stack.k", i, i % 2 ? 8 : 900);
        void *data;
        size_t len;
        int64_t t0 = mono_ms();
        assert_int_equal(qv_cache_get(s, &e.key, &data, &len), QV_NOTFOUND);
        int64_t t1 = mono_ms();
        QVT_OK(store(s, &e));
        int64_t t2 = mono_ms();
        assert_result(s, &e);
        assert_result(s, &before);
        if (t1 - t0 > slowest) slowest = t1 - t0;
        if (t2 - t1 > slowest) slowest = t2 - t1;
    }
    /* the 300 ms timeout, and slack for a loaded machine and the sanitizers */
    if (slowest > 300 + 150) fail_msg("a call took %lld ms with the remote down", (long long)slowest);
    assert_warnings(1);
    assert_int_equal(warnings_with("unreachable"), 1);

    redis_start(&r, port);
    entry after = make_entry("stack.k", 1000, 8);
    int resumed = 0;
    /* the transport retries with backoff: stores reach the remote again soon */
    for (int i = 0; i < 100 && !resumed; i++) {
        entry e = make_entry("stack.k", 2000 + i, 8);
        QVT_OK(store(s, &e));
        resumed = qv_cache_contains(remote, &e.key) == QV_OK;
        if (!resumed) usleep(50000);
    }
    assert_true(resumed);
    QVT_OK(store(s, &after));
    QVT_OK(qv_cache_contains(remote, &after.key));
    /* the remote tier says it is back; nothing else was warned */
    assert_int_equal(warnings_with("unreachable"), 1);
    assert_true(warnings_count() <= 2);
    qv_cache_close(s);
    qv_cache_close(remote);
    qv_cache_close(local);
    redis_stop(&r);
    running = NULL;
    qvt_rmtree(dir);
    free(dir);
}

/* Down when the stack is made: it opens, from local, with one warning. */
static void test_redis_down_at_stack(void **state) {
    static redis r;
    running = &r;
    redis_start(&r, qvt_free_port());
    warnings_reset();
    char *dir = qvt_tempdir("stack-redis");
    qv_cache *local, *remote, *s;
    QVT_OK(qv_cache_open(&local, dir, NULL));
    QVT_OK(qv_cache_open(&remote, r.url, NULL));
    redis_stop(&r);
    QVT_OK(qv_cache_stack(&s, local, remote, NULL));
    assert_warnings(1);
    for (int i = 0; i < 10; i++) {
        entry e = make_entry("stack.d", i, 8);
        QVT_OK(store(s, &e));
        assert_result(s, &e);
    }
    assert_warnings(1);
    qv_cache_close(s);
    qv_cache_close(remote);
    qv_cache_close(local);
    running = NULL;
    qvt_rmtree(dir);
    free(dir);
}

/* Asynchronous stores queued while the server is down: the stores succeed
 * at once, and close does not wait a timeout for each. */
static void test_redis_async_close_while_down(void **state) {
    static redis r;
    running = &r;
    redis_start(&r, qvt_free_port());
    warnings_reset();
    char *dir = qvt_tempdir("stack-redis");
    qv_cache *local, *remote, *s;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.durability = QV_DURABILITY_FAST;
    QVT_OK(qv_cache_open(&local, dir, &o));
    QVT_OK(qv_cache_open(&remote, r.url, NULL));
    qv_stack_options so = QV_STACK_OPTIONS_INIT;
    so.flags = QV_STACK_ASYNC;
    QVT_OK(qv_cache_stack(&s, local, remote, &so));
    redis_stop(&r);
    int64_t t0 = mono_ms();
    for (int i = 0; i < 200; i++) {
        entry e = make_entry("stack.q", i, 8);
        QVT_OK(store(s, &e));
    }
    qv_cache_close(s);
    int64_t took = mono_ms() - t0;
    if (took > 2 * 300 + 300) fail_msg("200 stores and close took %lld ms with the remote down", (long long)took);
    assert_int_equal(stat_of(local, QV_STAT_ENTRIES), 200);
    assert_int_equal(warnings_with("unreachable"), 1);
    qv_cache_close(remote);
    qv_cache_close(local);
    running = NULL;
    qvt_rmtree(dir);
    free(dir);
}

static void test_redis_threads(void **state) {
    static redis r;
    running = &r;
    redis_start(&r, qvt_free_port());
    for (int async = 0; async < 2; async++) {
        char *dir = qvt_tempdir("stack-redis");
        char url[160];
        snprintf(url, sizeof url, "%s&prefix=t%d:", r.url, async);
        qv_cache *local, *remote;
        QVT_OK(qv_cache_open(&local, dir, NULL));
        QVT_OK(qv_cache_open(&remote, url, NULL));
        run_threads_over(local, remote, async ? QV_STACK_ASYNC : 0);
        qv_cache_close(remote);
        qv_cache_close(local);
        qvt_rmtree(dir);
        free(dir);
    }
    redis_stop(&r);
    running = NULL;
}

/* A server out of memory (noeviction): every store through the stack still
 * succeeds, from local, with one warning. */
static void test_redis_full_stores_softly(void **state) {
    static redis r;
    running = &r;
    redis_start_with(&r, qvt_free_port(), "2mb");
    warnings_reset();
    char *dir = qvt_tempdir("stack-redis");
    qv_cache *local, *remote, *s;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.durability = QV_DURABILITY_FAST;
    QVT_OK(qv_cache_open(&local, dir, &o));
    QVT_OK(qv_cache_open(&remote, r.url, NULL));
    QVT_OK(qv_cache_stack(&s, local, remote, NULL));
    enum { N = 2500 }; /* 1.5 KiB each: twice what the server may hold */
    for (int i = 0; i < N; i++) {
        entry e = make_entry("stack.full", i, 1500);
        QVT_OK(store(s, &e));
    }
    assert_int_equal(stat_of(local, QV_STAT_ENTRIES), N);
    uint64_t in_remote = stat_of(remote, QV_STAT_ENTRIES);
    if (!(in_remote > 0 && in_remote < N)) fail_msg("%llu of %d in the remote", (unsigned long long)in_remote, N);
    entry last = make_entry("stack.full", N - 1, 1500);
    assert_result(s, &last);
    assert_warnings(1);
    assert_int_equal(warnings_with("full"), 1);
    qv_cache_close(s);
    qv_cache_close(remote);
    qv_cache_close(local);
    redis_stop(&r);
    running = NULL;
    qvt_rmtree(dir);
    free(dir);
}

/* A record filed in Redis under another call's key is a remote hit (only a
 * signature would tell, docs/FORMAT.md) but is never copied into local: the
 * copy checks the call's digest. */
static void test_redis_misfiled_entry_not_copied(void **state) {
    static redis r;
    running = &r;
    redis_start(&r, qvt_free_port());
    char *dir = qvt_tempdir("stack-redis");
    qv_cache *local, *remote, *s;
    QVT_OK(qv_cache_open(&local, dir, NULL));
    QVT_OK(qv_cache_open(&remote, r.url, NULL));
    entry a = make_entry("stack.m", 1, 8), b = make_entry("stack.m", 2, 8);
    QVT_OK(store(remote, &a));
    char ha[33], hb[33], cmd[256];
    qv_digest_hex(&a.key, ha);
    qv_digest_hex(&b.key, hb);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d COPY quiver:c:%s quiver:c:%s >/dev/null", r.port, ha, hb);
    assert_int_equal(system(cmd), 0);
    QVT_OK(qv_cache_contains(remote, &b.key));
    QVT_OK(qv_cache_stack(&s, local, remote, NULL));
    void *data;
    size_t len;
    QVT_OK(qv_cache_get(s, &b.key, &data, &len));
    qv_free(data);
    assert_result(s, &a);
    QVT_OK(qv_cache_sync(s));
    assert_int_equal(qv_cache_contains(local, &b.key), QV_NOTFOUND);
    QVT_OK(qv_cache_contains(local, &a.key));
    qv_cache_close(s);
    qv_cache_close(remote);
    qv_cache_close(local);
    redis_stop(&r);
    running = NULL;
    qvt_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_and_options),
        cmocka_unit_test(test_tiers_retained),
        cmocka_unit_test(test_read_through_copies_into_local),
        cmocka_unit_test(test_write_through),
        cmocka_unit_test(test_memory_over_lmdb_and_stacked_stacks),
        cmocka_unit_test(test_local_failure_is_the_status),
        cmocka_unit_test(test_load_query_evict),
        cmocka_unit_test(test_async_drains_at_close),
        cmocka_unit_test(test_async_tiny_queue_drops),
        cmocka_unit_test(test_threads_sync),
        cmocka_unit_test(test_threads_async),
        cmocka_unit_test(test_fork_child_has_its_own_worker),
        cmocka_unit_test_teardown(test_redis_stack_works, redis_teardown),
        cmocka_unit_test_teardown(test_redis_killed_and_restarted, redis_teardown),
        cmocka_unit_test_teardown(test_redis_down_at_stack, redis_teardown),
        cmocka_unit_test_teardown(test_redis_async_close_while_down, redis_teardown),
        cmocka_unit_test_teardown(test_redis_threads, redis_teardown),
        cmocka_unit_test_teardown(test_redis_full_stores_softly, redis_teardown),
        cmocka_unit_test_teardown(test_redis_misfiled_entry_not_copied, redis_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
