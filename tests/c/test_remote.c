/* The remote tier against a real redis-server of its own: each test starts
 * one on a free loopback port and a unix socket in its temporary directory,
 * and kills it in teardown (also when the test fails). No mock. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

/* Children forked by these tests start threads of their own (a lease
 * renewer, a stack's worker) while the parent has some: ThreadSanitizer
 * refuses that by default, though the child only runs quiver's code, which
 * is made for it (docs/API.md "fork()"). */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) {
    return "die_after_fork=0";
}

/* ------------------------------------------------------------ the server */

typedef struct {
    pid_t pid;
    int port;
    char *dir;
    char sock[512];
    char url[600];      /* redis://127.0.0.1:port/0 */
    char unix_url[600]; /* unix://<sock> */
    const char *extra[8];
} server;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static redisContext *admin(const server *s) {
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectUnixWithTimeout(s->sock, tv);
    if (!c || c->err) fail_msg("cannot reach the test's redis-server: %s", c ? c->errstr : "?");
    const char *pw = NULL;
    for (int i = 0; s->extra[i]; i++)
        if (!strcmp(s->extra[i], "--requirepass")) pw = s->extra[i + 1];
    if (pw) freeReplyObject(redisCommand(c, "AUTH %s", pw));
    return c;
}

/* Start redis-server on s->port (a fresh free one when 0), or fail. */
static int try_start(server *s) {
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    const char *argv[32] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                            "--unixsocket", s->sock, "--unixsocketperm", "700", "--dir", s->dir, "--daemonize", "no",
                            "--loglevel", "warning"};
    int n = 19;
    for (int i = 0; s->extra[i]; i++) argv[n++] = s->extra[i];
    argv[n] = NULL;
    unlink(s->sock);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execvp("redis-server", (char **)argv);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) { /* up to 5 s */
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) return 0; /* the port was taken meanwhile */
        struct timeval tv = {1, 0};
        redisContext *c = redisConnectUnixWithTimeout(s->sock, tv);
        int up = c && !c->err;
        redisFree(c);
        if (up) {
            s->pid = pid;
            return 1;
        }
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return 0;
}

static void server_start(server *s) {
    int fixed = s->port != 0;
    for (int attempt = 0; attempt < 20; attempt++) {
        if (!fixed) s->port = qvt_free_port();
        if (try_start(s)) {
            snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d/0", s->port);
            snprintf(s->unix_url, sizeof s->unix_url, "unix://%s", s->sock);
            return;
        }
        if (fixed) sleep_ms(100);
    }
    fail_msg("redis-server did not start");
}

static void server_kill(server *s) {
    if (s->pid <= 0) return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

static int setup_with(void **state, const char **extra) {
    server *s = calloc(1, sizeof *s);
    s->dir = qvt_tempdir("remote");
    snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
    for (int i = 0; extra && extra[i]; i++) s->extra[i] = extra[i];
    server_start(s);
    *state = s;
    return 0;
}

static int setup(void **state) {
    return setup_with(state, NULL);
}

static int setup_auth(void **state) {
    static const char *extra[] = {"--requirepass", "s3cr:t@", NULL};
    return setup_with(state, extra);
}

static int setup_lru(void **state) {
    static const char *extra[] = {"--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru", NULL};
    return setup_with(state, extra);
}

static int setup_full(void **state) {
    static const char *extra[] = {"--maxmemory", "3mb", "--maxmemory-policy", "noeviction", NULL};
    return setup_with(state, extra);
}

static int teardown(void **state) {
    server *s = *state;
    server_kill(s);
    qvt_rmtree(s->dir);
    free(s->dir);
    free(s);
    unsetenv("QUIVER_REDIS_PASSWORD");
    return 0;
}

/* ------------------------------------------------------------ calls */

typedef qvt_call call;

/* Remote caches with LMDB's inline limit, so that results of a few KiB
 * are values by reference, read by a second GET, the path these tests
 * exercise (the tier's own default keeps up to 64 KiB inline). */
static qv_status open_remote(qv_cache **c, const char *url) {
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.inline_limit = 512;
    return qv_cache_open(c, url, &o);
}

/* The encoding of a byte string of n bytes (n >= 256, < 65536). */

static uint8_t *big_result(size_t n, int seed, size_t *len) {
    int unique = seed;
    uint8_t *b = malloc(n + 3);
    b[0] = 0x59;
    b[1] = (uint8_t)(n >> 8);
    b[2] = (uint8_t)n;
    for (size_t i = 0; i < n; i++) b[3 + i] = (uint8_t)(seed + i * 7);
    memcpy(b + 3, &unique, sizeof unique); /* distinct values, not one per seed */
    *len = n + 3;
    return b;
}

static uint64_t stat_of(qv_cache *c, int which) {
    uint64_t v;
    QVT_OK(qv_cache_stat(c, which, &v));
    return v;
}

typedef struct {
    uint8_t *data;
    size_t len;
} got;

static qv_status keep(const void *data, size_t len, void *userdata) {
    got *g = userdata;
    g->data = malloc(len);
    memcpy(g->data, data, len);
    g->len = len;
    return QV_OK;
}

static void expect_hit(qv_cache *c, const call *k, const uint8_t *want, size_t want_len) {
    got g = {0};
    QVT_OK(qv_cache_get_with(c, &k->key, keep, &g));
    assert_int_equal(g.len, want_len);
    assert_memory_equal(g.data, want, want_len);
    free(g.data);
}

static void hex_of(const qv_digest *d, char out[33]) {
    qv_digest_hex(d, out);
}

/* ------------------------------------------------------------ the tests */

static void basics_on(const char *url) {
    qv_cache *c;
    QVT_OK(open_remote(&c, url));
    call a = qvt_make_call("remote.f", 1), b = qvt_make_call("remote.f", 2), other = qvt_make_call("remote.g", 1);
    uint8_t small[1] = {0x07};
    size_t big_len;
    uint8_t *big = big_result(4000, 3, &big_len);
    got g = {0};
    assert_int_equal(qv_cache_get_with(c, &a.key, keep, &g), QV_NOTFOUND);
    assert_int_equal(qv_cache_contains(c, &a.key), QV_NOTFOUND);
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, small, 1, NULL));
    QVT_OK(qv_cache_store(c, &b.key, b.bytes, b.len, big, big_len, NULL)); /* a value by reference */
    QVT_OK(qv_cache_store(c, NULL, other.bytes, other.len, small, 1, NULL));
    QVT_OK(qv_cache_contains(c, &a.key));
    expect_hit(c, &a, small, 1);
    expect_hit(c, &b, big, big_len);
    /* load: the record with the value resolved */
    qv_value *rec;
    QVT_OK(qv_cache_load(c, &b.key, &rec));
    const qv_value *result = NULL;
    for (size_t i = 0; i < qv_value_count(rec); i++) {
        const char *k;
        size_t kl;
        QVT_OK(qv_value_get_text(qv_value_map_key(rec, i), &k, &kl));
        if (kl == 6 && !memcmp(k, "result", 6)) result = qv_value_map_value(rec, i);
    }
    const uint8_t *rb;
    size_t rl;
    assert_non_null(result);
    QVT_OK(qv_value_get_bytes(result, &rb, &rl));
    assert_int_equal(rl, 4000);
    assert_memory_equal(rb, big + 3, 4000);
    qv_value_free(rec);
    /* query */
    qv_iter *it;
    QVT_OK(qv_cache_query(&it, c, "remote.f"));
    assert_int_equal(qv_iter_count(it), 2);
    qv_iter_free(it);
    QVT_OK(qv_cache_query(&it, c, NULL));
    assert_int_equal(qv_iter_count(it), 3);
    qv_iter_free(it);
    QVT_OK(qv_cache_query(&it, c, "nothing"));
    assert_int_equal(qv_iter_count(it), 0);
    qv_iter_free(it);
    /* stats */
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), 3);
    assert_int_equal(stat_of(c, QV_STAT_VALUES), 1);
    assert_int_equal(stat_of(c, QV_STAT_STORES), 3);
    assert_int_equal(stat_of(c, QV_STAT_HITS), 2);
    assert_int_equal(stat_of(c, QV_STAT_MISSES), 1);
    assert_int_equal(stat_of(c, QV_STAT_REMOTE_ERRORS), 0);
    /* evict */
    QVT_OK(qv_cache_evict(c, &a.key));
    assert_int_equal(qv_cache_evict(c, &a.key), QV_NOTFOUND);
    assert_int_equal(qv_cache_get_with(c, &a.key, keep, &g), QV_NOTFOUND);
    uint64_t freed;
    assert_int_equal(qv_cache_gc(c, &freed), QV_EINVAL);
    QVT_OK(qv_cache_sync(c));
    /* another handle sees the same entries */
    qv_cache *again;
    QVT_OK(open_remote(&again, url));
    expect_hit(again, &b, big, big_len);
    qv_cache_close(again);
    free(big);
    qv_cache_close(c);
}

