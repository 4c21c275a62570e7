/* XXH3-128 digests. xxHash is compiled in privately (XXH_INLINE_ALL keeps its
 * symbols out of our ABI); Debian's libxxhash supplies only the vectorised
 * dispatch entry points, used for large inputs where they run 3-4x faster. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "internal.h"

/* From libxxhash's xxh_x86dispatch.h, declared here because that header
 * cannot be combined with XXH_INLINE_ALL. The state layout is the one of the
 * inlined header, which is the same release. */
extern XXH128_hash_t XXH3_128bits_dispatch(const void *input, size_t len);
extern XXH_errorcode XXH3_128bits_update_dispatch(XXH3_state_t *state, const void *input, size_t len);

/* Below this, the one-shot inline path is faster; above, AVX2 wins. */
#define DISPATCH_THRESHOLD (16u * 1024u)

static void to_digest(XXH128_hash_t h, qv_digest *out) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out->bytes, c.digest, 16);
}

void qv_digest_bytes(qv_digest *out, const void *data, size_t len) {
    if (len >= DISPATCH_THRESHOLD)
        to_digest(XXH3_128bits_dispatch(data, len), out);
    else
        to_digest(XXH3_128bits(data, len), out);
}

uint64_t qv__hash64(const void *data, size_t len) {
    return XXH3_64bits(data, len);
}

struct qv_hasher {
    XXH3_state_t state;
};

qv_hasher *qv__hasher_new(void) {
    qv_hasher *h = aligned_alloc(64, (sizeof(qv_hasher) + 63) & ~(size_t)63);
    if (h) qv__hasher_reset(h);
    return h;
}

void qv__hasher_free(qv_hasher *h) {
    free(h);
}

void qv__hasher_reset(qv_hasher *h) {
    XXH3_128bits_reset(&h->state);
}

void qv__hasher_update(qv_hasher *h, const void *data, size_t len) {
    if (len >= DISPATCH_THRESHOLD)
        XXH3_128bits_update_dispatch(&h->state, data, len);
    else
        XXH3_128bits_update(&h->state, data, len);
}

void qv__hasher_digest(qv_hasher *h, qv_digest *out) {
    to_digest(XXH3_128bits_digest(&h->state), out);
}

/* Chunks large enough that XXH3 runs at its vectorised speed and a syscall
 * costs nothing beside it, small enough to stay in L2 between the copy out
 * of the page cache and the hash. read(), not mmap: a file truncated while
 * it is hashed would kill the process with SIGBUS through a mapping. */
#define FILE_CHUNK (256u * 1024u)

qv_status qv_digest_file(qv_digest *out, const char *path) {
    if (!out || !path) return qv__error(QV_EINVAL, "qv_digest_file: out and path are required");
    /* O_NONBLOCK: opening a FIFO would wait for a writer; it is refused below */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return qv__error(errno == ENOENT ? QV_NOTFOUND : QV_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb)) {
        qv_status st = qv__error(QV_EIO, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) { /* a device or a FIFO may never end */
        close(fd);
        return qv__error(QV_EINVAL, "%s is %s, not a regular file", path,
                         S_ISDIR(sb.st_mode) ? "a directory" : "a device, FIFO or socket");
    }
    qv_hasher *h = qv__hasher_new();
    uint8_t *buf = aligned_alloc(64, FILE_CHUNK);
    qv_status st = h && buf ? QV_OK : qv__nomem();
    while (!st) {
        ssize_t n = read(fd, buf, FILE_CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) st = qv__error(QV_EIO, "cannot read %s: %s", path, strerror(errno));
        if (n <= 0) break;
        qv__hasher_update(h, buf, (size_t)n);
    }
    if (!st) qv__hasher_digest(h, out);
    free(buf);
    qv__hasher_free(h);
    close(fd);
    return st;
}

void qv_digest_hex(const qv_digest *d, char out[33]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[d->bytes[i] >> 4];
        out[2 * i + 1] = hex[d->bytes[i] & 15];
    }
    out[32] = '\0';
}

