/* The C side of the differential tests (test_differential.py): builds each
 * value as a qv_value tree from a description, so the bytes it answers are C's
 * own encoding, not a copy of Python's.
 *
 * stdin: batches of lines, each batch ended by an empty line:
 *     xNAMEHEX xVERSIONHEX|- DESCRIPTION xPYTHON-ENCODING-HEX
 * (each hex field starts with "x", so that an empty one is still a field)
 * stdout, one line per input line once the batch has been read (answers are
 * held back until then, so a writer never waits on a reader):
 *     ENCODING-HEX VALUE-DIGEST CALL-DIGEST MEMO-DIGEST eq|ne REENCODING-HEX
 * where the call digest is of NAME/VERSION with args [v] and kwargs {"kw": v}
 * and the memo digest with args [v] alone, the call a memo f(v) makes
 * ("refused" when the call nests too deep), and eq/ne says whether Python's
 * encoding decodes to a value equal to the one built here; or "ERR message"
 * when C refuses to encode the value.
 *
 * Descriptions (prefix form, one token per node): N null, T true, F false,
 * i<decimal>; integer of any size, d<16 hex> IEEE double (big-endian bits),
 * s<hex>; text (UTF-8), b<hex>; bytes, l<n>; list, m<n>; map (key, value, ...),
 * S<n>; set, U<n>; Python tuple, g<tag>; tag then its content,
 * A<typed tag>;<ndim>;<dim>;...<hex>; n-dimensional array (tag 40). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"

typedef struct {
    char *buf;
    size_t len, cap;
} strbuf;

static void put(strbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->buf = realloc(b->buf, b->cap);
        if (!b->buf) abort();
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void puts_(strbuf *b, const char *s) { put(b, s, strlen(s)); }

static void put_hex(strbuf *b, const uint8_t *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        char two[2] = {digits[p[i] >> 4], digits[p[i] & 15]};
        put(b, two, 2);
    }
}

static int nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Hex up to `end` into a malloc'd buffer; NULL on bad hex. */
static uint8_t *unhex(const char *s, const char *end, size_t *len) {
    size_t n = (size_t)(end - s);
    if (n % 2) return NULL;
    uint8_t *out = malloc(n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(out);
            return NULL;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    out[n / 2] = 0;
    *len = n / 2;
    return out;
}

static const char *fail_why;

static qv_value *fail(const char *why) {
    if (!fail_why) fail_why = why;
    return NULL;
}

static uint64_t number(const char **p) {
    char *end;
    uint64_t n = strtoull(*p, &end, 10);
    if (*end != ';') fail("a number without its ';'");
    *p = *end == ';' ? end + 1 : end;
    return n;
}

/* A decimal integer of any size as sign and big-endian magnitude, then the
 * qv_value for it (the core picks int or bignum). */
static qv_value *integer(const char **p) {
    const char *s = *p;
    int negative = *s == '-';
    if (negative) s++;
    size_t cap = strlen(s) / 2 + 2, len = 0;
    uint8_t *le = calloc(cap, 1); /* little-endian while it grows */
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned carry = (unsigned)(*s - '0');
        for (size_t i = 0; i < len; i++) {
            unsigned v = le[i] * 10u + carry;
            le[i] = (uint8_t)v;
            carry = v >> 8;
        }
        while (carry) {
            le[len++] = (uint8_t)carry;
            carry >>= 8;
        }
    }
    if (*s != ';') {
        free(le);
        return fail("an integer without its ';'");
    }
    *p = s + 1;
    if (negative) { /* -m is -1 - (m - 1) in CBOR's terms */
        for (size_t i = 0; i < len; i++)
            if (le[i]-- != 0) break;
        while (len && !le[len - 1]) len--;
    }
    uint8_t *be = malloc(len + 1);
    for (size_t i = 0; i < len; i++) be[i] = le[len - 1 - i];
    qv_value *v = NULL;
    if (qv_value_new_bigint(&v, negative, be, len)) v = fail("qv_value_new_bigint refused");
    free(le);
    free(be);
    return v;
}

static qv_value *parse(const char **p);

static qv_value *items(const char **p, qv_value *list, uint64_t n) {
    for (uint64_t i = 0; list && i < n; i++) {
        qv_value *item = parse(p);
        if (!item || qv_value_list_append(list, item)) {
            qv_value_free(list);
            return fail("a list item");
        }
    }
    return list;
}

