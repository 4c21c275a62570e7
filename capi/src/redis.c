/* The Redis transport: URLs, a pool of hiredis connections, pipelines,
 * scripts, and what happens when the server goes away.
 *
 * A hiredis context is not thread-safe, so a thread borrows one from the
 * pool for one pipeline and gives it back; the pool's mutex guards only the
 * list, never a round trip. Every connect and every read is bounded by the
 * timeout. A failure drops the connection and every idle one (they share
 * the server's fate) and marks the server down: until a backoff (50 ms,
 * doubling to 5 s) has passed, callers fail at once; then one caller at a
 * time tries to connect again, the others still failing at once. So while
 * the server is down no call waits longer than the timeout, and most do not
 * wait at all (docs/DECISIONS.md, "The remote tier"). */
#include "redis.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define POOL_SIZE 8
#define BACKOFF_MIN_NS 50000000ll
#define BACKOFF_MAX_NS 5000000000ll

struct qv_redis {
    qv_redis_url u;
    char *password; /* the URL's, else QUIVER_REDIS_PASSWORD's at open */
    struct timeval tv;
    pthread_mutex_t lock;
    _Atomic pid_t pid; /* connections belong to one process: a child starts afresh */
    _Atomic pid_t fixing; /* the child whose repair a thread has claimed */
    redisContext *idle[POOL_SIZE];
    int nidle;
    int down, probing;
    int64_t down_until_ns, backoff_ns;
    char why[256]; /* the last failure */
};

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* -------------------------------------------------------------------- URLs */

static int hexval(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A percent-decoded copy of s[0..n). */
static qv_status pct_dup(char **out, const char *s, size_t n, const char *url, const char *what) {
    char *d = malloc(n + 1);
    if (!d) return qv__nomem();
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            d[j++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            free(d);
            return qv__error(QV_EINVAL, "%s: a bad %%-escape in the %s", url, what);
        }
        d[j++] = (char)(hi * 16 + lo);
        i += 2;
    }
    d[j] = 0;
    if (strlen(d) != j) {
        free(d);
        return qv__error(QV_EINVAL, "%s: the %s contains a NUL byte", url, what);
    }
    *out = d;
    return QV_OK;
}

static qv_status parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out, const char *url, const char *what) {
    uint64_t v = 0;
    if (n == 0 || n > 10) return qv__error(QV_EINVAL, "%s: the %s is not a number", url, what);
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return qv__error(QV_EINVAL, "%s: the %s is not a number", url, what);
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > max) return qv__error(QV_EINVAL, "%s: the %s is out of range", url, what);
    *out = v;
    return QV_OK;
}

static qv_status parse_query(qv_redis_url *u, const char *q, const char *url) {
    while (*q) {
        size_t n = strcspn(q, "&"), k = strcspn(q, "=");
        if (k >= n) return qv__error(QV_EINVAL, "%s: query parameter \"%.*s\" has no value", url, (int)n, q);
        const char *v = q + k + 1;
        size_t vn = n - k - 1;
        uint64_t x;
        qv_status st;
        if (k == 6 && !memcmp(q, "prefix", 6)) {
            free(u->prefix);
            u->prefix = NULL;
            st = pct_dup(&u->prefix, v, vn, url, "prefix");
        } else if (k == 10 && !memcmp(q, "timeout_ms", 10)) {
            if (!(st = parse_uint(v, vn, 3600000, &x, url, "timeout_ms")) && x == 0)
                st = qv__error(QV_EINVAL, "%s: timeout_ms must be positive", url);
            u->timeout_ms = (uint32_t)x;
        } else if (k == 2 && !memcmp(q, "db", 2)) {
            st = parse_uint(v, vn, 1u << 30, &x, url, "db");
            u->db = (int)x;
        } else {
            return qv__error(QV_EINVAL, "%s: unknown query parameter \"%.*s\" (known: prefix, timeout_ms, db)", url,
                             (int)k, q);
        }
        if (st) return st;
        q += n + (q[n] == '&');
    }
    return QV_OK;
}

