/* Leases: one holder per key across threads and processes, prompt wake-ups on
 * release, takeover from a dead holder, nothing inherited across fork(). Real
 * processes on a real file; alarm() turns a hang into a failure. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "lease.h"

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static qv_digest key_of(int i) {
    qv_digest d;
    qv_digest_bytes(&d, &i, sizeof i);
    return d;
}

static int acquire(qv_leases *t, int i, int64_t wait_ns, qv_lease *lease) {
    qv_digest k = key_of(i);
    int outcome = -1;
    QVT_OK(qv__lease_acquire(t, &k, wait_ns, &outcome, lease));
    return outcome;
}

static void release(qv_leases *t, int i, qv_lease *lease) {
    qv_digest k = key_of(i);
    qv__lease_release(t, &k, lease);
}

static int setup(void **state) {
    *state = qvt_tempdir("lease");
    alarm(60);
    return 0;
}

static int teardown(void **state) {
    alarm(0);
    qvt_rmtree(*state);
    free(*state);
    return 0;
}

/* ------------------------------------------------------------ one process */

static void test_hold_release_take_again(void **state) {
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, *state));
    qv_lease a, b;
    assert_int_equal(acquire(t, 1, 0, &a), QV_LEASE_HELD);
    assert_int_equal(acquire(t, 2, 0, &b), QV_LEASE_HELD); /* another key is another lease */
    release(t, 1, &a);
    assert_int_equal(acquire(t, 1, 0, &a), QV_LEASE_HELD);
    release(t, 1, &a);
    release(t, 2, &b);
    release(t, 2, &b); /* twice: harmless */
    qv__leases_close(t);
}

static void test_own_thread_does_not_wait_for_itself(void **state) {
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, *state));
    qv_lease a, b;
    assert_int_equal(acquire(t, 7, 0, &a), QV_LEASE_HELD);
    int64_t t0 = mono_ns();
    assert_int_equal(acquire(t, 7, 5000000000ll, &b), QV_LEASE_TIMEOUT);
    assert_true(mono_ns() - t0 < 100000000ll);
    release(t, 7, &a);
    qv__leases_close(t);
}

typedef struct {
    qv_leases *t;
    int key;
    int64_t wait_ns;
    int outcome;
    int64_t woke_ns;
} waiter;

static void *wait_main(void *arg) {
    waiter *w = arg;
    qv_lease l;
    w->outcome = acquire(w->t, w->key, w->wait_ns, &l);
    w->woke_ns = mono_ns();
    if (w->outcome == QV_LEASE_HELD) release(w->t, w->key, &l);
    return NULL;
}

static void run_waiters_against_holder(qv_leases *t, int64_t hold_ns) {
    qv_lease a;
    assert_int_equal(acquire(t, 3, 0, &a), QV_LEASE_HELD);
    enum { N = 4 };
    waiter w[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        w[i] = (waiter){t, 3, 10000000000ll, -1, 0};
        assert_int_equal(pthread_create(&th[i], NULL, wait_main, &w[i]), 0);
    }
    struct timespec hold = {0, (long)hold_ns};
    nanosleep(&hold, NULL);
    int64_t released = mono_ns();
    release(t, 3, &a);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].outcome, QV_LEASE_DONE);
        assert_true(w[i].woke_ns - released < 50000000ll); /* woken, not polling */
    }
}

static void test_threads_wait_and_wake_on_release(void **state) {
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, *state));
    run_waiters_against_holder(t, 300000000);
    qv__leases_close(t);
}

static void test_private_table_for_memory_caches(void **state) {
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, NULL));
    run_waiters_against_holder(t, 100000000);
    qv__leases_close(t);
}

static void test_waiter_times_out_then_runs(void **state) {
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, *state));
    qv_lease a;
    assert_int_equal(acquire(t, 4, 0, &a), QV_LEASE_HELD);
    waiter w = {t, 4, 150000000ll, -1, 0};
    pthread_t th;
    int64_t t0 = mono_ns();
    pthread_create(&th, NULL, wait_main, &w);
    pthread_join(th, NULL);
    assert_int_equal(w.outcome, QV_LEASE_TIMEOUT);
    assert_true(w.woke_ns - t0 >= 150000000ll && w.woke_ns - t0 < 1000000000ll);
    release(t, 4, &a);
    qv__leases_close(t);
}

