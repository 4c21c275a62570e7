/* Contexts: nesting and misuse, metadata merging, captures entered from many
 * threads, and a capture outliving the host's cache handle. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static qv_value *meta1(const char *k, const char *v) {
    qv_value *m, *kk, *vv;
    QVT_OK(qv_value_new_map(&m));
    QVT_OK(qv_value_new_text(&kk, k, strlen(k)));
    QVT_OK(qv_value_new_text(&vv, v, strlen(v)));
    QVT_OK(qv_value_map_set(m, kk, vv));
    return m;
}

static qv_value *current_meta(void) {
    const void *m;
    size_t n;
    QVT_OK(qv_ctx_current(NULL, &m, &n));
    if (!m) return NULL;
    qv_value *v;
    QVT_OK(qv_value_decode(&v, m, n));
    return v;
}

static void nesting_and_misuse(void **state) {
    qv_cache *a, *b, *cur, *dflt;
    QVT_OK(qv_cache_open_memory(&a));
    QVT_OK(qv_cache_open_memory(&b));
    QVT_OK(qv_cache_default(&dflt));
    assert_int_equal(qv_ctx_depth(), 0);
    QVT_OK(qv_ctx_current(&cur, NULL, NULL));
    assert_ptr_equal(cur, dflt); /* nothing pushed: the default */
    assert_int_equal(qv_ctx_pop(), QV_EMISUSE);
    assert_non_null(strstr(qv_errmsg(), "no context"));
    QVT_OK(qv_ctx_push(a, NULL));
    QVT_OK(qv_ctx_push(b, NULL));
    QVT_OK(qv_ctx_current(&cur, NULL, NULL));
    assert_ptr_equal(cur, b);
    QVT_OK(qv_ctx_push(NULL, NULL)); /* NULL keeps the current cache */
    QVT_OK(qv_ctx_current(&cur, NULL, NULL));
    assert_ptr_equal(cur, b);
    assert_int_equal(qv_ctx_depth(), 3);
    QVT_OK(qv_ctx_pop());
    QVT_OK(qv_ctx_pop());
    QVT_OK(qv_ctx_current(&cur, NULL, NULL));
    assert_ptr_equal(cur, a);
    QVT_OK(qv_ctx_pop());
    assert_int_equal(qv_ctx_pop(), QV_EMISUSE);
    qv_value *notmap;
    QVT_OK(qv_value_new_int(&notmap, 1));
    assert_int_equal(qv_ctx_push(a, notmap), QV_ETYPE);
    qv_value_free(notmap);
    qv_cache_close(a);
    qv_cache_close(b);
}

static void *pop_elsewhere(void *arg) {
    return (void *)(intptr_t)qv_ctx_pop();
}

static void pop_on_another_thread_is_an_error(void **state) {
    qv_cache *a;
    QVT_OK(qv_cache_open_memory(&a));
    QVT_OK(qv_ctx_push(a, NULL));
    pthread_t t;
    void *rc;
    pthread_create(&t, NULL, pop_elsewhere, NULL);
    pthread_join(t, &rc);
    assert_int_equal((intptr_t)rc, QV_EMISUSE);
    assert_int_equal(qv_ctx_depth(), 1); /* ours is untouched */
    QVT_OK(qv_ctx_pop());
    qv_cache_close(a);
}

static void metadata_merges_inner_wins(void **state) {
    qv_value *outer = meta1("project", "p1"), *inner = meta1("run", "r7"), *shadow = meta1("project", "p2");
    QVT_OK(qv_ctx_push(NULL, outer));
    QVT_OK(qv_ctx_push(NULL, inner));
    qv_value *m = current_meta();
    const char *s;
    size_t n;
    QVT_OK(qv_value_get_text(qv_value_map_find(m, "project"), &s, &n));
    assert_string_equal(s, "p1");
    QVT_OK(qv_value_get_text(qv_value_map_find(m, "run"), &s, &n));
    assert_string_equal(s, "r7");
    qv_value_free(m);
    QVT_OK(qv_ctx_push(NULL, shadow));
    m = current_meta();
    QVT_OK(qv_value_get_text(qv_value_map_find(m, "project"), &s, &n));
    assert_string_equal(s, "p2");
    assert_int_equal(qv_value_count(m), 2);
    qv_value_free(m);
    QVT_OK(qv_ctx_pop());
    QVT_OK(qv_ctx_pop());
    m = current_meta();
    assert_int_equal(qv_value_count(m), 1);
    qv_value_free(m);
    QVT_OK(qv_ctx_pop());
    assert_null(current_meta());
    qv_value_free(outer);
    qv_value_free(inner);
    qv_value_free(shadow);
}

/* A memoized body that records which cache its nested call used. */
static qv_status body_double(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata) {
    int64_t x;
    qv_status st = qv_value_get_int(qv_value_list_get(args, 0), &x);
    return st ? st : qv_value_new_int(result, 2 * x);
}

typedef struct {
    qv_ctx *ctx;
    qv_fn *fn;
    int base;
    qv_cache *seen;
    int failures;
} worker_arg;