/* [user[:password]@] at the start of s[0..n); *used: its length with the '@'. */
static qv_status parse_userinfo(qv_redis_url *u, const char *s, size_t n, const char *url, size_t *used) {
    const char *at = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '@') at = s + i;
    *used = 0;
    if (!at) return QV_OK;
    size_t un = (size_t)(at - s), cn = strcspn(s, ":");
    qv_status st;
    if (cn < un) {
        if (cn && (st = pct_dup(&u->user, s, cn, url, "user name"))) return st;
        if ((st = pct_dup(&u->password, s + cn + 1, un - cn - 1, url, "password"))) return st;
    } else if (un && (st = pct_dup(&u->user, s, un, url, "user name"))) {
        return st;
    }
    *used = un + 1;
    return QV_OK;
}

/* The URL with "user:password@" made "user@", for messages and paths. */
static char *display_of(const char *url, const char *auth, size_t auth_len, int has_password) {
    char *d = strdup(url);
    if (!d || !has_password) return d;
    size_t off = (size_t)(auth - url), colon = strcspn(auth, ":");
    /* drop ":password" (or ":password@" too when there is no user) */
    size_t from = off + colon, to = off + auth_len - 1 + (colon == 0);
    memmove(d + from, d + to, strlen(d + to) + 1);
    return d;
}

void qv__redis_url_free(qv_redis_url *u) {
    if (!u) return;
    free(u->host);
    free(u->socket);
    free(u->user);
    free(u->password);
    free(u->prefix);
    free(u->display);
    memset(u, 0, sizeof *u);
}

static qv_status parse_url(qv_redis_url *u, const char *url, const char *shown) {
    memset(u, 0, sizeof *u);
    u->port = 6379;
    int unix_socket = !strncmp(url, "unix://", 7);
    if (!unix_socket && strncmp(url, "redis://", 8))
        return qv__error(QV_EINVAL, "%s: not a cache URL (redis://host[:port][/db] or unix:///path)", shown);
    const char *rest = url + (unix_socket ? 7 : 8);
    size_t main_len = strcspn(rest, "?"), used;
    qv_status st;
    const char *auth = rest;
    if ((st = parse_userinfo(u, rest, main_len, shown, &used))) goto fail;
    size_t auth_len = used;
    rest += used;
    main_len -= used;
    if (unix_socket) {
        if (main_len < 2 || rest[0] != '/') {
            st = qv__error(QV_EINVAL, "%s: a unix socket URL names an absolute path: unix:///path/to/redis.sock", shown);
            goto fail;
        }
        if ((st = pct_dup(&u->socket, rest, main_len, shown, "socket path"))) goto fail;
    } else {
        size_t hn = strcspn(rest, "/?");
        const char *h = rest, *colon = NULL;
        if (hn && h[0] == '[') { /* [IPv6] */
            const char *close = memchr(h, ']', hn);
            if (!close) {
                st = qv__error(QV_EINVAL, "%s: an IPv6 host is not closed by ']'", shown);
                goto fail;
            }
            if ((size_t)(close - h) + 1 < hn) colon = close + 1;
            if ((st = pct_dup(&u->host, h + 1, (size_t)(close - h) - 1, shown, "host"))) goto fail;
        } else {
            colon = memchr(h, ':', hn);
            size_t name_len = colon ? (size_t)(colon - h) : hn;
            if ((st = pct_dup(&u->host, h, name_len, shown, "host"))) goto fail;
        }
        if (colon) {
            uint64_t port;
            size_t port_len = hn - (size_t)(colon + 1 - h);
            if (*colon != ':' || (st = parse_uint(colon + 1, port_len, 65535, &port, shown, "port"))) {
                if (!st) st = qv__error(QV_EINVAL, "%s: the port is not a number", shown);
                goto fail;
            }
            u->port = (int)port;
        }
        if (!*u->host) {
            free(u->host);
            if (!(u->host = strdup("127.0.0.1"))) goto nomem;
        }
        if (hn < main_len) { /* "/db" or "/" */
            uint64_t db;
            size_t dn = main_len - hn - 1;
            if (dn && (st = parse_uint(rest + hn + 1, dn, 1u << 30, &db, shown, "database number"))) goto fail;
            if (dn) u->db = (int)db;
        }
    }
    if (rest[main_len] == '?' && (st = parse_query(u, rest + main_len + 1, shown))) goto fail;
    if (!u->prefix && !(u->prefix = strdup("quiver:"))) goto nomem;
    if (!(u->display = display_of(url, auth, auth_len, u->password != NULL))) goto nomem;
    return QV_OK;
nomem:
    st = qv__nomem();
fail:
    qv__redis_url_free(u);
    return st;
}

