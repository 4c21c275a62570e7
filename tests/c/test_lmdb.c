/* The LMDB store against real processes and real files: persistence across
 * processes, fork() with a live handle, a writer killed mid-stream, maps that
 * fill (grow or evict), corrupt entries, read-only directories and handles.
 *
 * Children never use cmocka's assertions (they would unwind into the parent's
 * test runner): they report through exit codes and pipes, and the parent
 * asserts. Children end with _exit so that nothing of the parent runs twice. */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <lmdb.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char FN[] = "lmdb_test_fn";
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

static qv_digest key_of(int64_t k) {
    qv_digest d;
    memset(&d, 0, sizeof d);
    qv_value *args = args_of(k);
    if (!args || qv_call_digest(&d, FN, VER, args, NULL)) memset(&d, 0xee, sizeof d);
    qv_value_free(args);
    return d;
}

static int64_t int_result(int64_t k) {
    return k * 7 + 1;
}

/* f(k) = k*7+1 */
static qv_status store_int(qv_cache *c, int64_t k) {
    qv_value *args = args_of(k), *res = NULL;
    qv_status st = args ? qv_value_new_int(&res, int_result(k)) : QV_ENOMEM;
    if (!st) st = qv_cache_store_value(c, FN, VER, args, NULL, res, NULL);
    qv_value_free(args);
    qv_value_free(res);
    return st;
}

enum { CHK_OK = 0, CHK_MISSING = 1, CHK_WRONG = 2, CHK_ERROR = 3 };

static int check_int(qv_cache *c, int64_t k) {
    qv_digest key = key_of(k);
    qv_value *v = NULL;
    qv_status st = qv_cache_get_value(c, &key, &v);
    if (st == QV_NOTFOUND) return CHK_MISSING;
    if (st) return CHK_ERROR;
    int64_t got;
    int r = (qv_value_get_int(v, &got) == QV_OK && got == int_result(k)) ? CHK_OK : CHK_WRONG;
    qv_value_free(v);
    return r;
}

/* A byte string of len bytes determined by k (its first 8 bytes are k). */
static void blob_fill(uint8_t *b, size_t len, int64_t k) {
    for (size_t j = 0; j < len; j++) b[j] = (uint8_t)(k * 31 + (int64_t)j * 7 + 3);
    for (size_t j = 0; j < 8 && j < len; j++) b[j] = (uint8_t)((uint64_t)k >> (8 * (7 - j)));
}

static qv_value *blob_value(int64_t k, size_t len) {
    uint8_t *b = malloc(len);
    qv_value *v = NULL;
    if (b) {
        blob_fill(b, len, k);
        if (qv_value_new_bytes(&v, b, len)) v = NULL;
    }
    free(b);
    return v;
}

static qv_status store_blob(qv_cache *c, int64_t k, size_t len) {
    qv_value *args = args_of(k), *res = blob_value(k, len);
    qv_status st = args && res ? qv_cache_store_value(c, FN, VER, args, NULL, res, NULL) : QV_ENOMEM;
    qv_value_free(args);
    qv_value_free(res);
    return st;
}

static int check_blob(qv_cache *c, int64_t k, size_t len) {
    qv_digest key = key_of(k);
    qv_value *v = NULL;
    qv_status st = qv_cache_get_value(c, &key, &v);
    if (st == QV_NOTFOUND) return CHK_MISSING;
    if (st) return CHK_ERROR;
    const uint8_t *d;
    size_t n;
    int r = CHK_WRONG;
    if (qv_value_get_bytes(v, &d, &n) == QV_OK && n == len) {
        uint8_t *want = malloc(len);
        if (want) {
            blob_fill(want, len, k);
            r = memcmp(want, d, len) == 0 ? CHK_OK : CHK_WRONG;
            free(want);
        }
    }
    qv_value_free(v);
    return r;
}

static uint64_t stat_of(qv_cache *c, int which) {
    uint64_t n = 0;
    QVT_OK(qv_cache_stat(c, which, &n));
    return n;
}

static qv_cache *open_cache(const char *dir, const qv_cache_options *o) {
    qv_cache *c = NULL;
    QVT_OK(qv_cache_open(&c, dir, o));
    assert_non_null(c);
    return c;
}

/* Run fn(arg) in a forked child; returns its pid. */
static pid_t fork_child(int (*fn)(void *), void *arg) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork: %s", strerror(errno));
    if (pid == 0) _exit(fn(arg));
    return pid;
}

/* The child's exit code, or 128 + the signal that ended it. */
static int wait_child(pid_t pid) {
    int ws;
    pid_t r;
    while ((r = waitpid(pid, &ws, 0)) < 0 && errno == EINTR) {
    }
    if (r != pid) fail_msg("waitpid(%d): %s", (int)pid, strerror(errno));
    if (WIFEXITED(ws)) return WEXITSTATUS(ws);
    if (WIFSIGNALED(ws)) return 128 + WTERMSIG(ws);
    return 255;
}

/* Read exactly n bytes unless EOF; returns bytes read. */
static size_t read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

static void write_full(int fd, const void *buf, size_t n) {
    size_t put = 0;
    while (put < n) {
        ssize_t r = write(fd, (const char *)buf + put, n - put);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return;
        put += (size_t)r;
    }
}

/* The path of this test binary, for spawning fresh processes of it. */
static char self_exe[PATH_MAX];

/* Spawn this binary with the given arguments (a fresh process: nothing of
 * this one's LMDB state is inherited); returns its exit code. */
static int spawn_self(char *const argv[]) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid;
    int rc = posix_spawn(&pid, self_exe, NULL, NULL, argv, environ);
    if (rc) fail_msg("posix_spawn %s: %s", self_exe, strerror(rc));
    return wait_child(pid);
}

/* --------------------------------------------------- spawned child modes */

/* argv: --read-range DIR LO HI: every key in [LO, HI) reads back f(k).
 * Exit 0 when all do, 10 + reason otherwise. */
static int child_read_range(const char *dir, int64_t lo, int64_t hi) {
    qv_cache *c = NULL;
    qv_status st = qv_cache_open(&c, dir, NULL);
    if (st) {
        fprintf(stderr, "read-range: open %s: %s\n", dir, qv_errmsg());
        return 10;
    }
    int bad = 0;
    for (int64_t k = lo; k < hi; k++) {
        int r = check_int(c, k);
        if (r) {
            fprintf(stderr, "read-range: key %lld: check %d (%s)\n", (long long)k, r, qv_errmsg());
            bad = 11 + r;
            break;
        }
    }
    uint64_t n = 0;
    if (!bad && (qv_cache_stat(c, QV_STAT_HITS, &n) || n != (uint64_t)(hi - lo))) bad = 20;
    qv_cache_close(c);
    return bad;
}

/* ------------------------------------------------ persistence across processes */

typedef struct {
    const char *dir;
    int64_t lo, hi;
} range_arg;

static int child_store_range(void *p) {
    range_arg *a = p;
    qv_cache *c = NULL;
    if (qv_cache_open(&c, a->dir, NULL)) {
        fprintf(stderr, "child: open: %s\n", qv_errmsg());
        return 10;
    }
    for (int64_t k = a->lo; k < a->hi; k++) {
        if (store_int(c, k)) {
            fprintf(stderr, "child: store %lld: %s\n", (long long)k, qv_errmsg());
            return 11;
        }
    }
    qv_cache_close(c);
    return 0;
}