static void test_many_keys_reuse_slots(void **state) {
    /* far more takings than slots: tombstones are compacted, and a lease held
     * all along stays ours through every compaction */
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, *state));
    qv_lease kept, l;
    assert_int_equal(acquire(t, -1, 0, &kept), QV_LEASE_HELD);
    for (int i = 0; i < 50000; i++) {
        assert_int_equal(acquire(t, i, 0, &l), QV_LEASE_HELD);
        if (i % 25) release(t, i, &l);
    }
    for (int i = 0; i < 50000; i += 25) {
        qv_lease again;
        qv_digest k = key_of(i);
        int outcome;
        /* still held by us (this thread): no wait, and not ours to take twice */
        QVT_OK(qv__lease_acquire(t, &k, 0, &outcome, &again));
        if (outcome != QV_LEASE_TIMEOUT) fail_msg("key %d: outcome %d, expected still held", i, outcome);
    }
    release(t, -1, &kept);
    assert_int_equal(acquire(t, -1, 0, &kept), QV_LEASE_HELD);
    release(t, -1, &kept);
    qv__leases_close(t);
}

/* ---------------------------------------------------------- processes */

/* A child's outcome and the monotonic time it returned, through a pipe. */
typedef struct {
    int outcome;
    int64_t at_ns;
} report;

static pid_t spawn_waiter(const char *dir, int key, int64_t wait_ns, int fd) {
    pid_t pid = fork();
    if (pid == 0) {
        qv_leases *t;
        if (qv__leases_open(&t, dir)) _exit(90);
        qv_lease l;
        qv_digest k = key_of(key);
        report r = {-1, 0};
        if (qv__lease_acquire(t, &k, wait_ns, &r.outcome, &l)) _exit(91);
        r.at_ns = mono_ns();
        if (r.outcome == QV_LEASE_HELD) {
            struct timespec run = {0, 200000000}; /* the taken-over call runs */
            nanosleep(&run, NULL);
            qv__lease_release(t, &k, &l);
        }
        if (write(fd, &r, sizeof r) != sizeof r) _exit(92);
        qv__leases_close(t);
        _exit(0);
    }
    return pid;
}

static void test_processes_wait_for_one_holder(void **state) {
    const char *dir = *state;
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, dir));
    qv_lease a;
    assert_int_equal(acquire(t, 11, 0, &a), QV_LEASE_HELD);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    enum { N = 6 };
    pid_t kids[N];
    for (int i = 0; i < N; i++) kids[i] = spawn_waiter(dir, 11, 10000000000ll, fds[1]);
    close(fds[1]);
    struct timespec hold = {0, 400000000};
    nanosleep(&hold, NULL);
    int64_t released = mono_ns();
    release(t, 11, &a);
    for (int i = 0; i < N; i++) {
        report r;
        assert_int_equal(read(fds[0], &r, sizeof r), (ssize_t)sizeof r);
        assert_int_equal(r.outcome, QV_LEASE_DONE);
        if (r.at_ns - released > 50000000ll) fail_msg("a waiter woke %lld ms after the release", (long long)((r.at_ns - released) / 1000000));
    }
    for (int i = 0; i < N; i++) {
        int status;
        waitpid(kids[i], &status, 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    close(fds[0]);
    qv__leases_close(t);
}

static void test_dead_holder_is_taken_over_within_a_second(void **state) {
    const char *dir = *state;
    int ready[2], fds[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(fds), 0);
    pid_t holder = fork();
    if (holder == 0) {
        qv_leases *t;
        qv_lease l;
        qv_digest k = key_of(12);
        int outcome;
        if (qv__leases_open(&t, dir) || qv__lease_acquire(t, &k, 0, &outcome, &l) || outcome != QV_LEASE_HELD) _exit(90);
        if (write(ready[1], "x", 1) != 1) _exit(91);
        pause(); /* the call that never ends: SIGKILLed */
        _exit(0);
    }
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    enum { N = 3 };
    pid_t kids[N];
    for (int i = 0; i < N; i++) kids[i] = spawn_waiter(dir, 12, 10000000000ll, fds[1]);
    close(fds[1]);
    struct timespec settle = {0, 200000000};
    nanosleep(&settle, NULL);
    int64_t killed = mono_ns();
    kill(holder, SIGKILL); /* and not reaped until the end: a zombie is dead too */
    int held = 0, done = 0;
    for (int i = 0; i < N; i++) {
        report r;
        assert_int_equal(read(fds[0], &r, sizeof r), (ssize_t)sizeof r);
        if (r.outcome == QV_LEASE_HELD) {
            held++;
            if (r.at_ns - killed > 1000000000ll) fail_msg("taken over %lld ms after the holder died", (long long)((r.at_ns - killed) / 1000000));
        } else {
            assert_int_equal(r.outcome, QV_LEASE_DONE); /* they waited for the one that took over */
            done++;
        }
    }
    assert_int_equal(held, 1);
    assert_int_equal(done, N - 1);
    waitpid(holder, NULL, 0);
    for (int i = 0; i < N; i++) waitpid(kids[i], NULL, 0);
    close(fds[0]);
    close(ready[0]);
    close(ready[1]);
    /* and no lease is left behind */
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, dir));
    qv_lease l;
    assert_int_equal(acquire(t, 12, 0, &l), QV_LEASE_HELD);
    release(t, 12, &l);
    qv__leases_close(t);
}

