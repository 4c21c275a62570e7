/* libFuzzer target: qv_fn_new_c's signature strings (ffi.c), two ways per
 * input: the input itself as a signature (raw bytes), and a signature
 * generated from the input by the grammar RET(ARG,...) with spaces, tabs,
 * near-miss type names, missing or extra punctuation and up to 40
 * parameters. A reference parser here says which signatures are good;
 * qv_fn_new_c must agree, and must say why it refuses.
 *
 * A function made from a good signature is called, in a memory cache:
 * through qv_fn_call with arguments generated for its parameters (sometimes
 * of the wrong type), then again (a hit, the same result), then through its
 * qv_fn_pointer with the same C values (a hit too: both paths digest a call
 * alike). The C function behind it is a libffi closure of the same
 * signature, so any signature has one. */
#include <ffi.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "input.h"
#include "quiver.h"

#define MAX_ARGS 32

typedef enum { T_VOID, T_I8, T_I16, T_I32, T_I64, T_U8, T_U16, T_U32, T_U64, T_F32, T_F64, T_BOOL, T_STR, T_BYTES, T_VALUE } ctype;

static const char *const type_names[] = {"void", "i8",  "i16", "i32",  "i64", "u8",    "u16",  "u32",
                                         "u64",  "f32", "f64", "bool", "str", "bytes", "value"};
#define NTYPES 15

/* -------------------------------------------------- reference parser */

typedef struct {
    ctype ret;
    int nargs;
    ctype args[MAX_ARGS];
} sig;

static size_t spaces(const char *s, size_t i) {
    while (s[i] == ' ' || s[i] == '\t') i++;
    return i;
}

/* The longest run of [a-z0-9] at *i, if it names a type. */
static int type_at(const char *s, size_t *i, ctype *out) {
    size_t n = 0;
    while ((s[*i + n] >= 'a' && s[*i + n] <= 'z') || (s[*i + n] >= '0' && s[*i + n] <= '9')) n++;
    for (int k = 0; k < NTYPES; k++) {
        if (strlen(type_names[k]) == n && memcmp(type_names[k], s + *i, n) == 0) {
            *out = (ctype)k;
            *i += n;
            return 1;
        }
    }
    return 0;
}

/* ws TYPE ws '(' ws [ARG ws (',' ws ARG ws)*] ')' ws END, ARG not void, at most 32 */
static int reference_parse(const char *s, sig *out) {
    size_t i = spaces(s, 0);
    if (!type_at(s, &i, &out->ret)) return 0;
    i = spaces(s, i);
    if (s[i++] != '(') return 0;
    i = spaces(s, i);
    out->nargs = 0;
    if (s[i] != ')') {
        for (;;) {
            ctype t;
            if (!type_at(s, &i, &t) || t == T_VOID || out->nargs == MAX_ARGS) return 0;
            out->args[out->nargs++] = t;
            i = spaces(s, i);
            if (s[i] == ')') break;
            if (s[i++] != ',') return 0;
            i = spaces(s, i);
        }
    }
    return s[spaces(s, i + 1)] == 0;
}

/* ------------------------------------------------------ generation */

static void append(char *buf, size_t cap, size_t *len, const char *s) {
    size_t n = strlen(s);
    if (*len + n >= cap) return;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = 0;
}

static void gen_space(char *buf, size_t cap, size_t *len, input *in) {
    static const char *const ws[] = {"", "", "", " ", "\t", "  ", "\n", "\v"};
    append(buf, cap, len, ws[take8(in) & 7]);
}

static void gen_type(char *buf, size_t cap, size_t *len, input *in) {
    static const char *const near[] = {"i128", "u", "f6", "valu", "values", "I32", "", "bool8", "8i", "vo id", "str,"};
    uint8_t b = take8(in);
    append(buf, cap, len, b < 224 ? type_names[b % NTYPES] : near[b % 11]);
}

