/* Per-call statistics: each call's hit count and last hit time, counted
 * without a write per hit and written with the next batch of touches (a
 * store, a hit after QUIVER_LRU_FLUSH_MS, or closing the handle). Counts may
 * miss hits, never add any. */
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

static int64_t field(qv_cache *c, const qv_digest *d, const char *name) {
    qv_value *rec;
    int64_t n;
    QVT_OK(qv_cache_load(c, d, &rec));
    const qv_value *v = qv_value_map_find(rec, name);
    assert_non_null(v);
    QVT_OK(qv_value_get_int(v, &n));
    qv_value_free(rec);
    return n;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A store writes the touches batched so far, hit counts among them. */
static void count_then_flush(qv_cache *c) {
    qv_digest a = qvt_store_int(c, "t.hits", 1), b = qvt_store_int(c, "t.hits", 2);
    assert_int_equal(field(c, &a, "hits"), 0);
    assert_int_equal(field(c, &a, "last_hit_ns"), 0);
    int64_t t0 = now_ns();
    qvt_hit(c, &a, 3);
    qvt_hit(c, &b, 1);
    assert_int_equal(field(c, &a, "hits"), 0); /* not written yet */
    qv_digest z = qvt_store_int(c, "t.hits", 3);
    int64_t t1 = now_ns();
    assert_int_equal(field(c, &a, "hits"), 3);
    assert_int_equal(field(c, &b, "hits"), 1);
    assert_int_equal(field(c, &z, "hits"), 0);
    int64_t last = field(c, &a, "last_hit_ns");
    /* the coarse clock a hit reads is a few ms behind */
    assert_true(last >= t0 - 50000000 && last <= t1);
}

static void hits_counted_memory(void **state) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    count_then_flush(c);
    qv_cache_close(c);
}

static void hits_counted_lmdb(void **state) {
    char *dir = qvt_tempdir("hits");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    count_then_flush(c);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* Closing the handle writes what it counted; a read-only handle counts nothing. */
static void close_writes_readonly_does_not_count(void **state) {
    char *dir = qvt_tempdir("hits-ro");
    qv_cache *c, *ro;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    qv_digest a = qvt_store_int(c, "t.hits", 1);
    qvt_hit(c, &a, 2);
    qv_cache_close(c);
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags = QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&ro, dir, &o));
    assert_int_equal(field(ro, &a, "hits"), 2);
    qvt_hit(ro, &a, 5);
    qv_cache_close(ro);
    QVT_OK(qv_cache_open(&c, dir, NULL));
    assert_int_equal(field(c, &a, "hits"), 2);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

static void last_hit_moves(void **state) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    qv_digest a = qvt_store_int(c, "t.hits", 1);
    qvt_hit(c, &a, 1);
    qvt_store_int(c, "t.hits", 2);
    int64_t first = field(c, &a, "last_hit_ns");
    assert_true(first > 0);
    usleep(30000); /* past the coarse clock's tick */
    qvt_hit(c, &a, 1);
    qvt_store_int(c, "t.hits", 3);
    assert_int_equal(field(c, &a, "hits"), 2);
    assert_true(field(c, &a, "last_hit_ns") > first);
    qv_cache_close(c);
}

/* An evicted call's count goes with it: stored again, it starts from 0. */
static void eviction_removes_the_count(void **state) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    qv_digest a = qvt_store_int(c, "t.hits", 1);
    qvt_hit(c, &a, 4);
    qvt_store_int(c, "t.hits", 2);
    assert_int_equal(field(c, &a, "hits"), 4);
    QVT_OK(qv_cache_evict(c, &a));
    qvt_store_int(c, "t.hits", 1);
    assert_int_equal(field(c, &a, "hits"), 0);
    assert_int_equal(field(c, &a, "last_hit_ns"), 0);
    qv_cache_close(c);
}

/* A cache written before the hits table existed: read-only it loads with
 * zero counts; writable, the table is created and counting starts. */
