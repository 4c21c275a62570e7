/* The thread pool: a million tiny tasks, resizing under load, idle
 * retirement and revival, the initializer, failing tasks, shutdown with and
 * without cancelling, and the process-wide reusable pool. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "helpers.h"

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static uint64_t pool_stat(qv_pool *p, int which) {
    uint64_t v;
    QVT_OK(qv_pool_stat(p, which, &v));
    return v;
}

typedef struct {
    _Atomic uint64_t sum, ran, cancelled;
    int sleep_ms;
} tally;

typedef struct {
    tally *t;
    uint64_t value;
} job;

static void run_job(void *p, int cancelled) {
    job *j = p;
    if (cancelled) {
        atomic_fetch_add(&j->t->cancelled, 1);
        return;
    }
    if (j->t->sleep_ms) sleep_ms(j->t->sleep_ms);
    atomic_fetch_add(&j->t->sum, j->value);
    atomic_fetch_add(&j->t->ran, 1);
}

static void wait_ran(tally *t, uint64_t n) {
    for (int i = 0; i < 120000 && atomic_load(&t->ran) < n; i++) sleep_ms(1);
}

static qv_pool *new_pool(uint32_t workers, uint32_t idle_ms) {
    qv_pool_options o = QV_POOL_OPTIONS_INIT;
    o.workers = workers;
    o.idle_timeout_ms = idle_ms;
    qv_pool *p;
    QVT_OK(qv_pool_new(&p, &o));
    return p;
}

static void million_tasks(void **state) {
    /* under ThreadSanitizer every access is checked: a tenth suffices there */
    const uint64_t n = getenv("QV_SMALL") ? 100000 : 1000000;
    qv_pool *p = new_pool(2, 0);
    tally t = {0};
    job *jobs = malloc(n * sizeof *jobs);
    for (uint64_t i = 0; i < n; i++) {
        jobs[i] = (job){&t, i};
        QVT_OK(qv_executor_post(qv_pool_executor(p), run_job, &jobs[i]));
    }
    wait_ran(&t, n);
    assert_int_equal(atomic_load(&t.ran), n);
    assert_true(atomic_load(&t.sum) == n * (n - 1) / 2);
    assert_true(pool_stat(p, QV_POOL_STAT_WORKERS) <= 2);
    qv_pool_free(p);
    free(jobs);
}

static void resize_under_load(void **state) {
    qv_pool *p = new_pool(1, 0);
    tally t = {0};
    t.sleep_ms = 1;
    job jobs[400];
    for (int i = 0; i < 400; i++) {
        jobs[i] = (job){&t, 1};
        QVT_OK(qv_executor_post(qv_pool_executor(p), run_job, &jobs[i]));
        if (i == 50) QVT_OK(qv_pool_resize(p, 4));
        if (i == 300) QVT_OK(qv_pool_resize(p, 2));
    }
    wait_ran(&t, 400);
    assert_int_equal(atomic_load(&t.ran), 400);
    assert_true(pool_stat(p, QV_POOL_STAT_STARTED) >= 2); /* growing started workers */
    assert_int_equal(pool_stat(p, QV_POOL_STAT_TARGET), 2);
    for (int i = 0; i < 2000 && pool_stat(p, QV_POOL_STAT_WORKERS) > 2; i++) sleep_ms(1);
    assert_true(pool_stat(p, QV_POOL_STAT_WORKERS) <= 2);
    qv_pool_free(p);
}

static void idle_workers_retire_and_return(void **state) {
    qv_pool *p = new_pool(2, 50);
    tally t = {0};
    job jobs[20];
    for (int i = 0; i < 10; i++) {
        jobs[i] = (job){&t, 1};
        QVT_OK(qv_executor_post(qv_pool_executor(p), run_job, &jobs[i]));
    }
    wait_ran(&t, 10);
    assert_true(pool_stat(p, QV_POOL_STAT_WORKERS) >= 1);
    for (int i = 0; i < 3000 && pool_stat(p, QV_POOL_STAT_WORKERS) > 0; i++) sleep_ms(1);
    assert_int_equal(pool_stat(p, QV_POOL_STAT_WORKERS), 0);
    uint64_t started = pool_stat(p, QV_POOL_STAT_STARTED);
    for (int i = 10; i < 20; i++) {
        jobs[i] = (job){&t, 1};
        QVT_OK(qv_executor_post(qv_pool_executor(p), run_job, &jobs[i]));
    }
    wait_ran(&t, 20);
    assert_int_equal(atomic_load(&t.ran), 20);
    assert_true(pool_stat(p, QV_POOL_STAT_STARTED) > started); /* revived */
    qv_pool_free(p);
}

static _Atomic int inits, destroyed;
static pthread_key_t marked;

static void init_worker(void *userdata) {
    atomic_fetch_add(&inits, 1);
    pthread_setspecific(marked, userdata);
}

static void check_marked(void *p, int cancelled) {
    tally *t = p;
    if (pthread_getspecific(marked) == (void *)t) atomic_fetch_add(&t->ran, 1);
    else atomic_fetch_add(&t->cancelled, 1);
}

static void destroy_userdata(void *userdata) {
    atomic_fetch_add(&destroyed, 1);
}

