/* Executors: a host executor through the interface, memoized submission,
 * wrapping (hits never reach submit; misses run under the submitter's
 * context and are stored), and keyed batches. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "helpers.h"

/* A host executor: one thread per job, counting submissions. */
typedef struct {
    _Atomic int submits;
    _Atomic int destroyed;
} host;

typedef struct {
    qv_job_fn run;
    void *job;
} thread_job;

static void *job_thread(void *p) {
    thread_job *j = p;
    j->run(j->job, 0);
    free(j);
    return NULL;
}

static qv_status host_submit(qv_job_fn run, void *job, void *userdata) {
    host *h = userdata;
    atomic_fetch_add(&h->submits, 1);
    thread_job *j = malloc(sizeof *j);
    *j = (thread_job){run, job};
    pthread_t t;
    if (pthread_create(&t, NULL, job_thread, j)) {
        free(j);
        return QV_EIO;
    }
    pthread_detach(t);
    return QV_OK;
}

static void host_destroy(void *userdata) {
    atomic_fetch_add(&((host *)userdata)->destroyed, 1);
}

/* The memoized body records the cache the worker saw. */
static _Atomic(qv_cache *) seen_cache;
static _Atomic int body_runs;

static qv_status square(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata) {
    qv_cache *c;
    qv_ctx_current(&c, NULL, NULL);
    atomic_store(&seen_cache, c);
    atomic_fetch_add(&body_runs, 1);
    int64_t x;
    qv_status st = qv_value_get_int(qv_value_list_get(args, 0), &x);
    if (st) return st;
    if (x < 0) return QV_EINVAL; /* refuses negative numbers */
    return qv_value_new_int(result, x * x);
}

static int64_t future_int(qv_future *f) {
    QVT_OK(qv_future_wait(f, 10LL * 1000000000));
    qv_value *v;
    QVT_OK(qv_future_value(f, &v));
    int64_t i;
    QVT_OK(qv_value_get_int(v, &i));
    qv_value_free(v);
    return i;
}

static void wrap_answers_hits_itself(void **state) {
    host h = {0};
    qv_executor *ex, *wrapped, *twice;
    QVT_OK(qv_executor_new(&ex, host_submit, &h, host_destroy));
    QVT_OK(qv_executor_wrap(&wrapped, ex));
    QVT_OK(qv_executor_wrap(&twice, wrapped));
    assert_ptr_equal(twice, wrapped); /* wrapping twice is wrapping once */
    qv_executor_free(twice);
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    QVT_OK(qv_ctx_push(c, NULL));
    qv_fn *fn;
    QVT_OK(qv_fn_new(&fn, "t.square", "1", square, NULL, NULL));
    atomic_store(&body_runs, 0);
    /* a miss goes to the executor, runs on its thread under our cache */
    qv_value *args = qvt_int_args(7);
    qv_future *f;
    QVT_OK(qv_executor_submit_call(&f, wrapped, fn, args, NULL));
    assert_int_equal(future_int(f), 49);
    qv_future_free(f);
    assert_int_equal(atomic_load(&h.submits), 1);
    assert_ptr_equal(atomic_load(&seen_cache), c);
    qv_digest k;
    QVT_OK(qv_fn_digest(&k, fn, args, NULL));
    QVT_OK(qv_cache_contains(c, &k)); /* stored when it completed */
    /* hits: completed at once, submit never called */
    for (int i = 0; i < 100; i++) {
        QVT_OK(qv_executor_submit_call(&f, wrapped, fn, args, NULL));
        assert_int_equal(qv_future_state(f), QV_FUTURE_DONE);
        assert_int_equal(future_int(f), 49);
        qv_future_free(f);
    }
    assert_int_equal(atomic_load(&h.submits), 1);
    assert_int_equal(atomic_load(&body_runs), 1);
    /* the plain executor sends every call, memoized on the worker */
    QVT_OK(qv_executor_submit_call(&f, ex, fn, args, NULL));
    assert_int_equal(future_int(f), 49);
    qv_future_free(f);
    assert_int_equal(atomic_load(&h.submits), 2);
    assert_int_equal(atomic_load(&body_runs), 1); /* a hit on the worker */
    /* a failing body fails the future and stores nothing */
    qv_value *neg = qvt_int_args(-1);
    QVT_OK(qv_executor_submit_call(&f, wrapped, fn, neg, NULL));
    QVT_OK(qv_future_wait(f, -1));
    assert_int_equal(qv_future_state(f), QV_FUTURE_FAILED);
    qv_future_free(f);
    QVT_OK(qv_fn_digest(&k, fn, neg, NULL));
    assert_int_equal(qv_cache_contains(c, &k), QV_NOTFOUND);
    qv_value_free(neg);
    QVT_OK(qv_ctx_pop());
    qv_value_free(args);
    qv_fn_free(fn);
    qv_executor_free(wrapped);
    qv_executor_free(ex);
    assert_int_equal(atomic_load(&h.destroyed), 1); /* after the last reference */
    qv_cache_close(c);
}

