/* Memoized Lua functions: the hit in one crossing, the miss through the
 * call runtime. */
#include "qvlua.h"

/* ------------------------------------------------------------------ memos */

/* A memoized Lua function: a full userdata (its user value is the body)
 * whose metatable's __call is memo_call, so a hit is one crossing: encode
 * the call, digest it, look it up in the thread's active cache, copy the
 * result out of the read transaction and decode it. */
typedef struct qvlua_memo {
    char *name, *version;
    size_t name_len, version_len;
    uint64_t skip;         /* argument positions left out of the key */
    uint32_t call_flags;   /* QV_CALL_NO_DEDUP, or 0 */
    int64_t wait_ns;       /* qv_call_options.wait_timeout_ns */
    lua_Integer hits, misses;
    /* The call's encoding up to its argument list (list head, marker, name,
     * version), made once by qv_encoder_call_head for the hit path's own
     * encoder; NULL when the name is too long for it. */
    uint8_t *prefix;
    size_t prefix_n;
} qvlua_memo;

static qvlua_memo *qvlua_checkmemo(qvlua_state *S, lua_State *L, int idx) {
    qvlua_memo *m = lua_touserdata(L, idx);
    if (!m || !qvlua_is(S, L, idx, MT_MEMO)) luaL_typeerror(L, idx, "quiver memo");
    return m;
}

int qvlua_memo_gc(lua_State *L) {
    qvlua_memo *m = lua_touserdata(L, 1);
    free(m->name);
    free(m->version);
    free(m->prefix);
    m->name = m->version = NULL;
    m->prefix = NULL;
    return 0;
}

/* ------------------------------------------------- the hit path's encoder */

/* Most hits are calls of a few integers and short strings. Their encoding
 * is the prefix, the argument list and an empty map, written here straight
 * into a stack buffer and hashed in one shot: the general encoder (call
 * head's UTF-8 check of the name, per-item bookkeeping, the map sort) is a
 * quarter of such a hit. Each item is written exactly as qvlua_encode_value
 * writes it (DESIGN section 3); anything else takes the general path. */
#define QVLUA_FAST_MAX 512

/* The key of m called with the arguments at 2..top: 1, or 0 when one of
 * them is not an integer, a string, a boolean or nil, or they do not fit. */
static int qvlua_fast_key(lua_State *L, qvlua_memo *m, int top, qv_digest *key) {
    uint8_t buf[QVLUA_FAST_MAX];
    int nargs = top - 1, kept = 0;
    for (int i = 0; i < nargs; i++) kept += !(i < 64 && (m->skip >> i & 1));
    size_t n = m->prefix_n;
    memcpy(buf, m->prefix, n);
    n += qv_cbor_head(buf + n, 4, (uint64_t)kept);
    for (int i = 0; i < nargs; i++) {
        if (i < 64 && (m->skip >> i & 1)) continue;
        if (n + 10 > QVLUA_FAST_MAX) return 0;
        int idx = 2 + i;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            buf[n++] = 0xf6;
            break;
        case LUA_TBOOLEAN:
            buf[n++] = lua_toboolean(L, idx) ? 0xf5 : 0xf4;
            break;
        case LUA_TNUMBER: {
            if (!lua_isinteger(L, idx)) return 0; /* a float */
            lua_Integer v = lua_tointeger(L, idx);
            n += v >= 0 ? qv_cbor_head(buf + n, 0, (uint64_t)v) : qv_cbor_head(buf + n, 1, (uint64_t)(-(v + 1)));
            break;
        }
        case LUA_TSTRING: {
            size_t len;
            const char *str = lua_tolstring(L, idx, &len);
            if (n + 10 + len > QVLUA_FAST_MAX) return 0;
            n += qv_cbor_head(buf + n, qv_utf8_valid(str, len) ? 3 : 2, (uint64_t)len);
            memcpy(buf + n, str, len);
            n += len;
            break;
        }
        default:
            return 0;
        }
    }
    buf[n++] = 0xa0; /* no keyword arguments: the empty map */
    qv_digest_bytes(key, buf, n);
    return 1;
}

/* The prefix of m's calls, when it leaves room for arguments. An encoder of
 * its own: a memo may be made while the state's encoder is mid-call (from a
 * metamethod the encoder ran). */