static qv_status under_ctx(void *p) {
    worker_arg *w = p;
    qv_cache *cur;
    qv_status st = qv_ctx_current(&cur, NULL, NULL);
    if (st) return st;
    w->seen = cur;
    for (int i = 0; i < 50; i++) {
        qv_value *args, *x, *r;
        qv_value_new_list(&args);
        qv_value_new_int(&x, w->base + i);
        qv_value_list_append(args, x);
        if ((st = qv_fn_call(w->fn, args, &r))) return st;
        int64_t got;
        if (qv_value_get_int(r, &got) || got != 2 * (w->base + i)) w->failures++;
        qv_value_free(r);
        qv_value_free(args);
    }
    return QV_OK;
}

static void *enter_capture(void *p) {
    worker_arg *w = p;
    return (void *)(intptr_t)qv_ctx_run(w->ctx, under_ctx, w);
}

static void capture_used_from_eight_threads(void **state) {
    char *dir = qvt_tempdir("ctx");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    qv_value *meta = meta1("who", "submitter");
    QVT_OK(qv_ctx_push(c, meta));
    qv_ctx *ctx;
    QVT_OK(qv_ctx_capture(&ctx));
    QVT_OK(qv_ctx_pop());
    qv_fn *fn;
    QVT_OK(qv_fn_new(&fn, "t.double", "1", body_double, NULL, NULL));
    pthread_t t[8];
    worker_arg w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (worker_arg){ctx, fn, i * 25, NULL, 0}; /* overlapping ranges */
        pthread_create(&t[i], NULL, enter_capture, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        assert_int_equal((intptr_t)rc, QV_OK);
        assert_ptr_equal(w[i].seen, c);
        assert_int_equal(w[i].failures, 0);
    }
    uint64_t entries, hits, misses;
    QVT_OK(qv_cache_stat(c, QV_STAT_ENTRIES, &entries));
    assert_int_equal(entries, 7 * 25 + 50);
    QVT_OK(qv_fn_stat(fn, QV_FN_STAT_HITS, &hits));
    QVT_OK(qv_fn_stat(fn, QV_FN_STAT_MISSES, &misses));
    assert_int_equal(hits + misses, 400);
    assert_true(hits > 0);
    /* each stored record carries the captured metadata */
    qv_iter *it;
    qv_digest k;
    QVT_OK(qv_cache_query(&it, c, "t.double"));
    while (qv_iter_next(it, &k) == QV_OK) {
        qv_value *rec;
        QVT_OK(qv_cache_load(c, &k, &rec));
        assert_int_equal(qv_value_compare(qv_value_map_find(rec, "meta"), meta), 0);
        qv_value_free(rec);
    }
    qv_iter_free(it);
    qv_fn_free(fn);
    qv_ctx_free(ctx);
    qv_value_free(meta);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

static void capture_outlives_the_cache_handle(void **state) {
    char *dir = qvt_tempdir("zombie");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    QVT_OK(qv_ctx_push(c, NULL));
    qv_ctx *ctx;
    QVT_OK(qv_ctx_capture(&ctx));
    QVT_OK(qv_ctx_pop());
    qv_cache_close(c); /* the host lets go first */
    qv_fn *fn;
    QVT_OK(qv_fn_new(&fn, "t.double", "1", body_double, NULL, NULL));
    worker_arg w = {ctx, fn, 1000, NULL, 0};
    pthread_t t;
    void *rc;
    pthread_create(&t, NULL, enter_capture, &w);
    pthread_join(t, &rc);
    assert_int_equal((intptr_t)rc, QV_OK);
    assert_int_equal(w.failures, 0);
    uint64_t n;
    QVT_OK(qv_cache_stat(w.seen, QV_STAT_ENTRIES, &n)); /* still alive through ctx */
    assert_int_equal(n, 50);
    qv_ctx_free(ctx); /* the last reference: now it closes */
    qv_fn_free(fn);
    qv_cache *again;
    QVT_OK(qv_cache_open(&again, dir, NULL));
    QVT_OK(qv_cache_stat(again, QV_STAT_ENTRIES, &n));
    assert_int_equal(n, 50);
    qv_cache_close(again);
    qvt_rmtree(dir);
    free(dir);
}

static void *exit_with_contexts_pushed(void *arg) {
    qv_ctx_push(arg, NULL);
    qv_ctx_push(arg, NULL);
    return NULL; /* the thread's stack releases them */
}

static void thread_exit_releases_contexts(void **state) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    pthread_t t;
    pthread_create(&t, NULL, exit_with_contexts_pushed, c);
    pthread_join(t, NULL);
    qv_cache_close(c); /* LeakSanitizer fails the test if references leaked */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nesting_and_misuse),
        cmocka_unit_test(pop_on_another_thread_is_an_error),
        cmocka_unit_test(metadata_merges_inner_wins),
        cmocka_unit_test(capture_used_from_eight_threads),
        cmocka_unit_test(capture_outlives_the_cache_handle),
        cmocka_unit_test(thread_exit_releases_contexts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
