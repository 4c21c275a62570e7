/* Futures: every callback exactly once under races between completion and
 * registration; waiting with timeouts; failure and cancellation; the
 * pass-through that stores a result when it arrives. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

static _Atomic int calls, destroys;

static void count_cb(qv_future *f, void *userdata) {
    atomic_fetch_add(&calls, 1);
    assert_int_not_equal(qv_future_state(f), QV_FUTURE_PENDING);
}

static void count_destroy(void *userdata) {
    atomic_fetch_add(&destroys, 1);
}

static void *complete_it(void *arg) {
    qv_value *v;
    qv_value_new_int(&v, 42);
    qv_future_set_value(arg, v);
    qv_value_free(v);
    return NULL;
}

static void *register_it(void *arg) {
    qv_future_on_done(arg, count_cb, NULL, count_destroy);
    return NULL;
}

static void callbacks_exactly_once_under_races(void **state) {
    const int rounds = 2000, per_round = 4;
    atomic_store(&calls, 0);
    atomic_store(&destroys, 0);
    for (int r = 0; r < rounds; r++) {
        qv_future *f;
        QVT_OK(qv_future_new(&f));
        pthread_t reg[per_round], done;
        for (int i = 0; i < per_round / 2; i++) pthread_create(&reg[i], NULL, register_it, f);
        pthread_create(&done, NULL, complete_it, f);
        for (int i = per_round / 2; i < per_round; i++) pthread_create(&reg[i], NULL, register_it, f);
        for (int i = 0; i < per_round; i++) pthread_join(reg[i], NULL);
        pthread_join(done, NULL);
        qv_future_free(f);
    }
    assert_int_equal(atomic_load(&calls), rounds * per_round);
    assert_int_equal(atomic_load(&destroys), rounds * per_round);
}

static void completes_once(void **state) {
    qv_future *f;
    QVT_OK(qv_future_new(&f));
    assert_int_equal(qv_future_state(f), QV_FUTURE_PENDING);
    const void *d;
    size_t n;
    assert_int_equal(qv_future_result(f, &d, &n), QV_EMISUSE);
    uint8_t one[] = {0x01}, two[] = {0x02}, bad[] = {0x18, 0x00};
    assert_int_equal(qv_future_set_result(f, bad, 2), QV_EDECODE); /* still pending */
    QVT_OK(qv_future_set_result(f, one, 1));
    assert_int_equal(qv_future_set_result(f, two, 1), QV_EMISUSE);
    assert_int_equal(qv_future_set_error(f, QV_EFAILED, "late"), QV_EMISUSE);
    assert_int_equal(qv_future_cancel(f), QV_EMISUSE);
    QVT_OK(qv_future_result(f, &d, &n));
    assert_int_equal(n, 1);
    assert_int_equal(((const uint8_t *)d)[0], 1);
    /* registered after completion: runs at once, in this thread */
    atomic_store(&calls, 0);
    atomic_store(&destroys, 0);
    QVT_OK(qv_future_on_done(f, count_cb, NULL, count_destroy));
    assert_int_equal(atomic_load(&calls), 1);
    assert_int_equal(atomic_load(&destroys), 1);
    assert_int_equal(qv_future_on_done(f, NULL, NULL, count_destroy), QV_EINVAL);
    assert_int_equal(atomic_load(&destroys), 2); /* destroy runs even when registration fails */
    qv_future_free(f);
}

static void failure_and_cancellation(void **state) {
    qv_future *f, *g;
    QVT_OK(qv_future_new(&f));
    assert_int_equal(qv_future_set_error(f, QV_OK, "no"), QV_EINVAL);
    QVT_OK(qv_future_set_error(f, QV_EFAILED, "disk on fire"));
    assert_int_equal(qv_future_state(f), QV_FUTURE_FAILED);
    qv_value *v = (qv_value *)1;
    assert_int_equal(qv_future_value(f, &v), QV_EFAILED);
    assert_null(v);
    assert_string_equal(qv_errmsg(), "disk on fire");
    QVT_OK(qv_future_new(&g));
    atomic_store(&calls, 0);
    QVT_OK(qv_future_on_done(g, count_cb, NULL, NULL));
    QVT_OK(qv_future_cancel(g));
    assert_int_equal(atomic_load(&calls), 1);
    assert_int_equal(qv_future_state(g), QV_FUTURE_CANCELLED);
    assert_int_equal(qv_future_value(g, &v), QV_ECANCELLED);
    QVT_OK(qv_future_wait(g, 0)); /* complete: no wait */
    qv_future_free(f);
    qv_future_free(g);
}

static void *complete_later(void *arg) {
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return complete_it(arg);
}