static void qvlua_memo_make_prefix(lua_State *L, qvlua_memo *m) {
    qv_encoder *enc;
    if (qv_encoder_new(&enc)) qvlua_raise(L, "QV_ENOMEM: out of memory");
    /* the call with no arguments: the prefix, then [] and {} */
    const void *data;
    size_t len;
    qv_status st = qv_encoder_call_head(enc, m->name, m->name_len, m->version, m->version_len);
    if (!st) st = qv_encoder_list(enc, 0);
    if (!st) st = qv_encoder_map_begin(enc);
    if (!st) st = qv_encoder_map_end(enc);
    if (!st) st = qv_encoder_finish(enc, &data, &len);
    if (!st && len >= 2 && len + 64 <= QVLUA_FAST_MAX && !memcmp((const uint8_t *)data + len - 2, "\x80\xa0", 2)) {
        if ((m->prefix = malloc(len - 2))) {
            memcpy(m->prefix, data, len - 2);
            m->prefix_n = len - 2;
        }
    }
    qv_encoder_free(enc);
    if (st) qvlua_status_error(L, st);
    /* no room for the prefix: every call takes the general path */
}

/* quiver_core.memo_new(name, version, fn, skip, dedup, wait_timeout): the
 * callable memo; dedup false runs every concurrent miss; wait_timeout is in
 * seconds (nil: the default, 10 minutes; 0: never wait). */
int qvlua_memo_new(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    size_t nl, vl = 0;
    const char *name = qvlua_check_utf8(L, 1, &nl, "name");
    const char *version = lua_isnoneornil(L, 2) ? NULL : qvlua_check_utf8(L, 2, &vl, "version");
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_Integer skip = luaL_optinteger(L, 4, 0);
    int dedup = lua_isnoneornil(L, 5) || lua_toboolean(L, 5);
    lua_Number wait = luaL_optnumber(L, 6, -1);
    if (!lua_isnoneornil(L, 6) && !(wait >= 0)) return luaL_argerror(L, 6, "wait_timeout must be >= 0 seconds");
    qvlua_memo *m = lua_newuserdatauv(L, sizeof *m, 1);
    memset(m, 0, sizeof *m);
    qvlua_push_mt(S, L, MT_MEMO);
    lua_setmetatable(L, -2);
    if (!(m->name = strdup(name)) || (version && !(m->version = strdup(version))))
        return qvlua_raise(L, "QV_ENOMEM: out of memory");
    m->name_len = nl;
    m->version_len = vl;
    m->skip = (uint64_t)skip;
    m->call_flags = dedup ? 0 : QV_CALL_NO_DEDUP;
    /* nil: 0, the runtime's default; 0 s: never wait, which it spells -1 */
    m->wait_ns = wait < 0 ? 0 : wait * 1e9 >= 1 ? (int64_t)(wait * 1e9) : -1;
    qvlua_memo_make_prefix(L, m);
    lua_pushvalue(L, 3);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* Encode the call of m with the arguments at first..top into enc. */
static void qvlua_memo_encode(qvlua_state *S, lua_State *L, qv_encoder *enc, qvlua_memo *m, int first, int top) {
    if (!m->name) qvlua_raise(L, "QV_ECLOSED: the memo was collected");
    qvlua_encode_call_head(S, L, enc, m->name, m->name_len, m->version, m->version_len);
    int nargs = top - first + 1, kept = 0;
    for (int i = 0; i < nargs; i++) kept += !(i < 64 && (m->skip >> i & 1));
    QVLUA_TRY(L, qv_encoder_list(enc, (uint64_t)kept));
    for (int i = 0; i < nargs; i++) {
        if (i < 64 && (m->skip >> i & 1)) continue;
        /* An argument that can never be encoded is named here, where its
         * memo and position are known; one nested in a table is named by
         * the encoder alone. */
        int t = lua_type(L, first + i);
        if (t == LUA_TFUNCTION || t == LUA_TUSERDATA || t == LUA_TTHREAD ||
            (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, first + i)))
            qvlua_raise(L, "QV_EENCODE: %s: argument %d is a Lua %s, which cannot be cached; pass ignore = {%d} "
                        "to quiver.memo, or a value quiver can encode", m->name, i + 1, lua_typename(L, t), i + 1);
        qvlua_encode_value(S, L, enc, first + i, 1);
    }
    QVLUA_TRY(L, qv_encoder_map_begin(enc));
    QVLUA_TRY(L, qv_encoder_map_end(enc));
}

/* The call digest of m with the arguments at 2..top; large byte strings are
 * hashed in place, not copied. */
static void qvlua_memo_key(qvlua_state *S, lua_State *L, qvlua_memo *m, int top, qv_digest *key) {
    qv_encoder_reset_for_digest(S->enc);
    qvlua_memo_encode(S, L, S->enc, m, 2, top);
    QVLUA_TRY(L, qv_encoder_digest(S->enc, key));
}