static void test_a_killed_waiter_leaves_the_others_alone(void **state) {
    const char *dir = *state;
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, dir));
    qv_lease a;
    assert_int_equal(acquire(t, 13, 0, &a), QV_LEASE_HELD);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t victim = spawn_waiter(dir, 13, 10000000000ll, fds[1]);
    pid_t other = spawn_waiter(dir, 13, 10000000000ll, fds[1]);
    close(fds[1]);
    struct timespec settle = {0, 200000000};
    nanosleep(&settle, NULL);
    kill(victim, SIGKILL);
    waitpid(victim, NULL, 0);
    nanosleep(&settle, NULL);
    release(t, 13, &a);
    report r;
    assert_int_equal(read(fds[0], &r, sizeof r), (ssize_t)sizeof r);
    assert_int_equal(r.outcome, QV_LEASE_DONE);
    int status;
    waitpid(other, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fds[0]);
    qv__leases_close(t);
}

/* A lease file that outlives a reboot (a directory on disk) holds leases of
 * processes from the last boot: a pid alive now is another process. The
 * slot's boot field (docs/FORMAT.md: 80-byte slots after a 128-byte header,
 * the boot id at byte 40 of a slot) is rewritten to a boot that never
 * was, and a live holder's lease is then taken at once. */
static void test_a_lease_from_another_boot_is_stale(void **state) {
    const char *dir = *state;
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t holder = fork();
    if (holder == 0) {
        qv_leases *t;
        qv_lease l;
        qv_digest k = key_of(16);
        int outcome;
        if (qv__leases_open(&t, dir) || qv__lease_acquire(t, &k, 0, &outcome, &l) || outcome != QV_LEASE_HELD) _exit(90);
        if (write(ready[1], "x", 1) != 1) _exit(91);
        pause();
        _exit(0);
    }
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    char path[4096];
    snprintf(path, sizeof path, "%s/quiver.leases", dir);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    qv_digest k = key_of(16);
    uint8_t slot[16];
    long found = -1;
    for (long off = 128; found < 0 && fseek(f, off, SEEK_SET) == 0 && fread(slot, 1, 16, f) == 16; off += 80)
        if (memcmp(slot, k.bytes, 16) == 0) found = off;
    assert_true(found >= 0);
    uint64_t other_boot = 0x0123456789abcdefull;
    assert_int_equal(fseek(f, found + 40, SEEK_SET), 0);
    assert_int_equal(fwrite(&other_boot, 1, 8, f), 8);
    fclose(f);
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, dir));
    qv_lease l;
    assert_int_equal(acquire(t, 16, 0, &l), QV_LEASE_HELD); /* at once: no wait for a live pid */
    release(t, 16, &l);
    qv__leases_close(t);
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    close(ready[0]);
    close(ready[1]);
}

static int thread_count(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    if (f) fclose(f);
    return n;
}

