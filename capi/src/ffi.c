/* C functions of any signature, memoized through libffi: a signature string
 * becomes a prepared call interface; qv_fn_call converts value trees to C
 * arguments, and the closure from qv_fn_pointer converts C arguments
 * straight to the call's encoding, so a hit through it builds no tree. */
#include <ffi.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MAX_ARGS 32

typedef enum { T_VOID, T_I8, T_I16, T_I32, T_I64, T_U8, T_U16, T_U32, T_U64, T_F32, T_F64, T_BOOL, T_STR, T_BYTES, T_VALUE } ctype;

static const struct {
    const char *name;
    ctype type;
} type_names[] = {
    {"void", T_VOID}, {"i8", T_I8},   {"i16", T_I16},   {"i32", T_I32}, {"i64", T_I64},     {"u8", T_U8},
    {"u16", T_U16},   {"u32", T_U32}, {"u64", T_U64},   {"f32", T_F32}, {"f64", T_F64},     {"bool", T_BOOL},
    {"str", T_STR},   {"bytes", T_BYTES}, {"value", T_VALUE},
};

static ffi_type *ffi_of(ctype t) {
    switch (t) {
    case T_VOID: return &ffi_type_void;
    case T_I8: return &ffi_type_sint8;
    case T_I16: return &ffi_type_sint16;
    case T_I32: return &ffi_type_sint32;
    case T_I64: return &ffi_type_sint64;
    case T_U8: return &ffi_type_uint8;
    case T_U16: return &ffi_type_uint16;
    case T_U32: return &ffi_type_uint32;
    case T_U64: return &ffi_type_uint64;
    case T_F32: return &ffi_type_float;
    case T_F64: return &ffi_type_double;
    case T_BOOL: return &ffi_type_uint8; /* _Bool is one byte, passed like one */
    default: return &ffi_type_pointer;
    }
}

typedef struct {
    qv_fn *fn; /* the handle this belongs to (not a reference) */
    void (*target)(void);
    char *signature;
    ctype ret;
    int nargs;
    ctype types[MAX_ARGS];
    int cargs; /* C parameters: bytes take two, a bytes result adds one */
    ffi_type *atypes[2 * MAX_ARGS + 1];
    ffi_cif cif;
    ffi_closure *closure;
    void *code;
    const char *name, *version;
    size_t name_len, version_len;
} native;

/* -------------------------------------------------------------- parsing */

static qv_status sig_error(const char *sig, size_t pos, const char *expected) {
    return qv__error(QV_EINVAL, "signature \"%s\": at position %zu, expected %s", sig, pos, expected);
}

static size_t skip_space(const char *s, size_t i) {
    while (s[i] == ' ' || s[i] == '\t') i++;
    return i;
}

static int read_type(const char *s, size_t *i, ctype *out) {
    size_t start = *i, n = 0;
    while ((s[start + n] >= 'a' && s[start + n] <= 'z') || (s[start + n] >= '0' && s[start + n] <= '9')) n++;
    for (size_t k = 0; k < sizeof type_names / sizeof type_names[0]; k++) {
        if (strlen(type_names[k].name) == n && strncmp(type_names[k].name, s + start, n) == 0) {
            *out = type_names[k].type;
            *i = start + n;
            return 1;
        }
    }
    return 0;
}

#define TYPE_LIST "a type (i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 bool str bytes value)"