#define PERSIST_N 300

static void persistence_across_processes(void **state) {
    char *dir = qvt_tempdir("lmdb-persist");

    /* A child stores; the parent, opening afterwards, reads every one. */
    range_arg a = {dir, 0, PERSIST_N};
    assert_int_equal(wait_child(fork_child(child_store_range, &a)), 0);
    qv_cache *c = open_cache(dir, NULL);
    for (int64_t k = 0; k < PERSIST_N; k++) assert_int_equal(check_int(c, k), CHK_OK);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), PERSIST_N);
    assert_int_equal(check_int(c, PERSIST_N), CHK_MISSING);

    /* The reverse: the parent stores, fresh processes read, one while the
     * parent's handle is still open and one after it closed. */
    for (int64_t k = PERSIST_N; k < 2 * PERSIST_N; k++) QVT_OK(store_int(c, k));
    char lo[32], hi[32];
    snprintf(lo, sizeof lo, "%d", 0);
    snprintf(hi, sizeof hi, "%d", 2 * PERSIST_N);
    char *argv[] = {self_exe, "--read-range", dir, lo, hi, NULL};
    assert_int_equal(spawn_self(argv), 0);
    qv_cache_close(c);
    assert_int_equal(spawn_self(argv), 0);

    /* The reader must really check: a range with keys never stored fails. */
    snprintf(hi, sizeof hi, "%d", 2 * PERSIST_N + 1);
    assert_int_equal(spawn_self(argv), 11 + CHK_MISSING);

    qvt_rmtree(dir);
    free(dir);
}

/* ----------------------------------------------- fork() with a live handle */

static int reader_slots_of(const char *dir, pid_t pid);

typedef struct {
    qv_cache *c;
    int64_t own_lo, own_hi;     /* keys this child stores */
    int64_t seen_lo, seen_hi;   /* keys stored before the fork */
    int grandchild;             /* also fork once more and use the handle there */
    int ready_fd, go_fd;        /* if >= 0: report done, then wait to be let go */
    int go_write_fd;            /* the parent's end of go, which the child must close to see EOF */
} fork_arg;

static int child_use_inherited(void *p) {
    fork_arg *a = p;
    for (int64_t k = a->seen_lo; k < a->seen_hi; k++)
        if (check_int(a->c, k)) {
            fprintf(stderr, "child: parent's key %lld: %s\n", (long long)k, qv_errmsg());
            return 10;
        }
    for (int64_t k = a->own_lo; k < a->own_hi; k++) {
        if (store_int(a->c, k)) {
            fprintf(stderr, "child: store %lld: %s\n", (long long)k, qv_errmsg());
            return 11;
        }
        if (check_int(a->c, k)) {
            fprintf(stderr, "child: read back %lld: %s\n", (long long)k, qv_errmsg());
            return 12;
        }
    }
    uint64_t bad = 1;
    if (qv_cache_verify(a->c, 0, &bad) || bad) return 13;
    if (a->grandchild) {
        fork_arg g = {a->c, a->own_hi, a->own_hi + 10, a->own_lo, a->own_hi, 0, -1, -1, -1};
        pid_t pid = fork();
        if (pid < 0) return 14;
        if (pid == 0) _exit(child_use_inherited(&g));
        int ws;
        if (waitpid(pid, &ws, 0) != pid || !WIFEXITED(ws) || WEXITSTATUS(ws)) return 15;
        /* and this child's handle still works after its own child used it */
        for (int64_t k = a->own_hi; k < a->own_hi + 10; k++)
            if (check_int(a->c, k)) return 16;
        if (store_int(a->c, a->own_hi + 10) || check_int(a->c, a->own_hi + 10)) return 17;
    }
    if (a->ready_fd >= 0) {
        close(a->go_write_fd);
        char ch = 'r';
        write_full(a->ready_fd, &ch, 1);
        while (read(a->go_fd, &ch, 1) > 0) {
        }
    }
    return 0;
}

/* The size counter: a store leaves its change with its handle, and the
 * write that carries the totals (or close) puts it in. A fork inherits the
 * handle but not what it has not written, so nothing is counted twice:
 * once every handle has closed, the counter is what gc counts. */
static int child_stores_blobs(void *arg) {
    qv_cache *c = arg;
    qv_digest first = key_of(0);
    if (qv_cache_evict(c, &first)) return 3; /* a maintenance write first: it too starts from nothing pending */
    for (int64_t k = 100; k < 130; k++)
        if (store_blob(c, k, 300)) return 1;
    if (store_blob(c, 5, 900)) return 2; /* a rerun replaces the parent's */
    qv_cache_close(c);
    return 0;
}

static void size_counter_is_exact_across_a_fork(void **state) {
    char *dir = qvt_tempdir("lmdb-bytes");
    qv_cache *c = open_cache(dir, NULL);
    for (int64_t k = 0; k < 20; k++) QVT_OK(store_blob(c, k, 100 + (size_t)k));
    uint64_t mine = stat_of(c, QV_STAT_BYTES);
    assert_true(mine >= 20 * 100); /* the handle counts what it has not written */
    assert_int_equal(wait_child(fork_child(child_stores_blobs, c)), 0);
    for (int64_t k = 200; k < 210; k++) QVT_OK(store_blob(c, k, 50));
    qv_cache_close(c);

    c = open_cache(dir, NULL);
    uint64_t counted = stat_of(c, QV_STAT_BYTES), freed;
    assert_true(counted > mine + 30 * 300);
    QVT_OK(qv_cache_gc(c, &freed));
    assert_int_equal(freed, 0);
    assert_int_equal(stat_of(c, QV_STAT_BYTES), counted);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* Under a size limit the counter is written by every store: a process that
 * ends without closing (os._exit in a pool worker, a kill) leaves it exact,
 * so eviction never trusts a short count. */
static int child_stores_and_exits(void *arg) {
    const char *dir = arg;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.max_bytes = (uint64_t)1 << 30;
    qv_cache *c = NULL;
    if (qv_cache_open(&c, dir, &o)) return 1;
    for (int64_t k = 300; k < 340; k++)
        if (store_blob(c, k, 200)) return 2;
    return 0; /* _exit, never closed */
}

static void size_counter_under_a_limit_survives_an_exit_without_close(void **state) {
    char *dir = qvt_tempdir("lmdb-bytes-limit");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.max_bytes = (uint64_t)1 << 30;
    qv_cache *c = open_cache(dir, &o);
    QVT_OK(store_blob(c, 1, 500));
    assert_int_equal(wait_child(fork_child(child_stores_and_exits, dir)), 0);
    qv_cache *other = open_cache(dir, NULL); /* sees only what is written */
    uint64_t counted = stat_of(other, QV_STAT_BYTES), freed;
    assert_true(counted >= 500 + 40 * 200);
    QVT_OK(qv_cache_gc(other, &freed));
    assert_int_equal(stat_of(other, QV_STAT_BYTES), counted);
    qv_cache_close(other);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

static void fork_then_use_inherited_handle(void **state) {
    char *dir = qvt_tempdir("lmdb-fork");
    qv_cache *c = open_cache(dir, NULL);
    for (int64_t k = 0; k < 20; k++) QVT_OK(store_int(c, k));
    /* a lookup, so the environment has a pooled read transaction */
    assert_int_equal(check_int(c, 0), CHK_OK);

    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    fork_arg a = {c, 1000, 1050, 0, 20, 1, ready[1], go[0], go[1]};
    pid_t pid = fork_child(child_use_inherited, &a);
    close(ready[1]);
    close(go[0]);
    char ch;
    if (read_full(ready[0], &ch, 1) == 1) {
        /* The child read through an environment of its own: LMDB's reader
         * table shows a slot under the child's pid. (Had it used the
         * parent's environment, its readers would pose as the parent's.) */
        int slots = reader_slots_of(dir, pid);
        close(go[1]);
        assert_true(slots >= 1);
    } else {
        close(go[1]);
    }
    close(ready[0]);
    assert_int_equal(wait_child(pid), 0);

    /* The parent sees what the child and grandchild stored, through its own
     * (pre-fork) handle, and that handle still writes. */
    for (int64_t k = 1000; k < 1061; k++) assert_int_equal(check_int(c, k), CHK_OK);
    for (int64_t k = 0; k < 20; k++) assert_int_equal(check_int(c, k), CHK_OK);
    for (int64_t k = 2000; k < 2010; k++) {
        QVT_OK(store_int(c, k));
        assert_int_equal(check_int(c, k), CHK_OK);
    }
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), 20 + 61 + 10);

    /* A second fork from the same parent handle works the same way. */
    fork_arg b = {c, 3000, 3020, 1000, 1061, 0, -1, -1, -1};
    assert_int_equal(wait_child(fork_child(child_use_inherited, &b)), 0);
    for (int64_t k = 3000; k < 3020; k++) assert_int_equal(check_int(c, k), CHK_OK);
    uint64_t bad = 1;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    qv_cache_close(c);

    /* and a handle opened afterwards agrees */
    c = open_cache(dir, NULL);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), 20 + 61 + 10 + 20);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* --------------------------------------------- a writer killed by SIGKILL */