/* The URL with its password made "***", for messages about a URL that did
 * not parse: a typo must not put a password in a log. */
static char *redacted(const char *url) {
    char *d = strdup(url);
    const char *scheme = strstr(url, "://");
    if (!d || !scheme) return d;
    size_t from = (size_t)(scheme + 3 - url), n = strcspn(url + from, "/?");
    const char *at = memchr(url + from, '@', n), *colon = at ? memchr(url + from, ':', (size_t)(at - url) - from) : NULL;
    if (!colon) return d;
    size_t a = (size_t)(colon + 1 - url), b = (size_t)(at - url);
    memcpy(d + a, "***", b - a < 3 ? b - a : 3);
    memmove(d + a + (b - a < 3 ? b - a : 3), d + b, strlen(d + b) + 1);
    return d;
}

qv_status qv__redis_url_parse(qv_redis_url *u, const char *url) {
    char *shown = redacted(url);
    if (!shown) return qv__nomem();
    qv_status st = parse_url(u, url, shown);
    free(shown);
    return st;
}

/* ------------------------------------------------------------ connections */

/* Send what hiredis has buffered with MSG_NOSIGNAL: its own write() would
 * raise SIGPIPE on a connection the server closed, which kills a host that
 * has not ignored it (C and Lua programs do not). */
static int flush(redisContext *c) {
    size_t len = sdslen(c->obuf), done = 0;
    while (done < len) {
        ssize_t n = send(c->fd, c->obuf + done, len - done, MSG_NOSIGNAL);
        if (n >= 0) {
            done += (size_t)n;
        } else if (errno != EINTR) {
            c->err = REDIS_ERR_IO;
            snprintf(c->errstr, sizeof c->errstr, "%s", strerror(errno));
            return REDIS_ERR;
        }
    }
    sdsclear(c->obuf);
    return REDIS_OK;
}

static qv_status simple(redisContext *c, const char *what, int argc, const char **argv, const size_t *len,
                        char *why, size_t why_len) {
    void *reply = NULL;
    if (redisAppendCommandArgv(c, argc, argv, len) != REDIS_OK || flush(c) != REDIS_OK ||
        redisGetReply(c, &reply) != REDIS_OK)
        reply = NULL;
    redisReply *r = reply;
    if (!r) {
        snprintf(why, why_len, "%s: %s", what, c->errstr[0] ? c->errstr : "no reply");
        return QV_EIO;
    }
    qv_status st = QV_OK;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, why_len, "%s refused: %s", what, r->str);
        st = QV_EINVAL;
    }
    freeReplyObject(r);
    return st;
}

/* A new connection, authenticated and on its database; *why says why not. */
static qv_status connect_one(qv_redis *r, redisContext **out, char *why, size_t why_len) {
    *out = NULL;
    redisContext *c = r->u.socket ? redisConnectUnixWithTimeout(r->u.socket, r->tv)
                                   : redisConnectWithTimeout(r->u.host, r->u.port, r->tv);
    if (!c || c->err) {
        snprintf(why, why_len, "cannot connect: %s", c ? c->errstr : "out of memory");
        redisFree(c);
        return QV_EIO;
    }
    qv_status st = QV_OK;
    if (redisSetTimeout(c, r->tv) != REDIS_OK) {
        snprintf(why, why_len, "cannot set the timeout: %s", c->errstr);
        st = QV_EIO;
    }
    if (!st && r->password) {
        const char *argv[3] = {"AUTH", r->u.user ? r->u.user : r->password, r->password};
        size_t len[3] = {4, strlen(argv[1]), strlen(r->password)};
        st = simple(c, "AUTH", r->u.user ? 3 : 2, argv, len, why, why_len);
    }
    if (!st && r->u.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->u.db);
        const char *argv[2] = {"SELECT", db};
        size_t len[2] = {6, strlen(db)};
        st = simple(c, "SELECT", 2, argv, len, why, why_len);
    }
    if (st) {
        redisFree(c);
        return st;
    }
    *out = c;
    return QV_OK;
}