static qv_status parse(native *n, const char *sig) {
    size_t i = skip_space(sig, 0);
    if (!read_type(sig, &i, &n->ret)) return sig_error(sig, i, "a return type (" TYPE_LIST " or void)");
    i = skip_space(sig, i);
    if (sig[i] != '(') return sig_error(sig, i, "'('");
    i = skip_space(sig, i + 1);
    n->nargs = 0;
    if (sig[i] != ')') {
        for (;;) {
            ctype t;
            if (!read_type(sig, &i, &t)) return sig_error(sig, i, TYPE_LIST);
            if (t == T_VOID) return sig_error(sig, i - 4, TYPE_LIST " (void is only a return type)");
            if (n->nargs == MAX_ARGS) return sig_error(sig, i, "at most 32 parameters");
            n->types[n->nargs++] = t;
            i = skip_space(sig, i);
            if (sig[i] == ')') break;
            if (sig[i] != ',') return sig_error(sig, i, "',' or ')'");
            i = skip_space(sig, i + 1);
        }
    }
    i = skip_space(sig, i + 1);
    if (sig[i]) return sig_error(sig, i, "the end of the signature");
    n->cargs = 0;
    for (int k = 0; k < n->nargs; k++) {
        n->atypes[n->cargs++] = ffi_of(n->types[k]);
        if (n->types[k] == T_BYTES) n->atypes[n->cargs++] = &ffi_type_uint64;
    }
    if (n->ret == T_BYTES) n->atypes[n->cargs++] = &ffi_type_pointer; /* uint64_t *len */
    ffi_status fs = ffi_prep_cif(&n->cif, FFI_DEFAULT_ABI, (unsigned)n->cargs, ffi_of(n->ret), n->atypes);
    if (fs != FFI_OK) return qv__error(QV_EINVAL, "signature \"%s\": libffi cannot prepare it (status %d)", sig, fs);
    return QV_OK;
}

/* ------------------------------------------------- C values to encodings */

/* The call's encoding from C arguments, as qv_call_digest would give it. */
static qv_status encode_c_call(native *n, qv_encoder *enc, void **args) {
    qv_status st = qv_encoder_call_head(enc, n->name, n->name_len, n->version, n->version_len);
    if (!st) st = qv_encoder_list(enc, (uint64_t)n->nargs);
    int c = 0;
    for (int k = 0; !st && k < n->nargs; k++) {
        void *a = args[c++];
        switch (n->types[k]) {
        case T_I8: st = qv_encoder_int(enc, *(int8_t *)a); break;
        case T_I16: st = qv_encoder_int(enc, *(int16_t *)a); break;
        case T_I32: st = qv_encoder_int(enc, *(int32_t *)a); break;
        case T_I64: st = qv_encoder_int(enc, *(int64_t *)a); break;
        case T_U8: st = qv_encoder_uint(enc, *(uint8_t *)a); break;
        case T_U16: st = qv_encoder_uint(enc, *(uint16_t *)a); break;
        case T_U32: st = qv_encoder_uint(enc, *(uint32_t *)a); break;
        case T_U64: st = qv_encoder_uint(enc, *(uint64_t *)a); break;
        case T_F32: st = qv_encoder_float(enc, *(float *)a); break;
        case T_F64: st = qv_encoder_float(enc, *(double *)a); break;
        case T_BOOL: st = qv_encoder_bool(enc, *(uint8_t *)a != 0); break;
        case T_STR: {
            const char *s = *(const char **)a;
            st = s ? qv_encoder_text(enc, s, strlen(s)) : qv_encoder_null(enc);
            break;
        }
        case T_BYTES: {
            const void *p = *(const void **)a;
            uint64_t len = *(uint64_t *)args[c++];
            st = qv_encoder_bytes(enc, p, (size_t)len);
            break;
        }
        case T_VALUE: {
            const qv_value *v = *(const qv_value **)a;
            st = v ? qv_encoder_value(enc, v) : qv_encoder_null(enc);
            break;
        }
        default: st = qv__error(QV_EINVAL, "unexpected parameter type");
        }
    }
    if (!st) st = qv_encoder_map_begin(enc);
    if (!st) st = qv_encoder_map_end(enc);
    return st;
}