/* Count the reader-table slots held by pid, from a separate process (an
 * environment must not be opened twice in one process). -1 on error. */
typedef struct {
    pid_t pid;
    int n;
} slot_count;

static int count_slot(const char *msg, void *ctx) {
    slot_count *sc = ctx;
    int pid;
    if (sscanf(msg, "%d", &pid) == 1 && pid == (int)sc->pid) sc->n++;
    return 0;
}

typedef struct {
    const char *dir;
    pid_t pid;
} slots_arg;

static int child_count_slots(void *p) {
    slots_arg *a = p;
    MDB_env *env;
    if (mdb_env_create(&env)) return 250;
    mdb_env_set_maxdbs(env, 16);
    mdb_env_set_maxreaders(env, 1024);
    int rc = mdb_env_open(env, a->dir, MDB_NOTLS, 0644);
    if (rc) {
        fprintf(stderr, "count slots: %s\n", mdb_strerror(rc));
        return 251;
    }
    slot_count sc = {a->pid, 0};
    mdb_reader_list(env, count_slot, &sc);
    mdb_env_close(env);
    return sc.n > 200 ? 200 : sc.n;
}

static int reader_slots_of(const char *dir, pid_t pid) {
    slots_arg a = {dir, pid};
    int r = wait_child(fork_child(child_count_slots, &a));
    if (r > 200) fail_msg("counting reader slots failed (%d)", r);
    return r;
}

typedef struct {
    const char *dir;
    int64_t base;
    int fd; /* progress: the index of each committed store, as int32 */
} writer_arg;

#define KILL_BLOB 700 /* > the inline limit: each store also writes the values table */

static int child_writer(void *p) {
    writer_arg *a = p;
    qv_cache *c = NULL;
    if (qv_cache_open(&c, a->dir, NULL)) return 10;
    for (int32_t i = 0; i < 1000000; i++) {
        int64_t k = a->base + i;
        /* alternate small and large results */
        qv_status st = (i & 1) ? store_blob(c, k, KILL_BLOB) : store_int(c, k);
        if (st) {
            fprintf(stderr, "writer: store %d: %s\n", i, qv_errmsg());
            return 11;
        }
        /* read it back, so this process also holds a reader slot */
        if (((i & 1) ? check_blob(c, k, KILL_BLOB) : check_int(c, k)) != CHK_OK) return 12;
        write_full(a->fd, &i, sizeof i);
    }
    return 13; /* never finished before the kill: the parent treats this as a failure */
}

typedef struct {
    const char *dir;
    int ready_fd, control_fd, control_write_fd;
} bystander_arg;

/* Holds the cache open (so LMDB's lock file is not reinitialised when
 * everyone else has closed it) until control_fd reaches EOF. */