/* After fork(), the parent's connections are its own: the child drops its
 * copies (closing only its descriptors) and starts a pool of its own. The
 * first thread of the child to notice claims the repair with an atomic (the
 * lock may be inherited held); the others wait until it is published, so no
 * thread takes the lock or a parent's connection while it is being redone. */
static void after_fork(qv_redis *r) {
    pid_t me = getpid();
    if (QV_LIKELY(atomic_load_explicit(&r->pid, memory_order_acquire) == me)) return;
    pid_t claimed = atomic_load(&r->fixing);
    if (claimed != me && atomic_compare_exchange_strong(&r->fixing, &claimed, me)) {
        pthread_mutex_init(&r->lock, NULL);
        for (int i = 0; i < r->nidle; i++) redisFree(r->idle[i]);
        r->nidle = 0;
        r->probing = 0;
        atomic_store_explicit(&r->pid, me, memory_order_release);
        return;
    }
    while (atomic_load_explicit(&r->pid, memory_order_acquire) != me) sched_yield();
}

static void drop_idle_locked(qv_redis *r, redisContext **dropped, int *ndropped) {
    for (int i = 0; i < r->nidle; i++) dropped[(*ndropped)++] = r->idle[i];
    r->nidle = 0;
}

/* Mark the server down after a failure (with the lock held); returns 1 when
 * it was up, so the caller warns once per outage. */
static int mark_down_locked(qv_redis *r, const char *why) {
    int was_up = !r->down;
    r->down = 1;
    r->probing = 0;
    r->backoff_ns = r->backoff_ns ? r->backoff_ns * 2 : BACKOFF_MIN_NS;
    if (r->backoff_ns > BACKOFF_MAX_NS) r->backoff_ns = BACKOFF_MAX_NS;
    r->down_until_ns = mono_ns() + r->backoff_ns;
    snprintf(r->why, sizeof r->why, "%s", why);
    return was_up;
}

static void failed(qv_redis *r, redisContext *c, const char *why) {
    redisContext *dropped[POOL_SIZE + 1];
    int n = 0;
    if (c) dropped[n++] = c;
    pthread_mutex_lock(&r->lock);
    drop_idle_locked(r, dropped, &n);
    int warn = mark_down_locked(r, why);
    pthread_mutex_unlock(&r->lock);
    for (int i = 0; i < n; i++) redisFree(dropped[i]);
    if (warn)
        qv__warn("remote tier %s is unreachable (%s); going on without it, and retrying with backoff",
                 r->u.display, why);
}

/* A connection: an idle one (*reused set), else a new one. */
static qv_status borrow(qv_redis *r, redisContext **out, int *reused) {
    after_fork(r);
    pthread_mutex_lock(&r->lock);
    *reused = r->nidle > 0;
    if (r->nidle) {
        *out = r->idle[--r->nidle];
        pthread_mutex_unlock(&r->lock);
        return QV_OK;
    }
    if (r->down && (r->probing || mono_ns() < r->down_until_ns)) {
        char why[sizeof r->why];
        memcpy(why, r->why, sizeof why);
        pthread_mutex_unlock(&r->lock);
        return qv__error(QV_EIO, "remote tier %s is unreachable (%s); retrying with backoff", r->u.display, why);
    }
    int probe = r->down;
    if (probe) r->probing = 1;
    pthread_mutex_unlock(&r->lock);
    char why[sizeof r->why];
    qv_status st = connect_one(r, out, why, sizeof why);
    /* a server that hangs still accepts connections (the kernel does): it
     * is back when it answers */
    if (!st && probe) {
        static const char *ping[1] = {"PING"};
        static const size_t ping_len[1] = {4};
        if ((st = simple(*out, "PING", 1, ping, ping_len, why, sizeof why))) {
            redisFree(*out);
            *out = NULL;
        }
    }
    if (st) {
        failed(r, NULL, why);
        return qv__error(QV_EIO, "remote tier %s is unreachable (%s); retrying with backoff", r->u.display, why);
    }
    if (probe) {
        pthread_mutex_lock(&r->lock);
        r->down = r->probing = 0;
        r->backoff_ns = 0;
        pthread_mutex_unlock(&r->lock);
        qv__warn("remote tier %s is reachable again", r->u.display);
    }
    return QV_OK;
}

