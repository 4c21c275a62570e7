/* Lua values to canonical CBOR and back, straight through the core's
 * streaming encoder and pull decoder (DESIGN sections 3 and 7). */
#include "qvlua.h"

/* ---------------------------------------------------------------- bignums */

/* A bignum object holds CBOR's view: negative and a big-endian magnitude m,
 * the value being m or -1 - m. Decimal text in and out, for people. */
static void qvlua_push_bigint(qvlua_state *S, lua_State *L, int negative, const uint8_t *m, size_t len) {
    while (len && !*m) m++, len--;
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, negative);
    lua_setfield(L, -2, "negative");
    lua_pushlstring(L, (const char *)m, len);
    lua_setfield(L, -2, "magnitude");
    qvlua_push_mt(S, L, MT_BIGINT);
    lua_setmetatable(L, -2);
}

/* quiver.bigint("-123456789012345678901234567890"): an integer when it fits
 * 64 bits (one representation per number), else a bignum object. */
int qvlua_bigint(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    size_t i = 0;
    int negative = 0;
    if (i < len && (s[i] == '-' || s[i] == '+')) negative = s[i++] == '-';
    if (i == len) return luaL_argerror(L, 1, "not a decimal integer");
    /* base 256, little-endian while we multiply */
    size_t cap = len / 2 + 2, n = 0;
    uint8_t *mag = lua_newuserdatauv(L, cap, 0);
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return luaL_argerror(L, 1, "not a decimal integer");
        unsigned carry = (unsigned)(s[i] - '0');
        for (size_t k = 0; k < n; k++) {
            unsigned v = mag[k] * 10u + carry;
            mag[k] = (uint8_t)v;
            carry = v >> 8;
        }
        if (carry) mag[n++] = (uint8_t)carry;
    }
    if (negative) { /* m = |v| - 1 */
        size_t k = 0;
        while (k < n && mag[k] == 0) mag[k++] = 0xff;
        if (k == n) negative = 0; /* "-0" */
        else mag[k]--;
    }
    while (n && mag[n - 1] == 0) n--;
    if (n <= 8) {
        uint64_t u = 0;
        for (size_t k = n; k-- > 0;) u = (u << 8) | mag[k];
        if (u <= (uint64_t)INT64_MAX) {
            lua_pushinteger(L, negative ? -(lua_Integer)u - 1 : (lua_Integer)u);
            return 1;
        }
    }
    for (size_t k = 0; k < n / 2; k++) {
        uint8_t t = mag[k];
        mag[k] = mag[n - 1 - k];
        mag[n - 1 - k] = t;
    }
    qvlua_push_bigint(S, L, negative, mag, n);
    return 1;
}

/* tostring(bignum): decimal. */
int qvlua_bigint_tostring(lua_State *L) {
    lua_getfield(L, 1, "negative");
    int negative = lua_toboolean(L, -1);
    lua_getfield(L, 1, "magnitude");
    size_t n;
    const uint8_t *m = (const uint8_t *)luaL_checklstring(L, -1, &n);
    uint8_t *w = lua_newuserdatauv(L, n + 1, 0);
    w[0] = 0;
    memcpy(w + 1, m, n);
    n++;
    if (negative) { /* |v| = m + 1 */
        size_t k = n;
        while (k-- > 0 && ++w[k] == 0) {
        }
    }
    size_t dcap = n * 3 + 2, dn = 0;
    char *digits = lua_newuserdatauv(L, dcap, 0);
    size_t start = 0;
    while (start < n && !w[start]) start++;
    do {
        unsigned rem = 0;
        for (size_t k = start; k < n; k++) {
            unsigned v = (rem << 8) | w[k];
            w[k] = (uint8_t)(v / 10);
            rem = v % 10;
        }
        digits[dn++] = (char)('0' + rem);
        while (start < n && !w[start]) start++;
    } while (start < n);
    if (negative) digits[dn++] = '-';
    for (size_t k = 0; k < dn / 2; k++) {
        char t = digits[k];
        digits[k] = digits[dn - 1 - k];
        digits[dn - 1 - k] = t;
    }
    lua_pushlstring(L, digits, dn);
    return 1;
}

