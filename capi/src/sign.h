/* Signed entries: an HMAC-SHA256 tag after every call record and value, so
 * that whoever can write the store (an LMDB file, a Redis server) but does not
 * know the secret cannot make a hit return bytes of their choosing. The tag
 * binds the table and the key, so a signed entry cannot be replayed under
 * another key or table. docs/FORMAT.md "Signed entries" gives the bytes;
 * the LMDB and memory stores sign through store_signed.c, the remote tier
 * calls qv__sign and qv__sign_check itself. */
#ifndef QV_SIGN_H
#define QV_SIGN_H

#include "internal.h"
#include "store.h"

#define QV_SIGN_TAG_LEN 32

/* Internal only, never returned to a host: a stored entry whose tag is
 * missing or wrong. Callers turn it into a miss counted in QV_STAT_FORGED. */
#define QV__EFORGED (-100)

/* Immutable once made: any number of threads may sign and check with one. */
typedef struct qv_signer qv_signer;

/* A signer for a secret of len bytes (copied); QV_EINVAL when len is 0. */
qv_status qv__signer_new(qv_signer **out, const void *secret, size_t len);
void qv__signer_free(qv_signer *signer);
/* The signer of opts->secret (version 2 and a non-NULL secret), else of the
 * environment's QUIVER_SECRET when set and not empty, else *out = NULL: the
 * cache is unsigned. opts may be NULL. */
qv_status qv__signer_from_options(qv_signer **out, const qv_cache_options *opts);

/* The tag of payload stored under key in table ("calls" or "values"):
 * HMAC-SHA256(secret, be64(14) "quiver/sign/v1" be64(|table|) table
 * be64(klen) key be64(plen) payload). key is the store's key (the 16-byte
 * digest), not a remote tier's prefixed key. */
qv_status qv__sign(const qv_signer *signer, const char *table, const void *key, size_t klen, const void *payload,
                   size_t plen, uint8_t tag[QV_SIGN_TAG_LEN]);
/* stored = payload || tag. QV_OK with *payload_len = slen - 32 when the tag
 * is right (compared in constant time); QV__EFORGED when stored is shorter
 * than a tag or the tag is wrong. */
qv_status qv__sign_check(const qv_signer *signer, const char *table, const void *key, size_t klen, const void *stored,
                         size_t slen, size_t *payload_len);

/* The store of a signed LMDB or memory cache: inner with its "calls" and
 * "values" tables (named in cfg) signed; get on them is QV__EFORGED when the
 * tag fails, and a scan shows such an entry with an empty value. Takes over
 * inner (closed on failure too); signer is borrowed and must outlive it. */
qv_status qv__store_signed_open(qv_store **out, qv_store *inner, const qv_signer *signer, const qv_store_config *cfg);
/* At open, after the meta table is initialised: a cache whose meta "signed"
 * is 1 refuses a handle without a secret; a writable signed handle sets it. */
qv_status qv__sign_open_meta(qv_cache *c);

#endif