static void gen_signature(char *buf, size_t cap, input *in) {
    static const char *const opens[] = {"(", "(", "(", "", "((", "[", ")"};
    static const char *const seps[] = {",", ",", ",", ",", "", ",,", ";", " ,"};
    static const char *const closes[] = {")", ")", ")", "", "))", "]", ")x", ")\xff"};
    size_t len = 0;
    buf[0] = 0;
    uint8_t shape = take8(in);
    gen_space(buf, cap, &len, in);
    gen_type(buf, cap, &len, in);
    gen_space(buf, cap, &len, in);
    append(buf, cap, &len, opens[shape % 7]);
    gen_space(buf, cap, &len, in);
    int nargs = take8(in) % 41;
    for (int k = 0; k < nargs; k++) {
        if (k) {
            gen_space(buf, cap, &len, in);
            append(buf, cap, &len, seps[take8(in) & 7]);
            gen_space(buf, cap, &len, in);
        }
        gen_type(buf, cap, &len, in);
    }
    gen_space(buf, cap, &len, in);
    append(buf, cap, &len, closes[(shape >> 3) & 7]);
    gen_space(buf, cap, &len, in);
}

/* An argument for a parameter of type t; now and then of another type. */
static qv_status gen_arg(qv_value **out, ctype t, input *in) {
    uint8_t b = take8(in);
    if ((b & 15) == 0) t = (ctype)(1 + b % (NTYPES - 1)); /* a wrong type, often */
    uint64_t u = take(in, 8);
    switch (t) {
    case T_I8: return qv_value_new_int(out, b & 16 ? (int8_t)u : (int64_t)u >> (b >> 5));
    case T_I16: return qv_value_new_int(out, b & 16 ? (int16_t)u : (int64_t)u);
    case T_I32: return qv_value_new_int(out, b & 16 ? (int32_t)u : (int64_t)u);
    case T_I64: return qv_value_new_int(out, (int64_t)u);
    case T_U8: return qv_value_new_uint(out, b & 16 ? (uint8_t)u : u);
    case T_U16: return qv_value_new_uint(out, b & 16 ? (uint16_t)u : u);
    case T_U32: return qv_value_new_uint(out, b & 16 ? (uint32_t)u : u);
    case T_U64: return qv_value_new_uint(out, u);
    case T_F32: {
        float f;
        uint32_t w = (uint32_t)u;
        memcpy(&f, &w, sizeof f);
        return qv_value_new_float(out, b & 16 ? (double)f : 0.1);
    }
    case T_F64: {
        double d;
        memcpy(&d, &u, sizeof d);
        return qv_value_new_float(out, d);
    }
    case T_BOOL: return qv_value_new_bool(out, (int)(u & 1));
    case T_STR: {
        static const char *const texts[] = {"", "a", "caf\xc3\xa9", "nul\0inside", "\xf0\x9f\x98\x80"};
        if ((b & 0x70) == 0x70) return qv_value_new_null(out);
        int k = (int)(u % 5);
        return qv_value_new_text(out, texts[k], k == 3 ? 10 : strlen(texts[k]));
    }
    case T_BYTES: return qv_value_new_bytes(out, &u, (size_t)(b >> 5));
    default: { /* value: any small tree */
        qv_value *list, *item;
        if (b & 16) return qv_value_new_int(out, (int64_t)u);
        qv_status st = qv_value_new_list(&list);
        if (!st && !(st = qv_value_new_text(&item, "v", 1))) st = qv_value_list_append(list, item);
        if (st) {
            qv_value_free(list);
            return st;
        }
        *out = list;
        return QV_OK;
    }
    }
}

/* ------------------------------------------- the C function behind it */

static ffi_type *ffi_of(ctype t) {
    switch (t) {
    case T_VOID: return &ffi_type_void;
    case T_I8: return &ffi_type_sint8;
    case T_I16: return &ffi_type_sint16;
    case T_I32: return &ffi_type_sint32;
    case T_I64: return &ffi_type_sint64;
    case T_U8: case T_BOOL: return &ffi_type_uint8;
    case T_U16: return &ffi_type_uint16;
    case T_U32: return &ffi_type_uint32;
    case T_U64: return &ffi_type_uint64;
    case T_F32: return &ffi_type_float;
    case T_F64: return &ffi_type_double;
    default: return &ffi_type_pointer;
    }
}

typedef struct {
    sig s;
    ffi_cif cif;
    ffi_type *atypes[2 * MAX_ARGS + 1];
    int cargs;
    int calls;
} target;

static const uint8_t target_bytes[] = {'o', 'u', 't'};

/* Every result a fixed value of the return type: what the call returns is
 * then known, hit or not. */
