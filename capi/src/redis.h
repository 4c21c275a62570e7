/* The Redis transport of the remote tier (redis.c): a parsed URL, and a
 * small pool of hiredis connections to one server that any thread may use.
 * It knows nothing of quiver's keys (remote.c does). */
#ifndef QV_REDIS_H
#define QV_REDIS_H

#include <hiredis/hiredis.h>

#include "internal.h"

typedef struct {
    char *host;     /* NULL for a unix socket */
    int port;
    char *socket;   /* the unix socket's path, or NULL */
    char *user;     /* NULL: AUTH with the password alone */
    char *password; /* NULL: QUIVER_REDIS_PASSWORD, else none */
    int db;
    char *prefix;   /* "quiver:" unless the URL says */
    uint32_t timeout_ms; /* 0: not given */
    char *display;  /* the URL without its password */
} qv_redis_url;

/* Parse redis:// and unix:// URLs (docs/API.md); QV_EINVAL names what is wrong. */
qv_status qv__redis_url_parse(qv_redis_url *u, const char *url);
void qv__redis_url_free(qv_redis_url *u);

typedef struct qv_redis qv_redis;

/* A pool for the server of u (copied), whose every connect and round trip is
 * bounded by timeout_ms. It connects once to find out whether the server
 * answers (and takes the password): QV_EIO or QV_EINVAL when not. */
qv_status qv__redis_open(qv_redis **out, const qv_redis_url *u, uint32_t timeout_ms);
void qv__redis_close(qv_redis *r);

/* One command: its words as byte strings. */
#define QV_REDIS_MAX_ARGS 8
typedef struct {
    int argc;
    const char *argv[QV_REDIS_MAX_ARGS];
    size_t len[QV_REDIS_MAX_ARGS];
} qv_redis_cmd;

void qv__redis_cmd(qv_redis_cmd *c, int argc, ...); /* NUL-terminated strings */
void qv__redis_arg(qv_redis_cmd *c, const void *data, size_t len);

/* Send n commands in one pipeline and read their n replies into replies (the
 * caller frees each with freeReplyObject). A reply may be an error reply
 * (a command Redis refused): that is QV_OK here. QV_EIO when the server
 * cannot be reached, times out or drops the connection; while it is down
 * this fails at once, but for one caller at a time that tries again after a
 * backoff. */
qv_status qv__redis_run(qv_redis *r, const qv_redis_cmd *cmds, size_t n, redisReply **replies);

/* One command of any number of words. */
qv_status qv__redis_run_argv(qv_redis *r, int argc, const char **argv, const size_t *len, redisReply **reply);

/* A Lua script sent by its SHA-1 (EVALSHA), and by its text (EVAL) when the
 * server does not have it yet. */
typedef struct {
    const char *text;
    char sha[41];
} qv_redis_script;
void qv__redis_script_init(qv_redis_script *s, const char *text);
/* EVALSHA with keys and args given after the script in cmd (cmd->argv[0..2]
 * are filled here: leave three slots at the start, argc counting them). */
qv_status qv__redis_eval(qv_redis *r, const qv_redis_script *s, int nkeys, qv_redis_cmd *cmd, redisReply **reply);

/* The status for an error reply: OOM is QV_EFULL, READONLY QV_EREADONLY,
 * anything else QV_ESTORE; with a message naming what. */
qv_status qv__redis_refused(qv_redis *r, const redisReply *reply, const char *what);

#endif
