/*
 * quiver: memoized function calls in one cache shared by every language.
 *
 * This is the only public header. Conventions (see docs/API.md):
 *  - every fallible function returns qv_status: QV_OK (0) or a negative code;
 *    qv_errmsg() describes the calling thread's last failure;
 *  - out-parameters come first; a failed constructor leaves *out NULL;
 *  - destructors accept NULL and cannot fail;
 *  - inputs are borrowed for the duration of the call; memory handed to the
 *    caller is released with the matching qv_*_free or qv_free, never free();
 *  - the library never prints, aborts or exits.
 */
#ifndef QUIVER_H
#define QUIVER_H

#include <stddef.h>
#include <stdint.h>

#include "quiver_export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QV_VERSION_MAJOR 0
#define QV_VERSION_MINOR 1
#define QV_VERSION_PATCH 0
#define QV_VERSION_STRING "0.1.0"

/* The library's version, "MAJOR.MINOR.PATCH"; static storage. */
QV_EXPORT const char *qv_version(void);

/* ------------------------------------------------------------------ errors */

typedef int qv_status;

/* Numbers are frozen: new codes are only ever appended. */
#define QV_OK          0
#define QV_NOTFOUND   -1   /* no such entry (not an error condition) */
#define QV_EINVAL     -2   /* an argument is invalid */
#define QV_ENOMEM     -3   /* out of memory */
#define QV_EDECODE    -4   /* input is not canonical CBOR */
#define QV_EENCODE    -5   /* the value cannot be encoded canonically */
#define QV_ESTORE     -6   /* the storage engine failed (LMDB error in the message) */
#define QV_EFULL      -7   /* the map or disk is full and nothing can be evicted */
#define QV_EREADONLY  -8   /* the cache was opened read-only */
#define QV_ECORRUPT   -9   /* a stored entry failed validation */
#define QV_ECLOSED   -10   /* the handle was closed */
#define QV_EMISUSE   -11   /* the API was used out of order */
#define QV_EIO       -12   /* the operating system refused (errno in the message) */
#define QV_ERANGE    -13   /* a number does not fit the requested C type */
#define QV_ETYPE     -14   /* a value has the wrong type */
#define QV_ETIMEOUT  -15   /* a wait timed out */
#define QV_ECANCELLED -16  /* the operation was cancelled */
#define QV_EFAILED   -17   /* a task or function failed */

/* Static text for a status code; never NULL. */
QV_EXPORT const char *qv_strerror(qv_status status);
/* The symbolic name of a status code ("QV_EDECODE"); never NULL. */
QV_EXPORT const char *qv_status_name(qv_status status);
/* The calling thread's last error message; never NULL. Valid until the next
 * failing quiver call on this thread. */
QV_EXPORT const char *qv_errmsg(void);
/* Set the calling thread's message and return status: how a callback (a fn
 * body, a task, a submit function) explains the error it returns. message
 * is copied (truncated to 1023 bytes); NULL clears it. */
QV_EXPORT qv_status qv_error_set(qv_status status, const char *message);

/* Release memory the library handed to the caller. NULL is accepted. */
QV_EXPORT void qv_free(void *p);

/* ----------------------------------------------------------------- digests */

/* A 16-byte XXH3-128 digest in canonical (big-endian) byte order. Frozen. */
typedef struct qv_digest {
    uint8_t bytes[16];
} qv_digest;

/* 32 lowercase hex characters and a NUL. */
QV_EXPORT void qv_digest_hex(const qv_digest *d, char out[33]);
/* Parse 32 hex characters (either case); QV_EINVAL otherwise. */
QV_EXPORT qv_status qv_digest_parse(qv_digest *out, const char *hex, size_t len);
/* XXH3-128 of arbitrary bytes (the value digest when they are an encoding). */
QV_EXPORT void qv_digest_bytes(qv_digest *out, const void *data, size_t len);
/* XXH3-128 of a regular file's bytes, read in large chunks (the digest of
 * the same bytes in memory). QV_NOTFOUND when path does not exist, QV_EINVAL
 * for a directory, device, FIFO or socket, QV_EIO when it cannot be read. */
QV_EXPORT qv_status qv_digest_file(qv_digest *out, const char *path);

/* ------------------------------------------------------------------ values */

typedef int qv_type;
#define QV_TYPE_NULL    0
#define QV_TYPE_BOOL    1
#define QV_TYPE_INT     2   /* -2^64 .. 2^64-1 (CBOR major types 0 and 1) */
#define QV_TYPE_BIGINT  3   /* tags 2/3: beyond the 64-bit range */
#define QV_TYPE_FLOAT   4
#define QV_TYPE_TEXT    5
#define QV_TYPE_BYTES   6
#define QV_TYPE_LIST    7
#define QV_TYPE_MAP     8
#define QV_TYPE_TAG     9

/* Tags with a meaning in quiver (DESIGN section 3). */
#define QV_TAG_BIGNUM_POS   2
#define QV_TAG_BIGNUM_NEG   3
#define QV_TAG_NDARRAY     40
#define QV_TAG_SET        258
#define QV_TAG_TUPLE      0x51560001u
#define QV_TAG_PICKLE     0x51560002u
#define QV_TAG_REF        0x51560003u  /* in call records: a value stored by digest */
/* Python's host types (docs/FORMAT.md 3.3 and 3.4): other languages decode
 * them as tagged values. */
#define QV_TAG_REGISTERED     0x51560004u  /* [type name, value]: a type a user registered an encoder for */
#define QV_TAG_DATACLASS      0x51560005u  /* ["module:qualname", {field: value}] */
#define QV_TAG_ENUM           0x51560006u  /* ["module:qualname", member value] */
#define QV_TAG_NAMEDTUPLE     0x51560007u  /* ["module:qualname", [items]] */
#define QV_TAG_PATH           0x51560008u  /* ["module:qualname", text] */
#define QV_TAG_LOCAL_DATETIME 0x51560009u  /* a datetime without offset: ISO 8601 text */
#define QV_TAG_TIME           0x5156000au  /* a time of day without offset: ISO 8601 text */
#define QV_TAG_TIMEDELTA      0x5156000bu  /* [days, seconds, microseconds] */
#define QV_TAG_COMPLEX        0x5156000cu  /* [real, imaginary] */
#define QV_TAG_DECIMAL_TEXT   0x5156000du  /* a decimal tag 4 cannot hold (NaN, infinities, -0): its text */

/* RFC 8746 typed arrays (tags 64..87), the content of QV_TAG_NDARRAY's
 * [shape, typed array]: one table for every binding. kind is 'u' (unsigned
 * integer), 'i' (signed), 'f' (IEEE float) or 'c' (uint8, clamped); size is
 * in bytes. The tag for a type, or 0 when RFC 8746 has none. */
QV_EXPORT uint64_t qv_typed_array_tag(char kind, uint32_t size, int little_endian);
/* The type of a typed-array tag, and its RFC 8746 name ("float32");
 * QV_EINVAL when tag is not one. Any out-parameter may be NULL. */
QV_EXPORT qv_status qv_typed_array_type(uint64_t tag, char *kind, uint32_t *size, int *little_endian,
                                        const char **name);

/* Documented limit on nesting of lists, maps and tags, for decoding and encoding. */
#define QV_MAX_DEPTH 512

/* A value tree. A qv_value is owned by whoever holds the pointer; values put
 * into a list, map or tag become owned by their container. Not thread-safe to
 * mutate; any number of threads may read one that nobody mutates. */
typedef struct qv_value qv_value;