/* ---------------------------------------------------------------- encoder */

/* RFC 8746 typed arrays, tags 64..87: element type and byte order. */
/* The RFC 8746 name of a typed-array tag ("float32"), or NULL. */
static const char *qvlua_typed_dtype(uint64_t tag) {
    const char *name;
    return qv_typed_array_type(tag, NULL, NULL, NULL, &name) ? NULL : name;
}

/* Items of a list table: n from the table's own "n" (table.pack, or a
 * decoded list with nils), else its border. */
lua_Integer qvlua_list_len(lua_State *L, int idx) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (lua_getfield(L, idx, "n") == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) > n)
        n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return n;
}

int qvlua_encode_list(qvlua_state *S, lua_State *L, qv_encoder *enc, int idx, lua_Integer n, int depth) {
    QVLUA_TRY(L, qv_encoder_list(enc, (uint64_t)n));
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        qvlua_encode_value(S, L, enc, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    return 0;
}

int qvlua_encode_map(qvlua_state *S, lua_State *L, qv_encoder *enc, int idx, int depth) {
    QVLUA_TRY(L, qv_encoder_map_begin(enc));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int top = lua_gettop(L);
        qvlua_encode_value(S, L, enc, top - 1, depth + 1);
        qvlua_encode_value(S, L, enc, top, depth + 1);
        lua_pop(L, 1);
    }
    QVLUA_TRY(L, qv_encoder_map_end(enc));
    return 0;
}

/* A set's elements go to the encoder in table order; it sorts them and keeps
 * one of equal ones (distinct tables with equal contents are one element). */
static int qvlua_encode_set(qvlua_state *S, lua_State *L, qv_encoder *enc, int idx, int depth) {
    QVLUA_TRY(L, qv_encoder_set_begin(enc));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        qvlua_encode_value(S, L, enc, lua_gettop(L), depth + 1);
    }
    QVLUA_TRY(L, qv_encoder_set_end(enc));
    return 0;
}

static int qvlua_encode_table(qvlua_state *S, lua_State *L, qv_encoder *enc, int idx, int depth) {
    switch (qvlua_marker(S, L, idx)) {
    case MT_BYTES: {
        size_t len;
        lua_getfield(L, idx, "data");
        const char *s = lua_tolstring(L, -1, &len);
        if (!s) return qvlua_raise(L, "QV_EENCODE: a quiver.bytes object without its data string");
        QVLUA_TRY(L, qv_encoder_bytes(enc, s, len));
        lua_pop(L, 1);
        return 0;
    }
    case MT_LIST:
        return qvlua_encode_list(S, L, enc, idx, qvlua_list_len(L, idx), depth);
    case MT_TUPLE:
        QVLUA_TRY(L, qv_encoder_tag(enc, QV_TAG_TUPLE));
        return qvlua_encode_list(S, L, enc, idx, qvlua_list_len(L, idx), depth + 1);
    case MT_MAP:
        return qvlua_encode_map(S, L, enc, idx, depth);
    case MT_SET:
        return qvlua_encode_set(S, L, enc, idx, depth);
    case MT_TAG: {
        lua_getfield(L, idx, "tag");
        int ok;
        lua_Integer tag = lua_tointegerx(L, -1, &ok);
        /* Tags are 64-bit unsigned; Lua's integers wrap, as its hex literals
         * do (0xffffffffffffffff is -1), and the decoder gives tags at or
         * beyond 2^63 that way: a negative tag is one of those. */
        if (!ok) return qvlua_raise(L, "QV_EENCODE: a quiver.tag object needs an integer tag");
        lua_pop(L, 1);
        QVLUA_TRY(L, qv_encoder_tag(enc, (uint64_t)tag));
        lua_getfield(L, idx, "value");
        qvlua_encode_value(S, L, enc, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
        return 0;
    }
    case MT_BIGINT: {
        lua_getfield(L, idx, "negative");
        int negative = lua_toboolean(L, -1);
        size_t len;
        lua_getfield(L, idx, "magnitude");
        const char *m = lua_tolstring(L, -1, &len);
        if (!m) return qvlua_raise(L, "QV_EENCODE: a quiver.bigint object without its magnitude string");
        QVLUA_TRY(L, qv_encoder_bigint(enc, negative, m, len));
        lua_pop(L, 2);
        return 0;
    }
    case MT_NDARRAY: {
        int ok;
        lua_getfield(L, idx, "tag");
        lua_Integer tag = lua_tointegerx(L, -1, &ok);
        if (!ok || !qvlua_typed_dtype((uint64_t)tag))
            return qvlua_raise(L, "QV_EENCODE: a quiver.ndarray needs the typed array tag (64..87)");
        lua_getfield(L, idx, "shape");
        lua_getfield(L, idx, "data");
        size_t len;
        const char *data = lua_tolstring(L, -1, &len);
        if (!lua_istable(L, -2) || !data) return qvlua_raise(L, "QV_EENCODE: a quiver.ndarray needs shape and data");
        QVLUA_TRY(L, qv_encoder_tag(enc, QV_TAG_NDARRAY));
        QVLUA_TRY(L, qv_encoder_list(enc, 2));
        int shape = lua_gettop(L) - 1;
        qvlua_encode_list(S, L, enc, shape, qvlua_list_len(L, shape), depth + 1);
        QVLUA_TRY(L, qv_encoder_tag(enc, (uint64_t)tag));
        QVLUA_TRY(L, qv_encoder_bytes(enc, data, len));
        lua_pop(L, 3);
        return 0;
    }
    default:
        break;
    }
    /* A plain table: a sequence 1..n is a list, anything else (the empty
     * table too) a map. Counting the keys tells a sequence from a map with
     * holes or extra keys. */
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (n > 0) {
        lua_Integer keys = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            keys++;
        }
        if (keys == n) return qvlua_encode_list(S, L, enc, idx, n, depth);
    }
    return qvlua_encode_map(S, L, enc, idx, depth);
}

