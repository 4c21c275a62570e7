/* bench_remote: the remote tier (issue 11) against raw hiredis anchors
 * measured in the same run, on a redis-server this program starts on a free
 * loopback port and stops at exit.
 *
 *   bench_remote [--quick] [--tmp DIR]
 *
 * Rows:
 *  1. a remote hit on a bare remote tier (qv_cache_open with a redis:// URL),
 *     the same key every time, against one raw GET round trip of as many bytes
 *     as the entry holds in Redis (record, and value when not inline); a small
 *     int result and a 4 KiB one (a value of its own, so record and value are
 *     fetched in one pipelined round trip);
 *  2. a remote hit through a stack: the local tier misses, Redis answers (the
 *     stack's worker thread copies the entry into the local tier meanwhile);
 *     every lookup is on a distinct key, since a repeated key would be a
 *     local hit; against the same GET;
 *  3. a local hit through a stack against a plain local hit on the same key;
 *  4. a store through a stack against a local store plus one raw SET of the
 *     entry's bytes;
 *  5. 4 processes, each with its own local directory stacked over the one
 *     Redis, store 10,000 distinct keys each (--quick: 1,000), then every
 *     process reads all 40,000 and checks every value: every key stored
 *     once, no wrong read.
 *
 * Every number is the median of repetitions after a warm-up, quiver and
 * anchor interleaved. A goal missed is reported, never an exit status; a wrong
 * read in row 5 is (exit 1). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "bench.h"
#include "quiver.h"

extern char **environ;

#define STRESS_PROCS 4
#define BIG_RESULT 4096

typedef struct {
    int quick;
    int reps;        /* repetitions of each timed loop (median taken) */
    int remote_ops;  /* round trips per repetition */
    int local_ops;   /* local hits per repetition */
    int store_ops;   /* stores per repetition */
    int stress_keys; /* keys each process of row 5 stores */
    char tmp[PATH_MAX];
} config;

static config cfg;
static volatile uint64_t sink;
static int tmp_made;
static pid_t redis_pid, owner_pid;
static int redis_port;
static char redis_dir[PATH_MAX];
static unsigned warnings;

/* Only the process that started the server stops it: a child stress worker
 * exiting early must not take it down under its siblings. */
static void stop_redis(void) {
    if (redis_pid > 0 && getpid() == owner_pid) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
}

static void cleanup(void) {
    stop_redis();
    if (tmp_made && getpid() == owner_pid) rm_tree(cfg.tmp);
    tmp_made = 0;
}

static void on_signal(int sig) {
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

__attribute__((noreturn)) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_remote: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    cleanup();
    exit(2);
}

#define QV_CHECK(expr)                                                                           \
    do {                                                                                         \
        qv_status st_ = (expr);                                                                  \
        if (st_) die("%s:%d: %s: %s (%s)", __FILE__, __LINE__, #expr, qv_status_name(st_), qv_errmsg()); \
    } while (0)

static void subdir(char *out, const char *name) {
    if (snprintf(out, PATH_MAX, "%s/%s", cfg.tmp, name) >= PATH_MAX) die("temporary path too long");
    rm_tree(out);
    if (mkdir(out, 0755) != 0) die("cannot create %s: %s", out, strerror(errno));
}

/* Warnings (a tier down, say) are counted and shown once at the end, not
 * interleaved with the table. */
static void on_warning(const char *message, void *userdata) {
    (void)userdata;
    if (warnings++ == 0) fprintf(stderr, "bench_remote: warning: %s\n", message);
}

/* ------------------------------------------------------------ redis-server */

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &n))
        die("finding a free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *redis_connect(void) {
    struct timeval tv = {2, 0};
    redisContext *r = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (!r || r->err) {
        if (r) redisFree(r);
        return NULL;
    }
    return r;
}

static redisReply *cmd(redisContext *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(r, fmt, ap);
    va_end(ap);
    if (!rep) die("redis: %s", r->errstr);
    if (rep->type == REDIS_REPLY_ERROR) die("redis: %s", rep->str);
    return rep;
}

/* A private server: no persistence, nothing written outside our directory.
 * A port taken between free_port and the server's bind is retried. */