QV_EXPORT qv_status qv_value_new_null(qv_value **out);
QV_EXPORT qv_status qv_value_new_bool(qv_value **out, int b);
QV_EXPORT qv_status qv_value_new_int(qv_value **out, int64_t i);
QV_EXPORT qv_status qv_value_new_uint(qv_value **out, uint64_t u);
/* -1 - n, for n in 0 .. 2^64-1: the negative half of CBOR's integer range. */
QV_EXPORT qv_status qv_value_new_negint(qv_value **out, uint64_t n);
/* A big-endian magnitude; the value is m (negative == 0) or -1 - m. Values that
 * fit a 64-bit CBOR integer are stored as QV_TYPE_INT, so every number has one
 * representation. */
QV_EXPORT qv_status qv_value_new_bigint(qv_value **out, int negative, const void *magnitude, size_t len);
QV_EXPORT qv_status qv_value_new_float(qv_value **out, double d);
/* Text must be valid UTF-8 (QV_EENCODE otherwise); it may contain NUL. */
QV_EXPORT qv_status qv_value_new_text(qv_value **out, const char *s, size_t len);
QV_EXPORT qv_status qv_value_new_bytes(qv_value **out, const void *data, size_t len);
QV_EXPORT qv_status qv_value_new_list(qv_value **out);
QV_EXPORT qv_status qv_value_new_map(qv_value **out);
/* Takes ownership of content, also when it fails. */
QV_EXPORT qv_status qv_value_new_tag(qv_value **out, uint64_t tag, qv_value *content);
QV_EXPORT qv_status qv_value_clone(qv_value **out, const qv_value *v);
QV_EXPORT void qv_value_free(qv_value *v);

/* Takes ownership of item, also when it fails. */
QV_EXPORT qv_status qv_value_list_append(qv_value *list, qv_value *item);
/* Takes ownership of key and value, also when it fails. A key equal to one
 * already present is refused with QV_EINVAL (maps have unique keys). */
QV_EXPORT qv_status qv_value_map_set(qv_value *map, qv_value *key, qv_value *value);

QV_EXPORT qv_type qv_value_type(const qv_value *v);
QV_EXPORT qv_status qv_value_get_bool(const qv_value *v, int *out);
/* QV_ERANGE when the integer does not fit. */
QV_EXPORT qv_status qv_value_get_int(const qv_value *v, int64_t *out);
QV_EXPORT qv_status qv_value_get_uint(const qv_value *v, uint64_t *out);
/* Any QV_TYPE_INT: *negative set, *n the CBOR argument (value = n or -1 - n). */
QV_EXPORT qv_status qv_value_get_cbor_int(const qv_value *v, int *negative, uint64_t *n);
/* A QV_TYPE_BIGINT: borrowed big-endian magnitude, valid while v lives. */
QV_EXPORT qv_status qv_value_get_bigint(const qv_value *v, int *negative, const uint8_t **magnitude, size_t *len);
QV_EXPORT qv_status qv_value_get_float(const qv_value *v, double *out);
/* Borrowed, valid while v lives; text is NUL-terminated for convenience. */
QV_EXPORT qv_status qv_value_get_text(const qv_value *v, const char **s, size_t *len);
QV_EXPORT qv_status qv_value_get_bytes(const qv_value *v, const uint8_t **data, size_t *len);
/* Items of a list, entries of a map; 0 for every other type. */
QV_EXPORT size_t qv_value_count(const qv_value *v);
/* Borrowed children; NULL when out of range or of another type. */
QV_EXPORT const qv_value *qv_value_list_get(const qv_value *list, size_t i);
QV_EXPORT const qv_value *qv_value_map_key(const qv_value *map, size_t i);
QV_EXPORT const qv_value *qv_value_map_value(const qv_value *map, size_t i);
/* The value stored under a text key, or NULL. */
QV_EXPORT const qv_value *qv_value_map_find(const qv_value *map, const char *key);
QV_EXPORT qv_status qv_value_get_tag(const qv_value *v, uint64_t *tag, const qv_value **content);

/* Total order of values: bytewise order of their canonical encodings (the
 * order of map keys). Returns <0, 0 or >0. */
QV_EXPORT int qv_value_compare(const qv_value *a, const qv_value *b);

/* The canonical encoding; *data is freed with qv_free. */
QV_EXPORT qv_status qv_value_encode(const qv_value *v, void **data, size_t *len);
/* Decode one canonical item; anything non-canonical is refused (QV_EDECODE,
 * with the offset and the rule in qv_errmsg()). */
QV_EXPORT qv_status qv_value_decode(qv_value **out, const void *data, size_t len);
/* XXH3-128 of the canonical encoding. */
QV_EXPORT qv_status qv_value_digest(const qv_value *v, qv_digest *out);

/* The marker every call's encoding begins with (DESIGN section 3): the one
 * place it is written. */
#define QV_CALL_MARKER "quiver/call/v1"

/* The call digest: XXH3-128 of [QV_CALL_MARKER, name, version, args, kwargs].
 * version may be NULL (encoded as null); args must be a list; kwargs a map or
 * NULL (an empty map). */
QV_EXPORT qv_status qv_call_digest(qv_digest *out, const char *name, const char *version,
                                   const qv_value *args, const qv_value *kwargs);

/* 1 when s is valid UTF-8 (no surrogates, no overlong forms), else 0: the
 * check text gets, for bindings that choose between text and bytes. */
QV_EXPORT int qv_utf8_valid(const void *s, size_t len);

/* Check that bytes are exactly one canonical item; QV_EDECODE otherwise. */
QV_EXPORT qv_status qv_validate(const void *data, size_t len);

/* ----------------------------------------------------------------- encoder */

/* A streaming canonical encoder. Items are written one at a time; a list
 * declares its length and closes itself after its last item; a map and a set
 * are opened and closed explicitly and may receive their entries in any
 * order: they are sorted by encoding when they close (a map by its keys').
 * One encoder per thread at a time; reuse it with a reset to avoid allocation. */
typedef struct qv_encoder qv_encoder;

QV_EXPORT qv_status qv_encoder_new(qv_encoder **out);
QV_EXPORT void qv_encoder_free(qv_encoder *enc);
/* Forget everything written and any error; keeps the allocated memory. */
QV_EXPORT void qv_encoder_reset(qv_encoder *enc);
/* Reset for an item that will only be digested: large byte strings outside
 * maps are then hashed in place, and qv_encoder_finish is refused. */
QV_EXPORT void qv_encoder_reset_for_digest(qv_encoder *enc);

QV_EXPORT qv_status qv_encoder_null(qv_encoder *enc);
QV_EXPORT qv_status qv_encoder_bool(qv_encoder *enc, int b);
QV_EXPORT qv_status qv_encoder_int(qv_encoder *enc, int64_t i);
QV_EXPORT qv_status qv_encoder_uint(qv_encoder *enc, uint64_t u);
QV_EXPORT qv_status qv_encoder_negint(qv_encoder *enc, uint64_t n); /* -1 - n */
/* Any integer given as sign and big-endian magnitude: shortest form, a bignum
 * tag only when it does not fit 64 bits; leading zero bytes are ignored. */
QV_EXPORT qv_status qv_encoder_bigint(qv_encoder *enc, int negative, const void *magnitude, size_t len);
QV_EXPORT qv_status qv_encoder_float(qv_encoder *enc, double d);
QV_EXPORT qv_status qv_encoder_text(qv_encoder *enc, const char *s, size_t len);
/* Like qv_encoder_text for text the caller guarantees to be valid UTF-8
 * (a host string type that is UTF-8 by construction). */
QV_EXPORT qv_status qv_encoder_text_trusted(qv_encoder *enc, const char *s, size_t len);
QV_EXPORT qv_status qv_encoder_bytes(qv_encoder *enc, const void *data, size_t len);
/* A list of exactly count items; it closes itself after the last one. */
QV_EXPORT qv_status qv_encoder_list(qv_encoder *enc, uint64_t count);
/* A map: keys and values alternate until qv_encoder_map_end, which sorts the
 * entries and refuses a duplicate key (QV_EENCODE). */
