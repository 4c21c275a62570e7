/* libffi: every type of the signature grammar as argument and as result,
 * many mixed arguments, one closure from eight threads, digests equal to
 * qv_call_digest's, and clear errors for bad signatures and arguments. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "helpers.h"

static _Atomic int runs;

static int8_t neg_i8(int8_t x) { atomic_fetch_add(&runs, 1); return (int8_t)-x; }
static int16_t neg_i16(int16_t x) { atomic_fetch_add(&runs, 1); return (int16_t)-x; }
static int32_t neg_i32(int32_t x) { atomic_fetch_add(&runs, 1); return -x; }
static int64_t neg_i64(int64_t x) { atomic_fetch_add(&runs, 1); return -x; }
static uint8_t inc_u8(uint8_t x) { atomic_fetch_add(&runs, 1); return (uint8_t)(x + 1); }
static uint16_t inc_u16(uint16_t x) { atomic_fetch_add(&runs, 1); return (uint16_t)(x + 1); }
static uint32_t inc_u32(uint32_t x) { atomic_fetch_add(&runs, 1); return x + 1; }
static uint64_t inc_u64(uint64_t x) { atomic_fetch_add(&runs, 1); return x + 1; }
static float half_f32(float x) { atomic_fetch_add(&runs, 1); return x / 2; }
static double half_f64(double x) { atomic_fetch_add(&runs, 1); return x / 2; }
static bool not_bool(bool x) { atomic_fetch_add(&runs, 1); return !x; }

static char upper_buf[64];
static const char *upper_str(const char *s) {
    atomic_fetch_add(&runs, 1);
    size_t i = 0;
    for (; s[i] && i < sizeof upper_buf - 1; i++) upper_buf[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
    upper_buf[i] = 0;
    return upper_buf;
}

static uint8_t rev_buf[64];
static const void *rev_bytes(const void *p, uint64_t n, uint64_t *len) {
    atomic_fetch_add(&runs, 1);
    for (uint64_t i = 0; i < n && i < sizeof rev_buf; i++) rev_buf[i] = ((const uint8_t *)p)[n - 1 - i];
    *len = n;
    return rev_buf;
}

static qv_value *wrap_value(const qv_value *v) {
    atomic_fetch_add(&runs, 1);
    qv_value *list, *copy;
    qv_value_new_list(&list);
    qv_value_clone(&copy, v);
    qv_value_list_append(list, copy);
    return list;
}

static _Atomic int64_t side_effect;
static void record_void(int64_t x) {
    atomic_fetch_add(&runs, 1);
    atomic_store(&side_effect, x);
}

static qv_cache *cache;

static int setup(void **state) {
    QVT_OK(qv_cache_open_memory(&cache));
    QVT_OK(qv_ctx_push(cache, NULL));
    atomic_store(&runs, 0);
    return 0;
}

static int teardown(void **state) {
    QVT_OK(qv_ctx_pop());
    qv_cache_close(cache);
    return 0;
}

static qv_fn *make(const char *name, void (*f)(void), const char *sig) {
    qv_fn *fn;
    QVT_OK(qv_fn_new_c(&fn, name, "1", f, sig));
    assert_string_equal(qv_fn_signature(fn), sig);
    assert_non_null(qv_fn_pointer(fn));
    return fn;
}

/* The digest of fn over one argument equals qv_call_digest's. */
static void same_digest(qv_fn *fn, qv_value *arg) {
    qv_value *args;
    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_list_append(args, arg));
    qv_digest a, b;
    QVT_OK(qv_fn_digest(&a, fn, args, NULL));
    QVT_OK(qv_call_digest(&b, qv_fn_name(fn), "1", args, NULL));
    assert_memory_equal(a.bytes, b.bytes, 16);
    /* the tree path finds what the closure stored: the body does not run */
    int before = atomic_load(&runs);
    qv_value *r;
    QVT_OK(qv_fn_call(fn, args, &r));
    assert_int_equal(atomic_load(&runs), before);
    qv_value_free(r);
    QVT_OK(qv_cache_contains(cache, &a));
    qv_value_free(args);
}