static void basics_tcp(void **state) {
    server *s = *state;
    basics_on(s->url);
}

static void basics_unix(void **state) {
    server *s = *state;
    basics_on(s->unix_url);
}

/* The same bytes as LMDB: a record stored under c:<hex> is the record an
 * LMDB cache stores, and the prefix keeps two caches apart on one server. */
static void keys_and_prefix(void **state) {
    server *s = *state;
    char url[700];
    snprintf(url, sizeof url, "%s?prefix=t%%2Fx:&timeout_ms=500", s->url);
    qv_cache *c, *plain;
    QVT_OK(open_remote(&c, url));
    QVT_OK(open_remote(&plain, s->url));
    assert_string_equal(qv_cache_path(c), url);
    call a = qvt_make_call("remote.f", 1);
    uint8_t small[1] = {0x07};
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, small, 1, NULL));
    assert_int_equal(qv_cache_contains(plain, &a.key), QV_NOTFOUND);
    char hex[33];
    hex_of(&a.key, hex);
    redisContext *r = admin(s);
    redisReply *rep = redisCommand(r, "GET t/x:c:%s", hex);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    /* the LMDB record of the same call */
    char *dir = qvt_tempdir("remote-lmdb");
    qv_cache *local;
    qv_store_info info = QV_STORE_INFO_INIT;
    info.start_ns = 1; /* records differ in start time and duration only: compare their result */
    QVT_OK(qv_cache_open(&local, dir, NULL));
    QVT_OK(qv_cache_store(local, &a.key, a.bytes, a.len, small, 1, &info));
    qv_value *lrec, *rrec;
    QVT_OK(qv_cache_load(local, &a.key, &lrec));
    QVT_OK(qv_value_decode(&rrec, rep->str, rep->len));
    assert_int_equal(qv_value_count(rrec) + 2, qv_value_count(lrec)); /* load adds hits and last_hit_ns */
    qv_value_free(lrec);
    qv_value_free(rrec);
    freeReplyObject(rep);
    redisFree(r);
    qv_cache_close(local);
    qvt_rmtree(dir);
    free(dir);
    qv_cache_close(plain);
    qv_cache_close(c);
}

static void auth(void **state) {
    server *s = *state;
    qv_cache *c;
    /* no password: a clear error at open */
    assert_int_equal(qv_cache_open(&c, s->url, NULL), QV_EIO);
    assert_null(c);
    assert_non_null(strstr(qv_errmsg(), "NOAUTH"));
    char url[700];
    /* the password in the URL, %-encoded; the path hides it */
    snprintf(url, sizeof url, "redis://:s3cr%%3At%%40@127.0.0.1:%d/0", s->port);
    QVT_OK(open_remote(&c, url));
    assert_null(strstr(qv_cache_path(c), "s3cr"));
    call a = qvt_make_call("remote.f", 1);
    uint8_t small[1] = {0x07};
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, small, 1, NULL));
    qv_cache_close(c);
    /* user and password */
    snprintf(url, sizeof url, "redis://default:s3cr%%3At%%40@127.0.0.1:%d/0", s->port);
    QVT_OK(open_remote(&c, url));
    assert_null(strstr(qv_cache_path(c), "s3cr"));
    assert_non_null(strstr(qv_cache_path(c), "default@"));
    qv_cache_close(c);
    /* a wrong password */
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d/0", s->port);
    assert_int_equal(qv_cache_open(&c, url, NULL), QV_EIO);
    assert_null(strstr(qv_errmsg(), "wrong"));
    /* from the environment */
    setenv("QUIVER_REDIS_PASSWORD", "s3cr:t@", 1);
    QVT_OK(open_remote(&c, s->url));
    expect_hit(c, &a, small, 1);
    qv_cache_close(c);
    QVT_OK(open_remote(&c, s->unix_url));
    expect_hit(c, &a, small, 1);
    qv_cache_close(c);
}