QV_EXPORT qv_status qv_encoder_map_begin(qv_encoder *enc);
QV_EXPORT qv_status qv_encoder_map_end(qv_encoder *enc);
/* A set, tag 258 over a list: elements (any items, containers too) follow in
 * any order until qv_encoder_set_end, which sorts them bytewise by encoding
 * and keeps one of equal elements, so that equal host sets always encode
 * alike. It nests as a tag and a list do (two levels of QV_MAX_DEPTH). */
QV_EXPORT qv_status qv_encoder_set_begin(qv_encoder *enc);
QV_EXPORT qv_status qv_encoder_set_end(qv_encoder *enc);
/* A tag; the next item is its content. */
QV_EXPORT qv_status qv_encoder_tag(qv_encoder *enc, uint64_t tag);
QV_EXPORT qv_status qv_encoder_value(qv_encoder *enc, const qv_value *v);
/* Begin a call's encoding, [QV_CALL_MARKER, name, version, args, kwargs]:
 * the 5-item list, the marker, name and version (NULL: null), both UTF-8;
 * the caller then writes args (a list) and kwargs (a map). Every binding
 * starts its calls here, so the call layout lives in one place. */
QV_EXPORT qv_status qv_encoder_call_head(qv_encoder *enc, const char *name, size_t name_len, const char *version,
                                         size_t version_len);
/* The canonical head of an item of major type major (0-7) with argument arg
 * (the integer, a length, a count or a tag number) into out, which has room
 * for 9 bytes; returns its length. Inline, for the hit paths of bindings
 * that write a call of a few simple arguments straight into a buffer. */
static inline size_t qv_cbor_head(uint8_t *out, int major, uint64_t arg) {
    uint8_t mt = (uint8_t)(major << 5);
    if (arg < 24) {
        out[0] = mt | (uint8_t)arg;
        return 1;
    }
    int w = arg <= 0xff ? 1 : arg <= 0xffff ? 2 : arg <= 0xffffffffu ? 4 : 8;
    out[0] = mt | (uint8_t)(w == 1 ? 24 : w == 2 ? 25 : w == 4 ? 26 : 27);
    for (int i = 0; i < w; i++) out[1 + i] = (uint8_t)(arg >> (8 * (w - 1 - i)));
    return 1 + (size_t)w;
}
/* One item already in canonical form (for example a stored encoding); it is
 * validated, so the output stays canonical. */
QV_EXPORT qv_status qv_encoder_encoded(qv_encoder *enc, const void *data, size_t len);

/* The encoding of the one complete top-level item written; borrowed until the
 * encoder is reset or freed. QV_EMISUSE when an item is incomplete. */
QV_EXPORT qv_status qv_encoder_finish(qv_encoder *enc, const void **data, size_t *len);
/* The XXH3-128 digest of the complete item (the value or call digest). After
 * qv_encoder_reset_for_digest it can be asked once; otherwise it can be
 * combined with qv_encoder_finish. */
QV_EXPORT qv_status qv_encoder_digest(qv_encoder *enc, qv_digest *out);

/* ----------------------------------------------------------------- decoder */

/* A pull decoder over one canonical item: each qv_decoder_next yields the
 * next item head in document order (a list or map yields its count, then its
 * items or alternating keys and values). Everything non-canonical is refused
 * as it is reached. The input is borrowed until the next reset. */
typedef struct qv_decoder qv_decoder;

QV_EXPORT qv_status qv_decoder_new(qv_decoder **out);
QV_EXPORT void qv_decoder_free(qv_decoder *dec);
QV_EXPORT void qv_decoder_reset(qv_decoder *dec, const void *data, size_t len);
/* QV_OK with *type set; QV_NOTFOUND after the last item; QV_EDECODE on bad input. */
QV_EXPORT qv_status qv_decoder_next(qv_decoder *dec, qv_type *type);
/* Accessors for the item just returned by qv_decoder_next. */
QV_EXPORT qv_status qv_decoder_get_bool(qv_decoder *dec, int *out);
QV_EXPORT qv_status qv_decoder_get_int(qv_decoder *dec, int64_t *out);      /* QV_ERANGE if it does not fit */
QV_EXPORT qv_status qv_decoder_get_cbor_int(qv_decoder *dec, int *negative, uint64_t *n);
QV_EXPORT qv_status qv_decoder_get_float(qv_decoder *dec, double *out);
/* Text, bytes, or a bignum's magnitude (with *negative); borrowed from the input. */
QV_EXPORT qv_status qv_decoder_get_data(qv_decoder *dec, const uint8_t **data, size_t *len);
QV_EXPORT qv_status qv_decoder_get_bigint(qv_decoder *dec, int *negative, const uint8_t **magnitude, size_t *len);
/* The number of items of a list or entries of a map. */
QV_EXPORT qv_status qv_decoder_get_count(qv_decoder *dec, uint64_t *count);
QV_EXPORT qv_status qv_decoder_get_tag(qv_decoder *dec, uint64_t *tag);
/* Skip the rest of the current container's item just opened (the list, map or
 * tag returned by the last next), still validating it. */
QV_EXPORT qv_status qv_decoder_skip(qv_decoder *dec);
/* Offset of the next unread byte (for error reports and slicing). */
QV_EXPORT size_t qv_decoder_offset(const qv_decoder *dec);

/* ------------------------------------------------------------------- cache */

/* A cache: an LMDB directory or a process-private memory store. A qv_cache may
 * be shared by any number of threads. Closing it while another thread is
 * inside a call on it is a host error that the language bindings prevent. */
typedef struct qv_cache qv_cache;

#define QV_DURABILITY_SAFE    0u  /* default: no corruption on OS crash; the last commits may be lost to one */
#define QV_DURABILITY_DURABLE 1u  /* fsync every commit */
#define QV_DURABILITY_FAST    2u  /* no fsync: survives process crashes, not OS crashes */

#define QV_CACHE_READONLY 0x1u    /* refuse writes; opens caches in directories we cannot write */
/* LMDB's locks do not work on network filesystems (NFS, CIFS/SMB, Lustre, GPFS,
 * CephFS...), so opening an LMDB cache there is QV_EINVAL, pointing at the
 * remote tier; this flag opens it anyway (one process, or a filesystem whose
 * locking you trust). */
#define QV_CACHE_ALLOW_NETWORK_FS 0x2u

typedef struct qv_cache_options {
    uint32_t version;      /* QV_CACHE_OPTIONS_VERSION */
    uint32_t durability;   /* QV_DURABILITY_* */
    uint32_t flags;        /* QV_CACHE_* */
    uint32_t inline_limit; /* values up to this many bytes live inside call records; 0: 512 */
    uint64_t max_bytes;    /* evict least recently used calls above this size; 0: no limit for an
                            * LMDB cache, 256 MiB for a memory cache */
    uint64_t map_size;     /* initial LMDB map size; 0: 1 TiB of address space (the file grows as used) */
    /* version 2 */
    uint32_t timeout_ms;   /* remote tier: bound on connecting and on each round trip; 0: the URL's
                            * timeout_ms, else 1000 */
    uint32_t reserved;
    const void *secret;    /* sign records and values with HMAC-SHA256 under this key and treat
                            * entries whose tag fails as misses (docs/FORMAT.md); NULL: the
                            * environment's QUIVER_SECRET, else unsigned. Copied at open. */
    size_t secret_len;
} qv_cache_options;