static qv_status qvlua_copy_result(const void *data, size_t len, void *userdata) {
    qvlua_state *S = userdata;
    if (len > S->cap) {
        size_t cap = S->cap ? S->cap : 256;
        while (cap < len) cap *= 2;
        uint8_t *b = realloc(S->buf, cap);
        if (!b) return QV_ENOMEM;
        S->buf = b;
        S->cap = cap;
    }
    memcpy(S->buf, data, len);
    S->len = len;
    return QV_OK;
}

static int64_t qvlua_now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Look the encoded call up; push the result and return 1 on a hit, 0 on a miss. */
static int qvlua_lookup(qvlua_state *S, lua_State *L, qv_cache *cache, const qv_digest *key) {
    qv_status st = qv_cache_get_with(cache, key, qvlua_copy_result, S);
    if (st == QV_NOTFOUND) return 0;
    if (st) qvlua_status_error(L, st);
    qvlua_decode(S, L, S->buf, S->len);
    return 1;
}

/* A Lua memo's miss, as qv_call_run runs it. Nothing in Lua may unwind
 * through the runtime (its lease would never be released): the body and the
 * encoding of its result run under lua_pcall, and an error is raised again
 * once qv_call_run has returned. */
typedef struct {
    qvlua_state *S;
    lua_State *L;
    int fn, nargs; /* the body at fn, its arguments above it */
    int result;    /* the body's result on the stack, 0 until it ran */
    int raised;    /* the body raised: its error object is on top */
} qvlua_run;

static int qvlua_encode_result(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qv_encoder_reset(S->enc);
    qvlua_encode_value(S, L, S->enc, 1, 0);
    return 0;
}

static qv_status qvlua_run_body(const void **result, size_t *len, void *userdata) {
    qvlua_run *r = userdata;
    lua_State *L = r->L;
    for (int i = 0; i <= r->nargs; i++) lua_pushvalue(L, r->fn + i);
    if (lua_pcall(L, r->nargs, 1, 0) != LUA_OK) {
        r->raised = 1;
        return qv_error_set(QV_EFAILED, "the Lua function raised");
    }
    r->result = lua_gettop(L);
    lua_pushlightuserdata(L, r->S); /* QVLUA_S's upvalue */
    lua_pushcclosure(L, qvlua_encode_result, 1);
    lua_pushvalue(L, r->result);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        qv_error_set(QV_EENCODE, msg ? msg : "the result cannot be encoded");
        lua_pop(L, 1);
        return QV_EENCODE;
    }
    return qv_encoder_finish(r->S->enc, result, len) ? QV_EENCODE : QV_OK;
}

static qv_status qvlua_run_hit(const void *data, size_t len, void *userdata) {
    return qvlua_copy_result(data, len, ((qvlua_run *)userdata)->S);
}

/* A result not kept: warned once per cache when read-only, else each time. */
static void qvlua_warn_unstored(lua_State *L, qvlua_memo *m, qv_cache *cache, int outcome) {
    if (outcome == QV_EREADONLY) {
        lua_getfield(L, LUA_REGISTRYINDEX, "quiver.readonly_warned");
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -1);
            lua_setfield(L, LUA_REGISTRYINDEX, "quiver.readonly_warned");
        }
        int warned = lua_rawgetp(L, -1, cache) != LUA_TNIL;
        lua_pop(L, 1);
        if (!warned) {
            lua_pushboolean(L, 1);
            lua_rawsetp(L, -2, cache);
        }
        lua_pop(L, 1);
        if (warned) return;
        lua_warning(L, "quiver: ", 1);
        lua_warning(L, m->name, 1);
        lua_warning(L, ": the cache ", 1);
        lua_warning(L, qv_cache_path(cache), 1);
        lua_warning(L, " is read-only: results are computed but not stored (said once per cache)", 0);
        return;
    }
    lua_warning(L, "quiver: ", 1);
    lua_warning(L, m->name, 1);
    lua_warning(L, ": the result was returned but not stored: ", 1);
    lua_warning(L, qv_errmsg(), 0);
}

/* Whether the call key runs again: inside an m:rerun, each call not rerun
 * yet in it does (and is marked as rerun), so the memoized calls a rerun
 * body makes rerun too, each once however often it is made. */