#define TWICE(expr, want)                                                                                      \
    do {                                                                                                       \
        int before_ = atomic_load(&runs);                                                                      \
        assert_true((expr) == (want));                                                                         \
        assert_true((expr) == (want));                                                                         \
        assert_int_equal(atomic_load(&runs), before_ + 1); /* the second was a hit */                          \
    } while (0)

static void integers(void **state) {
    qv_fn *f8 = make("t.neg_i8", (void (*)(void))neg_i8, "i8(i8)");
    qv_fn *f16 = make("t.neg_i16", (void (*)(void))neg_i16, "i16(i16)");
    qv_fn *f32 = make("t.neg_i32", (void (*)(void))neg_i32, "i32(i32)");
    qv_fn *f64 = make("t.neg_i64", (void (*)(void))neg_i64, "i64(i64)");
    qv_fn *u8 = make("t.inc_u8", (void (*)(void))inc_u8, "u8(u8)");
    qv_fn *u16 = make("t.inc_u16", (void (*)(void))inc_u16, "u16(u16)");
    qv_fn *u32 = make("t.inc_u32", (void (*)(void))inc_u32, "u32(u32)");
    qv_fn *u64 = make("t.inc_u64", (void (*)(void))inc_u64, "u64(u64)");
    TWICE(((int8_t(*)(int8_t))qv_fn_pointer(f8))(-128 + 1), 127);
    TWICE(((int16_t(*)(int16_t))qv_fn_pointer(f16))(-300), 300);
    TWICE(((int32_t(*)(int32_t))qv_fn_pointer(f32))(70000), -70000);
    TWICE(((int64_t(*)(int64_t))qv_fn_pointer(f64))(-(INT64_MAX)), INT64_MAX);
    TWICE(((uint8_t(*)(uint8_t))qv_fn_pointer(u8))(254), 255);
    TWICE(((uint16_t(*)(uint16_t))qv_fn_pointer(u16))(65534), 65535);
    TWICE(((uint32_t(*)(uint32_t))qv_fn_pointer(u32))(4000000000u), 4000000001u);
    TWICE(((uint64_t(*)(uint64_t))qv_fn_pointer(u64))(UINT64_MAX - 1), UINT64_MAX);
    qv_value *v;
    QVT_OK(qv_value_new_int(&v, -127));
    same_digest(f8, v);
    QVT_OK(qv_value_new_uint(&v, UINT64_MAX - 1));
    same_digest(u64, v);
    QVT_OK(qv_value_new_int(&v, 70000));
    same_digest(f32, v);
    qv_fn *all[] = {f8, f16, f32, f64, u8, u16, u32, u64};
    for (int i = 0; i < 8; i++) qv_fn_free(all[i]);
}

static void floats_and_bools(void **state) {
    qv_fn *ff = make("t.half_f32", (void (*)(void))half_f32, "f32(f32)");
    qv_fn *fd = make("t.half_f64", (void (*)(void))half_f64, "f64(f64)");
    qv_fn *fb = make("t.not", (void (*)(void))not_bool, "bool(bool)");
    TWICE(((float (*)(float))qv_fn_pointer(ff))(3.0f), 1.5f);
    TWICE(((double (*)(double))qv_fn_pointer(fd))(0.1), 0.05);
    TWICE(((bool (*)(bool))qv_fn_pointer(fb))(true), false);
    qv_value *v;
    QVT_OK(qv_value_new_float(&v, 3.0));
    same_digest(ff, v);
    QVT_OK(qv_value_new_float(&v, 0.1));
    same_digest(fd, v);
    QVT_OK(qv_value_new_bool(&v, 1));
    same_digest(fb, v);
    qv_fn_free(ff);
    qv_fn_free(fd);
    qv_fn_free(fb);
}