/* URLs are never directories, and only two schemes open anything. */
static void urls_are_never_paths(void **state) {
    server *s = *state;
    char *dir = qvt_tempdir("remote-cwd");
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    qv_cache *c;
    char url[700];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", qvt_free_port());
    assert_int_equal(qv_cache_open(&c, url, NULL), QV_EIO);
    assert_non_null(strstr(qv_errmsg(), url));
    assert_int_equal(qv_cache_open(&c, "ftp://x/y", NULL), QV_EINVAL);
    assert_non_null(strstr(qv_errmsg(), "ftp://x/y"));
    assert_int_equal(qv_cache_open(&c, "redis://127.0.0.1:notaport/0", NULL), QV_EINVAL);
    assert_int_equal(qv_cache_open(&c, "redis://127.0.0.1:6379/zero", NULL), QV_EINVAL);
    assert_int_equal(qv_cache_open(&c, "redis://127.0.0.1:6379/0?colour=red", NULL), QV_EINVAL);
    assert_non_null(strstr(qv_errmsg(), "colour"));
    assert_int_equal(qv_cache_open(&c, "redis://127.0.0.1:6379/0?timeout_ms=0", NULL), QV_EINVAL);
    assert_int_equal(qv_cache_open(&c, "redis://%zz@127.0.0.1/0", NULL), QV_EINVAL);
    /* a URL that does not parse never shows its password */
    assert_int_equal(qv_cache_open(&c, "redis://u:s3cret@127.0.0.1:63a9/0", NULL), QV_EINVAL);
    assert_null(strstr(qv_errmsg(), "s3cret"));
    assert_non_null(strstr(qv_errmsg(), "u:***@"));
    assert_int_equal(qv_cache_open(&c, "unix://relative.sock", NULL), QV_EINVAL);
    char bad_sock[700];
    snprintf(bad_sock, sizeof bad_sock, "unix://%s/nothing.sock", dir);
    assert_int_equal(qv_cache_open(&c, bad_sock, NULL), QV_EIO);
    /* db from the query of a unix URL */
    snprintf(url, sizeof url, "%s?db=3", s->unix_url);
    QVT_OK(open_remote(&c, url));
    qv_cache_close(c);
    DIR *d = opendir(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));) entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    assert_int_equal(entries, 0); /* no "redis:", "ftp:" or "unix:" directory */
    assert_int_equal(chdir(cwd), 0);
    qvt_rmtree(dir);
    free(dir);
}

/* The server goes away mid-run: every call returns within the timeout (most
 * at once), the call runtime computes, and the tier comes back by itself. */
typedef struct {
    _Atomic int runs;
    uint8_t result[1];
} spec;

static qv_status body(const void **result, size_t *len, void *userdata) {
    spec *s = userdata;
    atomic_fetch_add(&s->runs, 1);
    *result = s->result;
    *len = 1;
    return QV_OK;
}

static qv_status ignore(const void *data, size_t len, void *userdata) {
    return QV_OK;
}

static void server_dies_and_returns(void **state) {
    server *s = *state;
    qv_cache *c;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.timeout_ms = 300;
    QVT_OK(qv_cache_open(&c, s->url, &o));
    call a = qvt_make_call("remote.f", 1);
    spec sp = {.result = {0x05}};
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, sp.result, 1, NULL));
    server_kill(s);
    int64_t worst = 0;
    int slow = 0;
    for (int i = 0; i < 40; i++) {
        call k = qvt_make_call("remote.f", 100 + i);
        int outcome;
        int64_t t0 = now_ns();
        QVT_OK(qv_call_run(&outcome, c, &k.key, k.bytes, k.len, NULL, ignore, body, &sp));
        int64_t dt = now_ns() - t0;
        assert_int_equal(outcome, QV_EIO); /* computed, not kept */
        worst = dt > worst ? dt : worst;
        slow += dt > 5000000;
        got g = {0};
        t0 = now_ns();
        assert_int_equal(qv_cache_get_with(c, &a.key, keep, &g), QV_EIO);
        dt = now_ns() - t0;
        worst = dt > worst ? dt : worst;
        slow += dt > 5000000;
        sleep_ms(5);
    }
    assert_int_equal(atomic_load(&sp.runs), 40);
    print_message("server down: slowest call %.1f ms (timeout 300 ms), %d of 80 took over 5 ms\n", worst / 1e6, slow);
    assert_true(worst < 300 * 1000000ll + 100000000ll);
    assert_true(slow < 20);
    assert_true(stat_of(c, QV_STAT_REMOTE_ERRORS) > 0);
    /* back on the same port: it reconnects within the backoff's ceiling */
    server_start(s);
    int64_t t0 = now_ns();
    qv_status st;
    while ((st = qv_cache_store(c, &a.key, a.bytes, a.len, sp.result, 1, NULL)) == QV_EIO &&
           now_ns() - t0 < 8000000000ll)
        sleep_ms(20);
    QVT_OK(st);
    print_message("reconnected %.0f ms after the server came back\n", (now_ns() - t0) / 1e6);
    expect_hit(c, &a, sp.result, 1);
    qv_cache_close(c);
}

/* Redis evicts a value (allkeys-lru), or loses one: its record is a miss
 * counted as corrupt, never a wrong answer or a crash. */
static void evicted_values_are_misses(void **state) {
    server *s = *state;
    qv_cache *c;
    QVT_OK(open_remote(&c, s->url));
    call a = qvt_make_call("remote.f", 1);
    size_t len;
    uint8_t *big = big_result(2000, 1, &len);
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, big, len, NULL));
    redisContext *r = admin(s);
    redisReply *keys = redisCommand(r, "KEYS quiver:v:*");
    assert_int_equal(keys->elements, 1);
    freeReplyObject(redisCommand(r, "DEL %s", keys->element[0]->str));
    freeReplyObject(keys);
    got g = {0};
    assert_int_equal(qv_cache_get_with(c, &a.key, keep, &g), QV_NOTFOUND);
    assert_int_equal(stat_of(c, QV_STAT_CORRUPT), 1);
    qv_value *rec;
    assert_int_equal(qv_cache_load(c, &a.key, &rec), QV_ECORRUPT);
    /* the call runtime replaces it */
    spec sp = {.result = {0x09}};
    int outcome;
    QVT_OK(qv_call_run(&outcome, c, &a.key, a.bytes, a.len, NULL, ignore, body, &sp));
    assert_int_equal(outcome, QV_CALL_STORED);
    expect_hit(c, &a, sp.result, 1);
    /* and for real: far more than maxmemory through allkeys-lru */
    int hits = 0, misses = 0;
    for (int i = 0; i < 3000; i++) {
        call k = qvt_make_call("remote.lru", i);
        uint8_t *v = big_result(3000, i, &len);
        QVT_OK(qv_cache_store(c, &k.key, k.bytes, k.len, v, len, NULL));
        free(v);
    }
    for (int i = 0; i < 3000; i++) {
        call k = qvt_make_call("remote.lru", i);
        uint8_t *v = big_result(3000, i, &len);
        qv_status st = qv_cache_get_with(c, &k.key, keep, &g);
        if (st == QV_OK) {
            assert_int_equal(g.len, len);
            assert_memory_equal(g.data, v, len);
            free(g.data);
            hits++;
        } else {
            assert_int_equal(st, QV_NOTFOUND);
            misses++;
        }
        free(v);
    }
    print_message("allkeys-lru, 9 MB into 4 MB: %d hits, %d misses, %d records without their value\n", hits, misses,
                  (int)stat_of(c, QV_STAT_CORRUPT) - 1);
    assert_true(misses > 0 && hits > 0);
    redisFree(r);
    free(big);
    qv_cache_close(c);
}

