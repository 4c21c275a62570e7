/* Deterministic CBOR (RFC 8949 section 4.2.1): a streaming encoder and a
 * validating pull decoder. Neither builds a tree; value.c does that on top. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------ shared */

enum { MAJOR_UINT, MAJOR_NEGINT, MAJOR_BYTES, MAJOR_TEXT, MAJOR_LIST, MAJOR_MAP, MAJOR_TAG, MAJOR_SIMPLE };

/* Byte strings at least this long are hashed in place by a digesting encoder. */
#define IN_PLACE_MIN (64u * 1024u)

static uint64_t float_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

static uint32_t single_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* The binary16 bits of f when f is exactly representable as one. */
static int half_from_single(float f, uint16_t *out) {
    uint32_t b = single_bits(f);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
    int exp = (int)((b >> 23) & 0xff);
    uint32_t mant = b & 0x7fffffu;
    if (exp == 255) {
        if (mant) return 0; /* NaN handled by the caller */
        *out = sign | 0x7c00u;
        return 1;
    }
    if (exp == 0) {
        if (mant) return 0; /* single subnormals are far below half's range */
        *out = sign;
        return 1;
    }
    int e = exp - 127;
    if (e > 15) return 0;
    if (e >= -14) {
        if (mant & 0x1fffu) return 0;
        *out = (uint16_t)(sign | (uint16_t)((e + 15) << 10) | (uint16_t)(mant >> 13));
        return 1;
    }
    if (e >= -24) {
        uint32_t full = mant | 0x800000u;
        int shift = 13 + (-14 - e);
        if (full & ((1u << shift) - 1)) return 0;
        *out = (uint16_t)(sign | (full >> shift));
        return 1;
    }
    return 0;
}

static double half_to_double(uint16_t h) {
    int exp = (h >> 10) & 0x1f;
    int mant = h & 0x3ff;
    double v;
    if (exp == 0)
        v = ldexp(mant, -24);
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexp(mant + 1024, exp - 25);
    return (h & 0x8000) ? -v : v;
}

