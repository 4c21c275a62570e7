/* The active cache and metadata, one stack per coroutine. */
#include "qvlua.h"

/* --------------------------------------------------------------- contexts */

/* The active cache and metadata belong to a coroutine (DESIGN section 12):
 * each has its own stack of frames, so that one yielding inside with_cache
 * changes nothing for the others. A frame is an immutable snapshot, a
 * captured qv_ctx; the C library's thread-local stack is left alone (it is
 * the base every coroutine starts from: what a host program pushed around
 * the Lua code, else the default cache), and is only entered for the length
 * of a call into C code that reads it (qv_fn_call, pool_submit). */

int qvlua_frame_gc(lua_State *L) {
    qvlua_frame *f = lua_touserdata(L, 1);
    qv_ctx_free(f->ctx);
    memset(f, 0, sizeof *f);
    return 0;
}

/* A new frame object on the stack, holding nothing yet. */
static qvlua_frame *qvlua_new_frame(lua_State *L) {
    qvlua_frame *f = lua_newuserdatauv(L, sizeof *f, 0);
    memset(f, 0, sizeof *f);
    luaL_setmetatable(L, QVLUA_FRAME_MT);
    return f;
}

/* Fill f from ctx (whose reference f takes): the cache and metadata it holds. */
static qv_status qvlua_frame_fill(qvlua_frame *f, qv_ctx *ctx) {
    f->ctx = ctx;
    qv_status st = qv_ctx_enter(ctx);
    if (st) return st;
    st = qv_ctx_current(&f->cache, &f->meta, &f->meta_len);
    qv_ctx_pop();
    return st;
}

/* The running coroutine's stack table pushed (made when create), or nil. */
static void qvlua_push_stack(qvlua_state *S, lua_State *L, int create) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->stacks_ref);
    lua_pushthread(L);
    if (lua_rawget(L, -2) == LUA_TNIL && create) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushthread(L);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    lua_remove(L, -2);
}

/* The running coroutine's top frame, or NULL for the base context. Memo calls
 * ask on every call: the answer is kept for the last coroutine that asked
 * (and that coroutine kept alive, so its address cannot be reused meanwhile)
 * until a frame is pushed or popped anywhere. Allocates nothing, so no
 * finalizer runs between a handle's check and its use around it. */