#define QV_CACHE_OPTIONS_VERSION 2
#define QV_CACHE_OPTIONS_INIT { QV_CACHE_OPTIONS_VERSION, QV_DURABILITY_SAFE, 0, 0, 0, 0, 0, 0, NULL, 0 }
/* Fill opts with defaults for the given version (for callers without macros). */
QV_EXPORT qv_status qv_cache_options_init(qv_cache_options *opts, uint32_t version);

/* Open (creating when missing, unless read-only) the LMDB cache in directory
 * path. Handles for one path in one process share one environment. The path
 * ":memory:" opens a new process-private memory cache with these options.
 *
 * A URL opens the remote tier on a Redis-protocol server (Redis, Valkey):
 *   redis://[user:password@]host[:port][/db][?prefix=...&timeout_ms=...]
 *   unix:///path/to/redis.sock[?db=N&prefix=...&timeout_ms=...]
 * The password may also come from QUIVER_REDIS_PASSWORD; the prefix defaults
 * to "quiver:". Any other string containing "://" is refused (QV_EINVAL): a
 * URL is never taken as a directory name. A server that does not answer is
 * QV_EIO at open. docs/FORMAT.md gives the remote layout. */
QV_EXPORT qv_status qv_cache_open(qv_cache **out, const char *path, const qv_cache_options *opts);
/* A new process-private memory cache with default options. */
QV_EXPORT qv_status qv_cache_open_memory(qv_cache **out);
/* Release the caller's handle. Contexts and futures that still use the cache
 * keep it alive until they are done with it. */
QV_EXPORT void qv_cache_close(qv_cache *cache);
/* The absolute directory of an LMDB cache, ":memory:", a remote tier's URL
 * without its password, or "stack(<local>, <remote>)"; valid while cache lives. */
QV_EXPORT const char *qv_cache_path(const qv_cache *cache);

/* 1 when the cache refuses stores: opened with QV_CACHE_READONLY, or fallen
 * back to read-only on a directory this process cannot write (with a
 * warning); a stack when both its tiers are. */
QV_EXPORT int qv_cache_readonly(const qv_cache *cache);

/* 1 when the cache signs its entries and checks their tags (a secret was
 * given, or QUIVER_SECRET is set); a stack is signed when both tiers are. */
QV_EXPORT int qv_cache_signed(const qv_cache *cache);

#define QV_STACK_ASYNC 0x1u /* write the remote tier from a bounded queue, flushed at close */

typedef struct qv_stack_options {
    uint32_t version;     /* QV_STACK_OPTIONS_VERSION */
    uint32_t flags;       /* QV_STACK_* */
    uint32_t queue_limit; /* QV_STACK_ASYNC: stores waiting for the remote tier before new ones are
                           * dropped (and counted, QV_STAT_DROPPED); 0: 1024 */
    uint32_t reserved;
} qv_stack_options;
#define QV_STACK_OPTIONS_VERSION 1
#define QV_STACK_OPTIONS_INIT { QV_STACK_OPTIONS_VERSION, 0, 0, 0 }
QV_EXPORT qv_status qv_stack_options_init(qv_stack_options *opts, uint32_t version);

/* A cache over two: reads try local, then remote, and copy remote hits into
 * local; stores go to local, then to remote (synchronously, unless
 * QV_STACK_ASYNC). When the remote tier fails, the stack goes on from local
 * alone (one warning through qv_set_warning_handler) and retries the remote
 * with backoff. Both caches are retained; close them and the stack in any
 * order. Leases of calls through the stack are taken on both tiers. */
QV_EXPORT qv_status qv_cache_stack(qv_cache **out, qv_cache *local, qv_cache *remote,
                                   const qv_stack_options *opts);

/* Something went wrong that the library worked around (a remote tier down, a
 * queue that dropped stores): called on the thread that met it, with no lock
 * of quiver's held. That may be a thread of quiver's own (a stack's worker,
 * the remote lease renewer), so a handler must be thread-safe and must not
 * need a host runtime set up on the calling thread (Python's takes the GIL).
 * NULL restores the default, one line on stderr. destroy, if any, is called
 * on userdata when the handler is replaced. */
typedef void (*qv_warning_cb)(const char *message, void *userdata);
QV_EXPORT void qv_set_warning_handler(qv_warning_cb cb, void *userdata, void (*destroy)(void *userdata));

QV_EXPORT qv_status qv_cache_contains(qv_cache *cache, const qv_digest *key);

/* Called with the stored result's encoding, borrowed for the duration of the
 * callback; its return value is returned by qv_cache_get_with. It runs after
 * the lookup has released the store (no transaction or lock is held), so it
 * may use any cache, storing included. */
typedef qv_status (*qv_result_cb)(const void *data, size_t len, void *userdata);
/* The zero-copy hit path: QV_NOTFOUND on a miss (the callback is not called).
 * A corrupt entry is a miss, with the reason in qv_errmsg(). */
QV_EXPORT qv_status qv_cache_get_with(qv_cache *cache, const qv_digest *key, qv_result_cb cb, void *userdata);
/* The result's encoding, copied; *data freed with qv_free. */
QV_EXPORT qv_status qv_cache_get(qv_cache *cache, const qv_digest *key, void **data, size_t *len);
/* The result decoded into a tree. */
QV_EXPORT qv_status qv_cache_get_value(qv_cache *cache, const qv_digest *key, qv_value **out);

/* What a stored call records besides its arguments and result. */
typedef struct qv_store_info {
    uint32_t version;       /* QV_STORE_INFO_VERSION */
    uint32_t reserved;
    int64_t start_ns;       /* wall clock at the start of the call, ns since the epoch; 0: now */
    int64_t duration_ns;    /* how long the call ran */
    const char *lang;       /* host language: "c", "python", "lua", ...; NULL: "c" */
    const void *meta;       /* canonical encoding of a map of user metadata, or NULL */
    uint64_t meta_len;
} qv_store_info;
#define QV_STORE_INFO_VERSION 1
#define QV_STORE_INFO_INIT { QV_STORE_INFO_VERSION, 0, 0, 0, NULL, NULL, 0 }
QV_EXPORT qv_status qv_store_info_init(qv_store_info *info, uint32_t version);

/* Store a call and its result. call is the canonical encoding of
 * [QV_CALL_MARKER, name, version, args, kwargs] (as digested); key is its
 * digest, or NULL to compute it (a key that is not the call's digest is
 * refused with QV_EINVAL). result is one canonical item. Concurrent stores
 * from many threads are committed together (group commit). */
QV_EXPORT qv_status qv_cache_store(qv_cache *cache, const qv_digest *key,
                                   const void *call, size_t call_len,
                                   const void *result, size_t result_len,
                                   const qv_store_info *info);
/* The same from trees: args a list, kwargs a map or NULL. */
QV_EXPORT qv_status qv_cache_store_value(qv_cache *cache, const char *name, const char *version,
                                         const qv_value *args, const qv_value *kwargs,
                                         const qv_value *result, const qv_store_info *info);

/* The whole call record as a map with the keys "name", "version", "args",
 * "kwargs", "result", "start_ns", "duration_ns", "lang", "meta", values
 * stored by digest resolved, then the call's statistics: "hits" (how many
 * hits it has had) and "last_hit_ns" (wall-clock time of the last, ns since
 * the epoch; 0: never). Every writable handle counts its hits in memory and
 * writes them in batches (with its next store, qv_cache_sync, close, or a hit
 * QUIVER_LRU_FLUSH_MS after the batch began), so a count can miss hits not
 * yet written, or lost in a race, but never adds any; a read-only handle
 * counts nothing, and a rerun or eviction starts the count over. A remote
 * tier leaves both keys out; a stack gives what its tier that answers gives.
 * docs/FORMAT.md describes each. */
QV_EXPORT qv_status qv_cache_load(qv_cache *cache, const qv_digest *key, qv_value **record);