/* Write the Lua value at idx (absolute). */
int qvlua_encode_value(qvlua_state *S, lua_State *L, qv_encoder *enc, int idx, int depth) {
    if (depth > QV_MAX_DEPTH) return qvlua_raise(L, "QV_EENCODE: nesting deeper than the limit of %d (a cycle?)", QV_MAX_DEPTH);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        QVLUA_TRY(L, qv_encoder_null(enc));
        return 0;
    case LUA_TBOOLEAN:
        QVLUA_TRY(L, qv_encoder_bool(enc, lua_toboolean(L, idx)));
        return 0;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) QVLUA_TRY(L, qv_encoder_int(enc, (int64_t)lua_tointeger(L, idx)));
        else QVLUA_TRY(L, qv_encoder_float(enc, (double)lua_tonumber(L, idx)));
        return 0;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (qv_utf8_valid(s, len)) QVLUA_TRY(L, qv_encoder_text_trusted(enc, s, len));
        else QVLUA_TRY(L, qv_encoder_bytes(enc, s, len));
        return 0;
    }
    case LUA_TTABLE:
        luaL_checkstack(L, 8, "quiver: nesting too deep");
        return qvlua_encode_table(S, L, enc, idx, depth);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) { /* quiver.null */
            QVLUA_TRY(L, qv_encoder_null(enc));
            return 0;
        }
        /* fall through */
    default:
        return qvlua_raise(L, "QV_EENCODE: cannot encode a Lua %s", luaL_typename(L, idx));
    }
}

/* ---------------------------------------------------------------- decoder */

static void qvlua_decode_item(qvlua_state *S, lua_State *L, qv_decoder *dec, qv_type t, int depth);

static qv_type qvlua_next(lua_State *L, qv_decoder *dec) {
    qv_type t;
    qv_status st = qv_decoder_next(dec, &t);
    if (st == QV_NOTFOUND) qvlua_raise(L, "QV_EDECODE: the input ended early");
    else if (st) qvlua_status_error(L, st);
    return t;
}