static int child_bystander(void *p) {
    bystander_arg *a = p;
    close(a->control_write_fd); /* or it never sees EOF */
    qv_cache *c = NULL;
    if (qv_cache_open(&c, a->dir, NULL)) return 10;
    qv_digest k = key_of(-1);
    qv_cache_contains(c, &k);
    char ch = 'r';
    write_full(a->ready_fd, &ch, 1);
    while (read(a->control_fd, &ch, 1) > 0) {
    }
    qv_cache_close(c);
    return 0;
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

/* Run one writer, kill it after at least `after` reported stores (plus a
 * little time, so the kill lands anywhere in a store); returns the last index
 * it reported, and its pid. */
static int32_t run_and_kill_writer(const char *dir, int64_t base, int after, long extra_us, pid_t *pid_out) {
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    writer_arg wa = {dir, base, pfd[1]};
    pid_t pid = fork_child(child_writer, &wa);
    close(pfd[1]);
    int32_t idx, last = -1;
    while (last + 1 < after && read_full(pfd[0], &idx, sizeof idx) == sizeof idx) {
        assert_int_equal(idx, last + 1);
        last = idx;
    }
    assert_int_equal(last + 1, after); /* the writer got that far */
    sleep_us(extra_us);
    assert_int_equal(kill(pid, SIGKILL), 0);
    while (read_full(pfd[0], &idx, sizeof idx) == sizeof idx) {
        assert_int_equal(idx, last + 1);
        last = idx;
    }
    close(pfd[0]);
    assert_int_equal(wait_child(pid), 128 + SIGKILL);
    *pid_out = pid;
    return last;
}

/* Everything a killed writer reported reads back, and the unreported store it
 * may have been finishing is either absent or whole. */
static void check_writer_output(qv_cache *c, int64_t base, int32_t last) {
    for (int32_t i = 0; i <= last; i++) {
        int r = (i & 1) ? check_blob(c, base + i, KILL_BLOB) : check_int(c, base + i);
        if (r != CHK_OK) fail_msg("committed store %d (key %lld) reads back as %d: %s", i, (long long)(base + i), r,
                                  qv_errmsg());
    }
    int32_t i = last + 1;
    int r = (i & 1) ? check_blob(c, base + i, KILL_BLOB) : check_int(c, base + i);
    assert_true(r == CHK_OK || r == CHK_MISSING);
}

static void killed_writer_loses_nothing_committed(void **state) {
    char *dir = qvt_tempdir("lmdb-kill");
    srand((unsigned)time(NULL) ^ (unsigned)getpid());

    /* A bystander process holds the environment open throughout, so the
     * killed writer's reader slot survives it and only reader_check can
     * clear it. */
    int ready[2], control[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(control), 0);
    bystander_arg ba = {dir, ready[1], control[0], control[1]};
    pid_t bystander = fork_child(child_bystander, &ba);
    close(ready[1]);
    close(control[0]);
    char ch;
    assert_int_equal(read_full(ready[0], &ch, 1), 1);
    close(ready[0]);

    /* Round 1: this process has no environment open while the writer dies. */
    pid_t wpid;
    int32_t last = run_and_kill_writer(dir, 0, 40 + rand() % 40, rand() % 3000, &wpid);
    printf("round 1: writer %d killed after %d committed stores\n", (int)wpid, last + 1);
    assert_true(reader_slots_of(dir, wpid) >= 1); /* the dead writer's slot is still there */
    qv_cache *c = open_cache(dir, NULL);           /* ... and opening clears it */
    assert_int_equal(reader_slots_of(dir, wpid), 0);
    check_writer_output(c, 0, last);
    uint64_t bad = 1;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    QVT_OK(store_int(c, -100));
    assert_int_equal(check_int(c, -100), CHK_OK);
    int32_t last1 = last;

    /* Rounds 2 and 3: this process keeps its handle (and a pooled read
     * transaction) open while the writer dies mid-stream. */
    int32_t lasts[2];
    for (int round = 0; round < 2; round++) {
        int64_t base = (int64_t)(round + 1) * 1000000;
        assert_int_equal(check_int(c, -100), CHK_OK);
        lasts[round] = run_and_kill_writer(dir, base, 20 + rand() % 100, rand() % 5000, &wpid);
        printf("round %d: writer %d killed after %d committed stores\n", round + 2, (int)wpid, lasts[round] + 1);
        check_writer_output(c, base, lasts[round]);
        QVT_OK(qv_cache_verify(c, 0, &bad));
        assert_int_equal(bad, 0);
        /* the writer may have died holding LMDB's write lock: writing recovers */
        QVT_OK(store_int(c, -101 - round));
        assert_int_equal(check_int(c, -101 - round), CHK_OK);
    }
    qv_cache_close(c);

    close(control[1]);
    assert_int_equal(wait_child(bystander), 0);

    /* Everything is still there for a fresh handle, after everyone closed. */
    c = open_cache(dir, NULL);
    check_writer_output(c, 0, last1);
    check_writer_output(c, 1000000, lasts[0]);
    check_writer_output(c, 2000000, lasts[1]);
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------- maps that fill */

#define MIB ((uint64_t)1 << 20)
#define BLOB 2048

static void full_map_grows(void **state) {
    char *dir = qvt_tempdir("lmdb-grow");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.map_size = MIB;
    o.durability = QV_DURABILITY_FAST; /* the subject is space, not fsync */
    qv_cache *c = open_cache(dir, &o);
    uint64_t map0 = stat_of(c, QV_STAT_MAP_SIZE);
    assert_true(map0 <= 2 * MIB);
    const int n = (int)(8 * MIB / BLOB);
    for (int k = 0; k < n; k++) {
        qv_status st = store_blob(c, k, BLOB);
        if (st) fail_msg("store %d of %d with a %llu-byte map: %s: %s", k, n, (unsigned long long)map0,
                         qv_status_name(st), qv_errmsg());
    }
    uint64_t map1 = stat_of(c, QV_STAT_MAP_SIZE);
    printf("map grew from %llu to %llu bytes for %d values of %d bytes\n", (unsigned long long)map0,
           (unsigned long long)map1, n, BLOB);
    assert_true(map1 >= 8 * MIB);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), n);
    assert_int_equal(stat_of(c, QV_STAT_VALUES), n);
    assert_int_equal(stat_of(c, QV_STAT_EVICTIONS), 0);
    assert_true(stat_of(c, QV_STAT_BYTES) >= (uint64_t)n * BLOB);
    for (int k = 0; k < n; k++) assert_int_equal(check_blob(c, k, BLOB), CHK_OK);
    qv_cache_close(c);

    /* Reopened with the same small map size: the file's size wins. */
    c = open_cache(dir, &o);
    assert_true(stat_of(c, QV_STAT_MAP_SIZE) >= 8 * MIB);
    for (int k = 0; k < n; k += 7) assert_int_equal(check_blob(c, k, BLOB), CHK_OK);
    QVT_OK(store_blob(c, n, BLOB));
    assert_int_equal(check_blob(c, n, BLOB), CHK_OK);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

static int child_fill(void *p) {
    range_arg *a = p;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.map_size = MIB;
    o.durability = QV_DURABILITY_FAST;
    qv_cache *c = NULL;
    if (qv_cache_open(&c, a->dir, &o)) return 10;
    for (int64_t k = a->lo; k < a->hi; k++)
        if (store_blob(c, k, BLOB)) {
            fprintf(stderr, "child: store %lld: %s\n", (long long)k, qv_errmsg());
            return 11;
        }
    qv_cache_close(c);
    return 0;
}

/* Another process grows the map under a handle that stays open here: the
 * handle adopts the new size (MDB_MAP_RESIZED) for reads and writes. */
static void map_grown_by_another_process(void **state) {
    char *dir = qvt_tempdir("lmdb-grow2");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.map_size = MIB;
    o.durability = QV_DURABILITY_FAST;
    qv_cache *c = open_cache(dir, &o);
    QVT_OK(store_blob(c, -1, BLOB));
    assert_int_equal(check_blob(c, -1, BLOB), CHK_OK);
    uint64_t map0 = stat_of(c, QV_STAT_MAP_SIZE);

    const int n = (int)(4 * MIB / BLOB);
    range_arg a = {dir, 0, n};
    assert_int_equal(wait_child(fork_child(child_fill, &a)), 0);

    for (int k = 0; k < n; k++) {
        int r = check_blob(c, k, BLOB);
        if (r != CHK_OK) fail_msg("key %d written by the other process reads as %d: %s", k, r, qv_errmsg());
    }
    assert_true(stat_of(c, QV_STAT_MAP_SIZE) > map0);
    QVT_OK(store_blob(c, n, BLOB));
    assert_int_equal(check_blob(c, n, BLOB), CHK_OK);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), n + 2);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