/* noeviction and full: stores fail softly with a status; hits go on. */
static void full_server_fails_softly(void **state) {
    server *s = *state;
    qv_cache *c;
    QVT_OK(open_remote(&c, s->url));
    call a = qvt_make_call("remote.f", 1);
    uint8_t small[1] = {0x07};
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, small, 1, NULL));
    size_t len;
    qv_status st = QV_OK;
    int i;
    for (i = 0; i < 5000 && st == QV_OK; i++) {
        call k = qvt_make_call("remote.full", i);
        uint8_t *v = big_result(4000, i, &len);
        st = qv_cache_store(c, &k.key, k.bytes, k.len, v, len, NULL);
        free(v);
    }
    assert_int_equal(st, QV_EFULL);
    assert_non_null(strstr(qv_errmsg(), "OOM"));
    expect_hit(c, &a, small, 1);
    /* the refused store left no record pointing at a missing value */
    call k = qvt_make_call("remote.full", i - 1);
    got g = {0};
    assert_int_equal(qv_cache_get_with(c, &k.key, keep, &g), QV_NOTFOUND);
    assert_int_equal(stat_of(c, QV_STAT_CORRUPT), 0);
    /* through the call runtime: the result comes back, unkept */
    spec sp = {.result = {0x09}};
    call fresh = qvt_make_call("remote.full", 100000);
    int outcome;
    uint8_t *v = big_result(4000, 1, &len);
    QVT_OK(qv_call_run(&outcome, c, &fresh.key, fresh.bytes, fresh.len, NULL, ignore, body, &sp));
    free(v);
    assert_true(outcome == QV_EFULL || outcome == QV_CALL_STORED); /* a 1-byte record may still fit */
    assert_int_equal(atomic_load(&sp.runs), 1);
    qv_cache_close(c);
}

/* A read-only replica: hits are served (a lookup only reads),
 * stores fail softly with QV_EREADONLY, calls compute without a lease. */
static void replica_serves_reads_only(void **state) {
    server *s = *state;
    qv_cache *c, *ro;
    QVT_OK(open_remote(&c, s->url));
    call a = qvt_make_call("remote.f", 1), b = qvt_make_call("remote.f", 2);
    size_t len;
    uint8_t *big = big_result(1000, 1, &len);
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, big, len, NULL));
    server replica = {0};
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    replica.dir = qvt_tempdir("remote-replica");
    snprintf(replica.sock, sizeof replica.sock, "%s/redis.sock", replica.dir);
    replica.extra[0] = "--replicaof";
    replica.extra[1] = "127.0.0.1";
    replica.extra[2] = port;
    server_start(&replica);
    QVT_OK(open_remote(&ro, replica.url));
    int64_t t0 = now_ns();
    while (qv_cache_contains(ro, &a.key) == QV_NOTFOUND && now_ns() - t0 < 10000000000ll) sleep_ms(50);
    expect_hit(ro, &a, big, len);
    assert_int_equal(qv_cache_store(ro, &b.key, b.bytes, b.len, big, len, NULL), QV_EREADONLY);
    assert_non_null(strstr(qv_errmsg(), "READONLY"));
    spec sp = {.result = {0x09}};
    int outcome;
    QVT_OK(qv_call_run(&outcome, ro, &b.key, b.bytes, b.len, NULL, ignore, body, &sp));
    assert_int_equal(outcome, QV_EREADONLY);
    assert_int_equal(atomic_load(&sp.runs), 1);
    qv_cache_close(ro);
    server_kill(&replica);
    qvt_rmtree(replica.dir);
    free(replica.dir);
    free(big);
    qv_cache_close(c);
}

/* What anyone with access to the server could write: misses, never crashes. */
static void corrupt_entries_are_misses(void **state) {
    server *s = *state;
    qv_cache *c;
    QVT_OK(open_remote(&c, s->url));
    redisContext *r = admin(s);
    call a = qvt_make_call("remote.f", 1), b = qvt_make_call("remote.f", 2);
    size_t len;
    uint8_t *big = big_result(1000, 1, &len);
    QVT_OK(qv_cache_store(c, &b.key, b.bytes, b.len, big, len, NULL));
    char hex[33], bhex[33];
    hex_of(&a.key, hex);
    hex_of(&b.key, bhex);
    redisReply *good = redisCommand(r, "GET quiver:c:%s", bhex);
    assert_int_equal(good->type, REDIS_REPLY_STRING);
    struct {
        const void *data;
        size_t len;
    } bad[] = {
        {"garbage", 7},
        {"", 0},
        {good->str, good->len / 2},             /* truncated */
        {good->str, 8},                         /* cut inside the reference */
        {"\xa9\x00\xda\x51\x56\x00\x03\x50", 8}, /* a reference without its digest */
    };
    uint64_t corrupt = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        freeReplyObject(redisCommand(r, "SET quiver:c:%s %b", hex, bad[i].data, bad[i].len));
        got g = {0};
        assert_int_equal(qv_cache_get_with(c, &a.key, keep, &g), QV_NOTFOUND);
        assert_int_equal(stat_of(c, QV_STAT_CORRUPT), ++corrupt);
        qv_value *rec;
        assert_int_equal(qv_cache_load(c, &a.key, &rec), QV_ECORRUPT);
        assert_null(rec);
    }
    /* a record whose result reference points at garbage */
    redisReply *vkeys = redisCommand(r, "KEYS quiver:v:*");
    assert_int_equal(vkeys->elements, 1);
    freeReplyObject(redisCommand(r, "SET %s %b", vkeys->element[0]->str, "\xff\xff", (size_t)2));
    got g = {0};
    assert_int_equal(qv_cache_get_with(c, &b.key, keep, &g), QV_NOTFOUND);
    assert_int_equal(stat_of(c, QV_STAT_CORRUPT), ++corrupt);
    /* the next store of the call replaces it, value and all */
    QVT_OK(qv_cache_store(c, &b.key, b.bytes, b.len, big, len, NULL));
    expect_hit(c, &b, big, len);
    /* a value of the wrong type under the key */
    freeReplyObject(redisCommand(r, "DEL quiver:c:%s", hex));
    freeReplyObject(redisCommand(r, "LPUSH quiver:c:%s x", hex));
    assert_int_equal(qv_cache_get_with(c, &a.key, keep, &g), QV_ESTORE);
    qv_iter *it;
    QVT_OK(qv_cache_query(&it, c, "remote.f")); /* skips what it cannot read */
    assert_int_equal(qv_iter_count(it), 1);
    qv_iter_free(it);
    freeReplyObject(vkeys);
    freeReplyObject(good);
    redisFree(r);
    free(big);
    qv_cache_close(c);
}

