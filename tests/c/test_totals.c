/* The cache's totals (QV_STAT_TOTAL_*): what every writable handle and
 * process counted, added in the write transactions they make anyway (stores,
 * batched touches, close), never one write per hit; a read-only handle adds
 * nothing, a forked child adds only its own, qv_cache_reset_totals zeroes. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static void miss(qv_cache *c) {
    qv_value *args = qvt_int_args(-1), *r;
    qv_digest d;
    QVT_OK(qv_call_digest(&d, "t.totals", "1", args, NULL));
    assert_int_equal(qv_cache_get_value(c, &d, &r), QV_NOTFOUND);
    qv_value_free(args);
}

static uint64_t stat_of(qv_cache *c, int which) {
    uint64_t n;
    QVT_OK(qv_cache_stat(c, which, &n));
    return n;
}

/* The totals as a new handle reads them from the cache. */
static uint64_t stored_total(const char *dir, int which) {
    qv_cache *c;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags |= QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&c, dir, &o));
    uint64_t n = stat_of(c, which);
    qv_cache_close(c);
    return n;
}

static void names(void **state) {
    assert_string_equal(qv_stat_name(QV_STAT_TOTAL_HITS), "total_hits");
    assert_string_equal(qv_stat_name(QV_STAT_TOTAL_CORRUPT), "total_corrupt");
    assert_null(qv_stat_name(QV_STAT_COUNT));
}

static void add_up_across_handles(void **state) {
    char *dir = qvt_tempdir("totals");
    qv_cache *a, *b;
    QVT_OK(qv_cache_open(&a, dir, NULL));
    qv_digest d1 = qvt_store_int(a, "t.totals", 1), d2 = qvt_store_int(a, "t.totals", 2);
    qvt_hit(a, &d1, 3);
    miss(a);
    /* this handle's counts are in its totals before anything writes them */
    assert_int_equal(stat_of(a, QV_STAT_TOTAL_HITS), 3);
    assert_int_equal(stat_of(a, QV_STAT_TOTAL_MISSES), 1);
    assert_int_equal(stat_of(a, QV_STAT_TOTAL_STORES), 2);
    QVT_OK(qv_cache_open(&b, dir, NULL));
    qvt_hit(b, &d2, 4);
    qv_cache_close(a); /* closing writes what a counted */
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_HITS), 3);
    assert_int_equal(stat_of(b, QV_STAT_TOTAL_HITS), 7);
    qv_cache_close(b);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_HITS), 7);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_MISSES), 1);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_STORES), 2);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_CORRUPT), 0);
    qvt_rmtree(dir);
    free(dir);
}

static void no_write_per_hit(void **state) {
    char *dir = qvt_tempdir("totals-writes");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    qv_digest d = qvt_store_int(c, "t.totals", 1);
    uint64_t commits = stat_of(c, QV_STAT_COMMITS);
    qvt_hit(c, &d, 10000);
    /* at most the one batched flush of touches a period brings */
    assert_true(stat_of(c, QV_STAT_COMMITS) <= commits + 1);
    qv_cache_close(c);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_HITS), 10000);
    qvt_rmtree(dir);
    free(dir);
}

static void read_only_adds_nothing(void **state) {
    char *dir = qvt_tempdir("totals-ro");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    qv_digest d = qvt_store_int(c, "t.totals", 1);
    qv_cache_close(c);
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags |= QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&c, dir, &o));
    qvt_hit(c, &d, 5);
    assert_int_equal(stat_of(c, QV_STAT_TOTAL_HITS), 5); /* its own, not written */
    assert_int_equal(qv_cache_reset_totals(c), QV_EREADONLY);
    qv_cache_close(c);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_HITS), 0);
    qvt_rmtree(dir);
    free(dir);
}

static void reset_zeroes(void **state) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    qv_digest d = qvt_store_int(c, "t.totals", 1);
    qvt_hit(c, &d, 2);
    QVT_OK(qv_cache_reset_totals(c));
    assert_int_equal(stat_of(c, QV_STAT_TOTAL_HITS), 0);
    assert_int_equal(stat_of(c, QV_STAT_TOTAL_STORES), 0);
    qvt_hit(c, &d, 1);
    qvt_store_int(c, "t.totals", 2); /* a commit writes the one hit since, not the two before */
    assert_int_equal(stat_of(c, QV_STAT_TOTAL_HITS), 1);
    assert_int_equal(stat_of(c, QV_STAT_TOTAL_STORES), 1);
    assert_int_equal(stat_of(c, QV_STAT_HITS), 3); /* the handle's own counters stay */
    qv_cache_close(c);
}

static void fork_adds_each_count_once(void **state) {
    char *dir = qvt_tempdir("totals-fork");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    qv_digest d = qvt_store_int(c, "t.totals", 1);
    qvt_hit(c, &d, 3); /* not written yet when the child starts */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        qvt_hit(c, &d, 2);
        qv_cache_close(c);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    qv_cache_close(c);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_HITS), 5);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_STORES), 1);
    qvt_rmtree(dir);
    free(dir);
}

/* A child that ends in _exit without closing writes its counts with
 * qv_cache_flush, and none of its parent's; one that does not flush loses
 * only its counts. */
static void flush_before_exit_keeps_the_counts(void **state) {
    char *dir = qvt_tempdir("totals-flush");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    qv_digest d = qvt_store_int(c, "t.totals", 1);
    qvt_hit(c, &d, 3);
    for (int flush = 1; flush >= 0; flush--) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            qv_digest e = qvt_store_int(c, "t.totals", 2 + flush);
            qvt_hit(c, &e, 4);
            _exit(flush && qv_cache_flush(c) ? 1 : 0);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_HITS), 4);  /* the flushing child's; the parent's are unwritten */
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_STORES), 1);
    QVT_OK(qv_cache_flush(c));
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_HITS), 7);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_STORES), 2);
    assert_int_equal(stored_total(dir, QV_STAT_ENTRIES), 3); /* the stores themselves were committed */
    assert_int_equal(qv_cache_flush(NULL), QV_EINVAL);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

typedef struct {
    qv_cache *c;
    qv_digest d;
    int n;
} worker;

static void *hitter(void *arg) {
    worker *w = arg;
    qvt_hit(w->c, &w->d, w->n);
    return NULL;
}

static void threads_add_exactly(void **state) {
    char *dir = qvt_tempdir("totals-threads");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    worker w = {c, qvt_store_int(c, "t.totals", 1), getenv("QV_SMALL") ? 200 : 5000};
    pthread_t t[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&t[i], NULL, hitter, &w), 0);
    for (int i = 0; i < 4; i++) {
        qvt_store_int(c, "t.totals", 100 + i); /* commits, which write totals, while the threads hit */
        pthread_join(t[i], NULL);
    }
    qv_cache_close(c);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_HITS), 4 * (uint64_t)w.n);
    assert_int_equal(stored_total(dir, QV_STAT_TOTAL_STORES), 5);
    qvt_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names),
        cmocka_unit_test(add_up_across_handles),
        cmocka_unit_test(no_write_per_hit),
        cmocka_unit_test(read_only_adds_nothing),
        cmocka_unit_test(reset_zeroes),
        cmocka_unit_test(fork_adds_each_count_once),
        cmocka_unit_test(flush_before_exit_keeps_the_counts),
        cmocka_unit_test(threads_add_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
