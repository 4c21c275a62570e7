/* The codec on its own: the streaming encoder's canonical forms, the pull
 * decoder's API, the value tree, and random round trips. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* Encode through fn into hex for comparison. */
typedef qv_status (*writer)(qv_encoder *enc, const void *arg);

static char *encode_hex(writer fn, const void *arg, qv_status *status) {
    qv_encoder *enc;
    QVT_OK(qv_encoder_new(&enc));
    const void *data;
    size_t len;
    qv_status st = fn(enc, arg);
    if (!st) st = qv_encoder_finish(enc, &data, &len);
    char *hex = NULL;
    if (!st) {
        hex = malloc(2 * len + 1);
        for (size_t i = 0; i < len; i++) sprintf(hex + 2 * i, "%02x", ((const uint8_t *)data)[i]);
        hex[2 * len] = 0;
    }
    qv_encoder_free(enc);
    if (status) *status = st;
    return hex;
}

static void assert_hex(writer fn, const void *arg, const char *want) {
    qv_status st;
    char *got = encode_hex(fn, arg, &st);
    if (st) fail_msg("encoding for %s failed: %s", want, qv_errmsg());
    if (strcmp(got, want)) fail_msg("encoded %s, expected %s", got, want);
    free(got);
}

static qv_status w_int(qv_encoder *e, const void *a) {
    return qv_encoder_int(e, *(const int64_t *)a);
}
static qv_status w_uint(qv_encoder *e, const void *a) {
    return qv_encoder_uint(e, *(const uint64_t *)a);
}
static qv_status w_float(qv_encoder *e, const void *a) {
    return qv_encoder_float(e, *(const double *)a);
}

static void integers_shortest(void **state) {
    static const struct {
        int64_t v;
        const char *hex;
    } ints[] = {{0, "00"},          {23, "17"},           {24, "1818"},         {255, "18ff"},
                {256, "190100"},    {65535, "19ffff"},    {65536, "1a00010000"}, {-1, "20"},
                {-24, "37"},        {-25, "3818"},        {-256, "38ff"},       {-257, "390100"},
                {INT64_MAX, "1b7fffffffffffffff"},        {INT64_MIN, "3b7fffffffffffffff"}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) assert_hex(w_int, &ints[i].v, ints[i].hex);
    uint64_t big = UINT64_MAX;
    assert_hex(w_uint, &big, "1bffffffffffffffff");
}

static qv_status w_bigint(qv_encoder *e, const void *a) {
    const uint8_t *m = a;
    return qv_encoder_bigint(e, m[0], m + 2, m[1]);
}