static void initializer_runs_once_per_worker(void **state) {
    pthread_key_create(&marked, NULL);
    atomic_store(&inits, 0);
    atomic_store(&destroyed, 0);
    tally t = {0};
    qv_pool_options o = QV_POOL_OPTIONS_INIT;
    o.workers = 3;
    o.initializer = init_worker;
    o.userdata = &t;
    o.destroy = destroy_userdata;
    qv_pool *p;
    QVT_OK(qv_pool_new(&p, &o));
    for (int i = 0; i < 300; i++) QVT_OK(qv_executor_post(qv_pool_executor(p), check_marked, &t));
    wait_ran(&t, 300);
    assert_int_equal(atomic_load(&t.ran), 300); /* every job saw its worker initialized */
    assert_int_equal(atomic_load(&inits), (int)pool_stat(p, QV_POOL_STAT_STARTED));
    assert_true(atomic_load(&inits) <= 3);
    qv_pool_free(p);
    assert_int_equal(atomic_load(&destroyed), 1);
    pthread_key_delete(marked);
}

static qv_status failing_task(qv_future *f, void *userdata) {
    return (intptr_t)userdata ? QV_EFAILED : qv_future_set_result(f, "\x01", 1);
}

static void failing_task_does_not_stop_the_pool(void **state) {
    qv_pool *p = new_pool(2, 0);
    qv_future *bad, *good;
    QVT_OK(qv_executor_submit(&bad, qv_pool_executor(p), failing_task, (void *)1, NULL));
    QVT_OK(qv_executor_submit(&good, qv_pool_executor(p), failing_task, (void *)0, NULL));
    QVT_OK(qv_future_wait(bad, -1));
    QVT_OK(qv_future_wait(good, -1));
    assert_int_equal(qv_future_state(bad), QV_FUTURE_FAILED);
    assert_int_equal(qv_future_state(good), QV_FUTURE_DONE);
    qv_future_free(bad);
    qv_future_free(good);
    qv_pool_free(p);
}

static void shutdown_waits_or_cancels(void **state) {
    for (int cancel = 0; cancel <= 1; cancel++) {
        qv_pool *p = new_pool(1, 0);
        tally t = {0};
        t.sleep_ms = 2;
        job jobs[100];
        for (int i = 0; i < 100; i++) {
            jobs[i] = (job){&t, 1};
            QVT_OK(qv_executor_post(qv_pool_executor(p), run_job, &jobs[i]));
        }
        QVT_OK(qv_pool_shutdown(p, cancel));
        uint64_t ran = atomic_load(&t.ran), cancelled = atomic_load(&t.cancelled);
        assert_int_equal(ran + cancelled, 100); /* every job was called exactly once */
        if (cancel) assert_true(cancelled > 0);
        else assert_int_equal(ran, 100);
        assert_int_equal(pool_stat(p, QV_POOL_STAT_WORKERS), 0);
        assert_int_equal(qv_executor_post(qv_pool_executor(p), run_job, &jobs[0]), QV_EMISUSE);
        QVT_OK(qv_pool_shutdown(p, cancel)); /* idempotent */
        qv_pool_free(p);
    }
    /* futures of cancelled tasks are cancelled */
    qv_pool *p = new_pool(1, 0);
    tally t = {0};
    t.sleep_ms = 20;
    job slow = {&t, 1};
    QVT_OK(qv_executor_post(qv_pool_executor(p), run_job, &slow));
    qv_future *f;
    QVT_OK(qv_executor_submit(&f, qv_pool_executor(p), failing_task, (void *)0, NULL));
    QVT_OK(qv_pool_shutdown(p, 1));
    assert_int_equal(qv_future_state(f), QV_FUTURE_CANCELLED);
    qv_future_free(f);
    qv_pool_free(p);
}

static void shared_pool_is_reused(void **state) {
    qv_pool *a, *b, *c;
    QVT_OK(qv_pool_shared(&a, 2, 0));
    QVT_OK(qv_pool_shared(&b, 0, 0));
    assert_ptr_equal(a, b); /* asking again returns the same pool */
    QVT_OK(qv_pool_shared(&c, 3, 0));
    assert_ptr_equal(a, c);
    assert_int_equal(pool_stat(a, QV_POOL_STAT_TARGET), 3); /* another count resizes it */
    qv_pool_free(c);
    QVT_OK(qv_pool_shared(&c, 3, 1));
    assert_ptr_not_equal(a, c); /* restart replaces it */
    tally t = {0};
    job j = {&t, 5};
    QVT_OK(qv_executor_post(qv_pool_executor(a), run_job, &j)); /* the old one still serves its holders */
    wait_ran(&t, 1);
    assert_int_equal(atomic_load(&t.sum), 5);
    qv_pool_free(a);
    qv_pool_free(b);
    qv_pool_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(million_tasks),
        cmocka_unit_test(resize_under_load),
        cmocka_unit_test(idle_workers_retire_and_return),
        cmocka_unit_test(initializer_runs_once_per_worker),
        cmocka_unit_test(failing_task_does_not_stop_the_pool),
        cmocka_unit_test(shutdown_waits_or_cancels),
        cmocka_unit_test(shared_pool_is_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