static void give_back(qv_redis *r, redisContext *c) {
    pthread_mutex_lock(&r->lock);
    int kept = atomic_load(&r->pid) == getpid() && r->nidle < POOL_SIZE;
    if (kept) r->idle[r->nidle++] = c;
    pthread_mutex_unlock(&r->lock);
    if (!kept) redisFree(c);
}

qv_status qv__redis_open(qv_redis **out, const qv_redis_url *u, uint32_t timeout_ms) {
    *out = NULL;
    qv_redis *r = calloc(1, sizeof *r);
    if (!r) return qv__nomem();
    const char *env = getenv("QUIVER_REDIS_PASSWORD");
    const char *pw = u->password ? u->password : env && *env ? env : NULL;
    r->u.port = u->port;
    r->u.db = u->db;
    r->u.timeout_ms = timeout_ms;
    r->tv.tv_sec = timeout_ms / 1000;
    r->tv.tv_usec = (timeout_ms % 1000) * 1000;
    pthread_mutex_init(&r->lock, NULL);
    atomic_init(&r->pid, getpid());
    atomic_init(&r->fixing, getpid());
    if ((u->host && !(r->u.host = strdup(u->host))) || (u->socket && !(r->u.socket = strdup(u->socket))) ||
        (u->user && !(r->u.user = strdup(u->user))) || (pw && !(r->password = strdup(pw))) ||
        !(r->u.prefix = strdup(u->prefix)) || !(r->u.display = strdup(u->display))) {
        qv__redis_close(r);
        return qv__nomem();
    }
    char why[256];
    redisContext *c;
    qv_status st = connect_one(r, &c, why, sizeof why);
    if (!st) {
        /* a server that wants a password answers NOAUTH only to a command */
        const char *argv[1] = {"PING"};
        size_t len[1] = {4};
        st = simple(c, "PING", 1, argv, len, why, sizeof why);
        if (st) redisFree(c);
        else give_back(r, c);
    }
    if (st) {
        qv__redis_close(r);
        return qv__error(QV_EIO, "%s: %s", u->display, why);
    }
    *out = r;
    return QV_OK;
}

void qv__redis_close(qv_redis *r) {
    if (!r) return;
    /* a forked child frees its copies too: closing its descriptors is all that does */
    for (int i = 0; i < r->nidle; i++) redisFree(r->idle[i]);
    pthread_mutex_destroy(&r->lock);
    free(r->password);
    qv__redis_url_free(&r->u);
    free(r);
}

/* --------------------------------------------------------------- commands */

void qv__redis_arg(qv_redis_cmd *c, const void *data, size_t len) {
    c->argv[c->argc] = data;
    c->len[c->argc++] = len;
}

void qv__redis_cmd(qv_redis_cmd *c, int argc, ...) {
    va_list ap;
    va_start(ap, argc);
    c->argc = 0;
    for (int i = 0; i < argc; i++) {
        const char *s = va_arg(ap, const char *);
        qv__redis_arg(c, s, strlen(s));
    }
    va_end(ap);
}

typedef int (*append_fn)(redisContext *c, size_t i, const void *userdata);

/* Drop every idle connection: the server closed one, so it closed them all. */
static void drop_idle(qv_redis *r) {
    redisContext *dropped[POOL_SIZE];
    int n = 0;
    pthread_mutex_lock(&r->lock);
    drop_idle_locked(r, dropped, &n);
    pthread_mutex_unlock(&r->lock);
    for (int i = 0; i < n; i++) redisFree(dropped[i]);
}

