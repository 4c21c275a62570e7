/* Futures' callbacks, delivered on the Lua thread. */
#include "qvlua.h"

/* ---------------------------------------------------- futures' callbacks */

typedef struct {
    qvlua_queue *q;
    lua_Integer id;
} qvlua_done;

void qvlua_queue_release(qvlua_queue *q) {
    if (!q) return;
    pthread_mutex_lock(&q->lock);
    int last = --q->refs == 0;
    pthread_mutex_unlock(&q->lock);
    if (!last) return;
    pthread_mutex_destroy(&q->lock);
    free(q->ids);
    free(q);
}

static void qvlua_on_done(qv_future *f, void *userdata) {
    qvlua_done *d = userdata;
    qvlua_queue *q = d->q;
    pthread_mutex_lock(&q->lock);
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        lua_Integer *ids = realloc(q->ids, cap * sizeof *ids);
        if (ids) {
            q->ids = ids;
            q->cap = cap;
        }
    }
    if (q->n < q->cap) q->ids[q->n++] = d->id;
    pthread_mutex_unlock(&q->lock);
}

static void qvlua_done_free(void *userdata) {
    qvlua_done *d = userdata;
    qvlua_queue_release(d->q);
    free(d);
}

/* future_notify(fut, id): queue id when fut completes. */
int qvlua_future_notify(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qv_future *f = qvlua_check_handle(L, 1, QVLUA_FUTURE, "future_notify");
    lua_Integer id = luaL_checkinteger(L, 2);
    qvlua_done *d = malloc(sizeof *d);
    if (!d) return qvlua_raise(L, "QV_ENOMEM: out of memory");
    d->q = S->queue;
    d->id = id;
    pthread_mutex_lock(&S->queue->lock);
    S->queue->refs++;
    pthread_mutex_unlock(&S->queue->lock);
    QVLUA_TRY(L, qv_future_on_done(f, qvlua_on_done, d, qvlua_done_free));
    return 0;
}

/* completed(): the ids queued since the last call, in completion order. */
int qvlua_completed(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_queue *q = S->queue;
    lua_newtable(L);
    pthread_mutex_lock(&q->lock);
    size_t n = q->n;
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, q->ids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    q->n = 0;
    pthread_mutex_unlock(&q->lock);
    return 1;
}

/* future_result(fut): the decoded result of a done future; its status as a
 * Lua error when it failed or was cancelled. */
int qvlua_future_result(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qv_future *f = qvlua_check_handle(L, 1, QVLUA_FUTURE, "future_result");
    const void *data;
    size_t len;
    QVLUA_TRY(L, qv_future_result(f, &data, &len));
    /* borrowed while f is open: copied before decoding, whose allocations may
     * run a finalizer that closes it */
    lua_pushlstring(L, data, len);
    qvlua_decode(S, L, lua_tostring(L, -1), len);
    return 1;
}