static void target_entry(ffi_cif *cif, void *ret, void **args, void *userdata) {
    target *t = userdata;
    (void)cif;
    t->calls++;
    switch (t->s.ret) {
    case T_VOID: break;
    case T_I8: case T_I16: case T_I32: *(ffi_sarg *)ret = -7; break;
    case T_I64: *(int64_t *)ret = -7; break;
    case T_U8: case T_U16: case T_U32: case T_BOOL: *(ffi_arg *)ret = 1; break;
    case T_U64: *(uint64_t *)ret = 7; break;
    case T_F32: *(float *)ret = 1.5f; break;
    case T_F64: *(double *)ret = 1.5; break;
    case T_STR: *(const char **)ret = "result"; break;
    case T_BYTES:
        *(const void **)ret = target_bytes;
        **(uint64_t **)args[t->cargs - 1] = sizeof target_bytes;
        break;
    case T_VALUE: {
        qv_value *v = NULL;
        qv_value_new_text(&v, "result", 6);
        *(qv_value **)ret = v;
        break;
    }
    }
}

/* ----------------------------------------------------------- checks */

static qv_cache *cache;

/* What a refused signature is given as its function: never called. */
static void never_called(void) {
    abort();
}

/* A C value of the argument a parameter of type t takes, from its tree. */
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

static void to_c(ctype t, const qv_value *v, cval *c, cval *len) {
    int64_t i = 0;
    uint64_t u = 0;
    double d = 0;
    const char *s;
    const uint8_t *b;
    size_t n;
    switch (t) {
    case T_I8: qv_value_get_int(v, &i); c->i8 = (int8_t)i; break;
    case T_I16: qv_value_get_int(v, &i); c->i16 = (int16_t)i; break;
    case T_I32: qv_value_get_int(v, &i); c->i32 = (int32_t)i; break;
    case T_I64: qv_value_get_int(v, &i); c->i64 = i; break;
    case T_U8: qv_value_get_uint(v, &u); c->u8 = (uint8_t)u; break;
    case T_U16: qv_value_get_uint(v, &u); c->u16 = (uint16_t)u; break;
    case T_U32: qv_value_get_uint(v, &u); c->u32 = (uint32_t)u; break;
    case T_U64: qv_value_get_uint(v, &u); c->u64 = u; break;
    case T_F32: qv_value_get_float(v, &d); c->f32 = (float)d; break;
    case T_F64: qv_value_get_float(v, &d); c->f64 = d; break;
    case T_BOOL: { int x = 0; qv_value_get_bool(v, &x); c->u8 = (uint8_t)x; break; }
    case T_STR: c->p = qv_value_get_text(v, &s, &n) ? NULL : s; break;
    case T_BYTES: qv_value_get_bytes(v, &b, &n); c->p = b; len->u64 = n; break;
    default: c->p = v;
    }
}

/* The result through the function pointer, as a tree, to compare. */
static qv_value *pointer_result(target *t, void *code, const qv_value *args) {
    cval vals[2 * MAX_ARGS + 1];
    void *avalues[2 * MAX_ARGS + 1];
    uint64_t out_len = 0, *lenp = &out_len;
    int c = 0;
    for (int k = 0; k < t->s.nargs; k++) {
        avalues[c] = &vals[c];
        if (t->s.args[k] == T_BYTES) {
            avalues[c + 1] = &vals[c + 1];
            to_c(t->s.args[k], qv_value_list_get(args, k), &vals[c], &vals[c + 1]);
            c += 2;
        } else {
            to_c(t->s.args[k], qv_value_list_get(args, k), &vals[c], NULL);
            c++;
        }
    }
    if (t->s.ret == T_BYTES) avalues[c++] = &lenp;
    union {
        ffi_arg a;
        ffi_sarg s;
        int64_t i64;
        uint64_t u64;
        double f64;
        float f32;
        void *p;
    } ret = {0};
    ffi_call(&t->cif, FFI_FN(code), &ret, avalues);
    qv_value *v = NULL;
    switch (t->s.ret) {
    case T_VOID: qv_value_new_null(&v); break;
    case T_I8: qv_value_new_int(&v, (int8_t)ret.s); break;
    case T_I16: qv_value_new_int(&v, (int16_t)ret.s); break;
    case T_I32: qv_value_new_int(&v, (int32_t)ret.s); break;
    case T_I64: qv_value_new_int(&v, ret.i64); break;
    case T_U8: qv_value_new_uint(&v, (uint8_t)ret.a); break;
    case T_U16: qv_value_new_uint(&v, (uint16_t)ret.a); break;
    case T_U32: qv_value_new_uint(&v, (uint32_t)ret.a); break;
    case T_U64: qv_value_new_uint(&v, ret.u64); break;
    case T_F32: qv_value_new_float(&v, ret.f32); break;
    case T_F64: qv_value_new_float(&v, ret.f64); break;
    case T_BOOL: qv_value_new_bool(&v, (uint8_t)ret.a != 0); break;
    case T_STR: ret.p ? qv_value_new_text(&v, ret.p, strlen(ret.p)) : qv_value_new_null(&v); break;
    case T_BYTES: qv_value_new_bytes(&v, ret.p, (size_t)out_len); break;
    case T_VALUE: v = ret.p; break;
    }
    return v;
}