/* The string key on top, about to go in the table below it, may be there
 * already: a map or set holding the text and the bytes of one string, which
 * are one Lua string (canonical input has no other equal keys). Canonical
 * order puts the bytes first, so the entry there is the bytes': it moves to
 * a quiver.bytes key, and both entries stay. */
static void qvlua_check_key(qvlua_state *S, lua_State *L) {
    if (S->exact || lua_type(L, -1) != LUA_TSTRING) return;
    int t = lua_absindex(L, -2), key = lua_absindex(L, -1);
    lua_pushvalue(L, key);
    if (lua_rawget(L, t) == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, key);
    lua_setfield(L, -2, "data");
    qvlua_push_mt(S, L, MT_BYTES);
    lua_setmetatable(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, t);
    lua_pushvalue(L, key);
    lua_pushnil(L);
    lua_rawset(L, t);
}

/* The value for the next item, pushed. */
static void qvlua_decode_next(qvlua_state *S, lua_State *L, qv_decoder *dec, int depth) {
    qvlua_decode_item(S, L, dec, qvlua_next(L, dec), depth);
}

/* A tag 40 whose content decoded to {shape-list, quiver.tag(64..87, bytes)}
 * becomes {shape=, dtype=, order=, tag=, data=}; anything else stays a tag. */
static int qvlua_make_ndarray(qvlua_state *S, lua_State *L, int content) {
    if (!qvlua_is(S, L, content, MT_LIST) || lua_rawlen(L, content) != 2) return 0;
    lua_rawgeti(L, content, 1);
    lua_rawgeti(L, content, 2);
    int shape = lua_gettop(L) - 1, arr = shape + 1;
    int ok = lua_istable(L, shape) && lua_istable(L, arr) && qvlua_is(S, L, arr, MT_TAG);
    uint64_t tag = 0;
    if (ok) {
        lua_getfield(L, arr, "tag");
        tag = (uint64_t)lua_tointeger(L, -1);
        lua_getfield(L, arr, "value");
        ok = qvlua_typed_dtype(tag) && lua_istable(L, -1) && qvlua_is(S, L, lua_gettop(L), MT_BYTES);
        if (ok) lua_getfield(L, -1, "data");
    }
    if (!ok) {
        lua_settop(L, content);
        return 0;
    }
    int data = lua_gettop(L);
    lua_createtable(L, 0, 5);
    lua_pushvalue(L, shape);
    lua_setfield(L, -2, "shape");
    lua_pushstring(L, qvlua_typed_dtype(tag));
    lua_setfield(L, -2, "dtype");
    lua_pushstring(L, tag < 68 || (tag >= 72 && tag < 76) || (tag >= 80 && tag < 84) ? "big" : "little");
    if (tag == 64 || tag == 68 || tag == 72) { /* one byte: no order */
        lua_pop(L, 1);
        lua_pushstring(L, "none");
    }
    lua_setfield(L, -2, "order");
    lua_pushinteger(L, (lua_Integer)tag);
    lua_setfield(L, -2, "tag");
    lua_pushvalue(L, data);
    lua_setfield(L, -2, "data");
    qvlua_push_mt(S, L, MT_NDARRAY);
    lua_setmetatable(L, -2);
    lua_replace(L, content);
    lua_settop(L, content);
    return 1;
}

/* The value on top becomes {tag = tag, value = value}. */
static void qvlua_wrap_tag(qvlua_state *S, lua_State *L, uint64_t tag) {
    lua_createtable(L, 0, 2);
    lua_insert(L, -2);
    lua_setfield(L, -2, "value");
    lua_pushinteger(L, (lua_Integer)tag);
    lua_setfield(L, -2, "tag");
    qvlua_push_mt(S, L, MT_TAG);
    lua_setmetatable(L, -2);
}