static void full_map_with_limit_evicts_oldest(void **state) {
    char *dir = qvt_tempdir("lmdb-evict");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.map_size = MIB;
    o.max_bytes = 256 * 1024;
    o.durability = QV_DURABILITY_FAST;
    qv_cache *c = open_cache(dir, &o);
    assert_int_equal(stat_of(c, QV_STAT_MAX_BYTES), o.max_bytes);

    /* phase 0: oldest; phase 1: alone more than max_bytes; phase 2: recent
     * and small. Pauses between phases keep their order clear even at the
     * resolution access times have (DECISIONS: they move only after a
     * second). */
    const int n0 = 150, n1 = 200, n2 = 40, ntouch = 5;
    int64_t k = 0;
    for (int i = 0; i < n0; i++, k++) {
        QVT_OK(store_blob(c, k, BLOB));
        assert_true(stat_of(c, QV_STAT_BYTES) <= o.max_bytes);
    }
    sleep_us(1100000);
    for (int i = 0; i < n1; i++, k++) {
        QVT_OK(store_blob(c, k, BLOB));
        assert_true(stat_of(c, QV_STAT_BYTES) <= o.max_bytes);
    }
    assert_true(stat_of(c, QV_STAT_EVICTIONS) > 0);
    /* every phase-0 entry went before any phase-1 entry could */
    for (int64_t j = 0; j < n0; j++) assert_int_equal(check_blob(c, j, BLOB), CHK_MISSING);

    /* Hits count as use: touch a few phase-1 survivors, over a second after
     * they were stored (or the touch is below the resolution). */
    sleep_us(1100000);
    int64_t touched[ntouch];
    int nt = 0;
    for (int64_t j = n0; j < n0 + n1 && nt < ntouch; j++)
        if (check_blob(c, j, BLOB) == CHK_OK) touched[nt++] = j;
    assert_int_equal(nt, ntouch);
    int64_t p2 = k;
    for (int i = 0; i < n2; i++, k++) {
        QVT_OK(store_blob(c, k, BLOB));
        assert_true(stat_of(c, QV_STAT_BYTES) <= o.max_bytes);
    }

    /* the most recent entries and the recently hit ones are all present */
    for (int64_t j = p2; j < k; j++) assert_int_equal(check_blob(c, j, BLOB), CHK_OK);
    for (int i = 0; i < ntouch; i++) assert_int_equal(check_blob(c, touched[i], BLOB), CHK_OK);
    uint64_t entries = stat_of(c, QV_STAT_ENTRIES), bytes = stat_of(c, QV_STAT_BYTES);
    uint64_t evictions = stat_of(c, QV_STAT_EVICTIONS);
    printf("after %lld stores: %llu entries, %llu bytes (limit %llu), %llu evictions, map %llu\n", (long long)k,
           (unsigned long long)entries, (unsigned long long)bytes, (unsigned long long)o.max_bytes,
           (unsigned long long)evictions, (unsigned long long)stat_of(c, QV_STAT_MAP_SIZE));
    assert_true(bytes <= o.max_bytes);
    assert_true(bytes >= o.max_bytes / 4); /* eviction did not throw everything away */
    assert_true(entries < (uint64_t)k);
    assert_int_equal(entries + evictions, (uint64_t)k);
    uint64_t bad = 1;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------ LRU */

#define LRU_BLOB 2000
/* A handle that only reads writes its hits' access times on its own once
 * QUIVER_LRU_FLUSH_MS has passed, so another handle (another process alike)
 * that stores and evicts sees which of its keys are hot. */
static void hot_key_of_a_reading_handle_survives_eviction(void **state) {
    setenv("QUIVER_LRU_FLUSH_MS", "50", 1);
    char *dir = qvt_tempdir("lmdb-lru");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.max_bytes = 64 * 1024;
    qv_cache *writer = open_cache(dir, &o), *reader = open_cache(dir, &o);
    unsetenv("QUIVER_LRU_FLUSH_MS");
    QVT_OK(store_blob(writer, 0, LRU_BLOB)); /* the hot key, stored first: the oldest */
    for (int k = 1; k <= 20; k++) QVT_OK(store_blob(writer, k, LRU_BLOB));
    assert_int_equal(stat_of(writer, QV_STAT_EVICTIONS), 0);
    sleep_us(1100 * 1000); /* access times move in steps of a second */
    for (int i = 0; i < 30; i++) {
        assert_int_equal(check_blob(reader, 0, LRU_BLOB), CHK_OK);
        sleep_us(10 * 1000);
    }
    for (int k = 21; k <= 40; k++) QVT_OK(store_blob(writer, k, LRU_BLOB));
    assert_true(stat_of(writer, QV_STAT_EVICTIONS) > 0);
    assert_int_equal(check_blob(writer, 1, LRU_BLOB), CHK_MISSING); /* the oldest of the rest went */
    assert_int_equal(check_blob(writer, 0, LRU_BLOB), CHK_OK);
    qv_cache_close(reader);
    qv_cache_close(writer);
    qvt_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------- corrupt entries */

static void raw_put(const char *dir, const char *db, const void *key, size_t klen, const void *val, size_t vlen) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    int rc = mdb_env_open(env, dir, 0, 0644);
    if (rc) fail_msg("mdb_env_open %s: %s", dir, mdb_strerror(rc));
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    rc = mdb_dbi_open(txn, db, 0, &dbi);
    if (rc) fail_msg("mdb_dbi_open %s: %s", db, mdb_strerror(rc));
    MDB_val k = {klen, (void *)key}, v;
    /* the entry must exist: this overwrites, it does not add */
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    v.mv_size = vlen;
    v.mv_data = (void *)val;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* A copy of an entry's bytes (caller frees). */
static uint8_t *raw_get(const char *dir, const char *db, const void *key, size_t klen, size_t *len) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {klen, (void *)key}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    uint8_t *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    *len = v.mv_size;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return copy;
}

static qv_digest value_digest(const qv_value *v) {
    qv_digest d;
    QVT_OK(qv_value_digest(v, &d));
    return d;
}

enum { K_BIGVAL = 1, K_JUNK = 2, K_TRUNC = 3, K_GOOD = 4, K_GOODBIG = 5 };
#define BIG 2000
#define MID 400 /* inline (<= 512), so the record holds it */

/* A cache with: K_BIGVAL (a large result in values), K_JUNK (small inline),
 * K_TRUNC (a mid-sized inline result), and two good entries. Closed. */
static char *corrupt_fixture(void) {
    char *dir = qvt_tempdir("lmdb-corrupt");
    qv_cache *c = open_cache(dir, NULL);
    QVT_OK(store_blob(c, K_BIGVAL, BIG));
    QVT_OK(store_int(c, K_JUNK));
    QVT_OK(store_blob(c, K_TRUNC, MID));
    QVT_OK(store_int(c, K_GOOD));
    QVT_OK(store_blob(c, K_GOODBIG, BIG));
    assert_int_equal(stat_of(c, QV_STAT_VALUES), 2); /* the two large results */
    qv_cache_close(c);
    return dir;
}

static void corrupt_entries(const char *dir) {
    /* the large result's value: garbage */
    qv_value *big = blob_value(K_BIGVAL, BIG);
    qv_digest vd = value_digest(big);
    qv_value_free(big);
    static const uint8_t garbage[] = {0xff, 0xff};
    raw_put(dir, "values", vd.bytes, 16, garbage, sizeof garbage);
    /* a record: junk */
    qv_digest kd = key_of(K_JUNK);
    static const char junk[] = "this is not a call record";
    raw_put(dir, "calls", kd.bytes, 16, junk, sizeof junk - 1);
    /* a record: cut in the middle of its inline result */
    qv_digest td = key_of(K_TRUNC);
    size_t len;
    uint8_t *rec = raw_get(dir, "calls", td.bytes, 16, &len);
    assert_true(len > MID);
    raw_put(dir, "calls", td.bytes, 16, rec, MID / 2);
    free(rec);
}

static void expect_corrupt_miss(qv_cache *c, int64_t k) {
    qv_digest key = key_of(k);
    qv_value *v = (qv_value *)&key; /* must be reset to NULL */
    qv_status st = qv_cache_get_value(c, &key, &v);
    if (st != QV_NOTFOUND) fail_msg("corrupt entry %lld: %s (%s)", (long long)k, qv_status_name(st), qv_errmsg());
    assert_null(v);
    if (!strstr(qv_errmsg(), "corrupt")) fail_msg("corrupt entry %lld: message \"%s\"", (long long)k, qv_errmsg());
    char hex[33];
    qv_digest_hex(&key, hex);
    if (!strstr(qv_errmsg(), hex)) fail_msg("message does not name the entry %s: \"%s\"", hex, qv_errmsg());
    void *data = NULL;
    size_t len = 1;
    assert_int_equal(qv_cache_get(c, &key, &data, &len), QV_NOTFOUND);
    assert_null(data);
    assert_int_equal(len, 0);
}

static void corrupt_entries_read_as_misses_and_repair(void **state) {
    char *dir = corrupt_fixture();
    corrupt_entries(dir);

    qv_cache *c = open_cache(dir, NULL);
    expect_corrupt_miss(c, K_BIGVAL);
    expect_corrupt_miss(c, K_JUNK);
    expect_corrupt_miss(c, K_TRUNC);
    assert_int_equal(stat_of(c, QV_STAT_CORRUPT), 2 * 3); /* get_value and get, 3 entries each */
    assert_int_equal(stat_of(c, QV_STAT_HITS), 0);
    assert_int_equal(check_int(c, K_GOOD), CHK_OK);
    assert_int_equal(check_blob(c, K_GOODBIG, BIG), CHK_OK);
    assert_int_equal(stat_of(c, QV_STAT_CORRUPT), 6);

    /* verify finds them: the three bad records and the bad value */
    uint64_t bad = 0;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 4);
    QVT_OK(qv_cache_verify(c, 0, &bad)); /* checking changed nothing */
    assert_int_equal(bad, 4);

    /* repair removes them, and only them */
    QVT_OK(qv_cache_verify(c, 1, &bad));
    assert_int_equal(bad, 4);
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    qv_digest kb = key_of(K_BIGVAL), kj = key_of(K_JUNK), kt = key_of(K_TRUNC);
    assert_int_equal(qv_cache_contains(c, &kb), QV_NOTFOUND);
    assert_int_equal(qv_cache_contains(c, &kj), QV_NOTFOUND);
    assert_int_equal(qv_cache_contains(c, &kt), QV_NOTFOUND);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), 2);
    assert_int_equal(stat_of(c, QV_STAT_VALUES), 1);
    assert_int_equal(check_int(c, K_GOOD), CHK_OK);
    assert_int_equal(check_blob(c, K_GOODBIG, BIG), CHK_OK);

    /* storing them again works, and they read back */
    QVT_OK(store_blob(c, K_BIGVAL, BIG));
    QVT_OK(store_int(c, K_JUNK));
    QVT_OK(store_blob(c, K_TRUNC, MID));
    assert_int_equal(check_blob(c, K_BIGVAL, BIG), CHK_OK);
    assert_int_equal(check_int(c, K_JUNK), CHK_OK);
    assert_int_equal(check_blob(c, K_TRUNC, MID), CHK_OK);
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    uint64_t freed = 99;
    QVT_OK(qv_cache_gc(c, &freed));
    assert_int_equal(freed, 0);
    qv_cache_close(c);

    /* and it all persists */
    c = open_cache(dir, NULL);
    assert_int_equal(check_blob(c, K_BIGVAL, BIG), CHK_OK);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), 5);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* A record filed under a key that is not its call's digest (written by a
 * foreign writer, or by a quiver that trusted a caller's key) answers the
 * wrong call, though every byte of it is well-formed: verify reports it and
 * repair removes it. */