/* The encoding of a C result in ffi's return buffer. */
static qv_status encode_c_result(native *n, qv_encoder *enc, const void *ret, uint64_t bytes_len) {
    switch (n->ret) {
    case T_VOID: return qv_encoder_null(enc);
    case T_I8: return qv_encoder_int(enc, (int8_t) * (const ffi_sarg *)ret);
    case T_I16: return qv_encoder_int(enc, (int16_t) * (const ffi_sarg *)ret);
    case T_I32: return qv_encoder_int(enc, (int32_t) * (const ffi_sarg *)ret);
    case T_I64: return qv_encoder_int(enc, *(const int64_t *)ret);
    case T_U8: return qv_encoder_uint(enc, (uint8_t) * (const ffi_arg *)ret);
    case T_U16: return qv_encoder_uint(enc, (uint16_t) * (const ffi_arg *)ret);
    case T_U32: return qv_encoder_uint(enc, (uint32_t) * (const ffi_arg *)ret);
    case T_U64: return qv_encoder_uint(enc, *(const uint64_t *)ret);
    case T_F32: return qv_encoder_float(enc, *(const float *)ret);
    case T_F64: return qv_encoder_float(enc, *(const double *)ret);
    case T_BOOL: return qv_encoder_bool(enc, (uint8_t) * (const ffi_arg *)ret != 0);
    case T_STR: {
        const char *s = *(const char *const *)ret;
        return s ? qv_encoder_text(enc, s, strlen(s)) : qv_encoder_null(enc);
    }
    case T_BYTES: {
        const void *p = *(const void *const *)ret;
        if (!p && bytes_len) return qv__error(QV_EINVAL, "the function returned NULL with length %llu",
                                              (unsigned long long)bytes_len);
        return qv_encoder_bytes(enc, p, (size_t)bytes_len);
    }
    case T_VALUE: {
        const qv_value *v = *(const qv_value *const *)ret;
        return v ? qv_encoder_value(enc, v) : qv_encoder_null(enc);
    }
    }
    return qv__error(QV_EINVAL, "unexpected result type");
}

/* ------------------------------------------- encodings to C return values */

/* Per-thread memory for str and bytes results handed out by closures. */
typedef struct {
    uint8_t *p;
    size_t cap;
} retbuf;

static pthread_key_t retbuf_key;
static pthread_once_t retbuf_once = PTHREAD_ONCE_INIT;

static void free_retbuf(void *p) {
    retbuf *b = p;
    free(b->p);
    free(b);
}

static void make_retbuf_key(void) {
    pthread_key_create(&retbuf_key, free_retbuf);
}

static uint8_t *thread_retbuf(size_t need) {
    pthread_once(&retbuf_once, make_retbuf_key);
    retbuf *b = pthread_getspecific(retbuf_key);
    if (!b) {
        if (!(b = calloc(1, sizeof *b))) return NULL;
        pthread_setspecific(retbuf_key, b);
    }
    if (b->cap < need) {
        uint8_t *p = realloc(b->p, need);
        if (!p) return NULL;
        b->p = p;
        b->cap = need;
    }
    return b->p;
}

typedef struct {
    native *n;
    void *ret;
    void **args;
} hit_ctx;

static qv_status want(int ok, native *n) {
    return ok ? QV_OK
              : qv__error(QV_ETYPE, "%s: the stored result does not fit the C return type of \"%s\"", n->name,
                          n->signature);
}