/* The heartbeat is one thread per process, whatever number of caches hold
 * leases, and it renews a held lease's beat (offset 56 of its slot) every
 * second. */
static void test_one_heartbeat_thread_renews_every_lease(void **state) {
    const char *dir = *state;
    enum { N = 40 };
    qv_leases *t[N];
    qv_lease l[N];
    char sub[4096];
    int before = thread_count();
    for (int i = 0; i < N; i++) {
        snprintf(sub, sizeof sub, "%s/t%d", dir, i);
        mkdir(sub, 0700);
        QVT_OK(qv__leases_open(&t[i], sub));
        assert_int_equal(acquire(t[i], 17, 0, &l[i]), QV_LEASE_HELD);
    }
    assert_true(thread_count() - before <= 1);
    /* the first table's slot: its beat moves on while the lease is held */
    snprintf(sub, sizeof sub, "%s/t0/quiver.leases", dir);
    qv_digest k = key_of(17);
    int64_t first = 0, later = 0;
    for (int round = 0; round < 2; round++) {
        FILE *f = fopen(sub, "rb");
        assert_non_null(f);
        uint8_t slot[80];
        int64_t beat = 0;
        assert_int_equal(fseek(f, 128, SEEK_SET), 0); /* past the header */
        while (fread(slot, 1, 80, f) == 80)
            if (memcmp(slot, k.bytes, 16) == 0) memcpy(&beat, slot + 56, 8);
        fclose(f);
        if (round == 0) {
            first = beat;
            struct timespec wait = {2, 500000000};
            nanosleep(&wait, NULL);
        } else {
            later = beat;
        }
    }
    assert_true(first > 0);
    assert_true(later > first);
    for (int i = 0; i < N; i++) {
        release(t[i], 17, &l[i]);
        qv__leases_close(t[i]);
    }
}

static void test_fork_does_not_inherit_a_lease(void **state) {
    const char *dir = *state;
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, dir));
    qv_lease a;
    assert_int_equal(acquire(t, 14, 0, &a), QV_LEASE_HELD);
    pid_t child = fork();
    if (child == 0) {
        /* the parent's token does not release the parent's lease */
        release(t, 14, &a);
        qv_lease b;
        qv_digest k = key_of(14);
        int outcome = -1;
        if (qv__lease_acquire(t, &k, 100000000ll, &outcome, &b)) _exit(90);
        _exit(outcome == QV_LEASE_TIMEOUT ? 0 : 10 + outcome); /* the parent still holds it */
    }
    int status;
    waitpid(child, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    release(t, 14, &a);
    qv__leases_close(t);
}