static void strings_bytes_values_void(void **state) {
    qv_fn *fs = make("t.upper", (void (*)(void))upper_str, "str(str)");
    const char *(*up)(const char *) = (const char *(*)(const char *))qv_fn_pointer(fs);
    int before = atomic_load(&runs);
    assert_string_equal(up("quiver"), "QUIVER");
    const char *hit = up("quiver");
    assert_string_equal(hit, "QUIVER");
    assert_ptr_not_equal(hit, upper_buf); /* a hit hands out quiver's copy */
    assert_int_equal(atomic_load(&runs), before + 1);
    qv_value *v;
    QVT_OK(qv_value_new_text(&v, "quiver", 6));
    same_digest(fs, v);

    qv_fn *fy = make("t.rev", (void (*)(void))rev_bytes, "bytes(bytes)");
    const void *(*rev)(const void *, uint64_t, uint64_t *) =
        (const void *(*)(const void *, uint64_t, uint64_t *))qv_fn_pointer(fy);
    uint64_t len = 0;
    before = atomic_load(&runs);
    const uint8_t *r = rev("\x01\x02\x03", 3, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(r, "\x03\x02\x01", 3);
    len = 0;
    r = rev("\x01\x02\x03", 3, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(r, "\x03\x02\x01", 3);
    assert_int_equal(atomic_load(&runs), before + 1);
    QVT_OK(qv_value_new_bytes(&v, "\x01\x02\x03", 3));
    same_digest(fy, v);

    qv_fn *fv = make("t.wrap", (void (*)(void))wrap_value, "value(value)");
    qv_value *(*wrap)(const qv_value *) = (qv_value * (*)(const qv_value *)) qv_fn_pointer(fv);
    qv_value *arg;
    QVT_OK(qv_value_new_text(&arg, "x", 1));
    before = atomic_load(&runs);
    qv_value *w1 = wrap(arg), *w2 = wrap(arg);
    assert_int_equal(atomic_load(&runs), before + 1);
    assert_int_equal(qv_value_count(w1), 1);
    assert_int_equal(qv_value_compare(w1, w2), 0);
    qv_value_free(w1);
    qv_value_free(w2);
    same_digest(fv, arg);

    qv_fn *fz = make("t.record", (void (*)(void))record_void, "void(i64)");
    void (*rec)(int64_t) = (void (*)(int64_t))qv_fn_pointer(fz);
    before = atomic_load(&runs);
    rec(41);
    rec(41);
    assert_int_equal(atomic_load(&runs), before + 1); /* a void result is cached as null */
    assert_int_equal(atomic_load(&side_effect), 41);
    qv_fn_free(fs);
    qv_fn_free(fy);
    qv_fn_free(fv);
    qv_fn_free(fz);
}

static double mix(int64_t a, double b, int32_t c, float d, uint8_t e, double f, int16_t g, double h, uint64_t i,
                  double j, int8_t k, double l, int64_t m, double n) {
    atomic_fetch_add(&runs, 1);
    return (double)a + b * 2 + c * 3 + d * 4 + e * 5 + f * 6 + g * 7 + h * 8 + (double)i * 9 + j * 10 + k * 11 +
           l * 12 + (double)m * 13 + n * 14;
}

static void many_mixed_arguments(void **state) {
    const char *sig = "f64(i64,f64,i32,f32,u8,f64,i16,f64,u64,f64,i8,f64,i64,f64)";
    qv_fn *fn = make("t.mix", (void (*)(void))mix, sig);
    double (*m)(int64_t, double, int32_t, float, uint8_t, double, int16_t, double, uint64_t, double, int8_t, double,
                int64_t, double) = (double (*)(int64_t, double, int32_t, float, uint8_t, double, int16_t, double,
                                               uint64_t, double, int8_t, double, int64_t, double))qv_fn_pointer(fn);
    double want = mix(1, 0.5, -3, 1.25f, 200, 2.5, -7, 0.125, 9, 1.0, -1, 3.5, -13, 0.25);
    atomic_store(&runs, 0);
    double a = m(1, 0.5, -3, 1.25f, 200, 2.5, -7, 0.125, 9, 1.0, -1, 3.5, -13, 0.25);
    double b = m(1, 0.5, -3, 1.25f, 200, 2.5, -7, 0.125, 9, 1.0, -1, 3.5, -13, 0.25);
    assert_true(a == want && b == want);
    assert_int_equal(atomic_load(&runs), 1);
    /* and the same call as values digests the same and hits */
    qv_value *args, *v;
    QVT_OK(qv_value_new_list(&args));
#define ADD(ctor, x)                                                                                       \
    do {                                                                                                   \
        QVT_OK(ctor(&v, x));                                                                                \
        QVT_OK(qv_value_list_append(args, v));                                                              \
    } while (0)
    ADD(qv_value_new_int, 1);
    ADD(qv_value_new_float, 0.5);
    ADD(qv_value_new_int, -3);
    ADD(qv_value_new_float, 1.25);
    ADD(qv_value_new_uint, 200);
    ADD(qv_value_new_float, 2.5);
    ADD(qv_value_new_int, -7);
    ADD(qv_value_new_float, 0.125);
    ADD(qv_value_new_uint, 9);
    ADD(qv_value_new_float, 1.0);
    ADD(qv_value_new_int, -1);
    ADD(qv_value_new_float, 3.5);
    ADD(qv_value_new_int, -13);
    ADD(qv_value_new_float, 0.25);
#undef ADD
    qv_digest d1, d2;
    QVT_OK(qv_fn_digest(&d1, fn, args, NULL));
    QVT_OK(qv_call_digest(&d2, "t.mix", "1", args, NULL));
    assert_memory_equal(d1.bytes, d2.bytes, 16);
    QVT_OK(qv_cache_contains(cache, &d1));
    qv_value *r;
    QVT_OK(qv_fn_call(fn, args, &r));
    double got;
    QVT_OK(qv_value_get_float(r, &got));
    assert_true(got == want);
    assert_int_equal(atomic_load(&runs), 1);
    qv_value_free(r);
    qv_value_free(args);
    qv_fn_free(fn);
}

typedef struct {
    int64_t (*fp)(int64_t);
    int base;
    int wrong;
} thread_arg;

static void *hammer(void *p) {
    thread_arg *a = p;
    QVT_OK(qv_ctx_push(cache, NULL));
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < 200; i++)
            if (a->fp(a->base + i) != -(a->base + i)) a->wrong++;
    QVT_OK(qv_ctx_pop());
    return NULL;
}

static void closure_from_eight_threads(void **state) {
    qv_fn *fn = make("t.neg_threads", (void (*)(void))neg_i64, "i64(i64)");
    pthread_t t[8];
    thread_arg a[8];
    atomic_store(&runs, 0);
    for (int i = 0; i < 8; i++) {
        a[i] = (thread_arg){(int64_t(*)(int64_t))qv_fn_pointer(fn), i * 100, 0};
        pthread_create(&t[i], NULL, hammer, &a[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].wrong, 0);
    }
    uint64_t hits, misses, entries;
    QVT_OK(qv_fn_stat(fn, QV_FN_STAT_HITS, &hits));
    QVT_OK(qv_fn_stat(fn, QV_FN_STAT_MISSES, &misses));
    assert_int_equal(hits + misses, 8 * 3 * 200);
    QVT_OK(qv_cache_stat(cache, QV_STAT_ENTRIES, &entries));
    assert_int_equal(entries, 900); /* keys 0..899 */
    assert_true(misses >= 900 && misses < 8 * 3 * 200);
    assert_int_equal(atomic_load(&runs), (int)misses);
    qv_fn_free(fn);
}

static void bad_signatures_name_the_position(void **state) {
    static const struct {
        const char *sig;
        const char *words;
    } bad[] = {
        {"f64(f64", "position 7"},     {"x(i64)", "position 0"},       {"f64(void)", "void is only"},
        {"f64(i64,)", "position 8"},   {"", "return type"},            {"f64 i64", "'('"},
        {"f64(i64)x", "end of the signature"}, {"f64(i64;f64)", "',' or ')'"}, {"int(i64)", "position 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qv_fn *fn = (qv_fn *)1;
        assert_int_equal(qv_fn_new_c(&fn, "t.bad", NULL, (void (*)(void))neg_i64, bad[i].sig), QV_EINVAL);
        assert_null(fn);
        if (!strstr(qv_errmsg(), bad[i].words)) fail_msg("\"%s\": message '%s' lacks '%s'", bad[i].sig, qv_errmsg(), bad[i].words);
    }
    /* spaces are allowed around names */
    qv_fn *fn;
    QVT_OK(qv_fn_new_c(&fn, "t.ok", NULL, (void (*)(void))neg_i64, " i64 ( i64 ) "));
    qv_fn_free(fn);
}

static qv_status host_body(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata) {
    return qv_value_new_null(result);
}

static void wrong_arguments_are_clear_errors(void **state) {
    qv_fn *fn = make("t.half_f64b", (void (*)(void))half_f64, "f64(f64)");
    qv_value *args, *v, *r = (qv_value *)1;
    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_int(&v, 1)); /* an int is not a float: 1 and 1.0 digest differently */
    QVT_OK(qv_value_list_append(args, v));
    assert_int_equal(qv_fn_call(fn, args, &r), QV_ETYPE);
    assert_null(r);
    assert_non_null(strstr(qv_errmsg(), "argument 1 must be a float"));
    QVT_OK(qv_value_new_float(&v, 2.0));
    QVT_OK(qv_value_list_append(args, v));
    assert_int_equal(qv_fn_call(fn, args, &r), QV_EINVAL);
    assert_non_null(strstr(qv_errmsg(), "takes 1 arguments"));
    qv_value_free(args);
    qv_fn *small = make("t.neg_i8b", (void (*)(void))neg_i8, "i8(i8)");
    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_int(&v, 300));
    QVT_OK(qv_value_list_append(args, v));
    assert_int_equal(qv_fn_call(small, args, &r), QV_ETYPE);
    assert_non_null(strstr(qv_errmsg(), "fits i8"));
    qv_value_free(args);
    qv_fn *host;
    QVT_OK(qv_fn_new(&host, "t.host", NULL, host_body, NULL, NULL));
    assert_null(qv_fn_pointer(host));
    assert_null(qv_fn_signature(host));
    qv_fn_free(host);
    qv_fn_free(small);
    qv_fn_free(fn);
}