/* Remove one call; QV_NOTFOUND when absent. Values nobody else references go too. */
QV_EXPORT qv_status qv_cache_evict(qv_cache *cache, const qv_digest *key);
/* Remove values no call references and repair reference counts. */
QV_EXPORT qv_status qv_cache_gc(qv_cache *cache, uint64_t *values_freed);
/* Check every record and value; with repair, remove the bad ones. *bad may be NULL. */
QV_EXPORT qv_status qv_cache_verify(qv_cache *cache, int repair, uint64_t *bad);

/* Progress of a long pass over a cache: done of total items of phase (static
 * text: "checking values", "checking calls", "marking calls", "sweeping
 * values"). Called on the calling thread at the start and end of each phase
 * and every 256 items between, inside the pass's transaction: it must not
 * call into the cache being maintained. */
typedef void (*qv_maintenance_progress_cb)(const char *phase, uint64_t done, uint64_t total, void *userdata);

#define QV_MAINTENANCE_REPAIR 0x1u /* verify: remove the bad entries */

typedef struct qv_maintenance_options {
    uint32_t version;                    /* QV_MAINTENANCE_OPTIONS_VERSION */
    uint32_t flags;                      /* QV_MAINTENANCE_* */
    qv_maintenance_progress_cb progress; /* NULL: none */
    void *userdata;                      /* for progress; borrowed for the call */
} qv_maintenance_options;

#define QV_MAINTENANCE_OPTIONS_VERSION 1
#define QV_MAINTENANCE_OPTIONS_INIT { QV_MAINTENANCE_OPTIONS_VERSION, 0, NULL, NULL }
QV_EXPORT qv_status qv_maintenance_options_init(qv_maintenance_options *opts, uint32_t version);
/* qv_cache_gc and qv_cache_verify with options (NULL: no repair, no progress). */
QV_EXPORT qv_status qv_cache_gc_ext(qv_cache *cache, const qv_maintenance_options *opts, uint64_t *values_freed);
QV_EXPORT qv_status qv_cache_verify_ext(qv_cache *cache, const qv_maintenance_options *opts, uint64_t *bad);
/* Write any buffered state and, for fast durability, sync to disk. */
QV_EXPORT qv_status qv_cache_sync(qv_cache *cache);
/* Write what this handle has counted and not written yet (hits and access
 * times, totals, counts by function, a limitless cache's size counter) in one
 * commit of the cache's durability, when there is any; no sync beyond it. A
 * process about to end without closing calls it (Python's pool workers do);
 * a stack flushes its local cache, a remote tier keeps no counts. */
QV_EXPORT qv_status qv_cache_flush(qv_cache *cache);
/* qv_cache_flush for every cache open in this process, as exit() does
 * (atexit); for a process about to end in _exit, or be killed. */
QV_EXPORT void qv_cache_flush_all(void);

#define QV_STAT_HITS        0  /* lookups that found a result (this handle) */
#define QV_STAT_MISSES      1  /* lookups that did not (this handle) */
#define QV_STAT_ENTRIES     2  /* stored calls */
#define QV_STAT_VALUES      3  /* values stored by digest */
#define QV_STAT_BYTES       4  /* bytes of records and values */
#define QV_STAT_MAX_BYTES   5  /* the size limit, 0 when none */
#define QV_STAT_STORES      6  /* calls stored (this handle) */
#define QV_STAT_COMMITS     7  /* write transactions committed (this handle) */
#define QV_STAT_EVICTIONS   8  /* calls evicted for size (this handle) */
#define QV_STAT_CORRUPT     9  /* corrupt entries met and treated as misses (this handle) */
#define QV_STAT_MAP_SIZE   10  /* bytes of address space the store may use */
#define QV_STAT_REMOTE_HITS 11 /* a stack's hits served by its remote tier (this handle) */
#define QV_STAT_REMOTE_ERRORS 12 /* remote round trips that failed or timed out (this handle) */
#define QV_STAT_DROPPED    13  /* asynchronous remote stores dropped (this handle) */
#define QV_STAT_FORGED     14  /* entries whose signature failed, treated as misses (this handle) */
/* The cache's totals over every handle and process that wrote to it, kept
 * in the cache (an LMDB or memory cache; a remote tier keeps none: 0). Each
 * writable handle adds its counts in the write transactions it makes anyway
 * (stores, and the batched touches of hits: see qv_cache_load), never one per
 * hit; a read-only handle adds nothing. This handle's counts not yet written
 * are included. qv_cache_reset_totals sets them to 0. */
#define QV_STAT_TOTAL_HITS      15
#define QV_STAT_TOTAL_MISSES    16
#define QV_STAT_TOTAL_STORES    17
#define QV_STAT_TOTAL_EVICTIONS 18
#define QV_STAT_TOTAL_CORRUPT   19
#define QV_STAT_COUNT      20
QV_EXPORT qv_status qv_cache_stat(qv_cache *cache, int which, uint64_t *out);
/* Set the QV_STAT_TOTAL_* counters and every function's (qv_cache_function_stats)
 * to 0 (quiver stats --zero); a handle's
 * counts from before are not added later. QV_EINVAL on a remote tier or stack. */
QV_EXPORT qv_status qv_cache_reset_totals(qv_cache *cache);
/* The name of a QV_STAT_* ("hits"), or NULL when out of range. */
QV_EXPORT const char *qv_stat_name(int which);

/* A function's counts over every handle and process that wrote to the cache,
 * kept in the cache like the totals (and reset with them). Fields are only
 * ever appended: the library fills them, the caller reads them. */
typedef struct qv_function_stats {
    uint64_t hits;      /* lookups that found one of its calls (as qv_cache_load's per-call hits) */
    uint64_t misses;    /* memoized calls that found no result */
    uint64_t stores;    /* calls stored */
    uint64_t evictions; /* calls evicted for size */
    uint64_t corrupt;   /* corrupt or forged entries met, each a miss */
    uint64_t saved_ns;  /* over its hits, the run time of the call each one answered */
} qv_function_stats;
/* name (UTF-8, not terminated) and stats are borrowed for the callback;
 * nonzero stops the walk. */
typedef int (*qv_function_stats_cb)(const char *name, size_t name_len, const qv_function_stats *stats, void *userdata);
/* Call cb for each function with counts, in no particular order, after the
 * read has ended (cb may use the cache). Misses are counted by memoized calls
 * (qv_call_run and every binding's memos): a plain qv_cache_get that misses
 * counts only in the totals, knowing no function. A handle's counts reach the
 * cache in batches, with its stores and its hits' touches (qv_cache_sync
 * writes them at once). A stack reports its local tier's; a remote tier keeps
 * none (cb is never called). */
QV_EXPORT qv_status qv_cache_function_stats(qv_cache *cache, qv_function_stats_cb cb, void *userdata);

/* ----------------------------------------------------------------- context */

/* Each thread has a stack of contexts: an active cache and a metadata map
 * recorded with every call it stores. With nothing pushed, what the
 * binding's provider says (qv_ctx_set_provider), else the default cache
 * (qv_cache_default): one persistent cache shared by every process. */
typedef struct qv_ctx qv_ctx;

/* Push cache (NULL: keep the current one) with meta merged over the current
 * metadata (inner keys win; meta a map or NULL). Every push needs a pop on the
 * same thread. The context holds a reference to the cache. */
QV_EXPORT qv_status qv_ctx_push(qv_cache *cache, const qv_value *meta);
/* QV_EMISUSE (with a message) when this thread has nothing pushed. */
QV_EXPORT qv_status qv_ctx_pop(void);
/* The active cache and the encoding of its metadata map (NULL, 0 when none),
 * borrowed until this thread pops the context. */