/* A read-only handle never writes the shared server: not by a store, an
 * eviction or a lease, and not through a stack over it. */
static void read_only_never_writes(void **state) {
    server *s = *state;
    qv_cache *rw, *ro, *local, *stack;
    QVT_OK(open_remote(&rw, s->url));
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags = QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&ro, s->url, &o));
    call a = qvt_make_call("remote.ro", 1), b = qvt_make_call("remote.ro", 2);
    uint8_t one[1] = {0x01};
    QVT_OK(qv_cache_store(rw, &a.key, a.bytes, a.len, one, 1, NULL));
    assert_int_equal(qv_cache_store(ro, &b.key, b.bytes, b.len, one, 1, NULL), QV_EREADONLY);
    assert_int_equal(qv_cache_evict(ro, &a.key), QV_EREADONLY);
    QVT_OK(qv_cache_contains(rw, &a.key));
    char *dir = qvt_tempdir("remote-ro-stack");
    QVT_OK(qv_cache_open(&local, dir, NULL));
    QVT_OK(qv_cache_stack(&stack, local, ro, NULL));
    QVT_OK(qv_cache_store(stack, &b.key, b.bytes, b.len, one, 1, NULL)); /* the local tier has it */
    QVT_OK(qv_cache_sync(stack));
    QVT_OK(qv_cache_contains(local, &b.key));
    assert_int_equal(qv_cache_contains(rw, &b.key), QV_NOTFOUND);
    qv_cache_close(stack);
    qv_cache_close(local);
    qv_cache_close(ro);
    qv_cache_close(rw);
    qvt_rmtree(dir);
    free(dir);
}

/* Redis's count of calls of one command since the last CONFIG RESETSTAT. */
static int command_calls(redisContext *r, const char *name) {
    redisReply *info = redisCommand(r, "INFO commandstats");
    char want[80];
    snprintf(want, sizeof want, "cmdstat_%s:calls=", name);
    char *line = strstr(info->str, want);
    int n = line ? atoi(line + strlen(want)) : 0;
    freeReplyObject(info);
    return n;
}

/* Every command quiver sent since the last CONFIG RESETSTAT, but this
 * connection's own INFO and CONFIG. */
static int commands_sent(redisContext *r) {
    redisReply *info = redisCommand(r, "INFO commandstats");
    int commands = 0;
    for (char *p = info->str; (p = strstr(p, "cmdstat_")); p++) {
        char name[64];
        int calls;
        if (sscanf(p, "cmdstat_%63[^:]:calls=%d", name, &calls) != 2) continue;
        if (strcmp(name, "info") && strcmp(name, "config|resetstat")) commands += calls;
    }
    freeReplyObject(info);
    return commands;
}

/* A stack copies a remote hit into its local tier from the bytes the hit
 * read (the GETs of the record and of its value stored apart), never reading
 * the entry a second time for the copy. */
static void a_stack_copies_what_the_hit_read(void **state) {
    server *s = *state;
    qv_cache *remote, *local, *stack;
    QVT_OK(open_remote(&remote, s->url));
    char *dir = qvt_tempdir("remote-stack-copy");
    QVT_OK(qv_cache_open(&local, dir, NULL));
    QVT_OK(qv_cache_stack(&stack, local, remote, NULL));
    call a = qvt_make_call("remote.copied", 1);
    size_t len;
    uint8_t *big = big_result(1000, 2, &len);
    QVT_OK(qv_cache_store(remote, &a.key, a.bytes, a.len, big, len, NULL));
    redisContext *r = admin(s);
    freeReplyObject(redisCommand(r, "CONFIG RESETSTAT"));
    expect_hit(stack, &a, big, len);
    QVT_OK(qv_cache_sync(stack)); /* waits for the copy */
    QVT_OK(qv_cache_contains(local, &a.key));
    expect_hit(local, &a, big, len);
    assert_int_equal(command_calls(r, "get"), 2);
    assert_int_equal(commands_sent(r), 2);
    redisFree(r);
    free(big);
    qv_cache_close(stack);
    qv_cache_close(local);
    qv_cache_close(remote);
    qvt_rmtree(dir);
    free(dir);
}

/* A hit is one GET when its result is inside the record (up to the inline
 * limit, 64 KiB by default), and a second for a larger result, stored apart:
 * nothing else reaches the server. */
static void one_get_per_lookup(void **state) {
    server *s = *state;
    qv_cache *c;
    QVT_OK(open_remote(&c, s->url));
    call a = qvt_make_call("remote.f", 1), b = qvt_make_call("remote.f", 2);
    size_t len;
    uint8_t one[1] = {0x01}, *big = big_result(1000, 1, &len);
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, one, 1, NULL));
    QVT_OK(qv_cache_store(c, &b.key, b.bytes, b.len, big, len, NULL));
    redisContext *r = admin(s);
    freeReplyObject(redisCommand(r, "CONFIG RESETSTAT"));
    for (int i = 0; i < 10; i++) expect_hit(c, &a, one, 1);
    assert_int_equal(command_calls(r, "get"), 10);
    assert_int_equal(commands_sent(r), 10);
    for (int i = 0; i < 10; i++) expect_hit(c, &b, big, len);
    assert_int_equal(command_calls(r, "get"), 30);
    assert_int_equal(commands_sent(r), 30);
    redisFree(r);
    free(big);
    qv_cache_close(c);
}

/* ------------------------------------------------------------ leases */

typedef struct {
    int counter_fd; /* each run appends one byte here */
    int started_fd; /* a pipe: the body writes one byte when it starts */
    int sleep_ms;
    uint8_t result[1];
} slow_spec;