static qv_value *parse(const char **p) {
    char c = *(*p)++;
    qv_value *v = NULL, *k, *x;
    const char *end;
    size_t len;
    uint8_t *data;
    uint64_t n;
    switch (c) {
    case 'N':
        qv_value_new_null(&v);
        return v;
    case 'T':
    case 'F':
        qv_value_new_bool(&v, c == 'T');
        return v;
    case 'i':
        return integer(p);
    case 'd': {
        uint64_t bits = 0;
        for (int i = 0; i < 16; i++) {
            int d = nibble((*p)[i]);
            if (d < 0) return fail("a float needs 16 hex digits");
            bits = bits << 4 | (uint64_t)d;
        }
        *p += 16;
        double f;
        memcpy(&f, &bits, sizeof f);
        qv_value_new_float(&v, f);
        return v;
    }
    case 's':
    case 'b':
        end = strchr(*p, ';');
        if (!end || !(data = unhex(*p, end, &len))) return fail("bad hex");
        *p = end + 1;
        if (c == 's' ? qv_value_new_text(&v, (const char *)data, len) : qv_value_new_bytes(&v, data, len))
            v = fail("text that is not UTF-8");
        free(data);
        return v;
    case 'l':
        n = number(p);
        qv_value_new_list(&v);
        return items(p, v, n);
    case 'S':
    case 'U':
        /* A set is tag 258 over its elements, in whatever order they come:
         * the encoding must put them in canonical order. */
        n = number(p);
        qv_value_new_list(&x);
        if (!(x = items(p, x, n))) return NULL;
        if (qv_value_new_tag(&v, c == 'S' ? QV_TAG_SET : QV_TAG_TUPLE, x)) return fail("qv_value_new_tag");
        return v;
    case 'm':
        n = number(p);
        qv_value_new_map(&v);
        for (uint64_t i = 0; i < n; i++) {
            if (!(k = parse(p)) || !(x = parse(p))) {
                qv_value_free(k);
                qv_value_free(v);
                return NULL;
            }
            if (qv_value_map_set(v, k, x)) {
                qv_value_free(v);
                return fail("qv_value_map_set refused a key");
            }
        }
        return v;
    case 'g':
        n = number(p);
        if (!(x = parse(p))) return NULL;
        if (qv_value_new_tag(&v, n, x)) return fail("qv_value_new_tag");
        return v;
    case 'A': {
        uint64_t tag = number(p), ndim = number(p);
        qv_value *shape, *arr, *typed, *b;
        qv_value_new_list(&shape);
        for (uint64_t i = 0; i < ndim; i++) {
            qv_value_new_uint(&x, number(p));
            qv_value_list_append(shape, x);
        }
        end = strchr(*p, ';');
        if (!end || !(data = unhex(*p, end, &len))) {
            qv_value_free(shape);
            return fail("bad hex");
        }
        *p = end + 1;
        qv_value_new_bytes(&b, data, len);
        free(data);
        qv_value_new_tag(&typed, tag, b);
        qv_value_new_list(&arr);
        qv_value_list_append(arr, shape);
        qv_value_list_append(arr, typed);
        qv_value_new_tag(&v, QV_TAG_NDARRAY, arr);
        return v;
    }
    default:
        return fail("an unknown description token");
    }
}

static int equal(const qv_value *a, const qv_value *b);

/* Every item of a's list has an equal one in b's: for maps (key and value)
 * and sets, whose order in a tree built by hand is the builder's. */
static int same_entries(const qv_value *a, const qv_value *b, int map) {
    size_t n = qv_value_count(a);
    if (n != qv_value_count(b)) return 0;
    for (size_t i = 0; i < n; i++) {
        int found = 0;
        for (size_t j = 0; j < n && !found; j++) {
            if (map)
                found = equal(qv_value_map_key(a, i), qv_value_map_key(b, j)) &&
                        equal(qv_value_map_value(a, i), qv_value_map_value(b, j));
            else
                found = equal(qv_value_list_get(a, i), qv_value_list_get(b, j));
        }
        if (!found) return 0;
    }
    return 1;
}

/* Equality of two trees by their content, not by their encodings (which are
 * what is under test). Any NaN equals any NaN: the encoding keeps none of a
 * NaN's payload. */
static int equal(const qv_value *a, const qv_value *b) {
    if (!a || !b || qv_value_type(a) != qv_value_type(b)) return 0;
    int x, y;
    uint64_t m, n;
    double f, g;
    const uint8_t *p, *q;
    size_t lp, lq;
    const qv_value *ca, *cb;
    switch (qv_value_type(a)) {
    case QV_TYPE_NULL:
        return 1;
    case QV_TYPE_BOOL:
        qv_value_get_bool(a, &x);
        qv_value_get_bool(b, &y);
        return x == y;
    case QV_TYPE_INT:
        qv_value_get_cbor_int(a, &x, &m);
        qv_value_get_cbor_int(b, &y, &n);
        return x == y && m == n;
    case QV_TYPE_BIGINT:
        qv_value_get_bigint(a, &x, &p, &lp);
        qv_value_get_bigint(b, &y, &q, &lq);
        return x == y && lp == lq && !memcmp(p, q, lp);
    case QV_TYPE_FLOAT:
        qv_value_get_float(a, &f);
        qv_value_get_float(b, &g);
        return (isnan(f) && isnan(g)) || !memcmp(&f, &g, sizeof f);
    case QV_TYPE_TEXT:
        qv_value_get_text(a, (const char **)&p, &lp);
        qv_value_get_text(b, (const char **)&q, &lq);
        return lp == lq && !memcmp(p, q, lp);
    case QV_TYPE_BYTES:
        qv_value_get_bytes(a, &p, &lp);
        qv_value_get_bytes(b, &q, &lq);
        return lp == lq && !memcmp(p, q, lp);
    case QV_TYPE_LIST:
        if (qv_value_count(a) != qv_value_count(b)) return 0;
        for (size_t i = 0; i < qv_value_count(a); i++)
            if (!equal(qv_value_list_get(a, i), qv_value_list_get(b, i))) return 0;
        return 1;
    case QV_TYPE_MAP:
        return same_entries(a, b, 1);
    case QV_TYPE_TAG:
        qv_value_get_tag(a, &m, &ca);
        qv_value_get_tag(b, &n, &cb);
        if (m != n) return 0;
        if (m == QV_TAG_SET && qv_value_type(ca) == QV_TYPE_LIST && qv_value_type(cb) == QV_TYPE_LIST)
            return same_entries(ca, cb, 0);
        return equal(ca, cb);
    default:
        return 0;
    }
}