int qv_utf8_valid(const void *data, size_t len) {
    const uint8_t *s = data;
    size_t i = 0;
    while (i < len) {
        /* ASCII runs dominate: 32 bytes, then 8, at a time */
        if (i + 32 <= len) {
            uint64_t w[4];
            memcpy(w, s + i, 32);
            if (!((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ull)) {
                i += 32;
                continue;
            }
        }
        if (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (len - i - 1 < n) return 0;
        for (size_t k = 1; k <= n; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* ------------------------------------------------------------ typed arrays */

/* RFC 8746 section 2.1: tag = 64 + f<<4 + s<<3 + e<<2 + ll, where f marks
 * floats, s signed integers, e little-endian, and ll is log2 of the size
 * (bytes for integers; 16, 32, 64 or 128 bits for floats). One-byte
 * integers have no byte order: their e bit marks uint8 "clamped" (68), and
 * a signed one with it (76) is reserved. */
uint64_t qv_typed_array_tag(char kind, uint32_t size, int little_endian) {
    int ll;
    if (kind == 'c') return size == 1 ? 68 : 0;
    if (kind == 'u' || kind == 'i') {
        ll = size == 1 ? 0 : size == 2 ? 1 : size == 4 ? 2 : size == 8 ? 3 : -1;
        if (ll < 0) return 0;
        return 64u + (kind == 'i' ? 8u : 0u) + (size > 1 && little_endian ? 4u : 0u) + (unsigned)ll;
    }
    if (kind == 'f') {
        ll = size == 2 ? 0 : size == 4 ? 1 : size == 8 ? 2 : size == 16 ? 3 : -1;
        if (ll < 0) return 0;
        return 80u + (little_endian ? 4u : 0u) + (unsigned)ll;
    }
    return 0;
}

qv_status qv_typed_array_type(uint64_t tag, char *kind, uint32_t *size, int *little_endian, const char **name) {
    static const char *const names[24] = {
        "uint8", "uint16", "uint32", "uint64", "uint8_clamped", "uint16", "uint32", "uint64",
        "int8", "int16", "int32", "int64", NULL, "int16", "int32", "int64",
        "float16", "float32", "float64", "float128", "float16", "float32", "float64", "float128"};
    if (tag < 64 || tag > 87 || !names[tag - 64]) return qv__error(QV_EINVAL, "tag %llu is not an RFC 8746 typed array",
                                                                    (unsigned long long)tag);
    unsigned t = (unsigned)(tag - 64), ll = t & 3, f = t >> 4 & 1, s = t >> 3 & 1, e = t >> 2 & 1;
    if (kind) *kind = f ? 'f' : s ? 'i' : (e && ll == 0) ? 'c' : 'u';
    if (size) *size = f ? 2u << ll : 1u << ll;
    if (little_endian) *little_endian = e || (!f && ll == 0);
    if (name) *name = names[t];
    return QV_OK;
}

/* ----------------------------------------------------------------- encoder */

/* Maps and sets are buffered: their entries arrive in any order and are
 * sorted when they close. A set takes two frames, like the tag and list it
 * becomes, so that the encoder's depth limit stays the decoder's. */
enum { EF_LIST, EF_MAP, EF_TAG, EF_SET };

typedef struct {
    uint8_t kind;
    uint64_t remaining;  /* list and tag: items still expected */
    size_t start;        /* map, set: offset of its region in buf */
    size_t marks_base;   /* map, set: index of its first mark */
} eframe;

struct qv_encoder {
    uint8_t *buf;
    size_t len, cap;
    uint8_t *scratch;
    size_t scratch_cap;
    size_t *marks; /* map entries: key start, value start, ...; set elements: start, ... */
    size_t nmarks, marks_cap;
    eframe frames[QV_MAX_DEPTH];
    int depth;
    int maps_open;        /* maps and sets: their items are buffered, never hashed in place */
    int complete;         /* one top-level item written */
    int failed;
    int digest_only;      /* large byte strings may be hashed in place */
    int hashed_in_place;  /* part of the item went straight to the hasher */
    qv_hasher *hasher;
};

qv_status qv_encoder_new(qv_encoder **out) {
    if (!out) return qv__error(QV_EINVAL, "qv_encoder_new: out is NULL");
    *out = calloc(1, sizeof(qv_encoder));
    if (!*out) return qv__nomem();
    return QV_OK;
}

void qv_encoder_free(qv_encoder *enc) {
    if (!enc) return;
    free(enc->buf);
    free(enc->scratch);
    free(enc->marks);
    qv__hasher_free(enc->hasher);
    free(enc);
}

void qv_encoder_reset(qv_encoder *enc) {
    if (!enc) return;
    enc->len = 0;
    enc->nmarks = 0;
    enc->depth = 0;
    enc->maps_open = 0;
    enc->complete = 0;
    enc->failed = 0;
    enc->digest_only = 0;
    enc->hashed_in_place = 0;
}

void qv_encoder_reset_for_digest(qv_encoder *enc) {
    qv_encoder_reset(enc);
    if (enc) enc->digest_only = 1;
}

static qv_status fail(qv_encoder *enc, qv_status st) {
    enc->failed = 1;
    return st;
}

static qv_status reserve(qv_encoder *enc, size_t extra) {
    if (QV_LIKELY(enc->cap - enc->len >= extra)) return QV_OK;
    if (extra > SIZE_MAX / 2 - enc->len) return fail(enc, qv__error(QV_ENOMEM, "encoding larger than memory"));
    size_t cap = enc->cap ? enc->cap : 256;
    while (cap - enc->len < extra) cap *= 2;
    uint8_t *b = realloc(enc->buf, cap);
    if (!b) return fail(enc, qv__nomem());
    enc->buf = b;
    enc->cap = cap;
    return QV_OK;
}

static void put_head(uint8_t *p, size_t *n, int major, uint64_t arg) {
    uint8_t m = (uint8_t)(major << 5);
    if (arg < 24) {
        p[0] = m | (uint8_t)arg;
        *n = 1;
    } else if (arg <= 0xff) {
        p[0] = m | 24;
        p[1] = (uint8_t)arg;
        *n = 2;
    } else if (arg <= 0xffff) {
        p[0] = m | 25;
        p[1] = (uint8_t)(arg >> 8);
        p[2] = (uint8_t)arg;
        *n = 3;
    } else if (arg <= 0xffffffffu) {
        p[0] = m | 26;
        for (int i = 0; i < 4; i++) p[1 + i] = (uint8_t)(arg >> (24 - 8 * i));
        *n = 5;
    } else {
        p[0] = m | 27;
        qv__put_be64(p + 1, arg);
        *n = 9;
    }
}

size_t qv__encode_uint(uint8_t out[9], uint64_t v) {
    size_t n;
    put_head(out, &n, MAJOR_UINT, v);
    return n;
}

/* Called before every item: checks state, records map marks. */
static qv_status item_begin(qv_encoder *enc) {
    if (QV_UNLIKELY(enc->failed))
        return qv__error(QV_EMISUSE, "encoder: an earlier call failed; reset the encoder");
    if (QV_UNLIKELY(enc->complete))
        return fail(enc, qv__error(QV_EMISUSE, "encoder: a complete item was already written; reset the encoder"));
    if (enc->depth > 0) {
        eframe *f = &enc->frames[enc->depth - 1];
        if (f->kind == EF_MAP || f->kind == EF_SET) {
            if (enc->nmarks == enc->marks_cap) {
                size_t cap = enc->marks_cap ? enc->marks_cap * 2 : 64;
                size_t *m = realloc(enc->marks, cap * sizeof *m);
                if (!m) return fail(enc, qv__nomem());
                enc->marks = m;
                enc->marks_cap = cap;
            }
            enc->marks[enc->nmarks++] = enc->len;
        }
    }
    return QV_OK;
}

/* Called after every complete item: closes the lists and tags it completes. */
static void item_end(qv_encoder *enc) {
    while (enc->depth > 0) {
        eframe *f = &enc->frames[enc->depth - 1];
        if (f->kind == EF_MAP || f->kind == EF_SET) return;
        if (--f->remaining > 0) return;
        enc->depth--;
    }
    enc->complete = 1;
}

static qv_status write_head_item(qv_encoder *enc, int major, uint64_t arg) {
    qv_status st = item_begin(enc);
    if (st) return st;
    if ((st = reserve(enc, 9))) return st;
    size_t n;
    put_head(enc->buf + enc->len, &n, major, arg);
    enc->len += n;
    item_end(enc);
    return QV_OK;
}

qv_status qv_encoder_null(qv_encoder *enc) {
    return write_head_item(enc, MAJOR_SIMPLE, 22);
}

qv_status qv_encoder_bool(qv_encoder *enc, int b) {
    return write_head_item(enc, MAJOR_SIMPLE, b ? 21 : 20);
}

qv_status qv_encoder_int(qv_encoder *enc, int64_t i) {
    if (i >= 0) return write_head_item(enc, MAJOR_UINT, (uint64_t)i);
    return write_head_item(enc, MAJOR_NEGINT, (uint64_t)(-(i + 1)));
}

qv_status qv_encoder_uint(qv_encoder *enc, uint64_t u) {
    return write_head_item(enc, MAJOR_UINT, u);
}

qv_status qv_encoder_negint(qv_encoder *enc, uint64_t n) {
    return write_head_item(enc, MAJOR_NEGINT, n);
}

static qv_status write_string(qv_encoder *enc, int major, const void *data, size_t len) {
    qv_status st = item_begin(enc);
    if (st) return st;
    if (enc->digest_only && len >= IN_PLACE_MIN && enc->maps_open == 0) {
        /* Hash what came before, then the string where it lies. */
        if (!enc->hasher) {
            if (!(enc->hasher = qv__hasher_new())) return fail(enc, qv__nomem());
        }
        if (!enc->hashed_in_place) qv__hasher_reset(enc->hasher);
        size_t n;
        if ((st = reserve(enc, 9))) return st;
        put_head(enc->buf + enc->len, &n, major, len);
        enc->len += n;
        qv__hasher_update(enc->hasher, enc->buf, enc->len);
        qv__hasher_update(enc->hasher, data, len);
        enc->len = 0;
        enc->hashed_in_place = 1;
        item_end(enc);
        return QV_OK;
    }
    if ((st = reserve(enc, 9 + len))) return st;
    size_t n;
    put_head(enc->buf + enc->len, &n, major, len);
    enc->len += n;
    if (len) memcpy(enc->buf + enc->len, data, len);
    enc->len += len;
    item_end(enc);
    return QV_OK;
}

qv_status qv_encoder_bytes(qv_encoder *enc, const void *data, size_t len) {
    if (!data && len) return qv__error(QV_EINVAL, "encoder: NULL bytes with length %zu", len);
    return write_string(enc, MAJOR_BYTES, data, len);
}

qv_status qv_encoder_text_trusted(qv_encoder *enc, const char *s, size_t len) {
    if (!s && len) return qv__error(QV_EINVAL, "encoder: NULL text with length %zu", len);
    return write_string(enc, MAJOR_TEXT, s, len);
}

qv_status qv_encoder_text(qv_encoder *enc, const char *s, size_t len) {
    if (!s && len) return qv__error(QV_EINVAL, "encoder: NULL text with length %zu", len);
    if (!qv_utf8_valid((const uint8_t *)s, len)) {
        enc->failed = 1;
        return qv__error(QV_EENCODE, "text is not valid UTF-8");
    }
    return write_string(enc, MAJOR_TEXT, s, len);
}

qv_status qv_encoder_bigint(qv_encoder *enc, int negative, const void *magnitude, size_t len) {
    const uint8_t *m = magnitude;
    if (!m && len) return qv__error(QV_EINVAL, "encoder: NULL magnitude with length %zu", len);
    while (len && *m == 0) {
        m++;
        len--;
    }
    if (len <= 8) {
        uint64_t v = 0;
        for (size_t i = 0; i < len; i++) v = (v << 8) | m[i];
        return write_head_item(enc, negative ? MAJOR_NEGINT : MAJOR_UINT, v);
    }
    /* A tag and its content are one item for map bookkeeping: write both here. */
    qv_status st = item_begin(enc);
    if (st) return st;
    if ((st = reserve(enc, 18 + len))) return st;
    size_t n;
    put_head(enc->buf + enc->len, &n, MAJOR_TAG, negative ? QV_TAG_BIGNUM_NEG : QV_TAG_BIGNUM_POS);
    enc->len += n;
    put_head(enc->buf + enc->len, &n, MAJOR_BYTES, len);
    enc->len += n;
    memcpy(enc->buf + enc->len, m, len);
    enc->len += len;
    item_end(enc);
    return QV_OK;
}

qv_status qv_encoder_float(qv_encoder *enc, double d) {
    qv_status st = item_begin(enc);
    if (st) return st;
    if ((st = reserve(enc, 9))) return st;
    uint8_t *p = enc->buf + enc->len;
    float f = (float)d;
    uint16_t h;
    if (isnan(d)) {
        p[0] = 0xf9;
        p[1] = 0x7e;
        p[2] = 0x00;
        enc->len += 3;
    } else if ((double)f == d && half_from_single(f, &h)) {
        p[0] = 0xf9;
        p[1] = (uint8_t)(h >> 8);
        p[2] = (uint8_t)h;
        enc->len += 3;
    } else if ((double)f == d) {
        uint32_t b = single_bits(f);
        p[0] = 0xfa;
        for (int i = 0; i < 4; i++) p[1 + i] = (uint8_t)(b >> (24 - 8 * i));
        enc->len += 5;
    } else {
        p[0] = 0xfb;
        qv__put_be64(p + 1, float_bits(d));
        enc->len += 9;
    }
    item_end(enc);
    return QV_OK;
}

static qv_status push_frame(qv_encoder *enc, eframe f) {
    if (enc->depth >= QV_MAX_DEPTH)
        return fail(enc, qv__error(QV_EENCODE, "nesting deeper than %d", QV_MAX_DEPTH));
    enc->frames[enc->depth++] = f;
    return QV_OK;
}

qv_status qv_encoder_list(qv_encoder *enc, uint64_t count) {
    qv_status st = item_begin(enc);
    if (st) return st;
    if ((st = reserve(enc, 9))) return st;
    size_t n;
    if (enc->depth >= QV_MAX_DEPTH) return fail(enc, qv__error(QV_EENCODE, "nesting deeper than %d", QV_MAX_DEPTH));
    put_head(enc->buf + enc->len, &n, MAJOR_LIST, count);
    enc->len += n;
    if (count == 0) {
        item_end(enc);
        return QV_OK;
    }
    eframe f = {EF_LIST, count, 0, 0};
    return push_frame(enc, f);
}

qv_status qv_encoder_tag(qv_encoder *enc, uint64_t tag) {
    qv_status st = item_begin(enc);
    if (st) return st;
    if ((st = reserve(enc, 9))) return st;
    size_t n;
    put_head(enc->buf + enc->len, &n, MAJOR_TAG, tag);
    enc->len += n;
    eframe f = {EF_TAG, 1, 0, 0};
    return push_frame(enc, f);
}

qv_status qv_encoder_map_begin(qv_encoder *enc) {
    qv_status st = item_begin(enc);
    if (st) return st;
    eframe f = {EF_MAP, 0, enc->len, enc->nmarks};
    if ((st = push_frame(enc, f))) return st;
    enc->maps_open++;
    return QV_OK;
}

typedef struct {
    const uint8_t *key;
    size_t key_len;
    size_t start, end; /* the whole entry within the region */
} entry;

static int key_order(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c) return c;
    return (alen > blen) - (alen < blen);
}

static int entry_cmp(const void *pa, const void *pb) {
    const entry *a = pa, *b = pb;
    return key_order(a->key, a->key_len, b->key, b->key_len);
}

/* The head of a closed map (its count) or set (its tag and its count), in
 * head; its length. */
static size_t sorted_head(uint8_t head[18], uint8_t kind, size_t count) {
    size_t n = 0, m;
    if (kind == EF_SET) put_head(head, &n, MAJOR_TAG, QV_TAG_SET);
    put_head(head + n, &m, kind == EF_SET ? MAJOR_LIST : MAJOR_MAP, count);
    return n + m;
}

/* Pop the map or set frame f, its entries written behind their head. */
static void close_frame(qv_encoder *enc, const eframe *f) {
    enc->nmarks = f->marks_base;
    enc->depth--;
    enc->maps_open--;
    item_end(enc); /* a set also closes the tag frame below it */
}

/* Close the map or set on top: its entries (a map's key and value, a set's
 * element) are rewritten in the bytewise order of their keys' encodings (a
 * set element is its own key). A map refuses a duplicate key; a set keeps
 * one of equal elements, as a set does. */
static qv_status close_sorted(qv_encoder *enc, uint8_t kind) {
    const char *what = kind == EF_MAP ? "qv_encoder_map_end without an open map"
                                      : "qv_encoder_set_end without an open set";
    if (!enc) return qv__error(QV_EINVAL, "encoder is NULL");
    if (enc->failed) return qv__error(QV_EMISUSE, "encoder: an earlier call failed; reset the encoder");
    if (enc->depth == 0 || enc->frames[enc->depth - 1].kind != kind)
        return fail(enc, qv__error(QV_EMISUSE, "encoder: %s", what));
    eframe *f = &enc->frames[enc->depth - 1];
    size_t per = kind == EF_MAP ? 2 : 1;
    size_t nm = enc->nmarks - f->marks_base;
    if (nm % per) return fail(enc, qv__error(QV_EMISUSE, "encoder: map closed after a key without its value"));
    size_t count = nm / per, region = enc->len - f->start;
    qv_status st;

    entry stackbuf[16], *ents = count <= 16 ? stackbuf : malloc(count * sizeof(entry));
    if (!ents) return fail(enc, qv__nomem());
    int sorted = 1;
    for (size_t i = 0; i < count; i++) {
        const size_t *m = &enc->marks[f->marks_base + per * i];
        size_t end = i + 1 < count ? m[per] - f->start : region;
        size_t ks = m[0] - f->start, ke = per == 2 ? m[1] - f->start : end;
        ents[i] = (entry){enc->buf + f->start + ks, ke - ks, ks, end};
        if (i && sorted && entry_cmp(&ents[i - 1], &ents[i]) >= 0) sorted = 0;
    }
    uint8_t head[18];
    size_t n;
    if (sorted) {
        /* Written in order (a record's keys always are), hence no duplicate:
         * the entries stay where they are, behind the head. */
        if (ents != stackbuf) free(ents);
        n = sorted_head(head, kind, count);
        if ((st = reserve(enc, n))) return st;
        memmove(enc->buf + f->start + n, enc->buf + f->start, region);
        memcpy(enc->buf + f->start, head, n);
        enc->len = f->start + n + region;
        close_frame(enc, f);
        return QV_OK;
    }
    /* Sort entries by their keys' encodings within a copy of the region. */
    if (enc->scratch_cap < region) {
        uint8_t *s = realloc(enc->scratch, region);
        if (!s) {
            if (ents != stackbuf) free(ents);
            return fail(enc, qv__nomem());
        }
        enc->scratch = s;
        enc->scratch_cap = region;
    }
    if (region) memcpy(enc->scratch, enc->buf + f->start, region);
    for (size_t i = 0; i < count; i++) ents[i].key = enc->scratch + (ents[i].key - (enc->buf + f->start));
    qsort(ents, count, sizeof(entry), entry_cmp);
    size_t unique = count;
    for (size_t i = 1; i < count; i++) {
        if (entry_cmp(&ents[i - 1], &ents[i]) == 0) {
            if (kind == EF_MAP) {
                if (ents != stackbuf) free(ents);
                return fail(enc, qv__error(QV_EENCODE, "map has a duplicate key"));
            }
            unique--;
        }
    }
    enc->len = f->start;
    n = sorted_head(head, kind, unique); /* a map's are all unique: a duplicate was refused */
    if ((st = reserve(enc, n + region))) {
        if (ents != stackbuf) free(ents);
        return st;
    }
    memcpy(enc->buf + enc->len, head, n);
    enc->len += n;
    for (size_t i = 0; i < count; i++) {
        if (i && entry_cmp(&ents[i - 1], &ents[i]) == 0) continue;
        memcpy(enc->buf + enc->len, enc->scratch + ents[i].start, ents[i].end - ents[i].start);
        enc->len += ents[i].end - ents[i].start;
    }
    if (ents != stackbuf) free(ents);
    close_frame(enc, f);
    return QV_OK;
}

qv_status qv_encoder_map_end(qv_encoder *enc) {
    return close_sorted(enc, EF_MAP);
}

qv_status qv_encoder_set_begin(qv_encoder *enc) {
    if (!enc) return qv__error(QV_EINVAL, "encoder is NULL");
    qv_status st = item_begin(enc);
    if (st) return st;
    if (enc->depth + 2 > QV_MAX_DEPTH) return fail(enc, qv__error(QV_EENCODE, "nesting deeper than %d", QV_MAX_DEPTH));
    eframe tag = {EF_TAG, 1, 0, 0}, set = {EF_SET, 0, enc->len, enc->nmarks};
    enc->frames[enc->depth++] = tag;
    enc->frames[enc->depth++] = set;
    enc->maps_open++;
    return QV_OK;
}

qv_status qv_encoder_set_end(qv_encoder *enc) {
    return close_sorted(enc, EF_SET);
}

qv_status qv__encoder_raw(qv_encoder *enc, const void *data, size_t len) {
    qv_status st = item_begin(enc);
    if (st) return st;
    if ((st = reserve(enc, len))) return st;
    memcpy(enc->buf + enc->len, data, len);
    enc->len += len;
    item_end(enc);
    return QV_OK;
}

qv_status qv_encoder_encoded(qv_encoder *enc, const void *data, size_t len) {
    qv_status st = qv_validate(data, len);
    if (st) return fail(enc, st);
    return qv__encoder_raw(enc, data, len);
}

static qv_status check_complete(qv_encoder *enc) {
    if (!enc) return qv__error(QV_EINVAL, "encoder is NULL");
    if (enc->failed) return qv__error(QV_EMISUSE, "encoder: an earlier call failed; reset the encoder");
    if (!enc->complete) return qv__error(QV_EMISUSE, "encoder: the item is incomplete (%d containers open)", enc->depth);
    return QV_OK;
}

qv_status qv_encoder_finish(qv_encoder *enc, const void **data, size_t *len) {
    qv_status st = check_complete(enc);
    if (st) return st;
    if (enc->hashed_in_place)
        return qv__error(QV_EMISUSE, "encoder: parts were hashed in place; only the digest is available");
    *data = enc->buf;
    *len = enc->len;
    return QV_OK;
}

qv_status qv_encoder_digest(qv_encoder *enc, qv_digest *out) {
    qv_status st = check_complete(enc);
    if (st) return st;
    if (!enc->hashed_in_place) {
        qv_digest_bytes(out, enc->buf, enc->len);
        return QV_OK;
    }
    qv__hasher_update(enc->hasher, enc->buf, enc->len);
    qv__hasher_digest(enc->hasher, out);
    /* The digest consumed the hashing state: ask for it once. */
    enc->failed = 1;
    return QV_OK;
}

/* ----------------------------------------------------------------- decoder */

qv_status qv_decoder_new(qv_decoder **out) {
    if (!out) return qv__error(QV_EINVAL, "qv_decoder_new: out is NULL");
    *out = malloc(sizeof(qv_decoder));
    if (!*out) return qv__nomem();
    qv_decoder_reset(*out, NULL, 0);
    return QV_OK;
}

void qv_decoder_free(qv_decoder *dec) {
    free(dec);
}

void qv_decoder_reset(qv_decoder *dec, const void *data, size_t len) {
    if (!dec) return;
    dec->p = data;
    dec->len = data ? len : 0;
    dec->pos = 0;
    dec->depth = 0;
    dec->started = 0;
    dec->done = 0;
    dec->error = QV_OK;
    dec->type = QV_TYPE_NULL;
}

size_t qv_decoder_offset(const qv_decoder *dec) {
    return dec ? dec->pos : 0;
}

static qv_status bad(qv_decoder *dec, size_t at, const char *why) {
    dec->error = QV_EDECODE;
    return qv__error(QV_EDECODE, "not canonical CBOR at offset %zu: %s", at, why);
}

/* Called when the item spanning [start, end) is complete. */
static qv_status complete_item(qv_decoder *dec, size_t start, size_t end) {
    while (dec->depth > 0) {
        dframe *f = &dec->frames[dec->depth - 1];
        if (f->kind == DF_SET || (f->kind == DF_MAP && f->remaining % 2 == 0)) {
            /* a map key (remaining even before this decrement) or a set element */
            if (f->prev_start != (size_t)-1) {
                int c = key_order(dec->p + f->prev_start, f->prev_end - f->prev_start, dec->p + start, end - start);
                if (c == 0) return bad(dec, start, f->kind == DF_SET ? "set has a duplicate element" : "duplicate map key");
                if (c > 0) return bad(dec, start, f->kind == DF_SET ? "set elements out of order" : "map keys out of order");
            }
            f->prev_start = start;
            f->prev_end = end;
        }
        if (--f->remaining > 0) return QV_OK;
        start = f->start;
        dec->depth--;
    }
    dec->done = 1;
    return QV_OK;
}

static qv_status push(qv_decoder *dec, uint8_t kind, uint64_t remaining, size_t start, uint64_t tag) {
    if (dec->depth >= QV_MAX_DEPTH) return bad(dec, start, "nesting deeper than the limit of 512");
    dframe *f = &dec->frames[dec->depth++];
    f->kind = kind;
    f->remaining = remaining;
    f->start = start;
    f->prev_start = (size_t)-1;
    f->prev_end = 0;
    f->tag = tag;
    return QV_OK;
}

/* Read a head at dec->pos: major type and argument, refusing non-shortest forms. */
static qv_status read_head(qv_decoder *dec, int *major, int *ai, uint64_t *arg) {
    size_t at = dec->pos;
    uint8_t b = dec->p[dec->pos++];
    *major = b >> 5;
    *ai = b & 31;
    if (*ai < 24) {
        *arg = (uint64_t)*ai;
        return QV_OK;
    }
    if (*ai == 31) return bad(dec, at, "indefinite length");
    if (*ai > 27) return bad(dec, at, "reserved additional information");
    if (*major == MAJOR_SIMPLE && *ai > 24) {
        /* floats: the argument is the bit pattern, read raw */
        size_t n = (size_t)1 << (*ai - 24);
        if (dec->len - dec->pos < n) return bad(dec, at, "truncated float");
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) v = (v << 8) | dec->p[dec->pos++];
        *arg = v;
        return QV_OK;
    }
    size_t n = (size_t)1 << (*ai - 24);
    if (dec->len - dec->pos < n) return bad(dec, at, "truncated argument");
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = (v << 8) | dec->p[dec->pos++];
    if (*major != MAJOR_SIMPLE) {
        uint64_t min = n == 1 ? 24 : n == 2 ? 0x100 : n == 4 ? 0x10000 : 0x100000000ull;
        if (v < min) return bad(dec, at, *major == MAJOR_NEGINT ? "non-shortest negative integer" : "non-shortest integer or length");
    }
    *arg = v;
    return QV_OK;
}

static qv_status read_float(qv_decoder *dec, size_t at, int ai, uint64_t bits) {
    double d;
    if (ai == 25) {
        d = half_to_double((uint16_t)bits);
        if (isnan(d) && bits != 0x7e00) return bad(dec, at, "non-canonical NaN (must be f97e00)");
    } else if (ai == 26) {
        float f;
        uint32_t b = (uint32_t)bits;
        memcpy(&f, &b, 4);
        uint16_t h;
        if (isnan(f)) return bad(dec, at, "non-canonical NaN (must be f97e00)");
        if (half_from_single(f, &h)) return bad(dec, at, "non-shortest float");
        d = f;
    } else {
        memcpy(&d, &bits, 8);
        if (isnan(d)) return bad(dec, at, "non-canonical NaN (must be f97e00)");
        float f = (float)d;
        if ((double)f == d) return bad(dec, at, "non-shortest float");
    }
    dec->type = QV_TYPE_FLOAT;
    dec->f = d;
    return QV_OK;
}

qv_status qv_decoder_next(qv_decoder *dec, qv_type *type) {
    if (!dec) return qv__error(QV_EINVAL, "decoder is NULL");
    if (dec->error) return qv__error(dec->error, "decoder: an earlier item was refused; reset the decoder");
    if (dec->done) {
        if (dec->pos < dec->len) return bad(dec, dec->pos, "trailing bytes after the item");
        return QV_NOTFOUND;
    }
    if (dec->pos >= dec->len) {
        if (!dec->started) return bad(dec, 0, "empty input");
        return bad(dec, dec->pos, dec->depth && dec->frames[dec->depth - 1].kind == DF_TAG
                                      ? "tag without content"
                                      : "truncated: the input ends inside a container");
    }
    dec->started = 1;
    size_t at = dec->pos;
    dec->item_start = at;
    dframe *parent = dec->depth ? &dec->frames[dec->depth - 1] : NULL;
    int major, ai;
    uint64_t arg;
    qv_status st = read_head(dec, &major, &ai, &arg);
    if (st) return st;
    if (parent && parent->kind == DF_TAG && parent->tag == QV_TAG_SET && major != MAJOR_LIST)
        return bad(dec, at, "set content is not a list");
    size_t avail = dec->len - dec->pos;
    switch (major) {
    case MAJOR_UINT:
    case MAJOR_NEGINT:
        dec->type = QV_TYPE_INT;
        dec->negative = major == MAJOR_NEGINT;
        dec->arg = arg;
        break;
    case MAJOR_BYTES:
    case MAJOR_TEXT:
        if (arg > avail) return bad(dec, at, "length beyond the input");
        dec->data = dec->p + dec->pos;
        dec->dlen = (size_t)arg;
        if (major == MAJOR_TEXT && !qv_utf8_valid(dec->data, dec->dlen)) return bad(dec, at, "invalid UTF-8 in text");
        dec->pos += (size_t)arg;
        dec->type = major == MAJOR_TEXT ? QV_TYPE_TEXT : QV_TYPE_BYTES;
        break;
    case MAJOR_LIST:
    case MAJOR_MAP: {
        /* Every item takes at least one byte: refuse impossible counts before
         * anyone allocates for them. */
        uint64_t items = major == MAJOR_MAP ? arg * 2 : arg;
        if (arg > avail || items > avail)
            return bad(dec, at, "truncated: the container claims more items than bytes remain");
        dec->type = major == MAJOR_MAP ? QV_TYPE_MAP : QV_TYPE_LIST;
        dec->arg = arg;
        if (dec->depth >= QV_MAX_DEPTH) return bad(dec, at, "nesting deeper than the limit of 512");
        if (arg) {
            int is_set = major == MAJOR_LIST && parent && parent->kind == DF_TAG && parent->tag == QV_TAG_SET;
            if ((st = push(dec, major == MAJOR_MAP ? DF_MAP : is_set ? DF_SET : DF_LIST, items, at, 0))) return st;
            *type = dec->type;
            return QV_OK;
        }
        break;
    }
    case MAJOR_TAG:
        if (arg == QV_TAG_BIGNUM_POS || arg == QV_TAG_BIGNUM_NEG) {
            if (dec->pos >= dec->len) return bad(dec, at, "bignum without content");
            size_t cat = dec->pos;
            int cmajor, cai;
            uint64_t clen;
            if ((st = read_head(dec, &cmajor, &cai, &clen))) return st;
            if (cmajor != MAJOR_BYTES) return bad(dec, cat, "bignum content is not a byte string");
            if (clen > dec->len - dec->pos) return bad(dec, cat, "length beyond the input");
            const uint8_t *m = dec->p + dec->pos;
            if (clen == 0 || m[0] == 0) return bad(dec, cat, "bignum with a leading zero byte");
            if (clen <= 8) return bad(dec, cat, "bignum that fits in 64 bits");
            dec->pos += (size_t)clen;
            dec->type = QV_TYPE_BIGINT;
            dec->negative = arg == QV_TAG_BIGNUM_NEG;
            dec->data = m;
            dec->dlen = (size_t)clen;
            break;
        }
        dec->type = QV_TYPE_TAG;
        dec->arg = arg;
        if ((st = push(dec, DF_TAG, 1, at, arg))) return st;
        *type = QV_TYPE_TAG;
        return QV_OK;
    default: /* MAJOR_SIMPLE */
        if (ai == 20 || ai == 21) {
            dec->type = QV_TYPE_BOOL;
            dec->arg = ai == 21;
        } else if (ai == 22) {
            dec->type = QV_TYPE_NULL;
        } else if (ai == 24) {
            return bad(dec, at, arg < 32 ? "invalid simple value encoding" : "unsupported simple value");
        } else if (ai >= 25) {
            if ((st = read_float(dec, at, ai, arg))) return st;
        } else {
            return bad(dec, at, ai == 23 ? "unsupported simple value (undefined)" : "unsupported simple value");
        }
        break;
    }
    if ((st = complete_item(dec, at, dec->pos))) return st;
    *type = dec->type;
    return QV_OK;
}

qv_status qv_decoder_skip(qv_decoder *dec) {
    if (!dec) return qv__error(QV_EINVAL, "decoder is NULL");
    if (dec->type != QV_TYPE_LIST && dec->type != QV_TYPE_MAP && dec->type != QV_TYPE_TAG) return QV_OK;
    if ((dec->type == QV_TYPE_LIST || dec->type == QV_TYPE_MAP) && dec->arg == 0) return QV_OK;
    int depth = dec->depth;
    qv_type t;
    while (dec->depth >= depth && !dec->done) {
        qv_status st = qv_decoder_next(dec, &t);
        if (st) return st;
    }
    return QV_OK;
}

qv_status qv__decoder_item_span(qv_decoder *dec, size_t *start, size_t *end) {
    qv_type t;
    size_t s = dec->pos;
    qv_status st = qv_decoder_next(dec, &t);
    if (st) return st;
    if ((st = qv_decoder_skip(dec))) return st;
    *start = s;
    *end = dec->pos;
    return QV_OK;
}

static qv_status want(qv_decoder *dec, int ok, const char *what) {
    if (!dec) return qv__error(QV_EINVAL, "decoder is NULL");
    if (!ok) return qv__error(QV_ETYPE, "decoder: the current item is not %s", what);
    return QV_OK;
}

qv_status qv_decoder_get_bool(qv_decoder *dec, int *out) {
    qv_status st = want(dec, dec && dec->type == QV_TYPE_BOOL, "a bool");
    if (!st) *out = (int)dec->arg;
    return st;
}

qv_status qv_decoder_get_int(qv_decoder *dec, int64_t *out) {
    qv_status st = want(dec, dec && dec->type == QV_TYPE_INT, "an integer");
    if (st) return st;
    if (dec->arg > (uint64_t)INT64_MAX) return qv__error(QV_ERANGE, "integer does not fit in 64 signed bits");
    *out = dec->negative ? -(int64_t)dec->arg - 1 : (int64_t)dec->arg;
    return QV_OK;
}

qv_status qv_decoder_get_cbor_int(qv_decoder *dec, int *negative, uint64_t *n) {
    qv_status st = want(dec, dec && dec->type == QV_TYPE_INT, "an integer");
    if (st) return st;
    *negative = dec->negative;
    *n = dec->arg;
    return QV_OK;
}

qv_status qv_decoder_get_float(qv_decoder *dec, double *out) {
    qv_status st = want(dec, dec && dec->type == QV_TYPE_FLOAT, "a float");
    if (!st) *out = dec->f;
    return st;
}

qv_status qv_decoder_get_data(qv_decoder *dec, const uint8_t **data, size_t *len) {
    qv_status st = want(dec, dec && (dec->type == QV_TYPE_TEXT || dec->type == QV_TYPE_BYTES || dec->type == QV_TYPE_BIGINT),
                        "text, bytes or a bignum");
    if (st) return st;
    *data = dec->data;
    *len = dec->dlen;
    return QV_OK;
}

qv_status qv_decoder_get_bigint(qv_decoder *dec, int *negative, const uint8_t **magnitude, size_t *len) {
    qv_status st = want(dec, dec && dec->type == QV_TYPE_BIGINT, "a bignum");
    if (st) return st;
    *negative = dec->negative;
    *magnitude = dec->data;
    *len = dec->dlen;
    return QV_OK;
}

qv_status qv_decoder_get_count(qv_decoder *dec, uint64_t *count) {
    qv_status st = want(dec, dec && (dec->type == QV_TYPE_LIST || dec->type == QV_TYPE_MAP), "a list or map");
    if (!st) *count = dec->arg;
    return st;
}

qv_status qv_decoder_get_tag(qv_decoder *dec, uint64_t *tag) {
    qv_status st = want(dec, dec && dec->type == QV_TYPE_TAG, "a tag");
    if (!st) *tag = dec->arg;
    return st;
}

qv_status qv_validate(const void *data, size_t len) {
    qv_decoder dec;
    qv_decoder_reset(&dec, data, len);
    qv_type t;
    qv_status st;
    while ((st = qv_decoder_next(&dec, &t)) == QV_OK) {
    }
    return st == QV_NOTFOUND ? QV_OK : st;
}