static qv_status slow_body(const void **result, size_t *len, void *userdata) {
    slow_spec *s = userdata;
    if (s->counter_fd >= 0 && write(s->counter_fd, "x", 1) != 1) return QV_EIO;
    if (s->started_fd >= 0 && write(s->started_fd, "x", 1) != 1) return QV_EIO;
    sleep_ms(s->sleep_ms);
    *result = s->result;
    *len = 1;
    return QV_OK;
}

static qv_status check_result(const void *data, size_t len, void *userdata) {
    return len == 1 && *(const uint8_t *)data == 0x0b ? QV_OK : QV_ECORRUPT;
}

/* Two "machines" (processes sharing nothing but the server) ask for the
 * same slow call: it runs once. */
static void compute_once_across_processes(void **state) {
    server *s = *state;
    char *dir = qvt_tempdir("remote-count");
    char counter[4096];
    snprintf(counter, sizeof counter, "%s/runs", dir);
    enum { PROCS = 3 };
    pid_t kids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        kids[p] = fork();
        assert_true(kids[p] >= 0);
        if (kids[p] == 0) {
            qv_cache *c;
            if (qv_cache_open(&c, s->url, NULL)) _exit(2);
            slow_spec sp = {open(counter, O_WRONLY | O_APPEND | O_CREAT, 0600), -1, 1500, {0x0b}};
            call k = qvt_make_call("remote.slow", 7);
            int outcome;
            qv_status st = qv_call_run(&outcome, c, &k.key, k.bytes, k.len, NULL, check_result, slow_body, &sp);
            qv_cache_close(c);
            _exit(st ? 3 : 0);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int status;
        assert_int_equal(waitpid(kids[p], &status, 0), kids[p]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    struct stat sb;
    assert_int_equal(stat(counter, &sb), 0);
    assert_int_equal(sb.st_size, 1); /* ran once */
    qvt_rmtree(dir);
    free(dir);
}

/* Threads of one process on a bare remote tier wait for the one running a
 * call in the process, woken when it stores, not by polling Redis: the
 * server sees one lease SET (and the store's), whatever the waiters. */
typedef struct {
    qv_cache *cache;
    slow_spec *spec;
    int64_t done_ns;
    qv_status st;
} waiter;

static int64_t mono_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *wait_for_call(void *arg) {
    waiter *w = arg;
    call k = qvt_make_call("remote.threads.slow", 1);
    int outcome;
    w->st = qv_call_run(&outcome, w->cache, &k.key, k.bytes, k.len, NULL, check_result, slow_body, w->spec);
    w->done_ns = mono_now_ns();
    return NULL;
}

static void threads_wait_without_polling(void **state) {
    server *s = *state;
    qv_cache *c;
    QVT_OK(open_remote(&c, s->url));
    char *dir = qvt_tempdir("remote-thread-wait");
    char counter[4096];
    snprintf(counter, sizeof counter, "%s/runs", dir);
    slow_spec sp = {open(counter, O_WRONLY | O_APPEND | O_CREAT, 0600), -1, 300, {0x0b}};
    redisContext *r = admin(s);
    freeReplyObject(redisCommand(r, "CONFIG RESETSTAT"));
    enum { THREADS = 6 };
    pthread_t th[THREADS];
    waiter w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (waiter){c, &sp, 0, QV_OK};
        assert_int_equal(pthread_create(&th[i], NULL, wait_for_call, &w[i]), 0);
    }
    int64_t first = INT64_MAX, last = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        QVT_OK(w[i].st);
        if (w[i].done_ns < first) first = w[i].done_ns;
        if (w[i].done_ns > last) last = w[i].done_ns;
    }
    struct stat sb;
    assert_int_equal(stat(counter, &sb), 0);
    assert_int_equal(sb.st_size, 1); /* ran once */
    /* the lease's SET NX and the record's SET; polling would add a SET NX
     * per waiter every 5-50 ms of the 300 */
    assert_int_equal(command_calls(r, "set"), 2);
    assert_true(last - first < 50 * 1000000ll); /* woken, not at the next poll */
    close(sp.counter_fd);
    redisFree(r);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* The same across machines that each keep a local LMDB directory stacked
 * over the one server: the local lease, then the remote one. */
static void compute_once_across_stacks(void **state) {
    server *s = *state;
    char *dir = qvt_tempdir("remote-stacks");
    char counter[4096];
    snprintf(counter, sizeof counter, "%s/runs", dir);
    enum { PROCS = 3 };
    pid_t kids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        kids[p] = fork();
        assert_true(kids[p] >= 0);
        if (kids[p] == 0) {
            char local_dir[4200];
            snprintf(local_dir, sizeof local_dir, "%s/machine%d", dir, p);
            qv_cache *local, *remote, *stack;
            if (mkdir(local_dir, 0700) || qv_cache_open(&local, local_dir, NULL) ||
                qv_cache_open(&remote, s->url, NULL) || qv_cache_stack(&stack, local, remote, NULL))
                _exit(2);
            slow_spec sp = {open(counter, O_WRONLY | O_APPEND | O_CREAT, 0600), -1, 1500, {0x0b}};
            call k = qvt_make_call("remote.slow", 17);
            int outcome;
            qv_status st = qv_call_run(&outcome, stack, &k.key, k.bytes, k.len, NULL, check_result, slow_body, &sp);
            qv_cache_close(stack);
            qv_cache_close(remote);
            qv_cache_close(local);
            _exit(st ? 3 : 0);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int status;
        assert_int_equal(waitpid(kids[p], &status, 0), kids[p]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    struct stat sb;
    assert_int_equal(stat(counter, &sb), 0);
    assert_int_equal(sb.st_size, 1);
    DIR *d = opendir(dir); /* no lease file or directory named after a URL */
    for (struct dirent *e; (e = readdir(d));) assert_null(strstr(e->d_name, ":"));
    closedir(d);
    qvt_rmtree(dir);
    free(dir);
}

/* A function that makes its own call again (with another cache handle on
 * the same server, so no local table is involved) does not wait for itself. */
typedef struct {
    qv_cache *cache;
    call k;
    int depth;
    uint8_t result[1];
} nested_spec;

static qv_status nested_body(const void **result, size_t *len, void *userdata) {
    nested_spec *n = userdata;
    if (n->depth++ == 0) {
        int outcome;
        qv_call_options o = QV_CALL_OPTIONS_INIT;
        o.wait_timeout_ns = 20000000000ll; /* 20 s: the test fails long before */
        qv_status st =
            qv_call_run(&outcome, n->cache, &n->k.key, n->k.bytes, n->k.len, &o, check_result, nested_body, n);
        if (st) return st;
    }
    *result = n->result;
    *len = 1;
    return QV_OK;
}

static void nested_same_call(void **state) {
    server *s = *state;
    nested_spec n = {NULL, qvt_make_call("remote.nested", 1), 0, {0x0b}};
    QVT_OK(qv_cache_open(&n.cache, s->url, NULL));
    int outcome;
    int64_t t0 = now_ns();
    QVT_OK(qv_call_run(&outcome, n.cache, &n.k.key, n.k.bytes, n.k.len, NULL, check_result, nested_body, &n));
    assert_true(now_ns() - t0 < 2000000000ll);
    assert_int_equal(n.depth, 2);
    qv_cache_close(n.cache);
}

/* The holder dies (SIGKILL, so nothing is given back): a waiter takes over
 * when the lease expires, within its ttl. */
static void dead_holder_is_taken_over(void **state) {
    server *s = *state;
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    call k = qvt_make_call("remote.slow", 8);
    pid_t kid = fork();
    assert_true(kid >= 0);
    if (kid == 0) {
        close(pipefd[0]);
        qv_cache *c;
        if (qv_cache_open(&c, s->url, NULL)) _exit(2);
        slow_spec sp = {-1, pipefd[1], 600000, {0x0b}};
        int outcome;
        qv_call_run(&outcome, c, &k.key, k.bytes, k.len, NULL, check_result, slow_body, &sp);
        _exit(0);
    }
    close(pipefd[1]);
    char byte;
    assert_int_equal(read(pipefd[0], &byte, 1), 1); /* the child runs the body, holding the lease */
    close(pipefd[0]);
    sleep_ms(1500); /* long enough that its renewer has renewed once */
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    qv_cache *c;
    QVT_OK(open_remote(&c, s->url));
    slow_spec sp = {-1, -1, 0, {0x0b}};
    int outcome;
    int64_t t0 = now_ns();
    QVT_OK(qv_call_run(&outcome, c, &k.key, k.bytes, k.len, NULL, check_result, slow_body, &sp));
    double waited = (now_ns() - t0) / 1e9;
    print_message("took over a dead holder's lease after %.2f s (ttl 3 s)\n", waited);
    assert_int_equal(outcome, QV_CALL_STORED);
    assert_true(waited > 0.5 && waited < 3.5);
    /* with the server down, leases are skipped: never a wait */
    server_kill(s);
    call other = qvt_make_call("remote.slow", 9);
    t0 = now_ns();
    QVT_OK(qv_call_run(&outcome, c, &other.key, other.bytes, other.len, NULL, check_result, slow_body, &sp));
    assert_true(now_ns() - t0 < 1100000000ll);
    qv_cache_close(c);
}

/* The server stops answering (SIGSTOP: connections stay open, nothing
 * comes back): the call that meets it waits at most timeout_ms, those after
 * it fail at once, and it comes back after SIGCONT. */
static void server_hangs(void **state) {
    server *s = *state;
    char url[700];
    snprintf(url, sizeof url, "%s?timeout_ms=200", s->url);
    qv_cache *c;
    QVT_OK(open_remote(&c, url));
    call a = qvt_make_call("remote.f", 1);
    spec sp = {.result = {0x05}};
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, sp.result, 1, NULL));
    kill(s->pid, SIGSTOP);
    int64_t worst = 0;
    int slow = 0;
    for (int i = 0; i < 30; i++) {
        call k = qvt_make_call("remote.f", 100 + i);
        int outcome;
        int64_t t0 = now_ns();
        QVT_OK(qv_call_run(&outcome, c, &k.key, k.bytes, k.len, NULL, ignore, body, &sp));
        int64_t dt = now_ns() - t0;
        assert_true(outcome < 0); /* computed, not kept */
        worst = dt > worst ? dt : worst;
        slow += dt > 5000000;
        sleep_ms(10);
    }
    print_message("server hung: slowest call %.1f ms (timeout 200 ms), %d of 30 took over 5 ms\n", worst / 1e6, slow);
    assert_true(worst < 200000000ll + 100000000ll);
    assert_true(slow <= 6); /* the backoff's probes, 50 ms doubling, each up to 200 ms */
    kill(s->pid, SIGCONT);
    int64_t t0 = now_ns();
    qv_status st;
    while ((st = qv_cache_contains(c, &a.key)) == QV_EIO && now_ns() - t0 < 8000000000ll) sleep_ms(20);
    QVT_OK(st);
    qv_cache_close(c);
}

/* The server closes idle connections (its `timeout`): the next calls go
 * on over fresh ones, with no error, no backoff and no SIGPIPE (which kills
 * a C program that has not ignored it) even for a large write. */
static void idle_connections_closed_by_server(void **state) {
    server *s = *state;
    qv_cache *c;
    QVT_OK(open_remote(&c, s->url));
    call a = qvt_make_call("remote.f", 1), b = qvt_make_call("remote.f", 2);
    uint8_t small[1] = {0x07};
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, small, 1, NULL));
    redisContext *r = admin(s);
    freeReplyObject(redisCommand(r, "CONFIG SET timeout 1"));
    redisFree(r);
    sleep_ms(2500);
    expect_hit(c, &a, small, 1);
    sleep_ms(2500);
    uint8_t *huge = malloc(4 << 20); /* a byte string of 4 MiB: many send()s */
    huge[0] = 0x5a;
    huge[1] = 0x00;
    huge[2] = 0x3f;
    huge[3] = 0xff;
    huge[4] = 0xfb;
    memset(huge + 5, 1, (4 << 20) - 5);
    QVT_OK(qv_cache_store(c, &b.key, b.bytes, b.len, huge, 4 << 20, NULL));
    expect_hit(c, &b, huge, 4 << 20);
    assert_int_equal(stat_of(c, QV_STAT_REMOTE_ERRORS), 0);
    free(huge);
    qv_cache_close(c);
}