static void put_digest(strbuf *out, const qv_digest *d) {
    char hex[33];
    qv_digest_hex(d, hex);
    put(out, " ", 1);
    put(out, hex, 32);
}

static void error_line(strbuf *out, const char *what) {
    puts_(out, "ERR ");
    puts_(out, what);
    puts_(out, ": ");
    for (const char *m = qv_errmsg(); *m; m++) put(out, *m == '\n' ? " " : m, 1);
    puts_(out, "\n");
}

static void answer(strbuf *out, char *line) {
    char *fields[4], *save = NULL;
    for (int i = 0; i < 4; i++) {
        fields[i] = strtok_r(i ? NULL : line, " ", &save);
        if (!fields[i]) {
            puts_(out, "ERR a line needs 4 fields\n");
            return;
        }
    }
    for (int i = 0; i < 4; i++) {
        if (i != 2 && *fields[i] == 'x') fields[i]++;
        else if (i != 2 && !(i == 1 && !strcmp(fields[i], "-"))) {
            puts_(out, "ERR a hex field must start with x\n");
            return;
        }
    }
    size_t len;
    char *name = (char *)unhex(fields[0], fields[0] + strlen(fields[0]), &len);
    char *version = strcmp(fields[1], "-") ? (char *)unhex(fields[1], fields[1] + strlen(fields[1]), &len) : NULL;
    const char *p = fields[2];
    fail_why = NULL;
    qv_value *v = parse(&p), *args = NULL, *kwargs = NULL, *item, *key, *back = NULL;
    void *enc = NULL, *re = NULL;
    size_t elen, rlen;
    uint8_t *theirs = NULL;
    qv_digest vd, cd;
    if (!v || *p) {
        puts_(out, "ERR description: ");
        puts_(out, fail_why ? fail_why : "trailing characters");
        puts_(out, "\n");
        goto done;
    }
    if (qv_value_encode(v, &enc, &elen)) {
        error_line(out, "encode");
        goto done;
    }
    if (qv_value_digest(v, &vd)) {
        error_line(out, "digest");
        goto done;
    }
    qv_value_new_list(&args);
    qv_value_clone(&item, v);
    qv_value_list_append(args, item);
    qv_value_new_map(&kwargs);
    qv_value_new_text(&key, "kw", 2);
    qv_value_clone(&item, v);
    qv_value_map_set(kwargs, key, item);
    /* A value just under the nesting limit encodes, and its call, two
     * levels deeper, is refused: "refused" in place of the call digest. */
    qv_status cst = qv_call_digest(&cd, name, version, args, kwargs);
    put_hex(out, enc, elen);
    put_digest(out, &vd);
    if (cst) puts_(out, " refused");
    else put_digest(out, &cd);
    /* The positional call a memo makes, with C's empty kwargs (NULL). */
    if (qv_call_digest(&cd, name, version, args, NULL)) puts_(out, " refused");
    else put_digest(out, &cd);
    theirs = unhex(fields[3], fields[3] + strlen(fields[3]), &len);
    if (!theirs || qv_value_decode(&back, theirs, len)) {
        puts_(out, " decode-error ");
        put_hex(out, (const uint8_t *)qv_errmsg(), strlen(qv_errmsg()));
        puts_(out, "\n");
        goto done;
    }
    puts_(out, equal(v, back) ? " eq " : " ne ");
    if (qv_value_encode(back, &re, &rlen)) puts_(out, "-");
    else put_hex(out, re, rlen);
    puts_(out, "\n");
done:
    qv_value_free(v);
    qv_value_free(back);
    qv_value_free(args);
    qv_value_free(kwargs);
    qv_free(enc);
    qv_free(re);
    free(theirs);
    free(name);
    free(version);
}

int main(void) {
    strbuf out = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[--n] = 0;
        if (n == 0) { /* the end of a batch: answer it */
            fwrite(out.buf, 1, out.len, stdout);
            fflush(stdout);
            out.len = 0;
            continue;
        }
        answer(&out, line);
    }
    free(line);
    free(out.buf);
    return 0;
}