static double slow_square(double x) {
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return x * x;
}

static void statistics_count_time_saved(void **state) {
    qv_fn *fn = make("t.slow", (void (*)(void))slow_square, "f64(f64)");
    double (*sq)(double) = (double (*)(double))qv_fn_pointer(fn);
    for (int i = 0; i < 5; i++) assert_true(sq(3.0) == 9.0);
    uint64_t hits, misses, saved;
    QVT_OK(qv_fn_stat(fn, QV_FN_STAT_HITS, &hits));
    QVT_OK(qv_fn_stat(fn, QV_FN_STAT_MISSES, &misses));
    QVT_OK(qv_fn_stat(fn, QV_FN_STAT_SAVED_NS, &saved));
    assert_int_equal(misses, 1);
    assert_int_equal(hits, 4);
    assert_true(saved >= 4 * 2000000ull); /* four hits, each saving a 2 ms call */
    assert_int_equal(qv_fn_stat(fn, 99, &saved), QV_EINVAL);
    qv_fn_free(fn);
}

static void falls_back_when_memoizing_fails(void **state) {
    qv_fn *fs = make("t.upper_fb", (void (*)(void))upper_str, "str(str)");
    const char *(*up)(const char *) = (const char *(*)(const char *))qv_fn_pointer(fs);
    atomic_store(&runs, 0);
    /* not UTF-8: cannot be encoded, so every call runs the original */
    assert_string_equal(up("a\xff"), "A\xff");
    assert_string_equal(up("a\xff"), "A\xff");
    assert_int_equal(atomic_load(&runs), 2);
    qv_fn_free(fs);
}