/* Decode a stored result into the closure's return slot. */
static qv_status decode_c_result(const void *data, size_t len, void *userdata) {
    hit_ctx *h = userdata;
    native *n = h->n;
    qv_decoder dec;
    qv_type t;
    qv_decoder_reset(&dec, data, len);
    qv_status st = qv_decoder_next(&dec, &t);
    if (st) return st;
    int neg;
    uint64_t u;
    double d;
    switch (n->ret) {
    case T_VOID: return want(t == QV_TYPE_NULL, n);
    case T_I8: case T_I16: case T_I32: case T_I64: {
        int64_t i;
        if ((st = want(t == QV_TYPE_INT && qv_decoder_get_int(&dec, &i) == QV_OK, n))) return st;
        int64_t lo = n->ret == T_I8 ? INT8_MIN : n->ret == T_I16 ? INT16_MIN : n->ret == T_I32 ? INT32_MIN : INT64_MIN;
        int64_t hi = n->ret == T_I8 ? INT8_MAX : n->ret == T_I16 ? INT16_MAX : n->ret == T_I32 ? INT32_MAX : INT64_MAX;
        if ((st = want(i >= lo && i <= hi, n))) return st;
        if (n->ret == T_I64) *(int64_t *)h->ret = i;
        else *(ffi_sarg *)h->ret = (ffi_sarg)i;
        return QV_OK;
    }
    case T_U8: case T_U16: case T_U32: case T_U64: {
        if ((st = want(t == QV_TYPE_INT && qv_decoder_get_cbor_int(&dec, &neg, &u) == QV_OK && !neg, n))) return st;
        uint64_t hi = n->ret == T_U8 ? UINT8_MAX : n->ret == T_U16 ? UINT16_MAX : n->ret == T_U32 ? UINT32_MAX : UINT64_MAX;
        if ((st = want(u <= hi, n))) return st;
        if (n->ret == T_U64) *(uint64_t *)h->ret = u;
        else *(ffi_arg *)h->ret = (ffi_arg)u;
        return QV_OK;
    }
    case T_F32: case T_F64:
        if ((st = want(t == QV_TYPE_FLOAT && qv_decoder_get_float(&dec, &d) == QV_OK, n))) return st;
        if (n->ret == T_F32) *(float *)h->ret = (float)d;
        else *(double *)h->ret = d;
        return QV_OK;
    case T_BOOL: {
        int b;
        if ((st = want(t == QV_TYPE_BOOL && qv_decoder_get_bool(&dec, &b) == QV_OK, n))) return st;
        *(ffi_arg *)h->ret = (ffi_arg)b;
        return QV_OK;
    }
    case T_STR: {
        const uint8_t *p;
        size_t plen;
        if (t == QV_TYPE_NULL) {
            *(const char **)h->ret = NULL;
            return QV_OK;
        }
        if ((st = want(t == QV_TYPE_TEXT && qv_decoder_get_data(&dec, &p, &plen) == QV_OK, n))) return st;
        if ((st = want(!memchr(p, 0, plen), n))) return st;
        uint8_t *buf = thread_retbuf(plen + 1);
        if (!buf) return qv__nomem();
        memcpy(buf, p, plen);
        buf[plen] = 0;
        *(const char **)h->ret = (const char *)buf;
        return QV_OK;
    }
    case T_BYTES: {
        const uint8_t *p;
        size_t plen;
        if ((st = want(t == QV_TYPE_BYTES && qv_decoder_get_data(&dec, &p, &plen) == QV_OK, n))) return st;
        uint8_t *buf = thread_retbuf(plen + 1);
        if (!buf) return qv__nomem();
        if (plen) memcpy(buf, p, plen);
        *(const void **)h->ret = buf;
        uint64_t *lenp = *(uint64_t **)h->args[n->cargs - 1];
        if (lenp) *lenp = plen;
        return QV_OK;
    }
    case T_VALUE: {
        qv_value *v;
        if ((st = qv_value_decode(&v, data, len))) return st;
        *(qv_value **)h->ret = v;
        return QV_OK;
    }
    }
    return qv__error(QV_EINVAL, "unexpected result type");
}

/* ------------------------------------------------------------- closure */

/* Hand a C result the caller can rely on: str and bytes in the thread's
 * buffer, like a hit. The result may already point into that buffer (a
 * function returning part of an argument that an earlier memoized call
 * handed out), hence memmove. */
