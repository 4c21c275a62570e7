/* HMAC-SHA256 tags of call records and values (sign.h, docs/FORMAT.md).
 *
 * The hit path pays one tag check, so the keyed state is computed once: the
 * SHA-256 states after the inner and outer padded keys, copied by value for
 * every tag. OpenSSL 3 deprecates the SHA256_* functions in favour of EVP,
 * but EVP_MAC_CTX_dup costs about 4 times as much on a small record (an
 * allocation and provider dispatch per call; docs/DECISIONS.md has the
 * numbers), so this file uses them knowingly. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "sign.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#include "stack.h"

#define BLOCK 64
static const char DOMAIN[] = "quiver/sign/v1";

struct qv_signer {
    SHA256_CTX inner, outer; /* after the key xor ipad, and xor opad */
};

qv_status qv__signer_new(qv_signer **out, const void *secret, size_t len) {
    if (!out) return qv__error(QV_EINVAL, "qv__signer_new: out is NULL");
    *out = NULL;
    if (!secret || !len) return qv__error(QV_EINVAL, "the secret is empty");
    qv_signer *s = malloc(sizeof *s);
    if (!s) return qv__nomem();
    uint8_t key[BLOCK] = {0}, pad[BLOCK];
    if (len > BLOCK) SHA256(secret, len, key); /* RFC 2104: long keys are hashed first */
    else memcpy(key, secret, len);
    for (int i = 0; i < BLOCK; i++) pad[i] = key[i] ^ 0x36;
    SHA256_Init(&s->inner);
    SHA256_Update(&s->inner, pad, BLOCK);
    for (int i = 0; i < BLOCK; i++) pad[i] = key[i] ^ 0x5c;
    SHA256_Init(&s->outer);
    SHA256_Update(&s->outer, pad, BLOCK);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(pad, sizeof pad);
    *out = s;
    return QV_OK;
}

void qv__signer_free(qv_signer *signer) {
    if (!signer) return;
    OPENSSL_cleanse(signer, sizeof *signer);
    free(signer);
}

qv_status qv__signer_from_options(qv_signer **out, const qv_cache_options *opts) {
    *out = NULL;
    if (opts && opts->version >= 2 && opts->secret) return qv__signer_new(out, opts->secret, opts->secret_len);
    const char *env = getenv("QUIVER_SECRET");
    if (env && *env) return qv__signer_new(out, env, strlen(env));
    return QV_OK;
}

static void tag_of(const qv_signer *s, const char *table, const void *key, size_t klen, const void *payload,
                   size_t plen, uint8_t tag[QV_SIGN_TAG_LEN]) {
    /* the fields before the payload in one buffer: one update, not seven,
     * for the usual 16-byte key */
    uint8_t head[8 + sizeof DOMAIN - 1 + 8 + 16 + 8 + 16 + 8], *p = head;
    size_t tlen = strlen(table);
    SHA256_CTX h = s->inner;
    qv__put_be64(p, sizeof DOMAIN - 1);
    memcpy(p + 8, DOMAIN, sizeof DOMAIN - 1);
    p += 8 + sizeof DOMAIN - 1;
    if (QV_LIKELY(tlen <= 16 && klen <= 16)) {
        qv__put_be64(p, tlen);
        memcpy(p + 8, table, tlen);
        p += 8 + tlen;
        qv__put_be64(p, klen);
        memcpy(p + 8, key, klen);
        p += 8 + klen;
    } else {
        SHA256_Update(&h, head, (size_t)(p - head));
        p = head;
        qv__put_be64(p, tlen);
        SHA256_Update(&h, p, 8);
        SHA256_Update(&h, table, tlen);
        qv__put_be64(p, klen);
        SHA256_Update(&h, p, 8);
        SHA256_Update(&h, key, klen);
    }
    qv__put_be64(p, plen);
    p += 8;
    SHA256_Update(&h, head, (size_t)(p - head));
    SHA256_Update(&h, payload, plen);
    uint8_t inner[SHA256_DIGEST_LENGTH];
    SHA256_Final(inner, &h);
    h = s->outer;
    SHA256_Update(&h, inner, sizeof inner);
    SHA256_Final(tag, &h);
}

qv_status qv__sign(const qv_signer *signer, const char *table, const void *key, size_t klen, const void *payload,
                   size_t plen, uint8_t tag[QV_SIGN_TAG_LEN]) {
    if (!signer || !table || !tag) return qv__error(QV_EINVAL, "qv__sign: NULL argument");
    tag_of(signer, table, key, klen, payload, plen, tag);
    return QV_OK;
}

qv_status qv__sign_check(const qv_signer *signer, const char *table, const void *key, size_t klen, const void *stored,
                         size_t slen, size_t *payload_len) {
    if (QV_UNLIKELY(slen < QV_SIGN_TAG_LEN)) return qv__error(QV__EFORGED, "a %s entry has no signature", table);
    size_t plen = slen - QV_SIGN_TAG_LEN;
    uint8_t tag[QV_SIGN_TAG_LEN];
    tag_of(signer, table, key, klen, stored, plen, tag);
    if (CRYPTO_memcmp(tag, (const uint8_t *)stored + plen, QV_SIGN_TAG_LEN))
        return qv__error(QV__EFORGED, "a %s entry's signature is wrong", table);
    *payload_len = plen;
    return QV_OK;
}

/* A stack holds no signer of its own: its hits come from both tiers, so it
 * is signed when both are. */
int qv_cache_signed(const qv_cache *cache) {
    qv_cache *local, *remote;
    if (qv__stack_tiers((qv_cache *)cache, &local, &remote)) return qv_cache_signed(local) && qv_cache_signed(remote);
    return cache && cache->signer != NULL;
}

/* A handle without the secret would write entries every signed handle
 * rejects, and read tagged entries as corrupt, so the flag keeps it out. An
 * unsigned cache opened with a secret is allowed: its old entries are misses
 * (counted forged) until calls store them again, and the flag is set then so
 * that unsigned handles stay out from now on. */
qv_status qv__sign_open_meta(qv_cache *c) {
    qv_store *s = c->store;
    qv_txn *txn;
    uint64_t flag;
    qv_status st = s->ops->read_begin(s, &txn);
    if (st) return st;
    st = qv__meta_get_uint(c, txn, "signed", &flag);
    s->ops->read_end(s, txn);
    if (st) return st;
    if (flag && !c->signer)
        return qv__error(QV_EINVAL, "%s holds signed entries: open it with its secret (QUIVER_SECRET or the secret option)",
                         c->path);
    if (flag || !c->signer || (c->flags & QV_CACHE_READONLY)) return QV_OK;
    if ((st = s->ops->write_begin(s, &txn))) return st;
    if ((st = qv__meta_put_uint(c, txn, "signed", 1))) {
        s->ops->abort(s, txn);
        return st;
    }
    return s->ops->commit(s, txn);
}
