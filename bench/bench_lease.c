/* bench_lease: what computing each call once costs and gives (issue 10).
 *
 *   bench_lease [--quick] [--tmp DIR]
 *
 * Rows:
 *  1. one slow call (200 ms) asked for by 8 spawned processes on one LMDB
 *     cache: how many runs, and how long after the holder returned the last
 *     waiter did (goal: 1 run, <= 50 ms);
 *  2. the same from 8 threads of one process;
 *  3. a miss + store of a distinct key through qv_call_run with leases
 *     against the same with QV_CALL_NO_DEDUP, at fast durability (goal:
 *     leases add <= 10%).
 * A goal missed is reported, never an exit status. */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "quiver.h"

extern char **environ;

#define SLOW_NS 200000000ll
#define CALLERS 8

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

__attribute__((noreturn)) static void die(const char *what) {
    fprintf(stderr, "bench_lease: %s: %s\n", what, qv_errmsg());
    exit(2);
}

/* The slow function: counts its runs in a file every process appends to. */
static qv_status slow(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata) {
    FILE *f = fopen(userdata, "a");
    if (f) {
        fputs("run\n", f);
        fclose(f);
    }
    struct timespec ts = {0, SLOW_NS};
    nanosleep(&ts, NULL);
    return qv_value_new_int(result, 42);
}

/* One caller: the monotonic time its call returned. */
static int64_t call_once(const char *dir, const char *log) {
    qv_cache *c;
    qv_fn *fn;
    qv_value *args, *r = NULL;
    if (qv_cache_open(&c, dir, NULL)) die("open");
    if (qv_fn_new(&fn, "bench.slow", NULL, slow, (void *)log, NULL)) die("fn");
    if (qv_value_new_list(&args)) die("list");
    qv_ctx_push(c, NULL);
    if (qv_fn_call(fn, args, &r)) die("call");
    int64_t at = mono_ns();
    qv_ctx_pop();
    qv_value_free(r);
    qv_value_free(args);
    qv_fn_free(fn);
    qv_cache_close(c);
    return at;
}

static int count_runs(const char *log) {
    FILE *f = fopen(log, "r");
    int n = 0;
    char line[16];
    while (f && fgets(line, sizeof line, f)) n++;
    if (f) fclose(f);
    return n;
}

static void report(const char *row, int runs, const int64_t *at, int n) {
    int64_t first = at[0], last = at[0];
    for (int i = 1; i < n; i++) {
        if (at[i] < first) first = at[i];
        if (at[i] > last) last = at[i];
    }
    double lag_ms = (double)(last - first) / 1e6;
    printf("  %-44s %d run%s of %d callers; last waiter back %.1f ms after the holder  %s\n", row, runs,
           runs == 1 ? "" : "s", n, lag_ms, runs == 1 && lag_ms <= 50 ? "PASS" : "MISS");
}

static void processes_row(const char *self, const char *dir) {
    char log[PATH_MAX], out[PATH_MAX];
    snprintf(log, sizeof log, "%s/runs-processes", dir);
    pid_t pids[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        snprintf(out, sizeof out, "%s/at-%d", dir, i);
        char *argv[] = {(char *)self, "--child", (char *)dir, log, out, NULL};
        if (posix_spawn(&pids[i], self, NULL, NULL, argv, environ)) die("spawn");
    }
    int64_t at[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        int status;
        waitpid(pids[i], &status, 0);
        snprintf(out, sizeof out, "%s/at-%d", dir, i);
        FILE *f = fopen(out, "r");
        long long v = 0;
        if (!f || fscanf(f, "%lld", &v) != 1 || !WIFEXITED(status) || WEXITSTATUS(status)) {
            fprintf(stderr, "bench_lease: child %d failed\n", i);
            exit(2);
        }
        fclose(f);
        at[i] = v;
    }
    report("1. one slow call, 8 spawned processes", count_runs(log), at, CALLERS);
}

typedef struct {
    const char *dir, *log;
    int64_t at;
} caller;

static void *caller_main(void *p) {
    caller *c = p;
    c->at = call_once(c->dir, c->log);
    return NULL;
}

static void threads_row(const char *dir) {
    char log[PATH_MAX], sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/threads", dir);
    mkdir(sub, 0755);
    snprintf(log, sizeof log, "%s/runs", sub);
    caller cs[CALLERS];
    pthread_t th[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        cs[i] = (caller){sub, log, 0};
        pthread_create(&th[i], NULL, caller_main, &cs[i]);
    }
    int64_t at[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(th[i], NULL);
        at[i] = cs[i].at;
    }
    report("2. one slow call, 8 threads", count_runs(log), at, CALLERS);
}