QV_EXPORT qv_status qv_ctx_current(qv_cache **cache, const void **meta, size_t *meta_len);
/* Contexts pushed on this thread and not yet popped. */
QV_EXPORT int qv_ctx_depth(void);
/* A reference-counted snapshot of the active context that any thread may
 * enter: how a worker sees its submitter's cache and metadata. */
QV_EXPORT qv_status qv_ctx_capture(qv_ctx **out);
QV_EXPORT qv_ctx *qv_ctx_retain(qv_ctx *ctx);
/* Drop one reference. */
QV_EXPORT void qv_ctx_free(qv_ctx *ctx);
/* Push a captured context on this thread; leave it with qv_ctx_pop. */
QV_EXPORT qv_status qv_ctx_enter(qv_ctx *ctx);
/* Run fn under ctx, then restore what the thread had; returns fn's status. */
QV_EXPORT qv_status qv_ctx_run(qv_ctx *ctx, qv_status (*fn)(void *userdata), void *userdata);
/* A context from parts: cache (the context holds a reference) and meta, the
 * canonical encoding of a map or NULL (copied). How a binding hands its own
 * notion of the active context to C. */
QV_EXPORT qv_status qv_ctx_new(qv_ctx **out, qv_cache *cache, const void *meta, size_t meta_len);
/* A binding's own active context (Python's contextvars, a Lua coroutine's):
 * returns a new reference (qv_ctx_new), or NULL for none. Runs on the
 * thread that asks, which may hold no host lock (a C function pointer called
 * through ctypes): a provider takes what it needs (Python: the GIL). */
typedef qv_ctx *(*qv_ctx_provider)(void *userdata);
/* Memoized calls from C (qv_fn_call, qv_fn_pointer's functions) on a thread
 * with nothing pushed, and qv_ctx_capture there, ask the provider before
 * falling back to the default cache: so a C function pointer called from
 * Python inside `with quiver.cache(c)` memoizes into c. One provider per
 * process: set it once, before other threads make calls; a new one (or
 * NULL) replaces it, and destroy(userdata) runs for the old. */
QV_EXPORT qv_status qv_ctx_set_provider(qv_ctx_provider provider, void *userdata, void (*destroy)(void *userdata));
/* The default cache, opened on first use; borrowed, lives until exit. It is
 * the directory QUIVER_CACHE names when set and not empty (":memory:": a
 * process-private memory cache; a URL is refused, not yet supported), else
 * $XDG_CACHE_HOME/quiver, else $HOME/.cache/quiver (neither set: QV_EINVAL).
 * Missing directories are created private (0700). Its max_bytes is
 * QUIVER_MAX_SIZE (bytes, or K, M, G, T binary multiples; 0: no limit),
 * 5 GiB when unset, with LRU eviction. The environment is read once, at the
 * first use; a failure is returned, with its message, to every caller. */
QV_EXPORT qv_status qv_cache_default(qv_cache **out);

/* -------------------------------------------------------------- functions */

/* A memoized function: a name, a version, and a body. Calls are memoized into
 * the calling thread's active cache. Shared by any number of threads. */
typedef struct qv_fn qv_fn;

/* A host body: set *result (the caller of the body takes it) from args (a
 * list) and kwargs (a map, empty when the caller gave none). Return QV_OK, or
 * an error status, best with a message from qv_error_set (the call is then not
 * stored, and the status and message reach the caller). */
typedef qv_status (*qv_fn_callback)(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata);

/* destroy(userdata) runs exactly once: when the fn is freed, or at once if
 * this fails. */
QV_EXPORT qv_status qv_fn_new(qv_fn **out, const char *name, const char *version, qv_fn_callback body,
                              void *userdata, void (*destroy)(void *userdata));
QV_EXPORT qv_fn *qv_fn_retain(qv_fn *fn);
/* Drop one reference. */
QV_EXPORT void qv_fn_free(qv_fn *fn);
QV_EXPORT const char *qv_fn_name(const qv_fn *fn);
QV_EXPORT const char *qv_fn_version(const qv_fn *fn); /* NULL when none */
/* Look the call up in the active cache; on a miss run the body and store. */
QV_EXPORT qv_status qv_fn_call(qv_fn *fn, const qv_value *args, qv_value **result);
QV_EXPORT qv_status qv_fn_call_kw(qv_fn *fn, const qv_value *args, const qv_value *kwargs, qv_value **result);
/* The call digest of fn with these arguments (kwargs may be NULL). */
QV_EXPORT qv_status qv_fn_digest(qv_digest *out, const qv_fn *fn, const qv_value *args, const qv_value *kwargs);

/* A C function described by a signature "RET(ARG,...)" over the types
 *   i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 bool   (bool is C's _Bool)
 *   str    a NUL-terminated UTF-8 const char *
 *   bytes  two C parameters: const void *data, uint64_t len
 *   value  a const qv_value *
 *   void   as the return type only
 * for example "f64(f64,i64)" or "bytes(str,bytes)". Calls are digested as
 * [name, version, [args...], {}] with integers as CBOR integers, floats as
 * floats, bool, str as text, bytes as bytes, value as itself: a C program
 * and a Python one calling the same name with the same values share entries.
 *
 * Results: a function returning str or bytes keeps ownership of what it
 * returns (quiver copies it); a function returning bytes takes one more,
 * last, parameter uint64_t *len for the length; a function returning value
 * hands the qv_value to quiver, which frees it. A bad signature is refused
 * with the position and what was expected. */
QV_EXPORT qv_status qv_fn_new_c(qv_fn **out, const char *name, const char *version, void (*fn)(void),
                                const char *signature);
/* A function pointer with exactly fn's C signature that memoizes every call
 * into the calling thread's active cache (the default cache when none), so a
 * C, Rust or Go program swaps it in and changes nothing else. If memoizing
 * fails (an argument that is not valid UTF-8, a full disk) the original runs
 * uncached. It lives as long as fn. What it returns:
 *   str, bytes: memory owned by quiver, valid on the calling thread until
 *               its next call through any quiver function pointer;
 *   value:      a new qv_value the caller frees with qv_value_free.
 * NULL when fn was not made by qv_fn_new_c. */
QV_EXPORT void *qv_fn_pointer(qv_fn *fn);
/* The signature fn was made with, or NULL for a host callback. */
QV_EXPORT const char *qv_fn_signature(const qv_fn *fn);

#define QV_FN_STAT_HITS     0  /* calls answered from the cache */
#define QV_FN_STAT_MISSES   1  /* calls that ran the body */
#define QV_FN_STAT_SAVED_NS 2  /* run time of the stored calls that hits avoided */
#define QV_FN_STAT_COUNT    3
QV_EXPORT qv_status qv_fn_stat(const qv_fn *fn, int which, uint64_t *out);

/* ---------------------------------------------------------- the call runtime */

/* Every memoized call in every language goes through qv_call_run, which holds
 * the one policy of DESIGN section 12: a hit returns the stored result; on a
 * miss the caller takes the call's lease (others missing the same call, in
 * any thread or process on the cache, wait for it and then read its result),
 * runs the function, stores the result and releases; a function that fails
 * stores nothing and lets the waiters run it themselves; a result that cannot
 * be kept (read-only cache, full disk, unencodable) is still returned. A
 * binding only turns its values into the call's encoding and runs its own
 * function in body; no lock or transaction is held while hit or body run. */

/* Run the function and set *result to the canonical encoding of its result,
 * borrowed until qv_call_run returns. Return QV_OK; QV_EENCODE when the
 * function returned a result that has no encoding (it is returned, not
 * stored); or the function's failure, best with a message (qv_error_set). */
typedef qv_status (*qv_call_body)(const void **result, size_t *len, void *userdata);