static void settle_result(native *n, void *ret, void **args) {
    if (n->ret == T_STR && *(const char **)ret) {
        const char *s = *(const char **)ret;
        size_t len = strlen(s);
        uint8_t *buf = thread_retbuf(len + 1);
        if (buf) {
            memmove(buf, s, len + 1);
            *(const char **)ret = (const char *)buf;
        }
    } else if (n->ret == T_BYTES && *(const void **)ret) {
        uint64_t *lenp = *(uint64_t **)args[n->cargs - 1];
        size_t len = lenp ? (size_t)*lenp : 0;
        uint8_t *buf = thread_retbuf(len + 1);
        if (buf) {
            if (len) memmove(buf, *(const void **)ret, len);
            *(const void **)ret = buf;
        }
    }
}

/* The original function, as the call runtime runs it on a miss. */
typedef struct {
    native *n;
    void *ret;
    void **args;
    qv_encoder *enc;
    hit_ctx hit;
} c_run;

static qv_status c_body(const void **result, size_t *len, void *userdata) {
    c_run *r = userdata;
    native *n = r->n;
    qv__fn_note_miss(n->fn);
    ffi_call(&n->cif, n->target, r->ret, r->args);
    uint64_t bytes_len = 0;
    if (n->ret == T_BYTES && *(uint64_t **)r->args[n->cargs - 1]) bytes_len = **(uint64_t **)r->args[n->cargs - 1];
    /* the original may have made memoized calls of its own on this encoder */
    qv_encoder_reset(r->enc);
    if (encode_c_result(n, r->enc, r->ret, bytes_len) || qv_encoder_finish(r->enc, result, len)) return QV_EENCODE;
    return QV_OK;
}

static qv_status c_hit(const void *data, size_t len, void *userdata) {
    c_run *r = userdata;
    return decode_c_result(data, len, &r->hit);
}

/* The memoized call under cache and meta; QV_OK when ret holds the result
 * (a hit, or the original ran and its result is settled). */
static qv_status memoized(native *n, qv_cache *cache, const void *meta, size_t meta_len, void *ret, void **args) {
    qv_encoder *enc = qv__thread_encoder();
    const void *call;
    size_t call_len;
    qv_digest key;
    if (!enc) return QV_ENOMEM;
    qv_encoder_reset(enc);
    qv_status st;
    if ((st = encode_c_call(n, enc, args)) || (st = qv_encoder_finish(enc, &call, &call_len))) return st;
    qv_digest_bytes(&key, call, call_len);
    c_run run = {n, ret, args, enc, {n, ret, args}};
    st = qv__fn_lookup_with(n->fn, cache, &key, decode_c_result, &run.hit);
    if (st != QV_NOTFOUND) return st;

    /* The original may memoize calls of its own on this thread's encoder. */
    uint8_t *call_copy = malloc(call_len);
    if (!call_copy) return QV_ENOMEM;
    memcpy(call_copy, call, call_len);
    qv_call_options opts = QV_CALL_OPTIONS_INIT;
    opts.flags = QV_CALL_MISSED;
    opts.meta = meta;
    opts.meta_len = meta_len;
    int outcome;
    st = qv_call_run(&outcome, cache, &key, call_copy, call_len, &opts, c_hit, c_body, &run);
    free(call_copy);
    if (st) return st;
    if (outcome == QV_CALL_HIT) qv__fn_note_hit(n->fn); /* another caller's run, decoded into ret */
    else settle_result(n, ret, args);
    return QV_OK;
}

static void closure_entry(ffi_cif *cif, void *ret, void **args, void *userdata) {
    native *n = userdata;
    qv_ctx *held;
    qv_cache *cache;
    const void *meta;
    size_t meta_len;
    /* Memoizing must never break the caller: any failure calls through. */
    qv_status st = qv__ctx_hold(&held, &cache, &meta, &meta_len);
    if (!st) st = memoized(n, cache, meta, meta_len, ret, args);
    qv_ctx_free(held);
    if (st) {
        ffi_call(&n->cif, n->target, ret, args);
        settle_result(n, ret, args);
    }
}

/* ------------------------------------------------------ trees to C values */

typedef union {
    int8_t i8;
    int16_t i16;
    int32_t i32;
    int64_t i64;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    float f32;
    double f64;
    const void *p;
} cval;