/* Threads share one handle (its pool): every read is the right value. */
typedef struct {
    qv_cache *cache;
    int id, wrong;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    int n = getenv("QV_SMALL") ? 60 : 300;
    for (int i = 0; i < n; i++) {
        call k = qvt_make_call("remote.threads", i % 50);
        uint8_t result[2] = {0x18, (uint8_t)(24 + i % 50)}; /* canonical: 24 and up take the second byte */
        got g = {0};
        qv_status st = qv_cache_get_with(w->cache, &k.key, keep, &g);
        if (st == QV_OK) w->wrong += g.len != 2 || memcmp(g.data, result, 2) != 0;
        else if (st != QV_NOTFOUND || qv_cache_store(w->cache, &k.key, k.bytes, k.len, result, 2, NULL)) w->wrong++;
        free(g.data);
    }
    return NULL;
}

static void threads_share_a_handle(void **state) {
    server *s = *state;
    qv_cache *c;
    QVT_OK(open_remote(&c, s->url));
    enum { THREADS = 12 }; /* more than the pool keeps */
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){c, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    int wrong = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        wrong += w[i].wrong;
    }
    assert_int_equal(wrong, 0);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), 50);
    assert_int_equal(stat_of(c, QV_STAT_REMOTE_ERRORS), 0);
    qv_cache_close(c);
}

