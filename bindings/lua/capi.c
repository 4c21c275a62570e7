/* What the wrapped C API needs from Lua: C functions by symbol, and value
 * trees from Lua values. */
#include "qvlua.h"

/* ---------------------------------------------- C functions for the tests */

/* A few C functions Lua can memoize through qv_fn_new_c and run on the pool:
 * what a C library's functions look like to quiver. */
/* c_symbol(library, symbol): the address of a C function in a shared
 * library (a path; nil: the program and what it has loaded, libc included),
 * for qv_fn_new_c. The library is never unloaded: a memoized function may be
 * called, from any thread, until the process ends. */
int qvlua_c_symbol(lua_State *L) {
    const char *lib = luaL_optstring(L, 1, NULL), *sym = luaL_checkstring(L, 2);
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) return qvlua_raise(L, "QV_EINVAL: cannot load %s: %s", lib ? lib : "the program", dlerror());
    dlerror();
    void *p = dlsym(h, sym);
    const char *err = dlerror();
    if (err || !p) return qvlua_raise(L, "QV_EINVAL: no C function '%s' in %s", sym, lib ? lib : "the program");
    lua_pushlightuserdata(L, p);
    return 1;
}

/* ------------------------------------------------- trees for the C API */

/* A tree from the Lua value at idx, for the wrapped functions that take a
 * qv_value: encoded by the fast path, then decoded by the core. as_list makes
 * any table a list (arguments), as_map any table a map (kwargs, metadata). */
qv_value *qvlua_to_tree(lua_State *L, int idx, int shape) {
    qvlua_state *S = qvlua_get_state(L);
    idx = lua_absindex(L, idx);
    qv_encoder_reset(S->enc);
    if (shape == 1 && lua_istable(L, idx)) qvlua_encode_list(S, L, S->enc, idx, qvlua_list_len(L, idx), 1);
    else if (shape == 2 && lua_istable(L, idx)) qvlua_encode_map(S, L, S->enc, idx, 1);
    else qvlua_encode_value(S, L, S->enc, idx, 0);
    const void *data;
    size_t len;
    QVLUA_TRY(L, qv_encoder_finish(S->enc, &data, &len));
    qv_value *v = NULL;
    QVLUA_TRY(L, qv_value_decode(&v, data, len));
    return v;
}

static int qvlua_tree_gc(lua_State *L) {
    qv_value **box = lua_touserdata(L, 1);
    qv_value_free(*box);
    *box = NULL;
    return 0;
}

/* The tree of the Lua value at idx (shape as for qvlua_to_tree) in a box
 * left on the stack, which frees it when collected unless taken before. */
qv_value **qvlua_tree_arg(lua_State *L, int idx, int shape) {
    idx = lua_absindex(L, idx);
    qv_value **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    if (luaL_newmetatable(L, "quiver.tree")) {
        lua_pushcfunction(L, qvlua_tree_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "quiver.tree");
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    *box = qvlua_to_tree(L, idx, shape);
    return box;
}

/* Push a tree the library handed over as a Lua value, freeing it first: the
 * encoding is moved into a Lua string, so a decoding error leaks nothing. */
void qvlua_push_tree(lua_State *L, qv_value *v) {
    if (!v) {
        lua_pushnil(L);
        return;
    }
    qvlua_state *S = qvlua_get_state(L);
    void *data;
    size_t len;
    qv_status st = qv_value_encode(v, &data, &len);
    qv_value_free(v);
    if (st) qvlua_status_error(L, st);
    lua_pushlstring(L, data, len);
    qv_free(data);
    const char *s = lua_tostring(L, -1);
    qvlua_decode(S, L, s, len);
    lua_remove(L, -2);
}