static qv_status arg_error(native *n, int k, const char *what) {
    return qv__error(QV_ETYPE, "%s: argument %d must be %s (signature \"%s\")", n->name, k + 1, what, n->signature);
}

/* Check args against the signature and lay them out as C values. */
static qv_status to_c_args(native *n, const qv_value *args, const qv_value *kwargs, cval *vals, void **avalues) {
    if (kwargs && qv_value_count(kwargs))
        return qv__error(QV_EINVAL, "%s: a C function takes no keyword arguments", n->name);
    if (qv_value_count(args) != (size_t)n->nargs)
        return qv__error(QV_EINVAL, "%s: takes %d arguments (signature \"%s\"), got %zu", n->name, n->nargs,
                         n->signature, qv_value_count(args));
    int c = 0;
    for (int k = 0; k < n->nargs; k++) {
        const qv_value *v = qv_value_list_get(args, k);
        cval *cv = &vals[c];
        avalues[c] = cv;
        c++;
        int neg;
        uint64_t u;
        int64_t i;
        switch (n->types[k]) {
        case T_I8: case T_I16: case T_I32: case T_I64: {
            static const char *names[] = {"an integer that fits i8", "an integer that fits i16",
                                          "an integer that fits i32", "an integer that fits i64"};
            int w = n->types[k] - T_I8;
            int64_t lo = w == 0 ? INT8_MIN : w == 1 ? INT16_MIN : w == 2 ? INT32_MIN : INT64_MIN;
            int64_t hi = w == 0 ? INT8_MAX : w == 1 ? INT16_MAX : w == 2 ? INT32_MAX : INT64_MAX;
            if (qv_value_get_int(v, &i) || i < lo || i > hi) return arg_error(n, k, names[w]);
            if (w == 0) cv->i8 = (int8_t)i;
            else if (w == 1) cv->i16 = (int16_t)i;
            else if (w == 2) cv->i32 = (int32_t)i;
            else cv->i64 = i;
            break;
        }
        case T_U8: case T_U16: case T_U32: case T_U64: {
            static const char *names[] = {"an integer that fits u8", "an integer that fits u16",
                                          "an integer that fits u32", "an integer that fits u64"};
            int w = n->types[k] - T_U8;
            uint64_t hi = w == 0 ? UINT8_MAX : w == 1 ? UINT16_MAX : w == 2 ? UINT32_MAX : UINT64_MAX;
            if (qv_value_get_cbor_int(v, &neg, &u) || neg || u > hi) return arg_error(n, k, names[w]);
            if (w == 0) cv->u8 = (uint8_t)u;
            else if (w == 1) cv->u16 = (uint16_t)u;
            else if (w == 2) cv->u32 = (uint32_t)u;
            else cv->u64 = u;
            break;
        }
        case T_F32: {
            double d;
            /* exactly representable, so both paths digest the same float */
            if (qv_value_get_float(v, &d) || (d == d && (double)(float)d != d))
                return arg_error(n, k, "a float exactly representable as f32");
            cv->f32 = (float)d;
            break;
        }
        case T_F64:
            if (qv_value_get_float(v, &cv->f64)) return arg_error(n, k, "a float");
            break;
        case T_BOOL: {
            int b;
            if (qv_value_get_bool(v, &b)) return arg_error(n, k, "a bool");
            cv->u8 = (uint8_t)(b != 0);
            break;
        }
        case T_STR: {
            const char *s;
            size_t len;
            if (qv_value_type(v) == QV_TYPE_NULL) cv->p = NULL;
            else if (qv_value_get_text(v, &s, &len) || memchr(s, 0, len)) return arg_error(n, k, "text without NUL");
            else cv->p = s;
            break;
        }
        case T_BYTES: {
            const uint8_t *p;
            size_t len;
            if (qv_value_get_bytes(v, &p, &len)) return arg_error(n, k, "bytes");
            cv->p = p;
            vals[c].u64 = len;
            avalues[c] = &vals[c];
            c++;
            break;
        }
        case T_VALUE:
            cv->p = v;
            break;
        default:
            return qv__error(QV_EINVAL, "unexpected parameter type");
        }
    }
    return QV_OK;
}