static void old_cache_without_the_table(void **state) {
    char *dir = qvt_tempdir("hits-old");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    qv_digest a = qvt_store_int(c, "t.hits", 1);
    qvt_hit(c, &a, 2);
    qv_cache_close(c);

    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    mdb_env_set_mapsize(env, (size_t)64 << 20); /* not the 1 TiB quiver maps: a sanitizer may lack the room */
    int rc = mdb_env_open(env, dir, MDB_NOTLS, 0644);
    if (rc) fail_msg("mdb_env_open: %s", mdb_strerror(rc));
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "hits", 0, &dbi), 0);
    assert_int_equal(mdb_drop(txn, dbi, 1), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags = QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&c, dir, &o));
    qvt_hit(c, &a, 1);
    assert_int_equal(field(c, &a, "hits"), 0);
    assert_int_equal(field(c, &a, "last_hit_ns"), 0);
    qv_cache_close(c);

    QVT_OK(qv_cache_open(&c, dir, NULL));
    assert_int_equal(field(c, &a, "hits"), 0);
    qvt_hit(c, &a, 3);
    qv_cache_close(c);
    QVT_OK(qv_cache_open(&c, dir, NULL));
    assert_int_equal(field(c, &a, "hits"), 3);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* A forked child counts its own hits and writes them; its parent's, counted
 * before the fork and not yet written, are the parent's to write. */
static void fork_counts_each_hit_once(void **state) {
    char *dir = qvt_tempdir("hits-fork");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    qv_digest a = qvt_store_int(c, "t.hits", 1);
    qvt_hit(c, &a, 3);
    pid_t pid = fork();
    if (pid == 0) {
        qv_value *r;
        int ok = 1;
        for (int i = 0; i < 2; i++) {
            ok &= qv_cache_get_value(c, &a, &r) == QV_OK;
            qv_value_free(r);
        }
        qv_cache_close(c);
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    qv_cache_close(c);
    QVT_OK(qv_cache_open(&c, dir, NULL));
    assert_int_equal(field(c, &a, "hits"), 5);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* Threads hitting a few keys while another stores (and so flushes) all the
 * time: every count stays at or below the hits made, and most get there. */
#define KEYS 4

typedef struct {
    qv_cache *c;
    qv_digest *keys;
    int rounds;
} hitter;

static void *hit_loop(void *arg) {
    hitter *h = arg;
    for (int i = 0; i < h->rounds; i++)
        for (int k = 0; k < KEYS; k++) qvt_hit(h->c, &h->keys[k], 1);
    return NULL;
}

static void threads_never_over_count(void **state) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    qv_digest keys[KEYS];
    for (int k = 0; k < KEYS; k++) keys[k] = qvt_store_int(c, "t.hits", k);
    int rounds = getenv("QV_SMALL") ? 500 : 5000;
    enum { THREADS = 4 };
    pthread_t t[THREADS];
    hitter h = {c, keys, rounds};
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, hit_loop, &h), 0);
    for (int i = 0; i < 50; i++) qvt_store_int(c, "t.hits", 100 + i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    qvt_store_int(c, "t.hits", 1000);
    int64_t made = (int64_t)THREADS * rounds, total = 0;
    for (int k = 0; k < KEYS; k++) {
        int64_t n = field(c, &keys[k], "hits");
        assert_true(n <= made);
        total += n;
    }
    assert_true(total > made * KEYS / 2);
    qv_cache_close(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hits_counted_memory),
        cmocka_unit_test(hits_counted_lmdb),
        cmocka_unit_test(close_writes_readonly_does_not_count),
        cmocka_unit_test(last_hit_moves),
        cmocka_unit_test(eviction_removes_the_count),
        cmocka_unit_test(old_cache_without_the_table),
        cmocka_unit_test(fork_counts_each_hit_once),
        cmocka_unit_test(threads_never_over_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