static void bignums_only_beyond_64_bits(void **state) {
    /* {negative, length, magnitude...} */
    uint8_t small[] = {0, 3, 0, 0, 5};                                   /* leading zeros: plain 5 */
    uint8_t max64[] = {0, 9, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    uint8_t two64[] = {0, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    uint8_t neg64[] = {1, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}; /* -2^64 */
    uint8_t neg65[] = {1, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0};                     /* -2^64-1 */
    assert_hex(w_bigint, small, "05");
    assert_hex(w_bigint, max64, "1bffffffffffffffff");
    assert_hex(w_bigint, two64, "c249010000000000000000");
    assert_hex(w_bigint, neg64, "3bffffffffffffffff");
    assert_hex(w_bigint, neg65, "c349010000000000000000");

    qv_value *v;
    QVT_OK(qv_value_new_bigint(&v, 0, small + 2, 3));
    assert_int_equal(qv_value_type(v), QV_TYPE_INT); /* one representation per number */
    qv_value_free(v);
    QVT_OK(qv_value_new_bigint(&v, 1, neg65 + 2, 9));
    assert_int_equal(qv_value_type(v), QV_TYPE_BIGINT);
    int neg;
    const uint8_t *m;
    size_t n;
    QVT_OK(qv_value_get_bigint(v, &neg, &m, &n));
    assert_int_equal(neg, 1);
    assert_int_equal(n, 9);
    qv_value_free(v);
}

static void floats_shortest_exact(void **state) {
    static const struct {
        double v;
        const char *hex;
    } fl[] = {
        {0.0, "f90000"},          {-0.0, "f98000"},           {1.0, "f93c00"},          {1.5, "f93e00"},
        {65504.0, "f97bff"},      {65505.0, "fa477fe100"},    {100000.0, "fa47c35000"}, {0.1, "fb3fb999999999999a"},
        {5.960464477539063e-08, "f90001"},                    {2.9802322387695312e-08, "fa33000000"},
        {INFINITY, "f97c00"},     {-INFINITY, "f9fc00"},      {1e300, "fb7e37e43c8800759c"},
        {3.4028234663852886e38, "fa7f7fffff"},                {-4.1, "fbc010666666666666"},
        {4.9406564584124654e-324, "fb0000000000000001"},
    };
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) assert_hex(w_float, &fl[i].v, fl[i].hex);
    /* every NaN, quiet or signalling, of any sign and payload, is f97e00 */
    uint64_t nans[] = {0x7ff8000000000000ull, 0xfff8000000000000ull, 0x7ff0000000000001ull, 0x7ff4000000000123ull};
    for (size_t i = 0; i < 4; i++) {
        double d;
        memcpy(&d, &nans[i], 8);
        assert_hex(w_float, &d, "f97e00");
    }
}

static qv_status w_text(qv_encoder *e, const void *a) {
    return qv_encoder_text(e, a, strlen(a));
}

static void text_must_be_utf8(void **state) {
    assert_hex(w_text, "", "60");
    assert_hex(w_text, "\xc3\xbc", "62c3bc");
    assert_hex(w_text, "\xf4\x8f\xbf\xbf", "64f48fbfbf"); /* U+10FFFF */
    static const char *bad[] = {"\xc3",         "\xc0\x80",         "\xed\xa0\x80" /* surrogate */,
                                "\xf4\x90\x80\x80" /* > U+10FFFF */, "\xe0\x80\xaf" /* overlong */,
                                "\xff",         "abc\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qv_status st;
        char *hex = encode_hex(w_text, bad[i], &st);
        assert_null(hex);
        assert_int_equal(st, QV_EENCODE);
        qv_value *v = (qv_value *)1;
        assert_int_equal(qv_value_new_text(&v, bad[i], strlen(bad[i])), QV_EENCODE);
        assert_null(v);
    }
    /* text may contain NUL */
    qv_value *v;
    QVT_OK(qv_value_new_text(&v, "a\0b", 3));
    const char *s;
    size_t n;
    QVT_OK(qv_value_get_text(v, &s, &n));
    assert_int_equal(n, 3);
    qv_value_free(v);
}

static qv_status w_map_mixed(qv_encoder *e, const void *a) {
    qv_status st;
    if ((st = qv_encoder_map_begin(e))) return st;
    /* keys given out of order: "b", 10, "aa", -1, [] */
    if ((st = qv_encoder_text(e, "b", 1)) || (st = qv_encoder_int(e, 1))) return st;
    if ((st = qv_encoder_int(e, 10)) || (st = qv_encoder_int(e, 2))) return st;
    if ((st = qv_encoder_text(e, "aa", 2))) return st;
    /* a value that is itself a map with unsorted keys */
    if ((st = qv_encoder_map_begin(e)) || (st = qv_encoder_text(e, "z", 1)) || (st = qv_encoder_null(e)) ||
        (st = qv_encoder_text(e, "y", 1)) || (st = qv_encoder_null(e)) || (st = qv_encoder_map_end(e)))
        return st;
    if ((st = qv_encoder_int(e, -1)) || (st = qv_encoder_int(e, 4))) return st;
    if ((st = qv_encoder_list(e, 0)) || (st = qv_encoder_int(e, 5))) return st;
    return qv_encoder_map_end(e);
}

static qv_status w_map_dup(qv_encoder *e, const void *a) {
    qv_status st;
    if ((st = qv_encoder_map_begin(e))) return st;
    if ((st = qv_encoder_text(e, "k", 1)) || (st = qv_encoder_int(e, 1))) return st;
    if ((st = qv_encoder_text(e, "k", 1)) || (st = qv_encoder_int(e, 2))) return st;
    return qv_encoder_map_end(e);
}

static void maps_sorted_bytewise(void **state) {
    /* bytewise: 0a, 20, 61 62, 62 61 61, 80 */
    assert_hex(w_map_mixed, NULL, "a50a022004616201626161a26179f6617af68005");
    qv_status st;
    char *hex = encode_hex(w_map_dup, NULL, &st);
    assert_null(hex);
    assert_int_equal(st, QV_EENCODE);
    assert_non_null(strstr(qv_errmsg(), "duplicate"));
}

/* Sets: elements in any order, written sorted bytewise and deduplicated. */
static qv_status w_set_ints(qv_encoder *e, const void *a) {
    const int64_t *v = a; /* count, then the elements */
    qv_status st = qv_encoder_set_begin(e);
    for (int64_t i = 1; !st && i <= v[0]; i++) st = qv_encoder_int(e, v[i]);
    return st ? st : qv_encoder_set_end(e);
}

static qv_status w_set_mixed(qv_encoder *e, const void *a) {
    qv_status st;
    if ((st = qv_encoder_set_begin(e))) return st;
    if ((st = qv_encoder_list(e, 0)) || (st = qv_encoder_text(e, "b", 1)) || (st = qv_encoder_bytes(e, "", 1)) ||
        (st = qv_encoder_int(e, 1)) || (st = qv_encoder_text(e, "b", 1)) || (st = qv_encoder_list(e, 0)))
        return st;
    return qv_encoder_set_end(e);
}

/* {"s": set{set{2, 1}, set{1, 2}, {"y": 1, "x": set{}}}, set{3}: [set{1, 1}]} */
static qv_status w_set_nested(qv_encoder *e, const void *a) {
    qv_status st;
    if ((st = qv_encoder_map_begin(e)) || (st = qv_encoder_text(e, "s", 1))) return st;
    if ((st = qv_encoder_set_begin(e))) return st;
    int64_t two_one[] = {2, 2, 1}, one_two[] = {2, 1, 2}, three[] = {1, 3}, ones[] = {2, 1, 1}, none[] = {0};
    if ((st = w_set_ints(e, two_one)) || (st = w_set_ints(e, one_two))) return st;
    if ((st = qv_encoder_map_begin(e)) || (st = qv_encoder_text(e, "y", 1)) || (st = qv_encoder_int(e, 1)) ||
        (st = qv_encoder_text(e, "x", 1)) || (st = w_set_ints(e, none)) || (st = qv_encoder_map_end(e)))
        return st;
    if ((st = qv_encoder_set_end(e))) return st;
    if ((st = w_set_ints(e, three)) || (st = qv_encoder_list(e, 1)) || (st = w_set_ints(e, ones))) return st;
    return qv_encoder_map_end(e);
}

static void sets_sorted_and_deduplicated(void **state) {
    int64_t empty[] = {0}, ordered[] = {3, 1, 2, 3}, shuffled[] = {5, 3, 1, 2, 1, 3}, same[] = {3, 7, 7, 7};
    assert_hex(w_set_ints, empty, "d9010280");
    assert_hex(w_set_ints, ordered, "d9010283010203");
    assert_hex(w_set_ints, shuffled, "d9010283010203");
    assert_hex(w_set_ints, same, "d901028107");
    /* bytewise: 01, 41 00, 61 62, 80 */
    assert_hex(w_set_mixed, NULL, "d9010284014100616280");
    /* inner sets equal once sorted collapse to one element; a map element is
     * ordered by its whole encoding; sets nest as map keys and in lists */
    assert_hex(w_set_nested, NULL,
               "a2"
               "6173" "d90102" "82" "a2" "6178d9010280" "617901" "d90102" "820102"
               "d901028103" "81" "d901028101");
    const char *hex = encode_hex(w_set_nested, NULL, NULL);
    size_t len;
    uint8_t *buf = qvt_unhex(hex, &len);
    QVT_OK(qv_validate(buf, len)); /* the decoder takes what the encoder writes */
    free(buf);
    free((void *)hex);
}

static void sets_digest_like_their_encoding(void **state) {
    /* large strings inside a set are buffered for sorting, never hashed in
     * place, and a digest-only encoder agrees with the buffered encoding */
    size_t len = 1 << 17;
    uint8_t *big = malloc(len);
    for (size_t i = 0; i < len; i++) big[i] = (uint8_t)(i * 2654435761u >> 11);
    qv_encoder *enc;
    QVT_OK(qv_encoder_new(&enc));
    qv_digest want, got;
    for (int digest_only = 0; digest_only <= 1; digest_only++) {
        if (digest_only) qv_encoder_reset_for_digest(enc);
        else qv_encoder_reset(enc);
        QVT_OK(qv_encoder_list(enc, 3));
        QVT_OK(qv_encoder_bytes(enc, big, len)); /* hashed in place when digesting */
        QVT_OK(qv_encoder_set_begin(enc));
        QVT_OK(qv_encoder_bytes(enc, big, len));
        QVT_OK(qv_encoder_int(enc, 1));
        QVT_OK(qv_encoder_bytes(enc, big, len));
        QVT_OK(qv_encoder_bytes(enc, big, len - 1));
        QVT_OK(qv_encoder_set_end(enc));
        QVT_OK(qv_encoder_bytes(enc, big, len));
        if (digest_only) {
            QVT_OK(qv_encoder_digest(enc, &got));
        } else {
            const void *d;
            size_t n;
            QVT_OK(qv_encoder_finish(enc, &d, &n));
            QVT_OK(qv_validate(d, n));
            const uint8_t *p = d;
            /* the set holds three elements: 1, then the shorter string first */
            size_t at = 1 + 5 + len;
            assert_memory_equal(p + at, "\xd9\x01\x02\x83\x01\x5a", 6);
            qv_digest_bytes(&want, d, n);
        }
    }
    assert_memory_equal(want.bytes, got.bytes, 16);
    qv_encoder_free(enc);
    free(big);
}

static void set_misuse_is_an_error(void **state) {
    qv_encoder *enc;
    const void *d;
    size_t n;
    QVT_OK(qv_encoder_new(&enc));
    assert_int_equal(qv_encoder_set_end(enc), QV_EMISUSE); /* nothing open */
    assert_non_null(strstr(qv_errmsg(), "without an open set"));
    qv_encoder_reset(enc);
    QVT_OK(qv_encoder_set_begin(enc));
    QVT_OK(qv_encoder_int(enc, 1));
    assert_int_equal(qv_encoder_finish(enc, &d, &n), QV_EMISUSE); /* still open */
    assert_int_equal(qv_encoder_map_end(enc), QV_EMISUSE);      /* a set is not a map */
    assert_int_equal(qv_encoder_set_end(enc), QV_EMISUSE);      /* and the failure sticks */
    qv_encoder_reset(enc);
    QVT_OK(qv_encoder_map_begin(enc));
    assert_int_equal(qv_encoder_set_end(enc), QV_EMISUSE); /* a map is not a set */
    qv_encoder_reset(enc);
    QVT_OK(qv_encoder_int(enc, 1));
    assert_int_equal(qv_encoder_set_begin(enc), QV_EMISUSE); /* past the complete item */
    qv_encoder_reset(enc);
    /* depth: a set nests as its tag and list do, both ways */
    for (int depth = QV_MAX_DEPTH - 2; depth <= QV_MAX_DEPTH - 1; depth++) {
        qv_status st = QV_OK;
        qv_encoder_reset(enc);
        for (int i = 0; i < depth && !st; i++) st = qv_encoder_list(enc, 1);
        if (!st) st = qv_encoder_set_begin(enc);
        if (!st) st = qv_encoder_set_end(enc);
        uint8_t *buf = malloc(depth + 4);
        memset(buf, 0x81, depth);
        memcpy(buf + depth, "\xd9\x01\x02\x80", 4);
        if (depth == QV_MAX_DEPTH - 2) {
            QVT_OK(st);
            QVT_OK(qv_encoder_finish(enc, &d, &n));
            assert_int_equal(n, depth + 4);
            assert_memory_equal(d, buf, n);
            QVT_OK(qv_validate(buf, depth + 4));
        } else {
            assert_int_equal(st, QV_EENCODE);
            assert_int_equal(qv_validate(buf, depth + 4), QV_EDECODE);
        }
        free(buf);
    }
    qv_encoder_free(enc);
    assert_int_equal(qv_encoder_set_begin(NULL), QV_EINVAL);
    assert_int_equal(qv_encoder_set_end(NULL), QV_EINVAL);
}

static void misuse_is_an_error(void **state) {
    qv_encoder *enc;
    const void *d;
    size_t n;
    QVT_OK(qv_encoder_new(&enc));
    QVT_OK(qv_encoder_list(enc, 2));
    QVT_OK(qv_encoder_int(enc, 1));
    assert_int_equal(qv_encoder_finish(enc, &d, &n), QV_EMISUSE); /* one item short */
    QVT_OK(qv_encoder_int(enc, 2));
    QVT_OK(qv_encoder_finish(enc, &d, &n));
    assert_int_equal(n, 3);
    assert_int_equal(qv_encoder_int(enc, 3), QV_EMISUSE); /* past the complete item */
    qv_encoder_reset(enc);
    assert_int_equal(qv_encoder_map_end(enc), QV_EMISUSE);
    qv_encoder_reset(enc);
    QVT_OK(qv_encoder_map_begin(enc));
    QVT_OK(qv_encoder_int(enc, 1));
    assert_int_equal(qv_encoder_map_end(enc), QV_EMISUSE); /* a key without its value */
    qv_encoder_reset(enc);
    uint8_t junk[] = {0x18, 0x01};
    assert_int_equal(qv_encoder_encoded(enc, junk, 2), QV_EDECODE);
    qv_encoder_reset(enc);
    uint8_t good[] = {0x82, 0x01, 0x02};
    QVT_OK(qv_encoder_encoded(enc, good, 3));
    QVT_OK(qv_encoder_finish(enc, &d, &n));
    assert_memory_equal(d, good, 3);
    qv_encoder_free(enc);
    qv_encoder_free(NULL);
    qv_decoder_free(NULL);
    qv_value_free(NULL);
}

static void depth_limit_is_symmetric(void **state) {
    /* QV_MAX_DEPTH nested containers, the innermost empty, are fine; one more
     * is refused, both ways, and an empty map counts like an empty list */
    for (int depth = QV_MAX_DEPTH - 1; depth <= QV_MAX_DEPTH; depth++) {
        qv_encoder *enc;
        QVT_OK(qv_encoder_new(&enc));
        qv_status st = QV_OK;
        for (int i = 0; i < depth && !st; i++) st = qv_encoder_list(enc, 1);
        if (!st) st = qv_encoder_list(enc, 0);
        const void *d;
        size_t n;
        if (depth == QV_MAX_DEPTH - 1) {
            QVT_OK(st);
            QVT_OK(qv_encoder_finish(enc, &d, &n));
            QVT_OK(qv_validate(d, n));
        } else {
            assert_int_equal(st, QV_EENCODE);
        }
        qv_encoder_free(enc);
        uint8_t *buf = malloc(depth + 1);
        memset(buf, 0x81, depth);
        buf[depth] = 0x80;
        assert_int_equal(qv_validate(buf, depth + 1), depth == QV_MAX_DEPTH - 1 ? QV_OK : QV_EDECODE);
        buf[depth] = 0xa0;
        assert_int_equal(qv_validate(buf, depth + 1), depth == QV_MAX_DEPTH - 1 ? QV_OK : QV_EDECODE);
        free(buf);
        QVT_OK(qv_encoder_new(&enc));
        st = QV_OK;
        for (int i = 0; i < depth && !st; i++) st = qv_encoder_list(enc, 1);
        if (!st) st = qv_encoder_map_begin(enc);
        if (!st) st = qv_encoder_map_end(enc);
        assert_int_equal(st, depth == QV_MAX_DEPTH - 1 ? QV_OK : QV_EENCODE);
        qv_encoder_free(enc);
    }
}

static void large_bytes_hashed_in_place(void **state) {
    size_t len = 1 << 20;
    uint8_t *big = malloc(len);
    for (size_t i = 0; i < len; i++) big[i] = (uint8_t)(i * 2654435761u >> 13);
    qv_encoder *enc;
    QVT_OK(qv_encoder_new(&enc));
    /* reference: the whole encoding in a buffer, then hashed */
    QVT_OK(qv_encoder_list(enc, 3));
    QVT_OK(qv_encoder_text(enc, "x", 1));
    QVT_OK(qv_encoder_bytes(enc, big, len));
    QVT_OK(qv_encoder_int(enc, 7));
    const void *d;
    size_t n;
    QVT_OK(qv_encoder_finish(enc, &d, &n));
    qv_digest want, got;
    qv_digest_bytes(&want, d, n);
    /* digest-only: the 1 MiB string is hashed where it lies */
    qv_encoder_reset_for_digest(enc);
    QVT_OK(qv_encoder_list(enc, 3));
    QVT_OK(qv_encoder_text(enc, "x", 1));
    QVT_OK(qv_encoder_bytes(enc, big, len));
    QVT_OK(qv_encoder_int(enc, 7));
    QVT_OK(qv_encoder_digest(enc, &got));
    assert_memory_equal(want.bytes, got.bytes, 16);
    assert_int_equal(qv_encoder_finish(enc, &d, &n), QV_EMISUSE);
    /* inside a map it is copied, and the digest is still the same as buffered */
    qv_encoder_reset(enc);
    QVT_OK(qv_encoder_map_begin(enc));
    QVT_OK(qv_encoder_int(enc, 1));
    QVT_OK(qv_encoder_bytes(enc, big, len));
    QVT_OK(qv_encoder_map_end(enc));
    QVT_OK(qv_encoder_finish(enc, &d, &n));
    qv_digest_bytes(&want, d, n);
    qv_encoder_reset_for_digest(enc);
    QVT_OK(qv_encoder_map_begin(enc));
    QVT_OK(qv_encoder_int(enc, 1));
    QVT_OK(qv_encoder_bytes(enc, big, len));
    QVT_OK(qv_encoder_map_end(enc));
    QVT_OK(qv_encoder_digest(enc, &got));
    assert_memory_equal(want.bytes, got.bytes, 16);
    qv_encoder_free(enc);
    free(big);
}

static void decoder_pulls_items(void **state) {
    /* {"a": [1, -2, h'ff'], "b": 2(h'010000000000000000')} */
    const char *hex = "a2616183012141ff6162c249010000000000000000";
    size_t len;
    uint8_t *buf = qvt_unhex(hex, &len);
    qv_decoder *dec;
    QVT_OK(qv_decoder_new(&dec));
    qv_decoder_reset(dec, buf, len);
    qv_type t;
    uint64_t count;
    int64_t i;
    const uint8_t *p;
    size_t n;
    QVT_OK(qv_decoder_next(dec, &t));
    assert_int_equal(t, QV_TYPE_MAP);
    QVT_OK(qv_decoder_get_count(dec, &count));
    assert_int_equal(count, 2);
    QVT_OK(qv_decoder_next(dec, &t));
    assert_int_equal(t, QV_TYPE_TEXT);
    assert_int_equal(qv_decoder_get_int(dec, &i), QV_ETYPE);
    QVT_OK(qv_decoder_next(dec, &t));
    assert_int_equal(t, QV_TYPE_LIST);
    QVT_OK(qv_decoder_next(dec, &t));
    QVT_OK(qv_decoder_get_int(dec, &i));
    assert_int_equal(i, 1);
    QVT_OK(qv_decoder_next(dec, &t));
    QVT_OK(qv_decoder_get_int(dec, &i));
    assert_int_equal(i, -2);
    QVT_OK(qv_decoder_next(dec, &t));
    assert_int_equal(t, QV_TYPE_BYTES);
    QVT_OK(qv_decoder_get_data(dec, &p, &n));
    assert_int_equal(n, 1);
    assert_int_equal(p[0], 0xff);
    QVT_OK(qv_decoder_next(dec, &t)); /* "b" */
    QVT_OK(qv_decoder_next(dec, &t));
    assert_int_equal(t, QV_TYPE_BIGINT);
    assert_int_equal(qv_decoder_get_int(dec, &i), QV_ETYPE);
    assert_int_equal(qv_decoder_next(dec, &t), QV_NOTFOUND);
    /* skip a whole container */
    qv_decoder_reset(dec, buf, len);
    QVT_OK(qv_decoder_next(dec, &t));
    QVT_OK(qv_decoder_skip(dec));
    assert_int_equal(qv_decoder_offset(dec), len);
    assert_int_equal(qv_decoder_next(dec, &t), QV_NOTFOUND);
    /* integers beyond int64 are reported, not truncated */
    uint8_t huge[] = {0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    qv_decoder_reset(dec, huge, sizeof huge);
    QVT_OK(qv_decoder_next(dec, &t));
    assert_int_equal(qv_decoder_get_int(dec, &i), QV_ERANGE);
    qv_decoder_free(dec);
    free(buf);
}

static void value_tree(void **state) {
    qv_value *map, *k, *v, *list, *clone;
    QVT_OK(qv_value_new_map(&map));
    QVT_OK(qv_value_new_text(&k, "x", 1));
    QVT_OK(qv_value_new_int(&v, 5));
    QVT_OK(qv_value_map_set(map, k, v));
    QVT_OK(qv_value_new_text(&k, "x", 1));
    QVT_OK(qv_value_new_int(&v, 6));
    assert_int_equal(qv_value_map_set(map, k, v), QV_EINVAL); /* consumed either way */
    QVT_OK(qv_value_new_list(&list));
    QVT_OK(qv_value_new_uint(&v, UINT64_MAX));
    QVT_OK(qv_value_list_append(list, v));
    QVT_OK(qv_value_new_negint(&v, UINT64_MAX));
    QVT_OK(qv_value_list_append(list, v));
    QVT_OK(qv_value_new_text(&k, "list", 4));
    QVT_OK(qv_value_map_set(map, k, list));
    assert_int_equal(qv_value_count(map), 2);
    const qv_value *found = qv_value_map_find(map, "list");
    assert_non_null(found);
    int64_t i;
    uint64_t u;
    assert_int_equal(qv_value_get_int(qv_value_list_get(found, 0), &i), QV_ERANGE);
    QVT_OK(qv_value_get_uint(qv_value_list_get(found, 0), &u));
    assert_true(u == UINT64_MAX);
    assert_int_equal(qv_value_get_uint(qv_value_list_get(found, 1), &u), QV_ERANGE);
    assert_null(qv_value_list_get(found, 2));
    assert_null(qv_value_map_find(map, "nope"));
    QVT_OK(qv_value_clone(&clone, map));
    assert_int_equal(qv_value_compare(map, clone), 0);
    qv_digest a, b;
    QVT_OK(qv_value_digest(map, &a));
    QVT_OK(qv_value_digest(clone, &b));
    assert_memory_equal(a.bytes, b.bytes, 16);
    /* order is that of encodings: 1 < -1 < "a" */
    qv_value *one, *minus, *text;
    QVT_OK(qv_value_new_int(&one, 1));
    QVT_OK(qv_value_new_int(&minus, -1));
    QVT_OK(qv_value_new_text(&text, "a", 1));
    assert_true(qv_value_compare(one, minus) < 0);
    assert_true(qv_value_compare(minus, text) < 0);
    assert_int_equal(qv_value_list_append(one, text), QV_ETYPE); /* consumed */
    qv_value *tag;
    QVT_OK(qv_value_new_tag(&tag, QV_TAG_TUPLE, minus));
    uint64_t tn;
    const qv_value *content;
    QVT_OK(qv_value_get_tag(tag, &tn, &content));
    assert_true(tn == QV_TAG_TUPLE);
    assert_ptr_equal(content, minus);
    qv_value_free(tag);
    qv_value_free(one);
    qv_value_free(clone);
    qv_value_free(map);
}

/* ---------------------------------------------------------- random trees */

static uint64_t rng_state;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static qv_value *random_value(int depth) {
    qv_value *v = NULL;
    int kind = (int)(rnd() % (depth > 4 ? 8 : 11));
    switch (kind) {
    case 0: qv_value_new_null(&v); break;
    case 1: qv_value_new_bool(&v, (int)(rnd() & 1)); break;
    case 2: qv_value_new_int(&v, (int64_t)rnd() >> (rnd() % 64)); break;
    case 3: {
        double d;
        uint64_t bits = rnd();
        memcpy(&d, &bits, 8);
        if (rnd() & 1) d = (double)(int64_t)(rnd() % 2001 - 1000) / 8.0;
        qv_value_new_float(&v, d);
        break;
    }
    case 4: {
        char s[24];
        size_t n = rnd() % sizeof s;
        for (size_t i = 0; i < n; i++) s[i] = (char)('a' + rnd() % 26);
        qv_value_new_text(&v, s, n);
        break;
    }
    case 5: {
        uint8_t b[40];
        size_t n = rnd() % sizeof b;
        for (size_t i = 0; i < n; i++) b[i] = (uint8_t)rnd();
        qv_value_new_bytes(&v, b, n);
        break;
    }
    case 6: {
        uint8_t m[20];
        size_t n = 1 + rnd() % sizeof m;
        for (size_t i = 0; i < n; i++) m[i] = (uint8_t)rnd();
        qv_value_new_bigint(&v, (int)(rnd() & 1), m, n);
        break;
    }
    case 7: qv_value_new_uint(&v, rnd()); break;
    case 8: {
        qv_value_new_list(&v);
        size_t n = rnd() % 6;
        for (size_t i = 0; i < n; i++) qv_value_list_append(v, random_value(depth + 1));
        break;
    }
    case 9: {
        qv_value_new_map(&v);
        size_t n = rnd() % 6;
        for (size_t i = 0; i < n; i++) qv_value_map_set(v, random_value(depth + 1), random_value(depth + 1));
        break;
    }
    default: {
        uint64_t tags[] = {QV_TAG_SET + 1, QV_TAG_TUPLE, 40, 1000000};
        qv_value_new_tag(&v, tags[rnd() % 4], random_value(depth + 1));
        break;
    }
    }
    return v;
}

static void random_round_trips(void **state) {
    rng_state = 0x9e3779b97f4a7c15ull;
    for (int iter = 0; iter < 3000; iter++) {
        qv_value *v = random_value(0), *back;
        void *enc1, *enc2;
        size_t n1, n2;
        QVT_OK(qv_value_encode(v, &enc1, &n1));
        QVT_OK(qv_validate(enc1, n1));
        QVT_OK(qv_value_decode(&back, enc1, n1));
        QVT_OK(qv_value_encode(back, &enc2, &n2));
        assert_int_equal(n1, n2);
        assert_memory_equal(enc1, enc2, n1);
        assert_int_equal(qv_value_compare(v, back), 0);
        qv_free(enc1);
        qv_free(enc2);
        qv_value_free(v);
        qv_value_free(back);
    }
}

static void random_garbage_never_crashes(void **state) {
    rng_state = 12345;
    uint8_t buf[64];
    int accepted = 0;
    for (int iter = 0; iter < 200000; iter++) {
        size_t n = rnd() % sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rnd();
        qv_value *v;
        if (qv_value_decode(&v, buf, n) == QV_OK) {
            void *e;
            size_t len;
            QVT_OK(qv_value_encode(v, &e, &len));
            assert_int_equal(len, n);
            assert_memory_equal(e, buf, n); /* accepted means canonical */
            qv_free(e);
            qv_value_free(v);
            accepted++;
        }
    }
    assert_true(accepted > 100); /* short random inputs are often single valid items */
}

static void errors_and_names(void **state) {
    for (qv_status s = QV_OK; s >= QV_EFAILED; s--) {
        assert_string_not_equal(qv_strerror(s), "unknown status");
        assert_true(strncmp(qv_status_name(s), "QV_", 3) == 0);
    }
    assert_string_equal(qv_strerror(-999), "unknown status");
    assert_string_equal(qv_status_name(QV_EDECODE), "QV_EDECODE");
    assert_non_null(qv_errmsg());
    assert_string_equal(qv_version(), QV_VERSION_STRING);
    qv_digest d;
    char hex[33];
    assert_int_equal(qv_digest_parse(&d, "zz", 2), QV_EINVAL);
    QVT_OK(qv_digest_parse(&d, "00112233445566778899AABBCCDDEEFF", 32));
    qv_digest_hex(&d, hex);
    assert_string_equal(hex, "00112233445566778899aabbccddeeff");
}

/* The one RFC 8746 table every binding asks. */
static void typed_array_table(void **state) {
    (void)state;
    for (uint64_t tag = 64; tag <= 87; tag++) {
        char kind;
        uint32_t size;
        int le;
        const char *name;
        qv_status st = qv_typed_array_type(tag, &kind, &size, &le, &name);
        if (tag == 76) {
            assert_int_equal(st, QV_EINVAL); /* reserved */
            continue;
        }
        QVT_OK(st);
        assert_int_equal(qv_typed_array_tag(kind, size, le), tag);
    }
    assert_int_equal(qv_typed_array_tag('f', 4, 1), 85);
    assert_int_equal(qv_typed_array_tag('f', 8, 0), 82);
    assert_int_equal(qv_typed_array_tag('i', 2, 1), 77);
    assert_int_equal(qv_typed_array_tag('u', 1, 0), 64);
    assert_int_equal(qv_typed_array_tag('u', 3, 1), 0);
    assert_int_equal(qv_typed_array_tag('x', 4, 1), 0);
    const char *name;
    QVT_OK(qv_typed_array_type(68, NULL, NULL, NULL, &name));
    assert_string_equal(name, "uint8_clamped");
    assert_int_equal(qv_typed_array_type(63, NULL, NULL, NULL, NULL), QV_EINVAL);
    assert_int_equal(qv_typed_array_type(88, NULL, NULL, NULL, NULL), QV_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(typed_array_table),
        cmocka_unit_test(integers_shortest),
        cmocka_unit_test(bignums_only_beyond_64_bits),
        cmocka_unit_test(floats_shortest_exact),
        cmocka_unit_test(text_must_be_utf8),
        cmocka_unit_test(maps_sorted_bytewise),
        cmocka_unit_test(sets_sorted_and_deduplicated),
        cmocka_unit_test(sets_digest_like_their_encoding),
        cmocka_unit_test(set_misuse_is_an_error),
        cmocka_unit_test(misuse_is_an_error),
        cmocka_unit_test(depth_limit_is_symmetric),
        cmocka_unit_test(large_bytes_hashed_in_place),
        cmocka_unit_test(decoder_pulls_items),
        cmocka_unit_test(value_tree),
        cmocka_unit_test(random_round_trips),
        cmocka_unit_test(random_garbage_never_crashes),
        cmocka_unit_test(errors_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