static qv_status check_args(const qv_value *args, const qv_value *kwargs, void *userdata) {
    native *n = userdata;
    cval vals[2 * MAX_ARGS + 1];
    void *avalues[2 * MAX_ARGS + 1];
    return to_c_args(n, args, kwargs, vals, avalues);
}

/* The body behind qv_fn_call: trees in, ffi_call, a tree out. */
static qv_status native_body(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata) {
    native *n = userdata;
    cval vals[2 * MAX_ARGS + 1];
    void *avalues[2 * MAX_ARGS + 1];
    qv_status st = to_c_args(n, args, kwargs, vals, avalues);
    if (st) return st;
    uint64_t bytes_len = 0;
    uint64_t *lenp = &bytes_len;
    if (n->ret == T_BYTES) avalues[n->cargs - 1] = &lenp;
    union {
        ffi_arg a;
        int64_t i64;
        double f64;
        float f32;
        void *p;
    } ret;
    ffi_call(&n->cif, n->target, &ret, avalues);
    if (n->ret == T_VALUE) {
        /* the function's value is ours to hand on */
        *result = ret.p;
        return *result ? QV_OK : qv_value_new_null(result);
    }
    qv_encoder *enc;
    if ((st = qv_encoder_new(&enc))) return st;
    const void *data;
    size_t len;
    if (!(st = encode_c_result(n, enc, &ret, bytes_len)) && !(st = qv_encoder_finish(enc, &data, &len)))
        st = qv_value_decode(result, data, len);
    qv_encoder_free(enc);
    return st;
}

static void free_native(void *userdata) {
    native *n = userdata;
    if (n->closure) ffi_closure_free(n->closure);
    free(n->signature);
    free(n);
}

qv_status qv_fn_new_c(qv_fn **out, const char *name, const char *version, void (*fn)(void), const char *signature) {
    if (out) *out = NULL;
    if (!out || !name || !fn || !signature) return qv__error(QV_EINVAL, "qv_fn_new_c: NULL argument");
    native *n = calloc(1, sizeof *n);
    if (!n || !(n->signature = strdup(signature))) {
        free(n);
        return qv__nomem();
    }
    n->target = fn;
    qv_status st = parse(n, signature);
    if (!st) {
        n->closure = ffi_closure_alloc(sizeof(ffi_closure), &n->code);
        if (!n->closure) st = qv__error(QV_ENOMEM, "libffi cannot allocate a closure");
        else if (ffi_prep_closure_loc(n->closure, &n->cif, closure_entry, n, n->code) != FFI_OK)
            st = qv__error(QV_EINVAL, "signature \"%s\": libffi cannot prepare a closure for it", signature);
    }
    if (st) {
        free_native(n);
        return st;
    }
    /* qv_fn_new frees n through free_native if it fails */
    if ((st = qv_fn_new(out, name, version, native_body, n, free_native))) return st;
    n->fn = *out;
    n->name = qv_fn_name(*out);
    n->name_len = strlen(n->name);
    n->version = qv_fn_version(*out);
    n->version_len = n->version ? strlen(n->version) : 0;
    qv__fn_set_check(*out, check_args);
    return QV_OK;
}

static native *native_of(const qv_fn *fn) {
    return fn ? qv__fn_userdata(fn, native_body) : NULL;
}

void *qv_fn_pointer(qv_fn *fn) {
    native *n = native_of(fn);
    if (!n) {
        qv__error(QV_EINVAL, "qv_fn_pointer: the function was not made by qv_fn_new_c");
        return NULL;
    }
    return n->code;
}

const char *qv_fn_signature(const qv_fn *fn) {
    native *n = native_of(fn);
    return n ? n->signature : NULL;
}
