/* The Lua binding's C, shared by its files: the module state, the value
 * mapping, the coroutines' contexts, memos, futures' callbacks and the trees
 * the wrapped C API takes, and what lua.swg's handles, setup and typemaps
 * call. Never installed. */
#ifndef QVLUA_H
#define QVLUA_H

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lauxlib.h"
#include "lua.h"
#include "quiver.h"

#define QVLUA_STATE_KEY "quiver.state"
#define QVLUA_S(L) ((qvlua_state *)lua_touserdata((L), lua_upvalueindex(1)))
#define QVLUA_TRY(L, expr)                                                                                       \
    do {                                                                                                         \
        qv_status st_ = (expr);                                                                                  \
        if (st_) qvlua_status_error((L), st_); /* does not return */                                             \
    } while (0)
#define QVLUA_FRAME_MT "quiver.context"

/* The marker metatables (lists, maps, bytes, ...), by slot in qvlua_state. */
enum { MT_LIST, MT_MAP, MT_BYTES, MT_SET, MT_TAG, MT_BIGINT, MT_NDARRAY, MT_TUPLE, MT_MEMO, MT_COUNT };

/* The handles Lua holds, by kind (the order of lua.swg's qvlua_handles). */
enum { QVLUA_CACHE, QVLUA_FN, QVLUA_FUTURE, QVLUA_POOL, QVLUA_ITER };

/* Futures complete on pool threads, where Lua must not run. Their on_done
 * callbacks only append the registration's id to this queue; quiver.poll()
 * and fut:wait() drain it on the Lua thread. The queue outlives the Lua state
 * if a worker completes a future after the state closed. */
typedef struct qvlua_queue {
    pthread_mutex_t lock;
    int refs;
    lua_Integer *ids;
    size_t n, cap;
} qvlua_queue;

/* A coroutine's context: an immutable snapshot, a captured qv_ctx (context.c). */
typedef struct qvlua_frame {
    qv_ctx *ctx;          /* a reference */
    qv_cache *cache;      /* borrowed from ctx, which holds the cache */
    const void *meta;     /* borrowed from ctx (immutable): its metadata map, or NULL */
    size_t meta_len;
} qvlua_frame;

/* One per Lua state: the reused encoder and decoder, the buffer a hit's bytes
 * are copied into (decoding must happen outside the cache's read transaction,
 * because a Lua error there would skip its end), the marker metatables
 * (registry references, and their addresses for quick identity checks), and
 * the coroutines' context stacks (context.c). */
typedef struct qvlua_state {
    qv_encoder *enc;
    qv_decoder *dec;
    uint8_t *buf;
    size_t cap, len;
    int mt_ref[MT_COUNT];
    const void *mt_ptr[MT_COUNT];
    int pickle; /* the item being decoded holds a Python pickle */
    int exact;  /* byte strings decode to quiver.bytes objects, not strings */
    int rerun_ref; /* registry: {[digest] = true}, the calls an m:rerun ran so far; 0 outside one */
    qvlua_queue *queue;
    int stacks_ref;     /* registry: {[coroutine] = {frame, ...}}, weak keys */
    int running_ref;    /* registry slot keeping the coroutine below alive */
    lua_State *running; /* the coroutine whose top frame is cached here... */
    qvlua_frame *top;   /* ...and that frame; NULL: it has none (the base) */
} qvlua_state;

extern const char *const qvlua_mt_names[MT_COUNT];
int qvlua_state_gc(lua_State *L);
qvlua_state *qvlua_get_state(lua_State *L);
int qvlua_raise(lua_State *L, const char *fmt, ...);
int qvlua_status_error(lua_State *L, qv_status st);
int qvlua_is(qvlua_state *S, lua_State *L, int idx, int which);
int qvlua_marker(qvlua_state *S, lua_State *L, int idx);
void qvlua_push_mt(qvlua_state *S, lua_State *L, int which);
int qvlua_bigint(lua_State *L);
int qvlua_bigint_tostring(lua_State *L);
lua_Integer qvlua_list_len(lua_State *L, int idx);
int qvlua_encode_list(qvlua_state *S, lua_State *L, qv_encoder *enc, int idx, lua_Integer n, int depth);
int qvlua_encode_map(qvlua_state *S, lua_State *L, qv_encoder *enc, int idx, int depth);
int qvlua_encode_value(qvlua_state *S, lua_State *L, qv_encoder *enc, int idx, int depth);
void qvlua_decode(qvlua_state *S, lua_State *L, const void *data, size_t len);
int qvlua_encode_fn(lua_State *L);
int qvlua_decode_fn(lua_State *L);
int qvlua_utf8_valid_fn(lua_State *L);
void qvlua_push_digest(lua_State *L, const qv_digest *d);
int qvlua_digest_fn(lua_State *L);
void qvlua_encode_call_head(qvlua_state *S, lua_State *L, qv_encoder *enc, const char *name, size_t name_len,
                            const char *version, size_t version_len);
const char *qvlua_check_utf8(lua_State *L, int idx, size_t *len, const char *what);
int qvlua_call_digest_fn(lua_State *L);
int qvlua_frame_gc(lua_State *L);
qvlua_frame *qvlua_top(qvlua_state *S, lua_State *L);
void qvlua_context(qvlua_state *S, lua_State *L, qv_cache **cache, const void **meta, size_t *meta_len);
int qvlua_ctx_push(lua_State *L);
int qvlua_ctx_capture(lua_State *L);
int qvlua_ctx_enter(lua_State *L);
int qvlua_ctx_pop(lua_State *L);
int qvlua_ctx_depth(lua_State *L);
int qvlua_ctx_cache(lua_State *L);
int qvlua_memo_gc(lua_State *L);
int qvlua_memo_new(lua_State *L);
int qvlua_memo_call(lua_State *L);
int qvlua_memo_digest(lua_State *L);
int qvlua_memo_load(lua_State *L);
int qvlua_memo_contains(lua_State *L);
int qvlua_memo_info(lua_State *L);
int qvlua_function_stats(lua_State *L);
int qvlua_memo_rerun(lua_State *L);
int qvlua_memo_evict(lua_State *L);
int qvlua_memo_clear(lua_State *L);
int qvlua_memo_records(lua_State *L);
void qvlua_queue_release(qvlua_queue *q);
int qvlua_future_notify(lua_State *L);
int qvlua_completed(lua_State *L);
int qvlua_future_result(lua_State *L);
int qvlua_c_symbol(lua_State *L);
qv_value *qvlua_to_tree(lua_State *L, int idx, int shape);
qv_value **qvlua_tree_arg(lua_State *L, int idx, int shape);
void qvlua_push_tree(lua_State *L, qv_value *v);

/* lua.swg: the handles, checked against their SWIG classes */
void *qvlua_handle_ptr(lua_State *L, int idx, int kind);
void *qvlua_check_handle(lua_State *L, int idx, int kind, const char *fn);

#endif