#define QV_CALL_NO_DEDUP 0x1u /* run on a miss even while another caller runs the same call */
#define QV_CALL_MISSED   0x2u /* the caller has just looked the call up and missed */
#define QV_CALL_RERUN    0x4u /* run and store even when stored */

typedef struct qv_call_options {
    uint32_t version;         /* QV_CALL_OPTIONS_VERSION */
    uint32_t flags;           /* QV_CALL_* */
    int64_t wait_timeout_ns;  /* the longest wait for another caller's run, then it runs here
                               * too; 0: 10 minutes; < 0: never wait */
    const char *lang;         /* recorded with the call; NULL: "c" */
    const void *meta;         /* canonical encoding of a map of metadata recorded with the call, or NULL */
    uint64_t meta_len;
} qv_call_options;
#define QV_CALL_OPTIONS_VERSION 1
#define QV_CALL_OPTIONS_INIT { QV_CALL_OPTIONS_VERSION, 0, 0, NULL, NULL, 0 }
QV_EXPORT qv_status qv_call_options_init(qv_call_options *opts, uint32_t version);

/* What qv_call_run did (*outcome): */
#define QV_CALL_HIT    0 /* hit was called with the stored result; the function did not run */
#define QV_CALL_STORED 1 /* the function ran here and its result is stored */
/* ...or the negative status of the store that failed (QV_EREADONLY, QV_EFULL,
 * QV_EENCODE, ...): the function ran and its result is the call's result,
 * not kept; qv_errmsg() says why, for the binding's warning. */

/* call is the call's canonical encoding (as qv_cache_store takes it) and key
 * its digest. hit receives a stored result; it may return QV_NOTFOUND to
 * have an entry it cannot use (say, a value its host cannot decode) treated
 * as a miss. Returns QV_OK, the status of a failed lookup, or body's failure
 * (nothing stored). opts NULL: defaults. */
QV_EXPORT qv_status qv_call_run(int *outcome, qv_cache *cache, const qv_digest *key, const void *call,
                                size_t call_len, const qv_call_options *opts, qv_result_cb hit, qv_call_body body,
                                void *userdata);

/* ----------------------------------------------------------------- futures */

/* A result that may not exist yet: pending, then done (a value), failed (a
 * status and message) or cancelled, exactly once. Reference-counted; any
 * thread may hold, wait on or complete one. */
typedef struct qv_future qv_future;

#define QV_FUTURE_PENDING   0
#define QV_FUTURE_DONE      1
#define QV_FUTURE_FAILED    2
#define QV_FUTURE_CANCELLED 3

/* Runs exactly once: in the thread that completes the future, or at once in
 * the registering thread when it is already complete. */
typedef void (*qv_future_cb)(qv_future *future, void *userdata);

QV_EXPORT qv_status qv_future_new(qv_future **out);
QV_EXPORT qv_future *qv_future_retain(qv_future *f);
/* Drop one reference; the future lives while anyone holds one. */
QV_EXPORT void qv_future_free(qv_future *f);
/* Complete with one canonical item (copied). QV_EMISUSE if already complete. */
QV_EXPORT qv_status qv_future_set_result(qv_future *f, const void *data, size_t len);
QV_EXPORT qv_status qv_future_set_value(qv_future *f, const qv_value *v);
/* Fail with a status (negative) and a message (copied; may be NULL). */
QV_EXPORT qv_status qv_future_set_error(qv_future *f, qv_status status, const char *message);
/* Cancel a pending future: QV_OK, or QV_EMISUSE when it had completed. */
QV_EXPORT qv_status qv_future_cancel(qv_future *f);
QV_EXPORT int qv_future_state(const qv_future *f);
/* Wait until complete: QV_OK, or QV_ETIMEOUT. timeout_ns < 0 waits forever.
 * In a child of fork(), a future whose task was submitted before the fork
 * never completes: waiting on it (or qv_future_on_done) fails at once with
 * QV_EMISUSE. */
QV_EXPORT qv_status qv_future_wait(qv_future *f, int64_t timeout_ns);
/* The result's encoding, borrowed while f lives; a failed future returns its
 * status (message in qv_errmsg()), a cancelled one QV_ECANCELLED, a pending
 * one QV_EMISUSE. */
QV_EXPORT qv_status qv_future_result(qv_future *f, const void **data, size_t *len);
QV_EXPORT qv_status qv_future_value(qv_future *f, qv_value **out);
/* destroy(userdata), when given, runs exactly once after cb, or at once when
 * registration fails. */
QV_EXPORT qv_status qv_future_on_done(qv_future *f, qv_future_cb cb, void *userdata, void (*destroy)(void *userdata));
/* The future pass-through: when f completes with a value, store it as the
 * result of the call (its canonical encoding, as for qv_cache_store); a failed
 * or cancelled future stores nothing. */
QV_EXPORT qv_status qv_future_store(qv_future *f, qv_cache *cache, const void *call, size_t call_len,
                                    const qv_store_info *info);

/* --------------------------------------------------------------- executors */

/* An executor runs jobs somewhere else: a host scheduler (Rust, Go, Lua, ...)
 * plugs in with one submit callback; quiver's own pool is one too. Shared by
 * any number of threads. */
typedef struct qv_executor qv_executor;

/* A job, called exactly once on any thread: to run it, or with cancelled set
 * when its executor drops it (the job then only cleans up). */
typedef void (*qv_job_fn)(void *job, int cancelled);
/* Schedule run(job). Return QV_OK once it will be called; on an error it must
 * not be. */
typedef qv_status (*qv_submit_fn)(qv_job_fn run, void *job, void *userdata);
/* A task completes its future (set_result/set_error); if it returns an error
 * without doing so, the future fails with that status. */
typedef qv_status (*qv_task_fn)(qv_future *future, void *userdata);

QV_EXPORT qv_status qv_executor_new(qv_executor **out, qv_submit_fn submit, void *userdata,
                                    void (*destroy)(void *userdata));
QV_EXPORT qv_executor *qv_executor_retain(qv_executor *ex);
QV_EXPORT void qv_executor_free(qv_executor *ex);
/* Schedule run(job) with no future: the cheapest way to use an executor. On an
 * error run is never called. */
QV_EXPORT qv_status qv_executor_post(qv_executor *ex, qv_job_fn run, void *job);
/* Run a task; *out completes with it. destroy(userdata) runs exactly once,
 * after the task or at once if submission fails. */
QV_EXPORT qv_status qv_executor_submit(qv_future **out, qv_executor *ex, qv_task_fn task, void *userdata,
                                       void (*destroy)(void *userdata));
/* Run a memoized call; with a plain executor the call runs (memoized) on a
 * worker under the submitter's context. */
QV_EXPORT qv_status qv_executor_submit_call(qv_future **out, qv_executor *ex, qv_fn *fn, const qv_value *args,
                                            const qv_value *kwargs);
/* An executor that answers cache hits itself with completed futures (the
 * wrapped executor never sees them) and sends misses on with the submitter's
 * captured context, storing results as they complete. Wrapping a wrapped
 * executor returns it (with a new reference). */
QV_EXPORT qv_status qv_executor_wrap(qv_executor **out, qv_executor *ex);

/* -------------------------------------------------------------------- pool */

/* quiver's thread pool. Shared by any number of threads. Usable in a child
 * of fork(), which starts workers of its own; jobs queued or running at the
 * fork stay the parent's and are never called in the child. */
typedef struct qv_pool qv_pool;

