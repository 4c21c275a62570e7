/* The shared vectors and the project's own, byte for byte: every valid value
 * decodes, re-encodes to the same bytes and digests to the recorded digest;
 * every call digests as recorded; every invalid input is refused with a
 * message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static void hex_of(const qv_digest *d, char out[33]) {
    qv_digest_hex(d, out);
}

/* The shared vectors, or with project set, the project's own (tests/vectors,
 * beside this file's directory): the tags quiver gives meaning to for Python
 * types (docs/FORMAT.md 3.3), which every language decodes as tagged values. */
static qvt_table read_values(int project) {
    if (!project) return qvt_read_tsv("values.tsv");
    const char *shared = getenv("QV_VECTORS");
    char *saved = shared ? strdup(shared) : NULL;
    char dir[4096];
    const char *slash = strrchr(__FILE__, '/');
    snprintf(dir, sizeof dir, "%.*s/../vectors", slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
    setenv("QV_VECTORS", dir, 1);
    qvt_table t = qvt_read_tsv("values.tsv");
    if (saved) setenv("QV_VECTORS", saved, 1);
    else unsetenv("QV_VECTORS");
    free(saved);
    return t;
}

static void roundtrip(int project) {
    qvt_table t = read_values(project);
    assert_true(t.nlines >= (project ? 30 : 60));
    for (int i = 0; i < t.nlines; i++) {
        assert_int_equal(t.nfields[i], 3);
        size_t len;
        uint8_t *bytes = qvt_unhex(t.fields[i][0], &len);
        qv_value *v;
        qv_status st = qv_value_decode(&v, bytes, len);
        if (st) fail_msg("vector '%s' refused: %s", t.fields[i][2], qv_errmsg());
        if (project && qv_value_type(v) == QV_TYPE_TAG) {
            /* a tagged value: its number is the one its head bytes say */
            uint64_t tag;
            const qv_value *content;
            QVT_OK(qv_value_get_tag(v, &tag, &content));
            assert_non_null(content);
            uint64_t head = bytes[0] & 0x1f;
            if (head >= 24) {
                head = 0;
                for (int b = 0; b < 1 << ((bytes[0] & 0x1f) - 24); b++) head = head << 8 | bytes[1 + b];
            }
            if (tag != head) fail_msg("vector '%s': tag %llu, expected %llu", t.fields[i][2],
                                      (unsigned long long)tag, (unsigned long long)head);
        }
        void *out;
        size_t olen;
        QVT_OK(qv_value_encode(v, &out, &olen));
        if (olen != len || memcmp(out, bytes, len) != 0) fail_msg("vector '%s' re-encodes differently", t.fields[i][2]);
        qv_digest d;
        char hex[33];
        QVT_OK(qv_value_digest(v, &d));
        hex_of(&d, hex);
        if (strcmp(hex, t.fields[i][1]) != 0)
            fail_msg("vector '%s': digest %s, expected %s", t.fields[i][2], hex, t.fields[i][1]);
        /* the raw bytes digest the same: a value digest is XXH3-128 of its encoding */
        qv_digest_bytes(&d, bytes, len);
        hex_of(&d, hex);
        assert_string_equal(hex, t.fields[i][1]);
        assert_int_equal(qv_validate(bytes, len), QV_OK);
        qv_free(out);
        qv_value_free(v);
        free(bytes);
    }
    qvt_free_table(&t);
}

static void values_roundtrip(void **state) {
    roundtrip(0);
}

static void project_values_roundtrip(void **state) {
    roundtrip(1);
}

/* Rebuild each valid value through the streaming encoder from the decoder's
 * items (the path bindings take), and compare bytes. */
static qv_status copy_item(qv_decoder *dec, qv_encoder *enc, qv_type t) {
    qv_status st;
    switch (t) {
    case QV_TYPE_NULL:
        return qv_encoder_null(enc);
    case QV_TYPE_BOOL: {
        int b;
        qv_decoder_get_bool(dec, &b);
        return qv_encoder_bool(enc, b);
    }
    case QV_TYPE_INT: {
        int neg;
        uint64_t n;
        qv_decoder_get_cbor_int(dec, &neg, &n);
        return neg ? qv_encoder_negint(enc, n) : qv_encoder_uint(enc, n);
    }
    case QV_TYPE_BIGINT: {
        int neg;
        const uint8_t *m;
        size_t n;
        qv_decoder_get_bigint(dec, &neg, &m, &n);
        return qv_encoder_bigint(enc, neg, m, n);
    }
    case QV_TYPE_FLOAT: {
        double d;
        qv_decoder_get_float(dec, &d);
        return qv_encoder_float(enc, d);
    }
    case QV_TYPE_TEXT:
    case QV_TYPE_BYTES: {
        const uint8_t *p;
        size_t n;
        qv_decoder_get_data(dec, &p, &n);
        return t == QV_TYPE_TEXT ? qv_encoder_text(enc, (const char *)p, n) : qv_encoder_bytes(enc, p, n);
    }
    case QV_TYPE_LIST:
    case QV_TYPE_MAP: {
        uint64_t n;
        qv_decoder_get_count(dec, &n);
        if (t == QV_TYPE_LIST) st = qv_encoder_list(enc, n);
        else st = qv_encoder_map_begin(enc);
        uint64_t items = t == QV_TYPE_MAP ? 2 * n : n;
        for (uint64_t i = 0; !st && i < items; i++) {
            qv_type ct;
            if (!(st = qv_decoder_next(dec, &ct))) st = copy_item(dec, enc, ct);
        }
        if (!st && t == QV_TYPE_MAP) st = qv_encoder_map_end(enc);
        return st;
    }
    case QV_TYPE_TAG: {
        uint64_t tag;
        qv_type ct;
        qv_decoder_get_tag(dec, &tag);
        if ((st = qv_encoder_tag(enc, tag)) || (st = qv_decoder_next(dec, &ct))) return st;
        return copy_item(dec, enc, ct);
    }
    }
    return QV_EINVAL;
}

static void streaming(int project) {
    qvt_table t = read_values(project);
    qv_encoder *enc;
    qv_decoder *dec;
    QVT_OK(qv_encoder_new(&enc));
    QVT_OK(qv_decoder_new(&dec));
    for (int i = 0; i < t.nlines; i++) {
        size_t len;
        uint8_t *bytes = qvt_unhex(t.fields[i][0], &len);
        qv_decoder_reset(dec, bytes, len);
        qv_encoder_reset(enc);
        qv_type ty;
        QVT_OK(qv_decoder_next(dec, &ty));
        QVT_OK(copy_item(dec, enc, ty));
        assert_int_equal(qv_decoder_next(dec, &ty), QV_NOTFOUND);
        const void *out;
        size_t olen;
        QVT_OK(qv_encoder_finish(enc, &out, &olen));
        if (olen != len || memcmp(out, bytes, len)) fail_msg("vector '%s' streams differently", t.fields[i][2]);
        /* and the digesting encoder gives the recorded digest */
        qv_decoder_reset(dec, bytes, len);
        qv_encoder_reset_for_digest(enc);
        QVT_OK(qv_decoder_next(dec, &ty));
        QVT_OK(copy_item(dec, enc, ty));
        qv_digest d;
        char hex[33];
        QVT_OK(qv_encoder_digest(enc, &d));
        qv_digest_hex(&d, hex);
        assert_string_equal(hex, t.fields[i][1]);
        free(bytes);
    }
    qv_encoder_free(enc);
    qv_decoder_free(dec);
    qvt_free_table(&t);
}

static void values_streaming(void **state) {
    streaming(0);
}

static void project_values_streaming(void **state) {
    streaming(1);
}

static void calls_digest(void **state) {
    qvt_table t = qvt_read_tsv("calls.tsv");
    assert_true(t.nlines >= 5);
    for (int i = 0; i < t.nlines; i++) {
        assert_int_equal(t.nfields[i], 5);
        const char *name = t.fields[i][0];
        const char *version = strcmp(t.fields[i][1], "\\N") == 0 ? NULL : t.fields[i][1];
        size_t alen, klen;
        uint8_t *a = qvt_unhex(t.fields[i][2], &alen), *k = qvt_unhex(t.fields[i][3], &klen);
        qv_value *args, *kwargs;
        QVT_OK(qv_value_decode(&args, a, alen));
        QVT_OK(qv_value_decode(&kwargs, k, klen));
        qv_digest d;
        char hex[33];
        QVT_OK(qv_call_digest(&d, name, version, args, kwargs));
        qv_digest_hex(&d, hex);
        if (strcmp(hex, t.fields[i][4])) fail_msg("call %s: digest %s, expected %s", name, hex, t.fields[i][4]);
        if (qv_value_count(kwargs) == 0) {
            /* NULL kwargs means the empty map */
            QVT_OK(qv_call_digest(&d, name, version, args, NULL));
            qv_digest_hex(&d, hex);
            assert_string_equal(hex, t.fields[i][4]);
        }
        qv_value_free(args);
        qv_value_free(kwargs);
        free(a);
        free(k);
    }
    qvt_free_table(&t);
}

static void invalid_refused(void **state) {
    qvt_table t = qvt_read_tsv("invalid.tsv");
    assert_true(t.nlines >= 25);
    for (int i = 0; i < t.nlines; i++) {
        size_t len;
        uint8_t *bytes = qvt_unhex(t.fields[i][0], &len);
        const char *why = t.nfields[i] > 1 ? t.fields[i][1] : "?";
        qv_value *v = (qv_value *)1;
        qv_status st = qv_value_decode(&v, bytes, len);
        if (st != QV_EDECODE) fail_msg("invalid vector '%s' gave %s, not QV_EDECODE", why, qv_status_name(st));
        assert_null(v);
        if (strncmp(qv_errmsg(), "not canonical CBOR", 18) != 0) fail_msg("'%s': message '%s'", why, qv_errmsg());
        assert_int_equal(qv_validate(bytes, len), QV_EDECODE);
        free(bytes);
    }
    qvt_free_table(&t);
}

/* Each refusal names its rule; spot-check the rules the vectors exercise. */
static void invalid_messages(void **state) {
    static const struct {
        const char *hex, *words;
    } cases[] = {
        {"1817", "non-shortest integer"}, {"5f4100ff", "indefinite length"}, {"a2616101616101", "duplicate map key"},
        {"a2616201616101", "out of order"}, {"fa3fc00000", "non-shortest float"}, {"f97e01", "NaN"},
        {"62c328", "UTF-8"}, {"830102", "truncated"}, {"", "empty input"}, {"0101", "trailing bytes"},
        {"c24100", "leading zero"}, {"c248ffffffffffffffff", "fits in 64 bits"}, {"1c", "reserved"},
        {"f818", "simple value"}, {"c6", "tag without content"}, {"5bffffffffffffffff00", "beyond the input"},
        {"c2", "bignum without content"}, {"c201", "not a byte string"}, {"d9010283030102", "set elements out of order"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *bytes = qvt_unhex(cases[i].hex, &len);
        qv_status st = qv_validate(bytes, len);
        free(bytes);
        assert_int_equal(st, QV_EDECODE);
        if (!strstr(qv_errmsg(), cases[i].words))
            fail_msg("%s: message '%s' lacks '%s'", cases[i].hex, qv_errmsg(), cases[i].words);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(values_roundtrip),         cmocka_unit_test(values_streaming),
        cmocka_unit_test(project_values_roundtrip), cmocka_unit_test(project_values_streaming),
        cmocka_unit_test(calls_digest),             cmocka_unit_test(invalid_refused),
        cmocka_unit_test(invalid_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