static void record_under_a_wrong_key_is_found_by_verify(void **state) {
    char *dir = corrupt_fixture();
    qv_digest good = key_of(K_GOOD), other = key_of(K_JUNK);
    size_t len;
    uint8_t *rec = raw_get(dir, "calls", good.bytes, 16, &len);
    raw_put(dir, "calls", other.bytes, 16, rec, len);
    free(rec);

    qv_cache *c = open_cache(dir, NULL);
    uint64_t bad = 0;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 1);
    QVT_OK(qv_cache_verify(c, 1, &bad));
    assert_int_equal(bad, 1);
    assert_int_equal(qv_cache_contains(c, &other), QV_NOTFOUND);
    assert_int_equal(check_int(c, K_GOOD), CHK_OK);
    assert_int_equal(check_blob(c, K_GOODBIG, BIG), CHK_OK); /* records holding values pass too */
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* qv_cache_load of a corrupt entry: an error naming the corruption (or a
 * miss), never a record, whichever part is broken. */
static void corrupt_entries_fail_to_load_clearly(void **state) {
    char *dir = corrupt_fixture();
    corrupt_entries(dir);
    qv_cache *c = open_cache(dir, NULL);
    const int64_t ks[] = {K_BIGVAL, K_JUNK, K_TRUNC};
    for (int i = 0; i < 3; i++) {
        qv_digest key = key_of(ks[i]);
        qv_value *rec = NULL;
        qv_status st = qv_cache_load(c, &key, &rec);
        assert_null(rec);
        if (st != QV_ECORRUPT && st != QV_NOTFOUND)
            fail_msg("loading corrupt entry %lld: %s (%s); expected QV_ECORRUPT", (long long)ks[i], qv_status_name(st),
                     qv_errmsg());
        if (!strstr(qv_errmsg(), "corrupt"))
            fail_msg("loading corrupt entry %lld: message \"%s\" does not say corrupt", (long long)ks[i], qv_errmsg());
    }
    qv_digest key = key_of(K_GOODBIG);
    qv_value *rec = NULL;
    QVT_OK(qv_cache_load(c, &key, &rec));
    assert_non_null(qv_value_map_find(rec, "result"));
    qv_value_free(rec);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* A value whose bytes changed but still form valid CBOR (one flipped bit
 * inside a byte string) no longer matches the digest it is stored under.
 * Hits do not hash values (DECISIONS: "Corrupt entries read as misses"), so
 * this is verify's to find: it reports the value and the record using it,
 * repair removes both, and the call can be stored again. */
static void flipped_bit_in_a_value_is_found_by_verify(void **state) {
    char *dir = qvt_tempdir("lmdb-bitflip");
    qv_cache *c = open_cache(dir, NULL);
    QVT_OK(store_blob(c, 1, BIG));
    QVT_OK(store_blob(c, 2, BIG));
    qv_cache_close(c);
    qv_value *big = blob_value(1, BIG);
    qv_digest vd = value_digest(big);
    qv_value_free(big);
    size_t len;
    uint8_t *v = raw_get(dir, "values", vd.bytes, 16, &len);
    v[len / 2] ^= 0x10;
    assert_int_equal(qv_validate(v, len), QV_OK); /* still well-formed */
    raw_put(dir, "values", vd.bytes, 16, v, len);
    free(v);

    c = open_cache(dir, NULL);
    uint64_t bad = 0;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 2);
    QVT_OK(qv_cache_verify(c, 1, &bad));
    assert_int_equal(bad, 2);
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    assert_int_equal(check_blob(c, 1, BIG), CHK_MISSING);
    assert_int_equal(check_blob(c, 2, BIG), CHK_OK);
    QVT_OK(store_blob(c, 1, BIG));
    assert_int_equal(check_blob(c, 1, BIG), CHK_OK);
    assert_int_equal(stat_of(c, QV_STAT_VALUES), 2);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------- read-only directories */

#define RO_KEYS 50

typedef struct {
    const char *pop, *empty, *missing;
    int fd;
    int drop; /* setuid to nobody first */
} ro_arg;

static void ro_report(int fd, const char *label, qv_status st, const char *msg) {
    char line[1024];
    int n = snprintf(line, sizeof line, "%s\t%d\t", label, st);
    for (const char *p = msg; *p && n < (int)sizeof line - 2; p++) line[n++] = (*p == '\t' || *p == '\n') ? ' ' : *p;
    line[n++] = '\n';
    write_full(fd, line, (size_t)n);
}

static int child_ro_probe(void *p) {
    ro_arg *a = p;
    if (a->drop) {
        if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) return 77;
        if (geteuid() != 65534 || setuid(0) == 0) return 78; /* really unprivileged */
    }
    qv_cache *c = NULL;
    qv_cache_options ro = QV_CACHE_OPTIONS_INIT;
    ro.flags = QV_CACHE_READONLY;
    qv_status st;

    st = qv_cache_open(&c, a->pop, NULL);
    ro_report(a->fd, "w_pop", st, st ? qv_errmsg() : "");
    if (!st) qv_cache_close(c);
    st = qv_cache_open(&c, a->empty, NULL);
    ro_report(a->fd, "w_empty", st, st ? qv_errmsg() : "");
    if (!st) qv_cache_close(c);
    st = qv_cache_open(&c, a->missing, NULL);
    ro_report(a->fd, "w_missing", st, st ? qv_errmsg() : "");
    if (!st) qv_cache_close(c);
    st = qv_cache_open(&c, a->empty, &ro);
    ro_report(a->fd, "r_empty", st, st ? qv_errmsg() : "");
    if (!st) qv_cache_close(c);

    st = qv_cache_open(&c, a->pop, &ro);
    ro_report(a->fd, "r_pop", st, st ? qv_errmsg() : "");
    if (!st) {
        int ok = 0;
        for (int64_t k = 0; k < RO_KEYS; k++) ok += check_int(c, k) == CHK_OK;
        char buf[32];
        snprintf(buf, sizeof buf, "%d", ok);
        ro_report(a->fd, "r_pop_read", QV_OK, buf);
        st = store_int(c, RO_KEYS);
        ro_report(a->fd, "r_pop_store", st, qv_errmsg());
        qv_cache_close(c);
    }
    return 0;
}