/* ---------------------------------------------------------- miss + store */

static const uint8_t result_enc[] = {0x18, 0x2a}; /* 42 */

static qv_status store_body(const void **result, size_t *len, void *userdata) {
    *result = result_enc;
    *len = sizeof result_enc;
    return QV_OK;
}

static qv_status ignore_hit(const void *data, size_t len, void *userdata) {
    return QV_OK;
}

/* ns per miss + store of distinct keys k0 .. k0+n through qv_call_run. */
static double misses(qv_cache *c, qv_encoder *enc, int64_t k0, int n, uint32_t flags) {
    qv_call_options o = QV_CALL_OPTIONS_INIT;
    o.flags = flags;
    int64_t t0 = mono_ns();
    for (int i = 0; i < n; i++) {
        const void *call;
        size_t len;
        qv_digest key;
        qv_encoder_reset(enc);
        if (qv_encoder_call_head(enc, "bench.miss", 10, NULL, 0) || qv_encoder_list(enc, 1) ||
            qv_encoder_int(enc, k0 + i) || qv_encoder_map_begin(enc) || qv_encoder_map_end(enc) ||
            qv_encoder_finish(enc, &call, &len))
            die("encode");
        qv_digest_bytes(&key, call, len);
        int outcome;
        if (qv_call_run(&outcome, c, &key, call, len, &o, ignore_hit, store_body, NULL) || outcome != QV_CALL_STORED)
            die("miss + store");
    }
    return (double)(mono_ns() - t0) / n;
}

static void misses_row(const char *dir, int quick) {
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/misses", dir);
    qv_cache_options opts = QV_CACHE_OPTIONS_INIT;
    opts.durability = QV_DURABILITY_FAST;
    qv_cache *c;
    if (qv_cache_open(&c, sub, &opts)) die("open");
    qv_encoder *enc;
    if (qv_encoder_new(&enc)) die("encoder");
    int reps = quick ? 3 : 9, n = quick ? 500 : 3000;
    double with[16], without[16];
    misses(c, enc, -1000000, 200, 0); /* warm-up, and the lease table opened */
    for (int r = 0; r < reps; r++) { /* interleaved, so both see the same machine */
        with[r] = misses(c, enc, (int64_t)r * 2 * n, n, 0);
        without[r] = misses(c, enc, (int64_t)r * 2 * n + n, n, QV_CALL_NO_DEDUP);
    }
    qsort(with, (size_t)reps, sizeof *with, cmp_double);
    qsort(without, (size_t)reps, sizeof *without, cmp_double);
    double ratio = with[reps / 2] / without[reps / 2];
    printf("  %-44s %.2f us with leases, %.2f us without: %.3fx  %s\n", "3. miss + store, distinct keys, fast",
           with[reps / 2] / 1e3, without[reps / 2] / 1e3, ratio, ratio <= 1.10 ? "PASS" : "MISS");
    qv_encoder_free(enc);
    qv_cache_close(c);
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "--child") == 0) {
        int64_t at = call_once(argv[2], argv[3]);
        FILE *f = fopen(argv[4], "w");
        if (!f) return 3;
        fprintf(f, "%lld\n", (long long)at);
        return fclose(f) ? 3 : 0;
    }
    int quick = 0;
    const char *tmp = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else if (strcmp(argv[i], "--tmp") == 0 && i + 1 < argc) tmp = argv[++i];
        else {
            fprintf(stderr, "usage: bench_lease [--quick] [--tmp DIR]\n");
            return 2;
        }
    }
    char dir[PATH_MAX];
    const char *build = getenv("QUIVER_BUILD");
    snprintf(dir, sizeof dir, "%s/bench-lease-%d", tmp ? tmp : build ? build : "/tmp", (int)getpid());
    if (mkdir(dir, 0755)) {
        fprintf(stderr, "bench_lease: cannot create %s: %s\n", dir, strerror(errno));
        return 2;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 2;
    self[n] = 0;
    printf("quiver bench_lease: computing each call once (leases), %s\n", quick ? "--quick" : "full");
    processes_row(self, dir);
    threads_row(dir);
    misses_row(dir, quick);
    rm_tree(dir);
    return 0;
}