static void test_private_table_starts_empty_in_a_child(void **state) {
    qv_leases *t;
    QVT_OK(qv__leases_open(&t, NULL));
    qv_lease a;
    assert_int_equal(acquire(t, 15, 0, &a), QV_LEASE_HELD);
    pid_t child = fork();
    if (child == 0) {
        /* a memory cache's copy: the parent's call does not run here */
        qv_lease b;
        qv_digest k = key_of(15);
        int outcome = -1;
        if (qv__lease_acquire(t, &k, 100000000ll, &outcome, &b)) _exit(90);
        _exit(outcome == QV_LEASE_HELD ? 0 : 10 + outcome);
    }
    int status;
    waitpid(child, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    release(t, 15, &a);
    qv__leases_close(t);
}

/* ------------------------------------------------- through qv_fn_call */

/* A slow body that appends a line per run to a file shared by processes. */
typedef struct {
    const char *log;
    int fail;
} slow_spec;

static qv_status slow_body(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata) {
    const slow_spec *spec = userdata;
    FILE *f = fopen(spec->log, "a");
    if (f) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    struct timespec run = {0, 300000000};
    nanosleep(&run, NULL);
    if (spec->fail) return qv_error_set(QV_EFAILED, "the body failed on purpose");
    int64_t x;
    qv_status st = qv_value_get_int(qv_value_list_get(args, 0), &x);
    return st ? st : qv_value_new_int(result, x * 2);
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    int n = 0, c;
    if (!f) return 0;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* One process's call of slow(21): 0 when it got 42. */
static int call_slow(const char *dir, const slow_spec *spec, int64_t *returned_ns) {
    qv_cache *c;
    qv_fn *fn;
    qv_value *args, *arg, *r = NULL;
    if (qv_cache_open(&c, dir, NULL) || qv_fn_new(&fn, "lease.slow", NULL, slow_body, (void *)spec, NULL)) return 1;
    qv_value_new_list(&args);
    qv_value_new_int(&arg, 21);
    qv_value_list_append(args, arg);
    qv_ctx_push(c, NULL);
    qv_status st = qv_fn_call(fn, args, &r);
    *returned_ns = mono_ns();
    qv_ctx_pop();
    int64_t v = 0;
    int bad = st || qv_value_get_int(r, &v) || v != 42;
    qv_value_free(r);
    qv_value_free(args);
    qv_fn_free(fn);
    qv_cache_close(c);
    return bad;
}

static void test_eight_processes_run_a_slow_call_once(void **state) {
    const char *dir = *state;
    char log[4096];
    snprintf(log, sizeof log, "%s/runs", dir);
    slow_spec spec = {log, 0};
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    enum { N = 8 };
    pid_t kids[N];
    for (int i = 0; i < N; i++) {
        if ((kids[i] = fork()) == 0) {
            int64_t at;
            int bad = call_slow(dir, &spec, &at);
            if (write(fds[1], &at, sizeof at) != sizeof at) _exit(92);
            _exit(bad);
        }
    }
    close(fds[1]);
    int64_t first = INT64_MAX, last = 0;
    for (int i = 0; i < N; i++) {
        int64_t at;
        assert_int_equal(read(fds[0], &at, sizeof at), (ssize_t)sizeof at);
        if (at < first) first = at;
        if (at > last) last = at;
    }
    for (int i = 0; i < N; i++) {
        int status;
        waitpid(kids[i], &status, 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    close(fds[0]);
    assert_int_equal(count_lines(log), 1);
    /* the holder returns first; every waiter within 50 ms of it */
    if (last - first > 50000000ll) fail_msg("the last waiter returned %lld ms after the holder", (long long)((last - first) / 1000000));
}

typedef struct {
    const char *dir;
    const slow_spec *spec;
    int bad;
    int64_t at;
} caller;

static void *call_main(void *arg) {
    caller *c = arg;
    c->bad = call_slow(c->dir, c->spec, &c->at);
    return NULL;
}

static void test_eight_threads_run_a_slow_call_once(void **state) {
    const char *dir = *state;
    char log[4096];
    snprintf(log, sizeof log, "%s/runs", dir);
    slow_spec spec = {log, 0};
    enum { N = 8 };
    caller cs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        cs[i] = (caller){dir, &spec, -1, 0};
        pthread_create(&th[i], NULL, call_main, &cs[i]);
    }
    int64_t first = INT64_MAX, last = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(cs[i].bad, 0);
        if (cs[i].at < first) first = cs[i].at;
        if (cs[i].at > last) last = cs[i].at;
    }
    assert_int_equal(count_lines(log), 1);
    if (last - first > 50000000ll) fail_msg("the last waiter returned %lld ms after the holder", (long long)((last - first) / 1000000));
}

static void test_when_the_holder_fails_the_waiters_run_it(void **state) {
    const char *dir = *state;
    char log[4096];
    snprintf(log, sizeof log, "%s/runs", dir);
    slow_spec spec = {log, 1};
    enum { N = 3 };
    caller cs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        cs[i] = (caller){dir, &spec, -1, 0};
        pthread_create(&th[i], NULL, call_main, &cs[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(cs[i].bad, 1); /* each saw the failure of its own run */
    }
    assert_int_equal(count_lines(log), N);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hold_release_take_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_own_thread_does_not_wait_for_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_wait_and_wake_on_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_private_table_for_memory_caches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiter_times_out_then_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_keys_reuse_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_processes_wait_for_one_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_holder_is_taken_over_within_a_second, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_killed_waiter_leaves_the_others_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_lease_from_another_boot_is_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_heartbeat_thread_renews_every_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fork_does_not_inherit_a_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_private_table_starts_empty_in_a_child, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eight_processes_run_a_slow_call_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eight_threads_run_a_slow_call_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_when_the_holder_fails_the_waiters_run_it, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