qvlua_frame *qvlua_top(qvlua_state *S, lua_State *L) {
    if (L == S->running) return S->top;
    qvlua_frame *top = NULL;
    qvlua_push_stack(S, L, 0);
    lua_Integer n = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0;
    if (n > 0) {
        lua_rawgeti(L, -1, n);
        top = lua_touserdata(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushthread(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, S->running_ref);
    S->running = L;
    S->top = top;
    return top;
}

static void qvlua_stacks_changed(qvlua_state *S) {
    S->running = NULL;
    S->top = NULL;
}

/* The running coroutine's cache and metadata (meta may be NULL). The cache
 * is borrowed while its frame stays pushed: ask again after running Lua code. */
void qvlua_context(qvlua_state *S, lua_State *L, qv_cache **cache, const void **meta, size_t *meta_len) {
    qvlua_frame *f = qvlua_top(S, L);
    if (!f) {
        QVLUA_TRY(L, qv_ctx_current(cache, meta, meta_len));
        return;
    }
    *cache = f->cache;
    if (meta) {
        *meta = f->meta;
        *meta_len = f->meta_len;
    }
}

/* Push the frame at idx on the running coroutine's stack. */
static void qvlua_push_frame(qvlua_state *S, lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    qvlua_push_stack(S, L, 1);
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
    qvlua_stacks_changed(S);
}

/* ctx_push(cache or nil, meta table or nil): a new frame over the running
 * coroutine's context (cache replaced when given, meta merged over its
 * metadata), pushed on its stack and returned, for ctx_pop. */
int qvlua_ctx_push(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    int with_cache = !lua_isnoneornil(L, 1);
    if (with_cache) qvlua_check_handle(L, 1, QVLUA_CACHE, "with_cache");
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    qvlua_frame *f = qvlua_new_frame(L);
    qv_value *meta = lua_isnil(L, 2) ? NULL : qvlua_to_tree(L, 2, 2);
    /* the cache and the parent after the allocations above, whose finalizers
     * or a foreign __index may have run Lua code; nothing below raises until
     * meta is freed */
    qv_cache *cache = with_cache ? qvlua_handle_ptr(L, 1, QVLUA_CACHE) : NULL;
    if (with_cache && !cache) {
        qv_value_free(meta);
        qvlua_check_handle(L, 1, QVLUA_CACHE, "with_cache");
    }
    qvlua_frame *parent = qvlua_top(S, L);
    qv_status st = parent ? qv_ctx_enter(parent->ctx) : QV_OK;
    if (!st) {
        qv_ctx *ctx = NULL;
        if (!(st = qv_ctx_push(cache, meta))) {
            if (!(st = qv_ctx_capture(&ctx))) st = qv_ctx_current(&f->cache, &f->meta, &f->meta_len);
            f->ctx = ctx;
            qv_ctx_pop();
        }
        if (parent) qv_ctx_pop();
    }
    qv_value_free(meta);
    if (st) return qvlua_status_error(L, st);
    qvlua_push_frame(S, L, -1);
    return 1;
}

/* ctx_capture(): the running coroutine's context as a frame (not pushed). */
int qvlua_ctx_capture(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_frame *f = qvlua_new_frame(L);
    qvlua_frame *top = qvlua_top(S, L);
    qv_ctx *ctx = NULL;
    qv_status st = top ? QV_OK : qv_ctx_capture(&ctx);
    if (top) {
        *f = *top;
        f->ctx = qv_ctx_retain(top->ctx);
    } else if (!st) {
        st = qvlua_frame_fill(f, ctx);
    }
    if (st) return qvlua_status_error(L, st);
    return 1;
}

/* ctx_enter(frame): push a new frame with the context of a captured one. */
int qvlua_ctx_enter(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_frame *src = luaL_checkudata(L, 1, QVLUA_FRAME_MT);
    qvlua_frame *f = qvlua_new_frame(L);
    *f = *src;
    f->ctx = qv_ctx_retain(src->ctx);
    qvlua_push_frame(S, L, -1);
    return 1;
}

/* ctx_pop(frame [, coroutine]): remove frame, and whatever was pushed above
 * it and left there, from the coroutine's stack (the running one when not
 * given). false when the frame is no longer on it. */
int qvlua_ctx_pop(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    luaL_checkudata(L, 1, QVLUA_FRAME_MT);
    lua_State *co = lua_isnoneornil(L, 2) ? L : lua_tothread(L, 2);
    if (!co) return luaL_typeerror(L, 2, "coroutine");
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->stacks_ref);
    if (co == L) lua_pushthread(L);
    else lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    lua_Integer n = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0, at = n;
    for (; at > 0; at--) {
        lua_rawgeti(L, -1, at);
        int same = lua_rawequal(L, -1, 1);
        lua_pop(L, 1);
        if (same) break;
    }
    for (lua_Integer i = n; at > 0 && i >= at; i--) {
        lua_pushnil(L);
        lua_rawseti(L, -2, i);
    }
    qvlua_stacks_changed(S);
    lua_pushboolean(L, at > 0);
    return 1;
}

/* ctx_depth(): frames on the running coroutine's stack. */
int qvlua_ctx_depth(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_push_stack(S, L, 0);
    lua_pushinteger(L, lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0);
    return 1;
}

/* ctx_cache(): the path of the running coroutine's active cache (":memory:"
 * for a memory cache), its stored calls and its bytes: what tostring(memo)
 * says it would use now. */
int qvlua_ctx_cache(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qv_cache *cache;
    qvlua_context(S, L, &cache, NULL, NULL);
    uint64_t entries = 0, bytes = 0;
    QVLUA_TRY(L, qv_cache_stat(cache, QV_STAT_ENTRIES, &entries));
    QVLUA_TRY(L, qv_cache_stat(cache, QV_STAT_BYTES, &bytes));
    lua_pushstring(L, qv_cache_path(cache));
    lua_pushinteger(L, (lua_Integer)entries);
    lua_pushinteger(L, (lua_Integer)bytes);
    return 3;
}

static int push_function(const char *name, size_t len, const qv_function_stats *f, void *userdata) {
    lua_State *L = userdata;
    lua_pushlstring(L, name, len);
    lua_createtable(L, 0, 6);
    const struct {
        const char *key;
        uint64_t n;
    } counts[] = {{"hits", f->hits},           {"misses", f->misses},   {"stores", f->stores},
                  {"evictions", f->evictions}, {"corrupt", f->corrupt}, {"saved_ns", f->saved_ns}};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        lua_pushinteger(L, (lua_Integer)counts[i].n);
        lua_setfield(L, -2, counts[i].key);
    }
    lua_rawset(L, -3);
    return 0;
}

/* function_stats(cache): {name = {hits=, misses=, stores=, evictions=,
 * corrupt=, saved_ns=}}, what every process counted by function. The stack
 * has room for the callback's few slots, so nothing raises inside it. */
int qvlua_function_stats(lua_State *L) {
    qv_cache *cache = qvlua_handle_ptr(L, 1, QVLUA_CACHE);
    if (!cache) qvlua_check_handle(L, 1, QVLUA_CACHE, "function_stats");
    luaL_checkstack(L, 8, "function_stats");
    lua_newtable(L);
    QVLUA_TRY(L, qv_cache_function_stats(cache, push_function, L));
    return 1;
}