/* The status and message the probe reported under label. */
static int ro_result(const char *out, const char *label, char *msg, size_t cap) {
    size_t ll = strlen(label);
    for (const char *p = out; p && *p;) {
        const char *nl = strchr(p, '\n');
        if (!nl) break;
        if (strncmp(p, label, ll) == 0 && p[ll] == '\t') {
            int st = atoi(p + ll + 1);
            const char *m = strchr(p + ll + 1, '\t');
            size_t n = m && m < nl ? (size_t)(nl - m - 1) : 0;
            if (n >= cap) n = cap - 1;
            memcpy(msg, m + 1, n);
            msg[n] = 0;
            return st;
        }
        p = nl + 1;
    }
    fail_msg("the probe did not report %s; it said:\n%s", label, out);
    return 0;
}

/* path: as given; real: its realpath (either may appear in the message);
 * errnum: the reason the message must give. */
static void expect_clear_error(const char *out, const char *label, const char *path, const char *real, int errnum) {
    char msg[1024];
    int st = ro_result(out, label, msg, sizeof msg);
    printf("%s: %s: %s\n", label, qv_status_name(st), msg);
    if (st == QV_OK) fail_msg("%s: opening %s succeeded in a directory we cannot write", label, path);
    if (st != QV_EIO) fail_msg("%s: %s (%s); expected QV_EIO", label, qv_status_name(st), msg);
    if (!strstr(msg, path) && !strstr(msg, real))
        fail_msg("%s: the message does not name %s: \"%s\"", label, path, msg);
    if (!strstr(msg, strerror(errnum)))
        fail_msg("%s: the message does not give the reason (%s): \"%s\"", label, strerror(errnum), msg);
}

static void readonly_directory_gives_a_clear_error(void **state) {
    char *base = qvt_tempdir("lmdb-rodir");
    char pop[PATH_MAX], empty[PATH_MAX], missing[PATH_MAX];
    snprintf(pop, sizeof pop, "%s/populated", base);
    snprintf(empty, sizeof empty, "%s/empty", base);
    snprintf(missing, sizeof missing, "%s/empty/sub/cache", base);
    assert_int_equal(chmod(base, 0755), 0); /* mkdtemp's 0700 would stop an unprivileged probe at the door */
    assert_int_equal(mkdir(empty, 0755), 0);
    qv_cache *c = open_cache(pop, NULL);
    for (int64_t k = 0; k < RO_KEYS; k++) QVT_OK(store_int(c, k));
    qv_cache_close(c);
    assert_int_equal(chmod(pop, 0555), 0);
    assert_int_equal(chmod(empty, 0555), 0);

    int drop = geteuid() == 0;
    if (drop) {
        /* root ignores the mode: the probe must run as somebody else, who
         * also needs to reach the directories */
        char *real = realpath(base, NULL);
        for (char *p = real; p && *p; p = strchr(p + 1, '/')) {
            char save = *p;
            *p = 0;
            struct stat sb;
            int blocked = *real && stat(real, &sb) == 0 && !(sb.st_mode & S_IXOTH);
            *p = save;
            if (blocked) {
                free(real);
                qvt_rmtree(base);
                free(base);
                skip(); /* an ancestor of the test directory is closed to others */
            }
        }
        free(real);
    }
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    ro_arg a = {pop, empty, missing, pfd[1], drop};
    pid_t pid = fork_child(child_ro_probe, &a);
    close(pfd[1]);
    char out[8192];
    size_t n = read_full(pfd[0], out, sizeof out - 1);
    out[n] = 0;
    close(pfd[0]);
    int rc = wait_child(pid);
    if (rc == 77 || rc == 78) {
        printf("cannot drop privileges to nobody (65534): the permission checks need an unprivileged user\n");
        qvt_rmtree(base);
        free(base);
        skip();
    }
    assert_int_equal(rc, 0);

    char *rpop = realpath(pop, NULL), *rempty = realpath(empty, NULL);
    char msg[1024];
    /* a cache we cannot write opens read-only, with a warning (issue 15) */
    assert_int_equal(ro_result(out, "w_pop", msg, sizeof msg), QV_OK);
    expect_clear_error(out, "w_empty", empty, rempty, EACCES);
    expect_clear_error(out, "w_missing", empty, rempty, EACCES);
    /* read-only in an empty directory: there is no cache to read */
    expect_clear_error(out, "r_empty", empty, rempty, ENOENT);

    /* Read-only on a populated directory we cannot write. LMDB needs to
     * write its lock file (it only skips it on a read-only file system), so
     * either the library works around that and reads every entry, or it
     * fails clearly. */
    int st = ro_result(out, "r_pop", msg, sizeof msg);
    if (st == QV_OK) {
        printf("r_pop: opened read-only\n");
        ro_result(out, "r_pop_read", msg, sizeof msg);
        assert_int_equal(atoi(msg), RO_KEYS);
        assert_int_equal(ro_result(out, "r_pop_store", msg, sizeof msg), QV_EREADONLY);
    } else {
        expect_clear_error(out, "r_pop", pop, rpop, EACCES);
    }
    /* nothing was created or changed */
    struct stat sb;
    assert_int_equal(stat(missing, &sb), -1);
    char lock[PATH_MAX + 16];
    snprintf(lock, sizeof lock, "%s/lock.mdb", empty);
    assert_int_equal(stat(lock, &sb), -1);
    free(rpop);
    free(rempty);
    qvt_rmtree(base);
    free(base);
}