static void qvlua_decode_item(qvlua_state *S, lua_State *L, qv_decoder *dec, qv_type t, int depth) {
    luaL_checkstack(L, 8, "quiver: nesting too deep");
    const uint8_t *data;
    size_t len;
    switch (t) {
    case QV_TYPE_NULL:
        lua_pushnil(L);
        return;
    case QV_TYPE_BOOL: {
        int b;
        qv_decoder_get_bool(dec, &b);
        lua_pushboolean(L, b);
        return;
    }
    case QV_TYPE_INT: {
        int negative;
        uint64_t n;
        qv_decoder_get_cbor_int(dec, &negative, &n);
        if (n <= (uint64_t)INT64_MAX) {
            lua_pushinteger(L, negative ? -(lua_Integer)n - 1 : (lua_Integer)n);
        } else {
            uint8_t m[8];
            for (int i = 0; i < 8; i++) m[i] = (uint8_t)(n >> (56 - 8 * i));
            qvlua_push_bigint(S, L, negative, m, 8);
        }
        return;
    }
    case QV_TYPE_BIGINT: {
        int negative;
        qv_decoder_get_bigint(dec, &negative, &data, &len);
        qvlua_push_bigint(S, L, negative, data, len);
        return;
    }
    case QV_TYPE_FLOAT: {
        double d;
        qv_decoder_get_float(dec, &d);
        lua_pushnumber(L, (lua_Number)d);
        return;
    }
    case QV_TYPE_TEXT:
        qv_decoder_get_data(dec, &data, &len);
        lua_pushlstring(L, (const char *)data, len);
        return;
    case QV_TYPE_BYTES:
        qv_decoder_get_data(dec, &data, &len);
        if (!S->exact) {
            lua_pushlstring(L, (const char *)data, len);
            return;
        }
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, (const char *)data, len);
        lua_setfield(L, -2, "data");
        qvlua_push_mt(S, L, MT_BYTES);
        lua_setmetatable(L, -2);
        return;
    case QV_TYPE_LIST: {
        uint64_t n;
        qv_decoder_get_count(dec, &n);
        lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
        int holes = 0;
        for (uint64_t i = 1; i <= n; i++) {
            qvlua_decode_next(S, L, dec, depth + 1);
            holes |= lua_isnil(L, -1);
            lua_rawseti(L, -2, (lua_Integer)i);
        }
        if (holes) { /* the length a border cannot tell */
            lua_pushinteger(L, (lua_Integer)n);
            lua_setfield(L, -2, "n");
        }
        qvlua_push_mt(S, L, MT_LIST);
        lua_setmetatable(L, -2);
        return;
    }
    case QV_TYPE_MAP: {
        uint64_t n;
        qv_decoder_get_count(dec, &n);
        lua_createtable(L, 0, n > INT32_MAX ? 0 : (int)n);
        for (uint64_t i = 0; i < n; i++) {
            qvlua_decode_next(S, L, dec, depth + 1);
            qvlua_check_key(S, L);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushlightuserdata(L, NULL);
            } else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) && isnan(lua_tonumber(L, -1))) {
                qvlua_raise(L, "QV_EDECODE: a map key is NaN, which a Lua table cannot hold");
            } else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
                lua_Number f = lua_tonumber(L, -1);
                if (f == floor(f) && f >= -9223372036854775808.0 && f < 9223372036854775808.0)
                    qvlua_raise(L, "QV_EDECODE: the float map key %f would become the integer key %d in a Lua table",
                               (double)f, (int)f);
            }
            qvlua_decode_next(S, L, dec, depth + 1);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushlightuserdata(L, NULL);
            }
            lua_rawset(L, -3);
        }
        qvlua_push_mt(S, L, MT_MAP);
        lua_setmetatable(L, -2);
        return;
    }
    case QV_TYPE_TAG: {
        uint64_t tag;
        qv_decoder_get_tag(dec, &tag);
        if (tag == QV_TAG_PICKLE) {
            /* refused once the whole input is known to be canonical: bad
             * input is QV_EDECODE wherever the pickle sits */
            qv_status st = qv_decoder_skip(dec);
            if (st) qvlua_status_error(L, st);
            S->pickle = 1;
            lua_pushnil(L);
            return;
        }
        if (tag == QV_TAG_SET) {
            /* the decoder has checked: a list, canonical order, no duplicates */
            qv_type lt = qvlua_next(L, dec);
            uint64_t n = 0;
            if (lt == QV_TYPE_LIST) qv_decoder_get_count(dec, &n);
            lua_createtable(L, 0, n > INT32_MAX ? 0 : (int)n);
            for (uint64_t i = 0; i < n; i++) {
                qvlua_decode_next(S, L, dec, depth + 1);
                qvlua_check_key(S, L);
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    lua_pushlightuserdata(L, NULL);
                }
                lua_pushboolean(L, 1);
                lua_rawset(L, -3);
            }
            qvlua_push_mt(S, L, MT_SET);
            lua_setmetatable(L, -2);
            return;
        }
        if (tag == QV_TAG_TUPLE) { /* Python's tuple: a list here, marked to re-encode as a tuple */
            qvlua_decode_next(S, L, dec, depth + 1);
            if (qvlua_is(S, L, lua_gettop(L), MT_LIST)) {
                qvlua_push_mt(S, L, MT_TUPLE);
                lua_setmetatable(L, -2);
                return;
            }
            qvlua_wrap_tag(S, L, tag);
            return;
        }
        /* A typed array's bytes stay a quiver.bytes object, whatever the
         * mode: the array must re-encode as it was, and an ndarray is only
         * told from a tag over a text string by it. */
        int exact = S->exact;
        if (qvlua_typed_dtype(tag)) S->exact = 1;
        qvlua_decode_next(S, L, dec, depth + 1);
        S->exact = exact;
        if (tag == QV_TAG_NDARRAY && lua_istable(L, -1) && qvlua_make_ndarray(S, L, lua_gettop(L))) return;
        qvlua_wrap_tag(S, L, tag);
        return;
    }
    default:
        qvlua_raise(L, "QV_EDECODE: unknown item type %d", (int)t);
    }
}