static int qvlua_rerun_due(qvlua_state *S, lua_State *L, const qv_digest *key) {
    if (!S->rerun_ref) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->rerun_ref);
    lua_pushlstring(L, (const char *)key->bytes, sizeof key->bytes);
    int due = lua_rawget(L, -2) == LUA_TNIL;
    lua_pop(L, 1);
    if (due) {
        lua_pushlstring(L, (const char *)key->bytes, sizeof key->bytes);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
    }
    lua_pop(L, 1);
    return due;
}

/* m(...): the whole memoized call. */
int qvlua_memo_call(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_memo *m = qvlua_checkmemo(S, L, 1);
    int top = lua_gettop(L);
    qv_cache *cache;
    const void *meta;
    size_t meta_len;
    qvlua_context(S, L, &cache, &meta, &meta_len);
    qv_digest key;
    if (!m->prefix || !qvlua_fast_key(L, m, top, &key)) qvlua_memo_key(S, L, m, top, &key);
    int rerun = qvlua_rerun_due(S, L, &key);
    if (!rerun && qvlua_lookup(S, L, cache, &key)) {
        m->hits++;
        return 1;
    }
    /* A miss stores the call's bytes: encode it again, into a Lua string
     * (the body may make memoized calls of its own on this encoder). The
     * metadata is copied too: the body may push and pop contexts. */
    qv_encoder_reset(S->enc);
    qvlua_memo_encode(S, L, S->enc, m, 2, top);
    const void *call;
    size_t call_len;
    QVLUA_TRY(L, qv_encoder_finish(S->enc, &call, &call_len));
    lua_pushlstring(L, call, call_len);
    call = lua_tolstring(L, -1, &call_len);
    if (meta) {
        lua_pushlstring(L, meta, meta_len);
        meta = lua_tostring(L, -1);
    }
    qvlua_run run = {S, L, lua_gettop(L) + 1, top - 1, 0, 0};
    lua_getiuservalue(L, 1, 1);
    for (int i = 2; i <= top; i++) lua_pushvalue(L, i);
    qv_call_options o = QV_CALL_OPTIONS_INIT;
    o.flags = (rerun ? QV_CALL_RERUN : QV_CALL_MISSED) | m->call_flags;
    o.wait_timeout_ns = m->wait_ns;
    o.lang = "lua";
    o.meta = meta;
    o.meta_len = meta ? meta_len : 0;
    int outcome;
    qv_status st = qv_call_run(&outcome, cache, &key, call, call_len, &o, qvlua_run_hit, qvlua_run_body, &run);
    if (run.raised) return lua_error(L);
    if (st) return qvlua_status_error(L, st);
    if (outcome == QV_CALL_HIT) {
        m->hits++;
        qvlua_decode(S, L, S->buf, S->len);
        return 1;
    }
    m->misses++;
    if (outcome < 0) qvlua_warn_unstored(L, m, cache, outcome);
    lua_pushvalue(L, run.result);
    return 1;
}

/* memo_rerun(m, ...): run m(...) even when stored and store its result over
 * the old one; the memoized calls its body makes rerun too. The set of calls
 * rerun lives until the outermost rerun returns, however it ends. */
int qvlua_memo_rerun(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_memo *m = qvlua_checkmemo(S, L, 1);
    qv_digest key;
    qvlua_memo_key(S, L, m, lua_gettop(L), &key);
    int outer = !S->rerun_ref;
    if (outer) {
        lua_newtable(L);
        S->rerun_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    /* asked for by name, a call runs even when this rerun already ran it */
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->rerun_ref);
    lua_pushlstring(L, (const char *)key.bytes, sizeof key.bytes);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, qvlua_memo_call, 1);
    lua_insert(L, 1);
    int st = lua_pcall(L, lua_gettop(L) - 1, 1, 0);
    if (outer) {
        luaL_unref(L, LUA_REGISTRYINDEX, S->rerun_ref);
        S->rerun_ref = 0;
    }
    if (st != LUA_OK) return lua_error(L);
    return 1;
}

/* op on the key of m(...) in the active cache: true for QV_OK, false for
 * QV_NOTFOUND, an error otherwise. */
static int memo_key_op(lua_State *L, qv_status (*op)(qv_cache *, const qv_digest *)) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_memo *m = qvlua_checkmemo(S, L, 1);
    qv_cache *cache;
    qvlua_context(S, L, &cache, NULL, NULL);
    qv_digest key;
    qvlua_memo_key(S, L, m, lua_gettop(L), &key);
    qv_status st = op(cache, &key);
    if (st && st != QV_NOTFOUND) qvlua_status_error(L, st);
    lua_pushboolean(L, st == QV_OK);
    return 1;
}