/* ------------------------------------------------- read-only handles */

static void readonly_handle_refuses_writes(void **state) {
    char *dir = qvt_tempdir("lmdb-rohandle");
    qv_cache *w = open_cache(dir, NULL);
    for (int64_t k = 0; k < 10; k++) QVT_OK(store_int(w, k));
    qv_cache_close(w);

    qv_cache_options ro = QV_CACHE_OPTIONS_INIT;
    ro.flags = QV_CACHE_READONLY;
    qv_cache *r = open_cache(dir, &ro);
    for (int64_t k = 0; k < 10; k++) assert_int_equal(check_int(r, k), CHK_OK);

    assert_int_equal(store_int(r, 100), QV_EREADONLY);
    assert_non_null(strstr(qv_errmsg(), "read-only"));
    qv_value *args = args_of(101), *res;
    QVT_OK(qv_value_new_int(&res, 5));
    void *call;
    size_t call_len;
    {
        qv_value *list, *v;
        QVT_OK(qv_value_new_list(&list));
        const char *items[] = {"quiver/call/v1", FN, VER};
        for (int i = 0; i < 3; i++) {
            QVT_OK(qv_value_new_text(&v, items[i], strlen(items[i])));
            QVT_OK(qv_value_list_append(list, v));
        }
        QVT_OK(qv_value_clone(&v, args));
        QVT_OK(qv_value_list_append(list, v));
        QVT_OK(qv_value_new_map(&v));
        QVT_OK(qv_value_list_append(list, v));
        QVT_OK(qv_value_encode(list, &call, &call_len));
        qv_value_free(list);
    }
    static const uint8_t five = 0x05;
    assert_int_equal(qv_cache_store(r, NULL, call, call_len, &five, 1, NULL), QV_EREADONLY);
    qv_free(call);
    qv_value_free(args);
    qv_value_free(res);
    qv_digest k0 = key_of(0);
    assert_int_equal(qv_cache_evict(r, &k0), QV_EREADONLY);
    uint64_t n = 7;
    assert_int_equal(qv_cache_gc(r, &n), QV_EREADONLY);
    assert_int_equal(qv_cache_verify(r, 1, &n), QV_EREADONLY);
    QVT_OK(qv_cache_verify(r, 0, &n));
    assert_int_equal(n, 0);
    QVT_OK(qv_cache_sync(r));
    assert_int_equal(stat_of(r, QV_STAT_ENTRIES), 10);
    assert_int_equal(stat_of(r, QV_STAT_STORES), 0);
    assert_int_equal(check_int(r, 100), CHK_MISSING);
    assert_int_equal(check_int(r, 0), CHK_OK);

    /* A writable handle opened on the same path afterwards is refused
     * (the environment is read-only), rather than silently read-only. */
    qv_cache *w2 = NULL;
    qv_status st = qv_cache_open(&w2, dir, NULL);
    if (st == QV_OK) {
        /* if the library allows it, writes through it must work */
        QVT_OK(store_int(w2, 200));
        assert_int_equal(check_int(r, 200), CHK_OK);
        qv_cache_close(w2);
    } else {
        assert_null(w2);
        assert_int_equal(st, QV_EMISUSE);
    }
    qv_cache_close(r);

    /* A read-only handle next to a writable one in the same process still
     * refuses, and sees what the writable one stores. */
    w = open_cache(dir, NULL);
    r = open_cache(dir, &ro);
    assert_int_equal(store_int(r, 300), QV_EREADONLY);
    QVT_OK(store_int(w, 301));
    assert_int_equal(check_int(r, 301), CHK_OK);
    assert_int_equal(check_int(r, 300), CHK_MISSING);
    qv_cache_close(r);
    qv_cache_close(w);

    /* Read-only never creates a cache. */
    char missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s/nothing-here", dir);
    qv_cache *none = (qv_cache *)&ro;
    assert_int_not_equal(qv_cache_open(&none, missing, &ro), QV_OK);
    assert_null(none);
    struct stat sb;
    assert_int_equal(stat(missing, &sb), -1);
    qvt_rmtree(dir);
    free(dir);
}

int main(int argc, char **argv) {
    if (!realpath("/proc/self/exe", self_exe)) snprintf(self_exe, sizeof self_exe, "%s", argv[0]);
    if (argc == 5 && strcmp(argv[1], "--read-range") == 0)
        return child_read_range(argv[2], strtoll(argv[3], NULL, 10), strtoll(argv[4], NULL, 10));
    if (getenv("QVT_FILTER")) cmocka_set_test_filter(getenv("QVT_FILTER")); /* run only the tests matching it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(persistence_across_processes),
        cmocka_unit_test(fork_then_use_inherited_handle),
        cmocka_unit_test(size_counter_is_exact_across_a_fork),
        cmocka_unit_test(size_counter_under_a_limit_survives_an_exit_without_close),
        cmocka_unit_test(killed_writer_loses_nothing_committed),
        cmocka_unit_test(full_map_grows),
        cmocka_unit_test(map_grown_by_another_process),
        cmocka_unit_test(full_map_with_limit_evicts_oldest),
        cmocka_unit_test(corrupt_entries_read_as_misses_and_repair),
        cmocka_unit_test(corrupt_entries_fail_to_load_clearly),
        cmocka_unit_test(flipped_bit_in_a_value_is_found_by_verify),
        cmocka_unit_test(record_under_a_wrong_key_is_found_by_verify),
        cmocka_unit_test(hot_key_of_a_reading_handle_survives_eviction),
        cmocka_unit_test(readonly_directory_gives_a_clear_error),
        cmocka_unit_test(readonly_handle_refuses_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