static void waits_and_timeouts(void **state) {
    qv_future *f;
    QVT_OK(qv_future_new(&f));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(qv_future_wait(f, 20 * 1000 * 1000), QV_ETIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(waited >= 0.019);
    assert_non_null(strstr(qv_errmsg(), "did not complete"));
    pthread_t t;
    pthread_create(&t, NULL, complete_later, f);
    QVT_OK(qv_future_wait(f, -1));
    qv_value *v;
    QVT_OK(qv_future_value(f, &v));
    int64_t i;
    QVT_OK(qv_value_get_int(v, &i));
    assert_int_equal(i, 42);
    qv_value_free(v);
    pthread_join(t, NULL);
    qv_future_free(f);
}

static void last_reference_inside_a_callback(void **state) {
    qv_future *f;
    QVT_OK(qv_future_new(&f));
    /* the callback drops the only reference the test holds */
    QVT_OK(qv_future_on_done(f, (qv_future_cb)qv_future_free, NULL, NULL));
    qv_future_retain(f);
    qv_future_free(f);
    complete_it(f); /* must not touch freed memory (ASan watches) */
}

static void pass_through_stores_on_completion(void **state) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    qv_value *args, *x;
    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_int(&x, 5));
    QVT_OK(qv_value_list_append(args, x));
    qv_encoder *enc;
    QVT_OK(qv_encoder_new(&enc));
    QVT_OK(qv_encoder_list(enc, 5));
    QVT_OK(qv_encoder_text(enc, "quiver/call/v1", 14));
    QVT_OK(qv_encoder_text(enc, "t.async", 7));
    QVT_OK(qv_encoder_null(enc));
    QVT_OK(qv_encoder_value(enc, args));
    QVT_OK(qv_encoder_map_begin(enc));
    QVT_OK(qv_encoder_map_end(enc));
    const void *call;
    size_t call_len;
    QVT_OK(qv_encoder_finish(enc, &call, &call_len));
    qv_digest key;
    QVT_OK(qv_call_digest(&key, "t.async", NULL, args, NULL));
    /* done: stored */
    qv_future *f;
    QVT_OK(qv_future_new(&f));
    QVT_OK(qv_future_store(f, c, call, call_len, NULL));
    assert_int_equal(qv_cache_contains(c, &key), QV_NOTFOUND);
    pthread_t t;
    pthread_create(&t, NULL, complete_later, f);
    pthread_join(t, NULL);
    QVT_OK(qv_cache_contains(c, &key));
    qv_future_free(f);
    QVT_OK(qv_cache_evict(c, &key));
    /* failed or cancelled: nothing stored */
    QVT_OK(qv_future_new(&f));
    QVT_OK(qv_future_store(f, c, call, call_len, NULL));
    QVT_OK(qv_future_set_error(f, QV_EFAILED, "no"));
    assert_int_equal(qv_cache_contains(c, &key), QV_NOTFOUND);
    qv_future_free(f);
    QVT_OK(qv_future_new(&f));
    QVT_OK(qv_future_store(f, c, call, call_len, NULL));
    QVT_OK(qv_future_cancel(f));
    assert_int_equal(qv_cache_contains(c, &key), QV_NOTFOUND);
    qv_future_free(f);
    /* a future never completed still releases the cache it would store into */
    QVT_OK(qv_future_new(&f));
    QVT_OK(qv_future_store(f, c, call, call_len, NULL));
    qv_future_free(f);
    qv_encoder_free(enc);
    qv_value_free(args);
    qv_cache_close(c);
}

/* fork(): a future made by the program (not a task's) stays usable in the
 * child, even when a parent thread was waiting on it at the fork; the child
 * may complete it and wait on it. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
const char *__tsan_default_options(void) { return "die_after_fork=0"; }
#endif
#endif

static void *wait_forever(void *p) {
    qv_future_wait(p, -1);
    return NULL;
}

static void on_done_count(qv_future *f, void *userdata) {
    atomic_fetch_add((_Atomic int *)userdata, 1);
}

static void plain_futures_work_in_a_child(void **state) {
    qv_future *f;
    QVT_OK(qv_future_new(&f));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_forever, f), 0);
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL); /* the waiter is inside qv_future_wait */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20);
        static _Atomic int called;
        int code = qv_future_on_done(f, on_done_count, (void *)&called, NULL) ? 1
                   : qv_future_set_result(f, "\x01", 1)                      ? 2
                   : qv_future_wait(f, -1)                                    ? 3
                   : atomic_load(&called) != 1                                ? 4
                                                                              : 0;
        _exit(code);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status)) fail_msg("the child died of signal %d (SIGALRM: it hung)", WTERMSIG(status));
    if (WEXITSTATUS(status)) fail_msg("the child failed check %d", WEXITSTATUS(status));
    assert_int_equal(qv_future_state(f), QV_FUTURE_PENDING); /* the child's completion stayed there */
    QVT_OK(qv_future_set_result(f, "\x02", 1));
    pthread_join(t, NULL);
    qv_future_free(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(callbacks_exactly_once_under_races),
        cmocka_unit_test(completes_once),
        cmocka_unit_test(failure_and_cancellation),
        cmocka_unit_test(waits_and_timeouts),
        cmocka_unit_test(last_reference_inside_a_callback),
        cmocka_unit_test(pass_through_stores_on_completion),
        cmocka_unit_test(plain_futures_work_in_a_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
