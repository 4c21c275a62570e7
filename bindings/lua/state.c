/* The module's state in each Lua state, and its errors. */
#include "qvlua.h"

/* ------------------------------------------------------------ module state */

const char *const qvlua_mt_names[MT_COUNT] = {
    "quiver.list", "quiver.map", "quiver.bytes", "quiver.set", "quiver.tag", "quiver.bigint", "quiver.ndarray",
    "quiver.tuple", "quiver.memo"};

int qvlua_state_gc(lua_State *L) {
    qvlua_state *S = lua_touserdata(L, 1);
    qv_encoder_free(S->enc);
    qv_decoder_free(S->dec);
    free(S->buf);
    S->enc = NULL;
    S->dec = NULL;
    S->buf = NULL;
    qvlua_queue_release(S->queue);
    S->queue = NULL;
    return 0;
}

qvlua_state *qvlua_get_state(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, QVLUA_STATE_KEY);
    qvlua_state *S = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!S || !S->enc) luaL_error(L, "quiver: the module state is gone (the Lua state is closing)");
    return S;
}

/* The hot functions get the state as their first upvalue. */

/* Our errors start with the status name ("QV_EDECODE: not canonical CBOR at
 * offset 3: ..."), without luaL_error's position, as the wrapped API's do:
 * programs can match "^QV_%u+". */
int qvlua_raise(lua_State *L, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return lua_error(L);
}

int qvlua_status_error(lua_State *L, qv_status st) {
    return qvlua_raise(L, "%s: %s", qv_status_name(st), qv_errmsg());
}

int qvlua_is(qvlua_state *S, lua_State *L, int idx, int which) {
    /* idx must be absolute; a table's metatable compared by identity */
    if (!lua_getmetatable(L, idx)) return 0;
    int r = lua_topointer(L, -1) == S->mt_ptr[which];
    lua_pop(L, 1);
    return r;
}

/* Which marker a table carries: MT_COUNT for none (or a foreign metatable). */
int qvlua_marker(qvlua_state *S, lua_State *L, int idx) {
    if (!lua_getmetatable(L, idx)) return MT_COUNT;
    const void *p = lua_topointer(L, -1);
    lua_pop(L, 1);
    for (int i = 0; i < MT_COUNT; i++)
        if (p == S->mt_ptr[i]) return i;
    return MT_COUNT;
}

void qvlua_push_mt(qvlua_state *S, lua_State *L, int which) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->mt_ref[which]);
}

/* ------------------------------------------------------------------ UTF-8 */

/* Lua strings are bytes: text only when they are valid UTF-8 (RFC 3629:
 * shortest forms, no surrogates, nothing above U+10FFFF). */