/* Strings and bytes handed back through a memoized pointer live in the
 * thread's return buffer; a function that returns (part of) its argument
 * gives that buffer back to quiver, which must copy it onto itself safely. */
static const char *skip_first(const char *s) {
    atomic_fetch_add(&runs, 1);
    return s[0] ? s + 1 : s;
}

static const void *bytes_tail(const void *p, uint64_t n, uint64_t *len) {
    atomic_fetch_add(&runs, 1);
    *len = n ? n - 1 : 0;
    return n ? (const uint8_t *)p + 1 : p;
}

static void results_in_the_return_buffer(void **state) {
    qv_fn *fu = make("t.upper_rb", (void (*)(void))upper_str, "str(str)");
    qv_fn *fs = make("t.skip_first", (void (*)(void))skip_first, "str(str)");
    const char *(*up)(const char *) = (const char *(*)(const char *))qv_fn_pointer(fu);
    const char *(*drop1)(const char *) = (const char *(*)(const char *))qv_fn_pointer(fs);
    up("overlapping");
    const char *held = up("overlapping"); /* a hit: quiver's buffer */
    assert_ptr_not_equal(held, upper_buf);
    assert_string_equal(drop1(held), "VERLAPPING"); /* a miss returning held + 1 */
    held = up("overlapping");
    assert_string_equal(drop1(held), "VERLAPPING"); /* a hit */

    qv_fn *fr = make("t.rev_rb", (void (*)(void))rev_bytes, "bytes(bytes)");
    qv_fn *ft = make("t.bytes_tail", (void (*)(void))bytes_tail, "bytes(bytes)");
    const void *(*rev)(const void *, uint64_t, uint64_t *) =
        (const void *(*)(const void *, uint64_t, uint64_t *))qv_fn_pointer(fr);
    const void *(*tail)(const void *, uint64_t, uint64_t *) =
        (const void *(*)(const void *, uint64_t, uint64_t *))qv_fn_pointer(ft);
    uint64_t len;
    rev("\x01\x02\x03\x04\x05", 5, &len);
    const void *b = rev("\x01\x02\x03\x04\x05", 5, &len);
    assert_ptr_not_equal(b, rev_buf);
    const uint8_t *t = tail(b, len, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(t, "\x04\x03\x02\x01", 4);
    qv_fn_free(fu);
    qv_fn_free(fs);
    qv_fn_free(fr);
    qv_fn_free(ft);
}

/* A host body sees a map for kwargs even when the caller passed none, and
 * the message it sets with qv_error_set reaches the caller; one that fails
 * without a word still gets a message naming the function. */
static qv_status picky_body(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata) {
    if (qv_value_type(kwargs) != QV_TYPE_MAP) return qv_error_set(QV_ETYPE, "kwargs was not a map");
    int64_t x;
    if (qv_value_get_int(qv_value_list_get(args, 0), &x)) return qv_error_set(QV_ETYPE, "picky wants an integer");
    if (x < 0) return QV_EFAILED; /* fails silently */
    return qv_value_new_int(result, x + 1);
}

static void host_bodies_get_a_map_and_explain_failures(void **state) {
    qv_fn *fn;
    QVT_OK(qv_fn_new(&fn, "t.picky", "1", picky_body, NULL, NULL));
    qv_value *args, *v, *r = NULL;
    int64_t got;
    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_int(&v, 41));
    QVT_OK(qv_value_list_append(args, v));
    QVT_OK(qv_fn_call(fn, args, &r));
    QVT_OK(qv_value_get_int(r, &got));
    assert_int_equal(got, 42);
    qv_value_free(r);
    qv_value_free(args);

    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_text(&v, "x", 1));
    QVT_OK(qv_value_list_append(args, v));
    assert_int_equal(qv_fn_call(fn, args, &r), QV_ETYPE);
    assert_string_equal(qv_errmsg(), "picky wants an integer");
    qv_value_free(args);

    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_int(&v, -1));
    QVT_OK(qv_value_list_append(args, v));
    assert_int_equal(qv_fn_call(fn, args, &r), QV_EFAILED);
    assert_null(r);
    assert_non_null(strstr(qv_errmsg(), "t.picky"));
    assert_non_null(strstr(qv_errmsg(), "QV_EFAILED"));
    /* and nothing was stored for the failures: they fail again */
    assert_int_equal(qv_fn_call(fn, args, &r), QV_EFAILED);
    qv_value_free(args);
    qv_fn_free(fn);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(integers),
        T(floats_and_bools),
        T(strings_bytes_values_void),
        T(many_mixed_arguments),
        T(closure_from_eight_threads),
        T(bad_signatures_name_the_position),
        T(wrong_arguments_are_clear_errors),
        T(statistics_count_time_saved),
        T(falls_back_when_memoizing_fails),
        T(host_bodies_get_a_map_and_explain_failures),
        T(results_in_the_return_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