/* Decode exactly one canonical item from data (which must stay alive: a Lua
 * string on the stack or the state's buffer) and push it. */
static void qvlua_decode_as(qvlua_state *S, lua_State *L, const void *data, size_t len, int exact) {
    qv_decoder_reset(S->dec, data, len);
    S->pickle = 0;
    S->exact = exact;
    qvlua_decode_next(S, L, S->dec, 0);
    qv_type t;
    qv_status st = qv_decoder_next(S->dec, &t);
    if (st != QV_NOTFOUND) {
        if (st == QV_OK) qvlua_raise(L, "QV_EDECODE: trailing bytes after the item");
        qvlua_status_error(L, st);
    }
    if (S->pickle) qvlua_raise(L, "QV_ETYPE: cannot decode a Python pickle (tag 0x51560002): only Python can read it");
}

/* The results most hits return, an integer of at most 63 bits, null or a
 * boolean, pushed from their one head without the decoder (a quarter of a
 * small hit's cost in Lua); 0, pushing nothing, for anything else, including
 * a head that is not the shortest form, which the decoder then refuses. */
static int qvlua_decode_small(lua_State *L, const uint8_t *p, size_t len) {
    static const uint8_t width[4] = {1, 2, 4, 8};
    static const uint64_t least[4] = {24, 0x100, 0x10000, 0x100000000u};
    uint8_t major = p[0] >> 5, ai = p[0] & 31;
    if (major == 7) {
        if (len != 1 || ai < 20 || ai > 22) return 0;
        if (ai == 22) lua_pushnil(L);
        else lua_pushboolean(L, ai == 21);
        return 1;
    }
    if (major > 1) return 0;
    uint64_t v = ai;
    if (ai >= 24) {
        if (ai > 27 || len != 1u + width[ai - 24]) return 0;
        v = 0;
        for (size_t i = 1; i < len; i++) v = v << 8 | p[i];
        if (v < least[ai - 24]) return 0;
    } else if (len != 1) {
        return 0;
    }
    if (v > (uint64_t)INT64_MAX) return 0;
    lua_pushinteger(L, major ? -(lua_Integer)v - 1 : (lua_Integer)v);
    return 1;
}

/* Byte strings become Lua strings: what a program reads from a record, a hit
 * or a future. */