static int same(const qv_value *a, const qv_value *b) {
    return a && b && qv_value_compare(a, b) == 0;
}

static void try_signature(const char *text, input *in) {
    sig s;
    int good = reference_parse(text, &s);
    target t = {.s = s};
    void *code = NULL;
    ffi_closure *closure = NULL;
    qv_fn *fn;
    if (good) {
        for (int k = 0; k < s.nargs; k++) {
            t.atypes[t.cargs++] = ffi_of(s.args[k]);
            if (s.args[k] == T_BYTES) t.atypes[t.cargs++] = &ffi_type_uint64;
        }
        if (s.ret == T_BYTES) t.atypes[t.cargs++] = &ffi_type_pointer;
        if (ffi_prep_cif(&t.cif, FFI_DEFAULT_ABI, (unsigned)t.cargs, ffi_of(s.ret), t.atypes) != FFI_OK ||
            !(closure = ffi_closure_alloc(sizeof(ffi_closure), &code)) ||
            ffi_prep_closure_loc(closure, &t.cif, target_entry, &t, code) != FFI_OK)
            abort();
    }
    qv_status st = qv_fn_new_c(&fn, "fuzz.sig", NULL, good ? (void (*)(void))code : never_called, text);
    if (!good) {
        /* refused, with the position and what was expected */
        if (st != QV_EINVAL || fn || !strstr(qv_errmsg(), "expected")) abort();
        return;
    }
    if (st || !fn || strcmp(qv_fn_signature(fn), text) != 0) abort();

    qv_value *args;
    if (qv_value_new_list(&args)) abort();
    int nargs = s.nargs + ((take8(in) & 31) == 0); /* now and then one too many */
    for (int k = 0; k < nargs; k++) {
        qv_value *a;
        if (gen_arg(&a, k < s.nargs ? s.args[k] : T_I64, in) || qv_value_list_append(args, a)) abort();
    }
    qv_digest d;
    qv_status digested = qv_fn_digest(&d, fn, args, NULL);
    if (digested != QV_OK && digested != QV_ETYPE && digested != QV_EINVAL) abort();
    qv_value *first = NULL, *second = NULL, *third = NULL;
    st = qv_fn_call(fn, args, &first);
    if (st != digested) abort(); /* the same check refuses both */
    if (!st) {
        uint64_t hits0, hits1, hits2;
        qv_fn_stat(fn, QV_FN_STAT_HITS, &hits0);
        if (qv_fn_call(fn, args, &second) || !same(first, second)) abort();
        qv_fn_stat(fn, QV_FN_STAT_HITS, &hits1);
        /* a C string stops at its NUL: the pointer is then another call */
        int nul = 0;
        for (int k = 0; k < s.nargs; k++) {
            const char *p;
            size_t n;
            if (s.args[k] == T_STR && !qv_value_get_text(qv_value_list_get(args, k), &p, &n)) nul |= strlen(p) != n;
        }
        third = pointer_result(&t, qv_fn_pointer(fn), args);
        qv_fn_stat(fn, QV_FN_STAT_HITS, &hits2);
        if (hits1 != hits0 + 1 || (!nul && hits2 != hits1 + 1) || !same(first, third) || t.calls != 1 + nul) abort();
    }
    qv_value_free(first);
    qv_value_free(second);
    qv_value_free(third);
    qv_value_free(args);
    qv_fn_free(fn);
    ffi_closure_free(closure);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a cache of its own for each input: no call may hit an earlier input's */
    if (qv_cache_open_memory(&cache) || qv_ctx_push(cache, NULL)) abort();
    static char text[4096];
    input in = {data, size};
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = 0;
    try_signature(text, &in);
    gen_signature(text, sizeof text, &in);
    try_signature(text, &in);
    if (qv_ctx_pop()) abort();
    qv_cache_close(cache);
    return 0;
}