typedef struct qv_pool_options {
    uint32_t version;          /* QV_POOL_OPTIONS_VERSION */
    uint32_t workers;          /* 0: the number of CPUs */
    uint32_t idle_timeout_ms;  /* idle workers retire after this; 0: 30 s */
    uint32_t queue_bound;      /* submissions wait while this many are queued; 0: no bound */
    void (*initializer)(void *userdata); /* run once in each new worker, or NULL */
    void *userdata;
    void (*destroy)(void *userdata);     /* runs exactly once, when the pool is freed */
} qv_pool_options;
#define QV_POOL_OPTIONS_VERSION 1
#define QV_POOL_OPTIONS_INIT { QV_POOL_OPTIONS_VERSION, 0, 0, 0, NULL, NULL, NULL }
QV_EXPORT qv_status qv_pool_options_init(qv_pool_options *opts, uint32_t version);

QV_EXPORT qv_status qv_pool_new(qv_pool **out, const qv_pool_options *opts);
/* The process-wide reusable pool (loky's get_reusable_executor): the same pool
 * on every call; another worker count resizes it; restart replaces its
 * workers. Holds a reference for the caller (qv_pool_free). */
QV_EXPORT qv_status qv_pool_shared(qv_pool **out, uint32_t workers, int restart);
QV_EXPORT qv_pool *qv_pool_retain(qv_pool *pool);
QV_EXPORT qv_status qv_pool_resize(qv_pool *pool, uint32_t workers);
/* The pool as an executor; borrowed while the pool lives. */
QV_EXPORT qv_executor *qv_pool_executor(qv_pool *pool);
#define QV_POOL_STAT_WORKERS   0 /* threads alive now */
#define QV_POOL_STAT_TARGET    1 /* the worker count asked for */
#define QV_POOL_STAT_QUEUED    2
#define QV_POOL_STAT_COMPLETED 3
#define QV_POOL_STAT_STARTED   4 /* worker threads started, ever */
QV_EXPORT qv_status qv_pool_stat(qv_pool *pool, int which, uint64_t *out);
/* Stop accepting work; run (cancel_pending == 0) or cancel what is queued,
 * and wait for the workers to finish. Idempotent. */
QV_EXPORT qv_status qv_pool_shutdown(qv_pool *pool, int cancel_pending);
/* Drop one reference; the last one shuts down, waiting for queued work. */
QV_EXPORT void qv_pool_free(qv_pool *pool);

/* ------------------------------------------------------------------- batch */

/* Keyed tasks run together; every key gets its result or its error, and one
 * failure never stops the others (vayu's ParallelRunner). One thread at a time. */
typedef struct qv_batch qv_batch;
/* Called from the running thread at most once per interval_s (intervals
 * under 1 ms count as 1 ms) and once at the end; an interval that is not
 * positive, not a number, or 1e9 s and longer means only the call at the end. */
typedef void (*qv_progress_fn)(uint64_t done, uint64_t failed, uint64_t total, double elapsed_s, void *userdata);

QV_EXPORT qv_status qv_batch_new(qv_batch **out);
QV_EXPORT void qv_batch_free(qv_batch *batch);
/* Add fn(args, kwargs) under key; QV_EINVAL for a duplicate key, QV_EMISUSE after run. */
QV_EXPORT qv_status qv_batch_add(qv_batch *batch, const char *key, qv_fn *fn, const qv_value *args,
                                 const qv_value *kwargs);
/* Run every task on ex (NULL: in this thread) and wait for all. progress may be NULL. */
QV_EXPORT qv_status qv_batch_run(qv_batch *batch, qv_executor *ex, qv_progress_fn progress, double interval_s,
                                 void *userdata);
/* The outcome for key: QV_OK with *result (caller frees), or the task's status
 * with its message in qv_errmsg(); QV_NOTFOUND for an unknown key. */
QV_EXPORT qv_status qv_batch_result(qv_batch *batch, const char *key, qv_value **result);
QV_EXPORT size_t qv_batch_count(const qv_batch *batch);

/* --------------------------------------------------------------- iterators */

/* Query results: the digests of stored calls, a snapshot taken when the query
 * ran. Owned by one thread at a time. */
typedef struct qv_iter qv_iter;
/* Every call stored under name (an index lookup), or every call when name is NULL. */
QV_EXPORT qv_status qv_cache_query(qv_iter **out, qv_cache *cache, const char *name);
/* QV_OK with *key set, QV_NOTFOUND at the end. */
QV_EXPORT qv_status qv_iter_next(qv_iter *iter, qv_digest *key);
QV_EXPORT size_t qv_iter_count(const qv_iter *iter);
QV_EXPORT void qv_iter_free(qv_iter *iter);

/* ------------------------------------------------ shared counters and dicts */

/* Named counters and dicts beside a cache, which every process and language
 * that opens the cache sees (SafeCounter and SafeDict in Python,
 * quiver.counter and quiver.dict in Lua). A name picks one counter or one
 * dict (a counter and a dict may share a name); keys are bytes (the Python
 * and Lua layers use the canonical encoding of the key). Each change is one
 * write transaction: increments from any number of threads and processes are
 * atomic, none lost. An LMDB cache keeps them in an LMDB environment of its
 * own, the directory "shared" inside the cache's, made at the first change;
 * its commits never wait for the disk, whatever the cache's durability: a
 * change survives its process at once, a crash of the machine perhaps not.
 * A memory cache keeps them in this process; a remote tier or a stack
 * refuses them (QV_EINVAL: open the local cache by path). A read-only cache
 * reads them and refuses changes (QV_EREADONLY). They are not calls:
 * eviction, gc, max_bytes and statistics leave them alone; they stay until
 * cleared. Names have 1 to 255 bytes; name and key together at most
 * QV_SHARED_KEY_MAX bytes (QV_EINVAL). docs/FORMAT.md (2.7) has the bytes. */
#define QV_SHARED_KEY_MAX 509

/* Add delta to the counter's key (absent: 0) and give the sum in *out (may
 * be NULL); QV_ERANGE, with nothing written, when the sum leaves int64_t. */
QV_EXPORT qv_status qv_counter_add(int64_t *out, qv_cache *cache, const char *name, const void *key, size_t key_len,
                                   int64_t delta);
/* The counter's key; 0 when it was never added to. */
QV_EXPORT qv_status qv_counter_get(int64_t *out, qv_cache *cache, const char *name, const void *key, size_t key_len);
/* Remove every key of the counter; *removed (may be NULL) says how many. */
QV_EXPORT qv_status qv_counter_clear(uint64_t *removed, qv_cache *cache, const char *name);
/* Every key of the counter with its count, in key order: a list of
 * [key (bytes), count (int)] pairs, a snapshot; caller frees. */
QV_EXPORT qv_status qv_counter_items(qv_value **out, qv_cache *cache, const char *name);

/* Set the dict's key to value, one canonical item (QV_EDECODE otherwise). */
QV_EXPORT qv_status qv_dict_set(qv_cache *cache, const char *name, const void *key, size_t key_len,
                                const void *value, size_t value_len);
/* The value under key, copied (*data freed with qv_free); QV_NOTFOUND when
 * absent. The entry is not signed, even in a cache with a secret: decode it
 * as untrusted. */
QV_EXPORT qv_status qv_dict_get(void **data, size_t *len, qv_cache *cache, const char *name, const void *key,
                                size_t key_len);
/* Remove key; QV_NOTFOUND when absent. */
QV_EXPORT qv_status qv_dict_del(qv_cache *cache, const char *name, const void *key, size_t key_len);
/* Remove every key of the dict; *removed (may be NULL) says how many. */
QV_EXPORT qv_status qv_dict_clear(uint64_t *removed, qv_cache *cache, const char *name);
/* Every key of the dict with its value, in key order: a list of [key
 * (bytes), value (bytes: the value's encoding)] pairs, a snapshot; caller
 * frees. */
QV_EXPORT qv_status qv_dict_items(qv_value **out, qv_cache *cache, const char *name);

#ifdef __cplusplus
}
#endif
#endif /* QUIVER_H */
