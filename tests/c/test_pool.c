/* The thread pool: a million tiny tasks, resizing under load, idle
 * retirement and revival, the initializer, failing tasks, shutdown with and
 * without cancelling, and the process-wide reusable pool. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
    uint64_t started = pool_stat(p, QV_POOL_STAT_STARTED);
    qv_pool_free(p);
    /* counted after the free, which joins every worker: one started last
     * may not have reached its initializer while the others ran the jobs */
    assert_int_equal(atomic_load(&inits), (int)started);
    assert_true(atomic_load(&inits) <= 3);
    assert_int_equal(atomic_load(&destroyed), 1);
    /* a failed construction still releases the userdata, once */
    assert_int_equal(qv_pool_new(NULL, &o), QV_EINVAL);
    assert_int_equal(atomic_load(&destroyed), 2);
    o.version = 99;
    assert_int_equal(qv_pool_new(&p, &o), QV_EINVAL);
    assert_null(p);
    assert_int_equal(atomic_load(&destroyed), 3);
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

/* fork(): a child gets working pools. The test forks while one pool's only
 * worker is busy with a task that has another queued behind it, while a
 * second thread keeps submitting to another pool and to the shared one, then
 * checks in the child that every pool runs new tasks, and that waiting on
 * the parent's tasks fails at once instead of hanging. alarm() turns a hang
 * into a failure. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
/* ThreadSanitizer refuses threads in the child of a threaded process unless told */
const char *__tsan_default_options(void) { return "die_after_fork=0"; }
#endif
#endif

static _Atomic int gate_open;

static qv_status answer(qv_future *f, void *userdata) {
    while (userdata && !atomic_load(&gate_open)) sleep_ms(1);
    return qv_future_set_result(f, "\x18\x2a", 2); /* 42 */
}

static int submit_and_wait(qv_pool *p, int64_t timeout_ns) {
    qv_future *f;
    const void *data;
    size_t len;
    int ok = qv_executor_submit(&f, qv_pool_executor(p), answer, NULL, NULL) == QV_OK &&
             qv_future_wait(f, timeout_ns) == QV_OK && qv_future_result(f, &data, &len) == QV_OK && len == 2 &&
             memcmp(data, "\x18\x2a", 2) == 0;
    qv_future_free(f);
    return ok;
}

typedef struct {
    qv_pool *pool, *shared;
    _Atomic int stop;
    _Atomic uint64_t rounds;
} churn;

static void *keep_submitting(void *p) {
    churn *c = p;
    while (!atomic_load(&c->stop)) {
        if (!submit_and_wait(c->pool, 10LL * 1000000000) || !submit_and_wait(c->shared, 10LL * 1000000000)) break;
        atomic_fetch_add(&c->rounds, 1);
    }
    return NULL;
}

/* In the child: 0, or the number of the check that failed. */
static int child_checks(qv_pool *busy, qv_future *running, qv_future *queued, churn *c) {
    alarm(20);
    const int64_t s = 1000000000;
    if (qv_future_wait(running, 5 * s) != QV_EMISUSE) return 1;
    if (!strstr(qv_errmsg(), "fork")) return 2;
    if (qv_future_wait(queued, 5 * s) != QV_EMISUSE) return 3;
    if (qv_future_state(queued) != QV_FUTURE_PENDING) return 4;
    if (!submit_and_wait(busy, 5 * s)) return 5;
    if (!submit_and_wait(c->pool, 5 * s)) return 6;
    if (!submit_and_wait(c->shared, 5 * s)) return 7;
    qv_pool *again;
    if (qv_pool_shared(&again, 0, 0) || again != c->shared) return 8;
    if (!submit_and_wait(again, 5 * s)) return 9;
    qv_pool_free(again);
    uint64_t n;
    if (qv_pool_stat(busy, QV_POOL_STAT_QUEUED, &n) || n != 0) return 10; /* the parent's queue stayed there */
    if (qv_pool_shutdown(busy, 0)) return 11;
    return 0;
}

static void fork_gives_the_child_working_pools(void **state) {
    qv_pool *busy = new_pool(1, 0);
    churn c = {new_pool(2, 0), NULL, 0, 0};
    QVT_OK(qv_pool_shared(&c.shared, 2, 0));
    assert_true(submit_and_wait(busy, -1)); /* the pools have workers before the fork */
    atomic_store(&gate_open, 0);
    qv_future *running, *queued;
    QVT_OK(qv_executor_submit(&running, qv_pool_executor(busy), answer, (void *)1, NULL));
    QVT_OK(qv_executor_submit(&queued, qv_pool_executor(busy), answer, NULL, NULL));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, keep_submitting, &c), 0);
    while (atomic_load(&c.rounds) < 20) sleep_ms(1);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(child_checks(busy, running, queued, &c));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status)) fail_msg("the child died of signal %d (SIGALRM: it hung)", WTERMSIG(status));
    if (WEXITSTATUS(status)) fail_msg("the child failed check %d", WEXITSTATUS(status));

    /* the parent's tasks are the parent's: they run here */
    atomic_store(&gate_open, 1);
    QVT_OK(qv_future_wait(running, -1));
    QVT_OK(qv_future_wait(queued, -1));
    assert_int_equal(qv_future_state(queued), QV_FUTURE_DONE);
    atomic_store(&c.stop, 1);
    pthread_join(t, NULL);
    assert_true(atomic_load(&c.rounds) >= 20);
    qv_future_free(running);
    qv_future_free(queued);
    qv_pool_free(busy);
    qv_pool_free(c.pool);
    qv_pool_free(c.shared);
}

/* A task that forks: in the child, the forking thread is still a worker of
 * the pool (it returns from the task into the pool's loop), the only one. */
typedef struct {
    qv_pool *pool;
    pid_t pid;
} forker;

static void *child_checker(void *p) {
    forker *fk = p;
    /* runs once the forking task has returned to the pool loop (1 worker) */
    int ok = submit_and_wait(fk->pool, 5LL * 1000000000);
    sleep_ms(300); /* past the idle timeout: the worker retires in the child */
    uint64_t alive = 99;
    qv_pool_stat(fk->pool, QV_POOL_STAT_WORKERS, &alive);
    _exit(!ok ? 1 : alive > 1 ? 2 : 0);
}

static qv_status fork_in_task(qv_future *f, void *userdata) {
    forker *fk = userdata;
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        pthread_t t;
        if (pthread_create(&t, NULL, child_checker, fk)) _exit(3);
    }
    fk->pid = pid;
    return qv_future_set_result(f, "\x01", 1);
}

static void a_task_may_fork(void **state) {
    forker fk = {new_pool(1, 50), -1};
    qv_future *f;
    QVT_OK(qv_executor_submit(&f, qv_pool_executor(fk.pool), fork_in_task, &fk, NULL));
    QVT_OK(qv_future_wait(f, -1));
    assert_true(fk.pid > 0);
    int status;
    assert_int_equal(waitpid(fk.pid, &status, 0), fk.pid);
    if (WIFSIGNALED(status)) fail_msg("the child died of signal %d (SIGALRM: it hung)", WTERMSIG(status));
    if (WEXITSTATUS(status)) fail_msg("the child failed check %d", WEXITSTATUS(status));
    qv_future_free(f);
    qv_pool_free(fk.pool);
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
        cmocka_unit_test(fork_gives_the_child_working_pools),
        cmocka_unit_test(a_task_may_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