/* A forked child gets connections of its own, never its parent's. */
static void fork_after_open(void **state) {
    server *s = *state;
    qv_cache *c;
    QVT_OK(open_remote(&c, s->url));
    call a = qvt_make_call("remote.f", 1);
    uint8_t small[1] = {0x07};
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, small, 1, NULL));
    pid_t kid = fork();
    assert_true(kid >= 0);
    if (kid == 0) {
        got g = {0};
        int ok = qv_cache_get_with(c, &a.key, keep, &g) == QV_OK && g.len == 1 && g.data[0] == 0x07;
        call b = qvt_make_call("remote.f", 2);
        ok = ok && qv_cache_store(c, &b.key, b.bytes, b.len, small, 1, NULL) == QV_OK;
        _exit(ok ? 0 : 1);
    }
    for (int i = 0; i < 50; i++) expect_hit(c, &a, small, 1); /* the parent's connection, meanwhile */
    int status;
    assert_int_equal(waitpid(kid, &status, 0), kid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    call b = qvt_make_call("remote.f", 2);
    expect_hit(c, &b, small, 1);
    qv_cache_close(c);
}

/* With a secret, remote entries carry the same tags as LMDB ones: a handle
 * with another secret, or an entry changed on the server, is a forged miss;
 * a handle without one sees tagged bytes as corrupt. */
static void signed_entries(void **state) {
    server *s = *state;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.secret = "correct horse";
    o.secret_len = 13;
    o.inline_limit = 512;
    qv_cache *c, *other, *plain;
    QVT_OK(qv_cache_open(&c, s->url, &o));
    assert_int_equal(qv_cache_signed(c), 1);
    call a = qvt_make_call("remote.f", 1), b = qvt_make_call("remote.f", 2);
    uint8_t small[1] = {0x07};
    size_t len;
    uint8_t *big = big_result(1000, 1, &len);
    QVT_OK(qv_cache_store(c, &a.key, a.bytes, a.len, small, 1, NULL));
    QVT_OK(qv_cache_store(c, &b.key, b.bytes, b.len, big, len, NULL));
    expect_hit(c, &a, small, 1);
    expect_hit(c, &b, big, len);
    QVT_OK(qv_cache_contains(c, &b.key));
    qv_value *rec;
    QVT_OK(qv_cache_load(c, &b.key, &rec));
    qv_value_free(rec);
    qv_iter *it;
    QVT_OK(qv_cache_query(&it, c, "remote.f"));
    assert_int_equal(qv_iter_count(it), 2);
    qv_iter_free(it);
    o.secret = "wrong horse";
    o.secret_len = 11;
    QVT_OK(qv_cache_open(&other, s->url, &o));
    got g = {0};
    assert_int_equal(qv_cache_get_with(other, &a.key, keep, &g), QV_NOTFOUND);
    assert_int_equal(qv_cache_contains(other, &a.key), QV_NOTFOUND);
    assert_int_equal(qv_cache_load(other, &a.key, &rec), QV_ECORRUPT);
    assert_int_equal(stat_of(other, QV_STAT_FORGED), 2);
    QVT_OK(open_remote(&plain, s->url));
    assert_int_equal(qv_cache_get_with(plain, &a.key, keep, &g), QV_NOTFOUND);
    assert_int_equal(stat_of(plain, QV_STAT_CORRUPT), 1);
    /* a value changed on the server: its record's hit is forged */
    redisContext *r = admin(s);
    redisReply *vkeys = redisCommand(r, "KEYS quiver:v:*");
    assert_int_equal(vkeys->elements, 1);
    redisReply *v = redisCommand(r, "GET %s", vkeys->element[0]->str);
    v->str[10] ^= 1;
    freeReplyObject(redisCommand(r, "SET %s %b", vkeys->element[0]->str, v->str, (size_t)v->len));
    assert_int_equal(qv_cache_get_with(c, &b.key, keep, &g), QV_NOTFOUND);
    assert_int_equal(stat_of(c, QV_STAT_FORGED), 1);
    assert_int_equal(qv_cache_load(c, &b.key, &rec), QV_ECORRUPT);
    /* and the next store replaces it */
    QVT_OK(qv_cache_store(c, &b.key, b.bytes, b.len, big, len, NULL));
    expect_hit(c, &b, big, len);
    freeReplyObject(v);
    freeReplyObject(vkeys);
    redisFree(r);
    free(big);
    qv_cache_close(plain);
    qv_cache_close(other);
    qv_cache_close(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(basics_tcp, setup, teardown),
        cmocka_unit_test_setup_teardown(basics_unix, setup, teardown),
        cmocka_unit_test_setup_teardown(keys_and_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(auth, setup_auth, teardown),
        cmocka_unit_test_setup_teardown(urls_are_never_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(server_dies_and_returns, setup, teardown),
        cmocka_unit_test_setup_teardown(evicted_values_are_misses, setup_lru, teardown),
        cmocka_unit_test_setup_teardown(full_server_fails_softly, setup_full, teardown),
        cmocka_unit_test_setup_teardown(replica_serves_reads_only, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_entries_are_misses, setup, teardown),
        cmocka_unit_test_setup_teardown(one_get_per_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(a_stack_copies_what_the_hit_read, setup, teardown),
        cmocka_unit_test_setup_teardown(read_only_never_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(compute_once_across_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(compute_once_across_stacks, setup, teardown),
        cmocka_unit_test_setup_teardown(nested_same_call, setup, teardown),
        cmocka_unit_test_setup_teardown(dead_holder_is_taken_over, setup, teardown),
        cmocka_unit_test_setup_teardown(server_hangs, setup, teardown),
        cmocka_unit_test_setup_teardown(idle_connections_closed_by_server, setup, teardown),
        cmocka_unit_test_setup_teardown(threads_share_a_handle, setup, teardown),
        cmocka_unit_test_setup_teardown(threads_wait_without_polling, setup, teardown),
        cmocka_unit_test_setup_teardown(fork_after_open, setup, teardown),
        cmocka_unit_test_setup_teardown(signed_entries, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