static qv_status plain_task(qv_future *f, void *userdata) {
    return qv_future_set_result(f, "\x18\x2a", 2); /* 42 */
}

static void plain_tasks_pass_through_a_wrapper(void **state) {
    qv_pool *p;
    qv_pool_options o = QV_POOL_OPTIONS_INIT;
    o.workers = 2;
    QVT_OK(qv_pool_new(&p, &o));
    qv_executor *w;
    QVT_OK(qv_executor_wrap(&w, qv_pool_executor(p)));
    qv_future *f;
    QVT_OK(qv_executor_submit(&f, w, plain_task, NULL, NULL));
    assert_int_equal(future_int(f), 42);
    qv_future_free(f);
    /* the pool counts a job once it returns, just after it completed the future */
    uint64_t done = 0;
    for (int i = 0; i < 5000 && done == 0; i++) {
        QVT_OK(qv_pool_stat(p, QV_POOL_STAT_COMPLETED, &done));
        if (!done) sched_yield();
    }
    assert_int_equal(done, 1);
    qv_executor_free(w);
    qv_pool_free(p);
}

static qv_status refuse(qv_job_fn run, void *job, void *userdata) {
    return QV_EFULL;
}

static _Atomic int freed;
static void count_free(void *p) {
    atomic_fetch_add(&freed, 1);
}

static void failed_submission_never_runs(void **state) {
    qv_executor *ex;
    QVT_OK(qv_executor_new(&ex, refuse, NULL, NULL));
    qv_future *f = (qv_future *)1;
    atomic_store(&freed, 0);
    assert_int_equal(qv_executor_submit(&f, ex, plain_task, NULL, count_free), QV_EFULL);
    assert_null(f);
    assert_int_equal(atomic_load(&freed), 1); /* userdata released exactly once */
    qv_executor_free(ex);
}

static int progress_calls;
static uint64_t last_done, last_failed, last_total;
static void on_progress(uint64_t done, uint64_t failed, uint64_t total, double elapsed, void *userdata) {
    progress_calls++;
    last_done = done;
    last_failed = failed;
    last_total = total;
}