void qvlua_decode(qvlua_state *S, lua_State *L, const void *data, size_t len) {
    if (len && len <= 9 && qvlua_decode_small(L, data, len)) return;
    qvlua_decode_as(S, L, data, len, 0);
}

/* A string argument, or the data of a quiver.bytes object. */
static const char *qvlua_checkdata(qvlua_state *S, lua_State *L, int idx, size_t *len) {
    if (lua_istable(L, idx) && qvlua_is(S, L, idx, MT_BYTES)) {
        lua_getfield(L, idx, "data");
        lua_replace(L, idx);
    }
    return luaL_checklstring(L, idx, len);
}

/* ----------------------------------------------------- values: Lua facing */

int qvlua_encode_fn(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    lua_settop(L, 1);
    qv_encoder_reset(S->enc);
    qvlua_encode_value(S, L, S->enc, 1, 0);
    const void *data;
    size_t len;
    QVLUA_TRY(L, qv_encoder_finish(S->enc, &data, &len));
    lua_pushlstring(L, data, len);
    return 1;
}

/* decode(data, exact): exact keeps byte strings quiver.bytes objects, so
 * that encoding the value gives data back byte for byte. */
int qvlua_decode_fn(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    size_t len;
    const char *data = qvlua_checkdata(S, L, 1, &len);
    int exact = lua_toboolean(L, 2);
    lua_settop(L, 1);
    qvlua_decode_as(S, L, data, len, exact);
    return 1;
}

/* utf8_valid(s): whether s is text to the encoder (the core's check, which
 * Lua's utf8 library need not share). */
int qvlua_utf8_valid_fn(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushboolean(L, qv_utf8_valid(s, len));
    return 1;
}

void qvlua_push_digest(lua_State *L, const qv_digest *d) {
    char hex[33];
    qv_digest_hex(d, hex);
    lua_pushlstring(L, hex, 32);
}

int qvlua_digest_fn(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    lua_settop(L, 1);
    qv_encoder_reset_for_digest(S->enc);
    qvlua_encode_value(S, L, S->enc, 1, 0);
    qv_digest d;
    QVLUA_TRY(L, qv_encoder_digest(S->enc, &d));
    qvlua_push_digest(L, &d);
    return 1;
}

/* [QV_CALL_MARKER, name, version, ...]: the caller writes args and kwargs. */
void qvlua_encode_call_head(qvlua_state *S, lua_State *L, qv_encoder *enc, const char *name, size_t name_len,
                                   const char *version, size_t version_len) {
    QVLUA_TRY(L, qv_encoder_call_head(enc, name, name_len, version, version_len));
}

const char *qvlua_check_utf8(lua_State *L, int idx, size_t *len, const char *what) {
    const char *s = luaL_checklstring(L, idx, len);
    if (!qv_utf8_valid(s, *len)) qvlua_raise(L, "QV_EINVAL: %s must be valid UTF-8", what);
    return s;
}

/* quiver.call_digest(name, version, args, kwargs) */
int qvlua_call_digest_fn(lua_State *L) {
    qvlua_state *S = QVLUA_S(L);
    size_t nl, vl = 0;
    const char *name = qvlua_check_utf8(L, 1, &nl, "name");
    const char *version = lua_isnoneornil(L, 2) ? NULL : qvlua_check_utf8(L, 2, &vl, "version");
    luaL_checktype(L, 3, LUA_TTABLE);
    if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
    lua_settop(L, 4);
    qv_encoder_reset_for_digest(S->enc);
    qvlua_encode_call_head(S, L, S->enc, name, nl, version, vl);
    qvlua_encode_list(S, L, S->enc, 3, qvlua_list_len(L, 3), 1);
    if (lua_isnil(L, 4)) {
        QVLUA_TRY(L, qv_encoder_map_begin(S->enc));
        QVLUA_TRY(L, qv_encoder_map_end(S->enc));
    } else {
        qvlua_encode_map(S, L, S->enc, 4, 1);
    }
    qv_digest d;
    QVLUA_TRY(L, qv_encoder_digest(S->enc, &d));
    qvlua_push_digest(L, &d);
    return 1;
}