static void start_redis(void) {
    subdir(redis_dir, "redis");
    for (int attempt = 0; attempt < 5; attempt++) {
        redis_port = free_port();
        char port[16];
        snprintf(port, sizeof port, "%d", redis_port);
        char *argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--dir", redis_dir, "--logfile", "", "--loglevel", "warning", NULL};
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        int rc = posix_spawnp(&redis_pid, "redis-server", &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc) die("cannot start redis-server: %s", strerror(rc));
        for (int i = 0; i < 100; i++) {
            redisContext *r = redis_connect();
            if (r) {
                redisReply *rep = redisCommand(r, "PING");
                int ok = rep && rep->type == REDIS_REPLY_STATUS;
                if (rep) freeReplyObject(rep);
                redisFree(r);
                if (ok) return;
            }
            if (waitpid(redis_pid, NULL, WNOHANG) == redis_pid) break; /* it exited: port taken */
            usleep(50000);
        }
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
    die("redis-server did not start");
}

static void url(char *out, size_t n, int db, const char *prefix) {
    snprintf(out, n, "redis://127.0.0.1:%d/%d?prefix=%s", redis_port, db, prefix);
}

/* ----------------------------------------------------------- call encoding */

static const char FN_NAME[] = "bench.remote";
/* bench.remote(arg): the call head every binding writes, then [arg] and {} */
static qv_status call_items(qv_encoder *enc, int64_t arg) {
    qv_status st;
    if ((st = qv_encoder_call_head(enc, FN_NAME, sizeof FN_NAME - 1, NULL, 0)) || (st = qv_encoder_list(enc, 1)) ||
        (st = qv_encoder_int(enc, arg)) || (st = qv_encoder_map_begin(enc)) || (st = qv_encoder_map_end(enc)))
        return st;
    return QV_OK;
}

typedef struct {
    qv_encoder *call, *res;
    uint8_t big[BIG_RESULT];
} encoders;

static void encoders_init(encoders *e) {
    QV_CHECK(qv_encoder_new(&e->call));
    QV_CHECK(qv_encoder_new(&e->res));
}

static void encoders_free(encoders *e) {
    qv_encoder_free(e->call);
    qv_encoder_free(e->res);
}

static void digest_of(encoders *e, int64_t arg, qv_digest *d) {
    qv_encoder_reset_for_digest(e->call);
    QV_CHECK(call_items(e->call, arg));
    QV_CHECK(qv_encoder_digest(e->call, d));
}

/* The result of arg: an int, or `size` bytes that name arg (so that a value
 * read under the wrong key cannot pass). */
static void result_of(encoders *e, int64_t arg, size_t size, const void **p, size_t *n) {
    qv_encoder_reset(e->res);
    if (size == 0) {
        QV_CHECK(qv_encoder_int(e->res, arg * 3 + 1000));
    } else {
        for (size_t i = 0; i < size; i++) e->big[i] = (uint8_t)(arg * 31 + (int64_t)i * 7);
        memcpy(e->big, &arg, sizeof arg);
        QV_CHECK(qv_encoder_bytes(e->res, e->big, size));
    }
    QV_CHECK(qv_encoder_finish(e->res, p, n));
}

static qv_status store_one(qv_cache *c, encoders *e, int64_t arg, size_t size) {
    const void *call, *res;
    size_t call_len, res_len;
    qv_status st;
    qv_encoder_reset(e->call);
    if ((st = call_items(e->call, arg)) || (st = qv_encoder_finish(e->call, &call, &call_len))) return st;
    result_of(e, arg, size, &res, &res_len);
    return qv_cache_store(c, NULL, call, call_len, res, res_len, NULL);
}

static qv_status take_len(const void *data, size_t len, void *userdata) {
    (void)userdata;
    sink += len + ((const uint8_t *)data)[len - 1];
    return QV_OK;
}

typedef struct {
    const void *want;
    size_t want_len;
} expect;

static qv_status check_result(const void *data, size_t len, void *userdata) {
    expect *x = userdata;
    return len == x->want_len && memcmp(data, x->want, len) == 0 ? QV_OK : QV_ECORRUPT;
}

static qv_cache *open_local(const char *dir) {
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    qv_cache *c;
    QV_CHECK(qv_cache_open(&c, dir, &o));
    return c;
}

static qv_cache *open_remote(int db, const char *prefix) {
    char u[256];
    url(u, sizeof u, db, prefix);
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    qv_cache *c;
    QV_CHECK(qv_cache_open(&c, u, &o));
    return c;
}

static qv_cache *open_stack(qv_cache *local, qv_cache *remote) {
    qv_stack_options o = QV_STACK_OPTIONS_INIT;
    qv_cache *s;
    QV_CHECK(qv_cache_stack(&s, local, remote, &o));
    return s;
}

/* The bytes one entry occupies in Redis, as one string: every key under a
 * prefix that holds just this entry, concatenated. The anchor GETs that. */
static size_t entry_bytes(redisContext *r, int db, const char *prefix, char **out) {
    redisReply *rep = cmd(r, "SELECT %d", db);
    freeReplyObject(rep);
    rep = cmd(r, "KEYS %s*", prefix);
    size_t total = 0;
    char *buf = NULL;
    for (size_t i = 0; i < rep->elements; i++) {
        redisReply *v = cmd(r, "GET %b", rep->element[i]->str, (size_t)rep->element[i]->len);
        if (v->type != REDIS_REPLY_STRING) die("%s is not a string", rep->element[i]->str);
        buf = realloc(buf, total + v->len);
        if (!buf) die("out of memory");
        memcpy(buf + total, v->str, v->len);
        total += v->len;
        freeReplyObject(v);
    }
    if (rep->elements == 0) die("no key under %s after a store", prefix);
    freeReplyObject(rep);
    rep = cmd(r, "SELECT 0");
    freeReplyObject(rep);
    *out = buf;
    return total;
}

/* --------------------------------------------------------------- the table */

enum { G_NONE, G_MAX_RATIO };

typedef struct {
    char name[64];
    double q, f;
    int goal;
    double goal_val;
    char note[160];
} row;

static row rows[16];
static int nrows;

static void add_row(const char *name, double q, double f, int goal, double goal_val, const char *note_fmt, ...) {
    if (nrows == (int)(sizeof rows / sizeof rows[0])) die("too many rows");
    row *r = &rows[nrows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->q = q;
    r->f = f;
    r->goal = goal;
    r->goal_val = goal_val;
    va_list ap;
    va_start(ap, note_fmt);
    vsnprintf(r->note, sizeof r->note, note_fmt, ap);
    va_end(ap);
}

static void fmt_ns(char *out, size_t n, double v) {
    if (isnan(v)) snprintf(out, n, "-");
    else snprintf(out, n, "%.1f", v);
}

static void print_table(void) {
    const char *hdr = "%-46s %13s %13s %7s  %-14s %-6s %s\n";
    printf(hdr, "benchmark", "quiver ns/op", "anchor ns/op", "ratio", "goal", "result", "notes");
    printf("%.*s\n", 150, "----------------------------------------------------------------------------------"
                          "--------------------------------------------------------------------");
    for (int i = 0; i < nrows; i++) {
        row *r = &rows[i];
        char q[32], f[32], ratio[32], goal[32] = "-", result[8] = "";
        fmt_ns(q, sizeof q, r->q);
        fmt_ns(f, sizeof f, r->f);
        if (isnan(r->q) || isnan(r->f)) snprintf(ratio, sizeof ratio, "-");
        else snprintf(ratio, sizeof ratio, "%.2f", r->q / r->f);
        if (r->goal == G_MAX_RATIO) {
            snprintf(goal, sizeof goal, "ratio <= %.2f", r->goal_val);
            snprintf(result, sizeof result, "%s", r->q / r->f <= r->goal_val ? "PASS" : "MISS");
        }
        printf(hdr, r->name, q, f, ratio, goal, result, r->note);
    }
}

/* ------------------------------------------------------------------- rows */

/* A loop of `ops` GETs of one anchor key; ns per GET. */
static double time_gets(redisContext *r, const char *key, int ops) {
    uint64_t t = now_ns();
    for (int i = 0; i < ops; i++) {
        redisReply *rep = redisCommand(r, "GET %s", key);
        if (!rep || rep->type != REDIS_REPLY_STRING) die("anchor GET failed");
        sink += rep->len;
        freeReplyObject(rep);
    }
    return (double)(now_ns() - t) / ops;
}

/* Rows 1 and 2 for one result size. */
static void bench_remote_hits(size_t size) {
    const char *what = size ? "4 KiB result" : "int result";
    progress("remote hits, %s", what);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "qvb%zu:", size);
    redisContext *r = redis_connect();
    if (!r) die("cannot connect to redis-server");
    encoders e;
    encoders_init(&e);
    qv_cache *remote = open_remote(0, prefix);

    /* one entry first, alone under its prefix, to learn its bytes */
    QV_CHECK(store_one(remote, &e, -1, size));
    char *bytes;
    size_t nbytes = entry_bytes(r, 0, prefix, &bytes);
    char anchor[64];
    snprintf(anchor, sizeof anchor, "anchor%zu", size);
    freeReplyObject(cmd(r, "SET %s %b", anchor, bytes, nbytes));
    free(bytes);

    /* the distinct keys the stack will miss locally and find remotely */
    int n = cfg.reps * cfg.remote_ops + cfg.remote_ops; /* + a warm-up's */
    qv_digest *keys = malloc((size_t)n * sizeof *keys);
    if (!keys) die("out of memory");
    for (int i = 0; i < n; i++) {
        QV_CHECK(store_one(remote, &e, i, size));
        digest_of(&e, i, &keys[i]);
    }
    qv_digest hot;
    digest_of(&e, -1, &hot);

    char dir[PATH_MAX];
    subdir(dir, size ? "hits-big" : "hits-int");
    qv_cache *local = open_local(dir);
    qv_cache *stack = open_stack(local, remote);

    double *bare = malloc((size_t)cfg.reps * sizeof(double)), *through = malloc((size_t)cfg.reps * sizeof(double)),
           *get = malloc((size_t)cfg.reps * sizeof(double));
    if (!bare || !through || !get) die("out of memory");
    /* warm-up: connections, the local map, the stack's first keys */
    for (int i = 0; i < cfg.remote_ops; i++) {
        QV_CHECK(qv_cache_get_with(remote, &hot, take_len, NULL));
        QV_CHECK(qv_cache_get_with(stack, &keys[i], take_len, NULL));
    }
    time_gets(r, anchor, cfg.remote_ops);
    int next = cfg.remote_ops;
    for (int rep = 0; rep < cfg.reps; rep++) {
        uint64_t t = now_ns();
        for (int i = 0; i < cfg.remote_ops; i++) QV_CHECK(qv_cache_get_with(remote, &hot, take_len, NULL));
        bare[rep] = (double)(now_ns() - t) / cfg.remote_ops;
        get[rep] = time_gets(r, anchor, cfg.remote_ops);
        t = now_ns();
        for (int i = 0; i < cfg.remote_ops; i++) QV_CHECK(qv_cache_get_with(stack, &keys[next++], take_len, NULL));
        through[rep] = (double)(now_ns() - t) / cfg.remote_ops;
    }
    uint64_t remote_hits = 0, local_entries = 0;
    QV_CHECK(qv_cache_stat(stack, QV_STAT_REMOTE_HITS, &remote_hits));
    QV_CHECK(qv_cache_stat(local, QV_STAT_ENTRIES, &local_entries));
    double g = median_in_place(get, cfg.reps);
    char name[64];
    snprintf(name, sizeof name, "remote hit, bare remote tier, %s", what);
    add_row(name, median_in_place(bare, cfg.reps), g, G_MAX_RATIO, 1.5, "same key; anchor: GET of the entry's %zu bytes",
            nbytes);
    snprintf(name, sizeof name, "remote hit through a stack, %s", what);
    add_row(name, median_in_place(through, cfg.reps), g, G_MAX_RATIO, 1.5,
            "local miss, Redis hit; distinct keys (%llu remote hits, %llu copied into local so far)",
            (unsigned long long)remote_hits, (unsigned long long)local_entries);
    free(bare);
    free(through);
    free(get);
    free(keys);
    qv_cache_close(stack);
    qv_cache_close(local);
    qv_cache_close(remote);
    encoders_free(&e);
    redisFree(r);
}

/* Row 3: the stack must answer a local hit without asking Redis. */
static void bench_local_hit(void) {
    progress("local hits with and without a remote tier under them");
    encoders e;
    encoders_init(&e);
    char dir[PATH_MAX];
    subdir(dir, "local-hit");
    qv_cache *local = open_local(dir);
    qv_cache *remote = open_remote(0, "qvlocal:");
    qv_cache *stack = open_stack(local, remote);
    QV_CHECK(store_one(local, &e, 7, 0));
    qv_digest key;
    digest_of(&e, 7, &key);
    double *plain = malloc((size_t)cfg.reps * sizeof(double)), *stacked = malloc((size_t)cfg.reps * sizeof(double));
    if (!plain || !stacked) die("out of memory");
    for (int i = 0; i < cfg.local_ops; i++) {
        QV_CHECK(qv_cache_get_with(local, &key, take_len, NULL));
        QV_CHECK(qv_cache_get_with(stack, &key, take_len, NULL));
    }
    /* which goes first alternates: a tenth of a microsecond is within what
     * going second (warm caches, a frequency step) can change */
    for (int rep = 0; rep < cfg.reps; rep++) {
        for (int k = 0; k < 2; k++) {
            int through_stack = (rep + k) % 2;
            qv_cache *c = through_stack ? stack : local;
            uint64_t t = now_ns();
            for (int i = 0; i < cfg.local_ops; i++) QV_CHECK(qv_cache_get_with(c, &key, take_len, NULL));
            (through_stack ? stacked : plain)[rep] = (double)(now_ns() - t) / cfg.local_ops;
        }
    }
    uint64_t remote_hits = 0;
    QV_CHECK(qv_cache_stat(stack, QV_STAT_REMOTE_HITS, &remote_hits));
    add_row("local hit through a stack (remote under it)", median_in_place(stacked, cfg.reps), median_in_place(plain, cfg.reps),
            G_MAX_RATIO, 1.1, "anchor: a plain local hit, same key (%llu remote hits)",
            (unsigned long long)remote_hits);
    free(plain);
    free(stacked);
    qv_cache_close(stack);
    qv_cache_close(remote);
    qv_cache_close(local);
    encoders_free(&e);
}

/* Row 4: stores of distinct keys through a stack, against local stores of
 * distinct keys into a plain cache plus one raw SET of the entry's bytes. */
static void bench_store(void) {
    progress("stores through a stack");
    redisContext *r = redis_connect();
    if (!r) die("cannot connect to redis-server");
    encoders e;
    encoders_init(&e);
    qv_cache *remote = open_remote(0, "qvstore:");
    QV_CHECK(store_one(remote, &e, -1, 0));
    char *bytes;
    size_t nbytes = entry_bytes(r, 0, "qvstore:", &bytes);
    char sdir[PATH_MAX], pdir[PATH_MAX];
    subdir(sdir, "store-stack");
    subdir(pdir, "store-plain");
    qv_cache *local = open_local(sdir), *plain = open_local(pdir);
    qv_cache *stack = open_stack(local, remote);
    double *through = malloc((size_t)cfg.reps * sizeof(double)), *anchor = malloc((size_t)cfg.reps * sizeof(double));
    if (!through || !anchor) die("out of memory");
    int64_t arg = 0;
    for (int rep = -1; rep < cfg.reps; rep++) { /* rep -1: the warm-up */
        uint64_t t = now_ns();
        for (int i = 0; i < cfg.store_ops; i++) QV_CHECK(store_one(stack, &e, arg + i, 0));
        double s = (double)(now_ns() - t) / cfg.store_ops;
        t = now_ns();
        for (int i = 0; i < cfg.store_ops; i++) {
            QV_CHECK(store_one(plain, &e, arg + i, 0));
            char key[32];
            snprintf(key, sizeof key, "anchor-set:%lld", (long long)(arg + i));
            redisReply *rep2 = redisCommand(r, "SET %s %b", key, bytes, nbytes);
            if (!rep2 || rep2->type != REDIS_REPLY_STATUS) die("anchor SET failed");
            freeReplyObject(rep2);
        }
        double a = (double)(now_ns() - t) / cfg.store_ops;
        arg += cfg.store_ops;
        if (rep >= 0) through[rep] = s, anchor[rep] = a;
    }
    add_row("store through a stack (local + Redis)", median_in_place(through, cfg.reps), median_in_place(anchor, cfg.reps), G_MAX_RATIO,
            1.5, "anchor: a local store + one raw SET of the entry's %zu bytes; distinct keys", nbytes);
    free(through);
    free(anchor);
    free(bytes);
    qv_cache_close(stack);
    qv_cache_close(plain);
    qv_cache_close(local);
    qv_cache_close(remote);
    encoders_free(&e);
    redisFree(r);
}

/* Row 5, one process: store keys [index*n, index*n+n) through a stack over
 * its own directory, wait for every sibling (a counter in Redis), then read
 * all procs*n keys back and check each value. Prints "stored wrong missing
 * remote_hits" on stdout. */
static int stress_child(const char *dir, int index, int procs, int n) {
    redisContext *r = redis_connect();
    if (!r) die("child: cannot connect to redis-server");
    encoders e;
    encoders_init(&e);
    qv_cache *local = open_local(dir);
    qv_cache *remote = open_remote(1, "qvstress:");
    qv_cache *stack = open_stack(local, remote);
    for (int i = 0; i < n; i++) QV_CHECK(store_one(stack, &e, (int64_t)index * n + i, 0));
    freeReplyObject(cmd(r, "INCR qvstress-barrier"));
    for (;;) {
        redisReply *rep = cmd(r, "GET qvstress-barrier");
        int done = rep->type == REDIS_REPLY_STRING && atoi(rep->str) >= procs;
        freeReplyObject(rep);
        if (done) break;
        usleep(2000);
    }
    unsigned long long wrong = 0, missing = 0;
    for (int64_t i = 0; i < (int64_t)procs * n; i++) {
        qv_digest key;
        digest_of(&e, i, &key);
        expect x;
        result_of(&e, i, 0, &x.want, &x.want_len);
        qv_status st = qv_cache_get_with(stack, &key, check_result, &x);
        if (st == QV_NOTFOUND) missing++;
        else if (st) wrong++;
    }
    uint64_t stored = 0, remote_hits = 0;
    QV_CHECK(qv_cache_stat(stack, QV_STAT_STORES, &stored));
    QV_CHECK(qv_cache_stat(stack, QV_STAT_REMOTE_HITS, &remote_hits));
    printf("%llu %llu %llu %llu\n", (unsigned long long)stored, wrong, missing, (unsigned long long)remote_hits);
    qv_cache_close(stack);
    qv_cache_close(remote);
    qv_cache_close(local);
    encoders_free(&e);
    redisFree(r);
    return 0;
}

static int stress_ok = 1;

static void bench_stress(const char *self) {
    progress("%d processes x %d distinct keys through one Redis", STRESS_PROCS, cfg.stress_keys);
    pid_t pids[STRESS_PROCS];
    FILE *outs[STRESS_PROCS];
    char port[16], idx[16], procs[16], keys[16];
    snprintf(port, sizeof port, "%d", redis_port);
    snprintf(procs, sizeof procs, "%d", STRESS_PROCS);
    snprintf(keys, sizeof keys, "%d", cfg.stress_keys);
    uint64_t t = now_ns();
    for (int i = 0; i < STRESS_PROCS; i++) {
        char dir[PATH_MAX], name[32];
        snprintf(name, sizeof name, "stress-%d", i);
        subdir(dir, name);
        snprintf(idx, sizeof idx, "%d", i);
        int fd[2];
        if (pipe(fd)) die("pipe: %s", strerror(errno));
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, fd[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&fa, fd[0]);
        char *argv[] = {(char *)self, "--child", port, dir, idx, procs, keys, NULL};
        int rc = posix_spawn(&pids[i], self, &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc) die("spawn: %s", strerror(rc));
        close(fd[1]);
        outs[i] = fdopen(fd[0], "r");
    }
    unsigned long long stored = 0, wrong = 0, missing = 0, remote_hits = 0;
    int failed = 0;
    for (int i = 0; i < STRESS_PROCS; i++) {
        unsigned long long s, w, m, h;
        if (fscanf(outs[i], "%llu %llu %llu %llu", &s, &w, &m, &h) == 4)
            stored += s, wrong += w, missing += m, remote_hits += h;
        else
            failed++;
        fclose(outs[i]);
        int status;
        waitpid(pids[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status)) failed++;
    }
    double secs = (double)(now_ns() - t) / 1e9;
    /* Every call record in Redis, counted by the server: one per key. */
    redisContext *r = redis_connect();
    if (!r) die("cannot connect to redis-server");
    freeReplyObject(cmd(r, "SELECT 1"));
    unsigned long long records = 0;
    char cursor[32] = "0";
    do {
        redisReply *rep = cmd(r, "SCAN %s MATCH qvstress:c:* COUNT 1000", cursor);
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        records += rep->element[1]->elements;
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    redisFree(r);
    unsigned long long want = (unsigned long long)STRESS_PROCS * (unsigned long long)cfg.stress_keys;
    stress_ok = !failed && stored == want && records == want && !wrong && !missing;
    char name[64];
    snprintf(name, sizeof name, "%d processes x %d keys through one Redis", STRESS_PROCS, cfg.stress_keys);
    add_row(name, NAN, NAN, G_NONE, 0,
            "%s in %.2f s: %llu stores, %llu records in Redis, %llu reads: %llu wrong, %llu missing, "
            "%llu remote hits%s",
            stress_ok ? "PASS" : "FAIL", secs, stored, records, want * STRESS_PROCS, wrong, missing, remote_hits,
            failed ? ", a process failed" : "");
}

/* ------------------------------------------------------------------- main */

static void default_tmp(void) {
    char base[PATH_MAX];
    if (build_dir(base)) die("cannot find the build directory; pass --tmp DIR");
    if (snprintf(cfg.tmp, sizeof cfg.tmp, "%s/bench-remote-tmp.%d", base, (int)getpid()) >= (int)sizeof cfg.tmp)
        die("path too long");
}

int main(int argc, char **argv) {
    /* The measurement is of the default tier: unsigned, no password. */
    unsetenv("QUIVER_SECRET");
    unsetenv("QUIVER_REDIS_PASSWORD");
    qv_set_warning_handler(on_warning, NULL, NULL);
    if (argc == 7 && strcmp(argv[1], "--child") == 0) {
        redis_port = atoi(argv[2]);
        return stress_child(argv[3], atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    }
    const char *tmp = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            cfg.quick = 1;
        } else if (strcmp(argv[i], "--tmp") == 0 && i + 1 < argc) {
            tmp = argv[++i];
        } else {
            fprintf(strcmp(argv[i], "--help") && strcmp(argv[i], "-h") ? stderr : stdout,
                    "usage: bench_remote [--quick] [--tmp DIR]\n");
            return strcmp(argv[i], "--help") && strcmp(argv[i], "-h") ? 2 : 0;
        }
    }
    if (cfg.quick)
        cfg.reps = 3, cfg.remote_ops = 300, cfg.local_ops = 20000, cfg.store_ops = 200, cfg.stress_keys = 1000;
    else
        cfg.reps = 25, cfg.remote_ops = 500, cfg.local_ops = 100000, cfg.store_ops = 300, cfg.stress_keys = 10000;
    if (!tmp) default_tmp();
    else if (snprintf(cfg.tmp, sizeof cfg.tmp, "%s", tmp) >= (int)sizeof cfg.tmp) die("path too long");
    owner_pid = getpid();
    rm_tree(cfg.tmp);
    if (mkdir(cfg.tmp, 0755) != 0) die("cannot create %s: %s", cfg.tmp, strerror(errno));
    tmp_made = 1;
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    setvbuf(stdout, NULL, _IOLBF, 0);

    start_redis();
    redisContext *r = redis_connect();
    if (!r) die("cannot connect to redis-server");
    redisReply *info = cmd(r, "INFO server");
    char *v = strstr(info->str, "redis_version:");
    char version[32] = "?";
    if (v) sscanf(v, "redis_version:%31[^\r\n]", version);
    freeReplyObject(info);
    redisFree(r);
    printf("quiver bench_remote: the remote tier against raw hiredis round trips measured in the same run\n");
    printf("  machine : %ld CPUs online; redis-server %s on 127.0.0.1:%d (started here), hiredis %d.%d.%d\n",
           sysconf(_SC_NPROCESSORS_ONLN), version, redis_port, HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    printf("  run     : %s; quiver %s; medians of %d interleaved repetitions; local tiers in %s\n",
           cfg.quick ? "--quick (smoke sizes)" : "full", qv_version(), cfg.reps, cfg.tmp);

    uint64_t t0 = now_ns();
    bench_remote_hits(0);
    bench_remote_hits(BIG_RESULT);
    bench_local_hit();
    bench_store();
    bench_stress("/proc/self/exe");
    double total = (double)(now_ns() - t0) / 1e9;

    printf("\n");
    print_table();
    printf("\nratio = quiver / anchor, time per op (lower is better); a MISS is reported, not an error.\n");
    if (warnings) printf("%u warnings from the library (the first is on stderr)\n", warnings);
    printf("total %.1f s\n", total);
    cleanup();
    return stress_ok ? 0 : 1;
}