/* memo_evict(m, ...): remove m(...) from the active cache; whether it was
 * stored. */
int qvlua_memo_evict(lua_State *L) {
    return memo_key_op(L, qv_cache_evict);
}

/* memo_clear(m): remove every call stored under m's name (any version) from
 * the active cache; how many went. */
int qvlua_memo_clear(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_memo *m = qvlua_checkmemo(S, L, 1);
    if (!m->name) return qvlua_raise(L, "QV_ECLOSED: the memo was collected");
    qv_cache *cache;
    qvlua_context(S, L, &cache, NULL, NULL);
    qv_iter *it;
    QVLUA_TRY(L, qv_cache_query(&it, cache, m->name));
    /* the query is a snapshot: evicting while reading it is safe */
    lua_Integer n = 0;
    qv_digest key;
    qv_status st;
    while ((st = qv_iter_next(it, &key)) == QV_OK) {
        st = qv_cache_evict(cache, &key);
        if (st == QV_OK) n++;
        else if (st != QV_NOTFOUND) break;
    }
    qv_iter_free(it);
    if (st && st != QV_NOTFOUND) qvlua_status_error(L, st);
    lua_pushinteger(L, n);
    return 1;
}

static int qvlua_iterbox_gc(lua_State *L) {
    qv_iter **box = lua_touserdata(L, 1);
    qv_iter_free(*box);
    *box = NULL;
    return 0;
}

/* memo_records(m): {{hex, record}, ...} of every call stored under m's name
 * in the active cache, read now (the active cache is not held after). The
 * query's iterator sits in a box the collector frees, so an error raised
 * while the records are decoded leaks nothing. */
int qvlua_memo_records(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_memo *m = qvlua_checkmemo(S, L, 1);
    if (!m->name) return qvlua_raise(L, "QV_ECLOSED: the memo was collected");
    qv_cache *cache;
    qvlua_context(S, L, &cache, NULL, NULL);
    qv_iter **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    if (luaL_newmetatable(L, "quiver.iterbox")) {
        lua_pushcfunction(L, qvlua_iterbox_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    QVLUA_TRY(L, qv_cache_query(box, cache, m->name));
    lua_newtable(L);
    lua_Integer n = 0;
    qv_digest key;
    qv_status st;
    while ((st = qv_iter_next(*box, &key)) == QV_OK) {
        qv_value *rec = NULL;
        st = qv_cache_load(cache, &key, &rec);
        if (st == QV_NOTFOUND) continue; /* evicted since the query */
        if (st) break;
        lua_createtable(L, 2, 0);
        qvlua_push_digest(L, &key);
        lua_rawseti(L, -2, 1);
        qvlua_push_tree(L, rec);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, ++n);
    }
    qv_iter_free(*box);
    *box = NULL;
    if (st && st != QV_NOTFOUND) qvlua_status_error(L, st);
    return 1;
}

/* memo_digest(m, ...): the call digest, as 32 hex characters. */
int qvlua_memo_digest(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_memo *m = qvlua_checkmemo(S, L, 1);
    qv_digest d;
    qvlua_memo_key(S, L, m, lua_gettop(L), &d);
    qvlua_push_digest(L, &d);
    return 1;
}

/* memo_load(m, ...): true and the stored result, or false on a miss. No
 * body runs, nothing is stored. */
int qvlua_memo_load(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_memo *m = qvlua_checkmemo(S, L, 1);
    qv_cache *cache;
    qvlua_context(S, L, &cache, NULL, NULL);
    qv_digest key;
    qvlua_memo_key(S, L, m, lua_gettop(L), &key);
    lua_pushboolean(L, 1);
    if (!qvlua_lookup(S, L, cache, &key)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return 2;
}

/* memo_contains(m, ...): whether the active cache holds the call. */
int qvlua_memo_contains(lua_State *L) {
    return memo_key_op(L, qv_cache_contains);
}

/* memo_info(m): name, version, body, hits, misses, the ignored positions' mask. */
int qvlua_memo_info(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    qvlua_memo *m = qvlua_checkmemo(S, L, 1);
    lua_pushstring(L, m->name);
    if (m->version) lua_pushstring(L, m->version);
    else lua_pushnil(L);
    lua_getiuservalue(L, 1, 1);
    lua_pushinteger(L, m->hits);
    lua_pushinteger(L, m->misses);
    lua_pushinteger(L, (lua_Integer)m->skip);
    return 6;
}