static int nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

qv_status qv_digest_parse(qv_digest *out, const char *hex, size_t len) {
    if (!out || !hex) return qv__error(QV_EINVAL, "qv_digest_parse: NULL argument");
    if (len != 32) return qv__error(QV_EINVAL, "digest must be 32 hex characters, got %zu", len);
    for (int i = 0; i < 16; i++) {
        int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return qv__error(QV_EINVAL, "digest has a non-hex character at position %d", hi < 0 ? 2 * i : 2 * i + 1);
        out->bytes[i] = (uint8_t)(hi << 4 | lo);
    }
    return QV_OK;
}

/* Encoders per thread, so encoding a call or a record allocates nothing:
 * one for calls and results, one the cache keeps for the records it builds
 * from them (so callers may hand it bytes from the first). */
static pthread_key_t encoder_keys[QV_THREAD_ENCODERS];
static pthread_once_t encoder_once = PTHREAD_ONCE_INIT;

static void free_thread_encoder(void *enc) {
    qv_encoder_free(enc);
}

static void make_encoder_keys(void) {
    for (int i = 0; i < QV_THREAD_ENCODERS; i++) pthread_key_create(&encoder_keys[i], free_thread_encoder);
}

qv_encoder *qv__thread_encoder_for(int which) {
    pthread_once(&encoder_once, make_encoder_keys);
    qv_encoder *enc = pthread_getspecific(encoder_keys[which]);
    if (!enc && qv_encoder_new(&enc) == QV_OK) pthread_setspecific(encoder_keys[which], enc);
    return enc;
}

qv_encoder *qv__thread_encoder(void) {
    return qv__thread_encoder_for(QV_ENCODER_CALLS);
}

qv_status qv_value_digest(const qv_value *v, qv_digest *out) {
    if (!v || !out) return qv__error(QV_EINVAL, "qv_value_digest: NULL argument");
    qv_encoder *enc = qv__thread_encoder();
    if (!enc) return qv__nomem();
    qv_encoder_reset_for_digest(enc);
    qv_status st = qv_encoder_value(enc, v);
    if (!st) st = qv_encoder_digest(enc, out);
    return st;
}

qv_status qv_encoder_call_head(qv_encoder *enc, const char *name, size_t name_len, const char *version,
                               size_t version_len) {
    static const char marker[] = QV_CALL_MARKER;
    if (!enc || !name) return qv__error(QV_EINVAL, "qv_encoder_call_head: enc and name are required");
    qv_status st;
    if ((st = qv_encoder_list(enc, 5))) return st;
    if ((st = qv_encoder_text_trusted(enc, marker, sizeof marker - 1))) return st;
    if ((st = qv_encoder_text(enc, name, name_len))) return st;
    return version ? qv_encoder_text(enc, version, version_len) : qv_encoder_null(enc);
}

qv_status qv_call_digest(qv_digest *out, const char *name, const char *version, const qv_value *args,
                         const qv_value *kwargs) {
    if (!out || !name || !args) return qv__error(QV_EINVAL, "qv_call_digest: out, name and args are required");
    if (qv_value_type(args) != QV_TYPE_LIST) return qv__error(QV_ETYPE, "qv_call_digest: args must be a list");
    if (kwargs && qv_value_type(kwargs) != QV_TYPE_MAP) return qv__error(QV_ETYPE, "qv_call_digest: kwargs must be a map");
    qv_encoder *enc = qv__thread_encoder();
    if (!enc) return qv__nomem();
    qv_encoder_reset_for_digest(enc);
    qv_status st = qv_encoder_call_head(enc, name, strlen(name), version, version ? strlen(version) : 0);
    if (!st) st = qv_encoder_value(enc, args);
    if (!st) st = kwargs ? qv_encoder_value(enc, kwargs) : qv_encoder_map_begin(enc);
    if (!st && !kwargs) st = qv_encoder_map_end(enc);
    if (!st) st = qv_encoder_digest(enc, out);
    return st;
}