static void batch_keeps_every_outcome(void **state) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    QVT_OK(qv_ctx_push(c, NULL));
    qv_fn *fn;
    QVT_OK(qv_fn_new(&fn, "t.square", "1", square, NULL, NULL));
    qv_pool *p;
    QVT_OK(qv_pool_shared(&p, 2, 0));
    for (int use_pool = 0; use_pool <= 1; use_pool++) {
        qv_batch *b;
        QVT_OK(qv_batch_new(&b));
        char key[32];
        for (int i = -2; i < 40; i++) {
            snprintf(key, sizeof key, "k%d", i);
            qv_value *args = qvt_int_args(i < 0 ? i : i + 100 * use_pool); /* negative: refused */
            QVT_OK(qv_batch_add(b, key, fn, args, NULL));
            qv_value_free(args);
        }
        qv_value *dup = qvt_int_args(0);
        assert_int_equal(qv_batch_add(b, "k0", fn, dup, NULL), QV_EINVAL);
        progress_calls = 0;
        QVT_OK(qv_batch_run(b, use_pool ? qv_pool_executor(p) : NULL, on_progress, 0.0, NULL));
        assert_true(progress_calls >= 1);
        assert_int_equal(last_total, 42);
        assert_int_equal(last_done, 40);
        assert_int_equal(last_failed, 2);
        assert_int_equal(qv_batch_count(b), 42);
        for (int i = 0; i < 40; i++) {
            snprintf(key, sizeof key, "k%d", i);
            qv_value *r;
            QVT_OK(qv_batch_result(b, key, &r));
            int64_t v;
            QVT_OK(qv_value_get_int(r, &v));
            assert_int_equal(v, (int64_t)(i + 100 * use_pool) * (i + 100 * use_pool));
            qv_value_free(r);
        }
        qv_value *r;
        assert_int_not_equal(qv_batch_result(b, "k-1", &r), QV_OK);
        assert_null(r);
        assert_int_equal(qv_batch_result(b, "nope", &r), QV_NOTFOUND);
        assert_int_equal(qv_batch_run(b, NULL, NULL, 0, NULL), QV_EMISUSE); /* one shot */
        assert_int_equal(qv_batch_add(b, "late", fn, dup, NULL), QV_EMISUSE);
        qv_value_free(dup);
        qv_batch_free(b);
    }
    qv_pool_free(p);
    QVT_OK(qv_ctx_pop());
    qv_fn_free(fn);
    qv_cache_close(c);
}

/* Progress comes at most once per interval, once at the end, and never
 * from a spinning thread: an interval that is not positive (or is not a
 * number, or is too long to wait) means only the final report. */
static qv_status slow_body(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata) {
    struct timespec ts = {0, 200 * 1000000};
    nanosleep(&ts, NULL);
    return qv_value_new_int(result, 1);
}

static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void batch_progress_is_bounded(void **state) {
    qv_fn *fn;
    QVT_OK(qv_fn_new(&fn, "t.slow", "1", slow_body, NULL, NULL));
    qv_pool *p;
    QVT_OK(qv_pool_shared(&p, 2, 0));
    const struct {
        double interval;
        int min_calls, max_calls;
    } cases[] = {
        {0.0, 1, 1}, {-1.0, 1, 1}, {NAN, 1, 1}, {INFINITY, 1, 1}, {1e300, 1, 1},
        {1e-12, 1, 400}, /* as often as every millisecond, no more */
        {0.05, 2, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qv_cache *c;
        QVT_OK(qv_cache_open_memory(&c)); /* a fresh cache: the slow call misses */
        QVT_OK(qv_ctx_push(c, NULL));
        qv_batch *b;
        QVT_OK(qv_batch_new(&b));
        qv_value *args = qvt_int_args(1);
        QVT_OK(qv_batch_add(b, "slow", fn, args, NULL));
        qv_value_free(args);
        progress_calls = 0;
        double cpu = thread_cpu_s();
        QVT_OK(qv_batch_run(b, qv_pool_executor(p), on_progress, cases[i].interval, NULL));
        cpu = thread_cpu_s() - cpu;
        if (progress_calls < cases[i].min_calls || progress_calls > cases[i].max_calls || cpu > 0.03)
            fail_msg("interval %g: %d progress calls (want %d..%d), %.3f s of CPU while a 0.2 s task ran",
                     cases[i].interval, progress_calls, cases[i].min_calls, cases[i].max_calls, cpu);
        assert_int_equal(last_done, 1);
        assert_int_equal(last_total, 1);
        qv_batch_free(b);
        QVT_OK(qv_ctx_pop());
        qv_cache_close(c);
    }
    qv_pool_free(p);
    qv_fn_free(fn);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wrap_answers_hits_itself),
        cmocka_unit_test(plain_tasks_pass_through_a_wrapper),
        cmocka_unit_test(failed_submission_never_runs),
        cmocka_unit_test(batch_keeps_every_outcome),
        cmocka_unit_test(batch_progress_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