/* n commands out, n replies back, on one borrowed connection. */
static qv_status pipeline(qv_redis *r, size_t n, append_fn append, const void *userdata, redisReply **replies) {
    redisContext *c;
    int reused, retried = 0;
    qv_status st;
again:
    if ((st = borrow(r, &c, &reused))) return st;
    size_t got = 0;
    for (size_t i = 0; i < n; i++)
        if (append(c, i, userdata) != REDIS_OK) goto io;
    if (flush(c) != REDIS_OK) goto io;
    for (; got < n; got++) {
        void *reply;
        if (redisGetReply(c, &reply) != REDIS_OK || !reply) goto io;
        replies[got] = reply;
    }
    give_back(r, c);
    return QV_OK;
io:;
    char why[256];
    int timed_out = c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (timed_out) snprintf(why, sizeof why, "no answer within %u ms", r->u.timeout_ms);
    else snprintf(why, sizeof why, "%s", c->errstr[0] ? c->errstr : "no reply");
    while (got) freeReplyObject(replies[--got]);
    /* An idle connection the server closed (its idle timeout, a restart):
     * once more on a fresh one. Not after a timeout, which would double the
     * wait; every command sent here may be sent twice (the same bytes SET
     * again, reads; a lease SET NX that was applied reads as held by another
     * and is waited out). */
    if (reused && !timed_out && !retried) {
        redisFree(c);
        drop_idle(r);
        retried = 1;
        goto again;
    }
    failed(r, c, why);
    return qv__error(QV_EIO, "remote tier %s: %s", r->u.display, why);
}

static int append_cmd(redisContext *c, size_t i, const void *userdata) {
    const qv_redis_cmd *cmd = (const qv_redis_cmd *)userdata + i;
    return redisAppendCommandArgv(c, cmd->argc, (const char **)cmd->argv, cmd->len);
}

qv_status qv__redis_run(qv_redis *r, const qv_redis_cmd *cmds, size_t n, redisReply **replies) {
    return pipeline(r, n, append_cmd, cmds, replies);
}

typedef struct {
    int argc;
    const char **argv;
    const size_t *len;
} argv_cmd;

static int append_argv(redisContext *c, size_t i, const void *userdata) {
    const argv_cmd *cmd = userdata;
    return redisAppendCommandArgv(c, cmd->argc, cmd->argv, cmd->len);
}

qv_status qv__redis_run_argv(qv_redis *r, int argc, const char **argv, const size_t *len, redisReply **reply) {
    argv_cmd cmd = {argc, argv, len};
    return pipeline(r, 1, append_argv, &cmd, reply);
}

void qv__redis_script_init(qv_redis_script *s, const char *text) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    s->text = text;
    EVP_Digest(text, strlen(text), md, &n, EVP_sha1(), NULL);
    for (unsigned i = 0; i < 20; i++) snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
}

qv_status qv__redis_eval(qv_redis *r, const qv_redis_script *s, int nkeys, qv_redis_cmd *cmd, redisReply **reply) {
    static const char *const digits[] = {"0", "1", "2", "3", "4", "5", "6", "7"};
    cmd->argv[0] = "EVALSHA";
    cmd->len[0] = 7;
    cmd->argv[1] = s->sha;
    cmd->len[1] = 40;
    cmd->argv[2] = digits[nkeys];
    cmd->len[2] = 1;
    qv_status st = qv__redis_run(r, cmd, 1, reply);
    if (st || (*reply)->type != REDIS_REPLY_ERROR || strncmp((*reply)->str, "NOSCRIPT", 8)) return st;
    /* a server that has not seen it (or was restarted): EVAL caches it there */
    freeReplyObject(*reply);
    *reply = NULL;
    cmd->argv[0] = "EVAL";
    cmd->len[0] = 4;
    cmd->argv[1] = s->text;
    cmd->len[1] = strlen(s->text);
    return qv__redis_run(r, cmd, 1, reply);
}

qv_status qv__redis_refused(qv_redis *r, const redisReply *reply, const char *what) {
    const char *msg = reply->type == REDIS_REPLY_ERROR && reply->str ? reply->str : "an unexpected reply";
    qv_status st = !strncmp(msg, "OOM", 3) ? QV_EFULL : !strncmp(msg, "READONLY", 8) ? QV_EREADONLY : QV_ESTORE;
    return qv__error(st, "remote tier %s refused %s: %s", r->u.display, what, msg);
}
