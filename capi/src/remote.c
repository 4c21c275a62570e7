/* The remote tier: a cache on a Redis-protocol server (redis.c), holding
 * the same record and value bytes as an LMDB cache under the same digests.
 *
 *   <prefix>c:<32 hex>  a call record (docs/FORMAT.md)
 *   <prefix>v:<32 hex>  a value the records refer to
 *   <prefix>l:<32 hex>  a call's lease while one caller runs it
 *
 * A lookup is one GET of the record, whose result is inside it up to 64 KiB;
 * a larger result is a second GET, of the value. Whatever comes back is checked
 * here as if it came from a stranger (anyone who can reach the server can
 * write it): a record that does not parse, a value that is gone or invalid,
 * is a miss counted as corrupt. docs/DECISIONS.md ("The remote tier") says
 * why the timeouts, script, leases and keys are as they are. */
#include "remote.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lease.h"
#include "redis.h"
#include "sign.h"
#include "tier.h"

#define DEFAULT_TIMEOUT_MS 1000
/* Results up to this size live inside the record, so a hit is one GET: a
 * second round trip for the value costs more than sending 64 KiB does
 * (docs/DECISIONS.md, "The remote tier"). */
#define REMOTE_INLINE_LIMIT (64u << 10)
#define MAX_PREFIX 200
#define KEY_CAP (MAX_PREFIX + 2 + 32 + 1)
#define SCAN_COUNT "1000"
#define LEASE_TTL_MS 3000
#define LEASE_TTL_TEXT "3000" /* the same, as PX and PEXPIRE take it */
#define LEASE_RENEW_NS ((int64_t)LEASE_TTL_MS * 1000000 / 3)
#define LEASE_POLL_MIN_NS 5000000ll
#define LEASE_POLL_MAX_NS 50000000ll
#define LEASE_DEFAULT_WAIT_NS 600000000000ll

typedef struct {
    qv_redis *r;
    char prefix[MAX_PREFIX + 1];
    size_t plen;
    qv_leases *threads; /* this process's threads wait here, woken at once, before asking Redis */
} remote;

/* A lease is renewed or given back only by the token that took it. */
static const char renew_script_text[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                        "  return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
                                        "return 0\n";
static const char release_script_text[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                          "  return redis.call('DEL', KEYS[1]) end\n"
                                          "return 0\n";
static qv_redis_script renew_script, release_script;
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_init(void) {
    qv__redis_script_init(&renew_script, renew_script_text);
    qv__redis_script_init(&release_script, release_script_text);
}

static const qv_tier_ops remote_ops;

int qv__remote_is(const qv_cache *cache) {
    return cache && cache->tier == &remote_ops;
}

static remote *state_of(qv_cache *c) {
    return c->tier_state;
}

struct qv_leases *qv__remote_thread_leases(qv_cache *cache) {
    return state_of(cache)->threads;
}

static void hex16(const uint8_t *d, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
}

/* <prefix><kind>:<hex> into out (KEY_CAP bytes); returns its length. */
static size_t key_of(const remote *t, char kind, const uint8_t *digest, char *out) {
    memcpy(out, t->prefix, t->plen);
    out[t->plen] = kind;
    out[t->plen + 1] = ':';
    hex16(digest, out + t->plen + 2);
    out[t->plen + 34] = 0;
    return t->plen + 34;
}

/* A failed round trip: counted, and its status passed on. */
static qv_status io_failed(qv_cache *c, qv_status st) {
    if (st == QV_EIO) qv__cache_count(c, QV_STAT_REMOTE_ERRORS, 1);
    return st;
}

/* The payload of a stored entry: all of it, or for a signed cache what
 * precedes a tag that checks (QV__EFORGED when it does not). */
static qv_status payload_of(const qv_cache *c, const char *table, const uint8_t *digest, const char *stored,
                            size_t slen, size_t *len) {
    if (!c->signer) {
        *len = slen;
        return QV_OK;
    }
    return qv__sign_check(c->signer, table, digest, 16, stored, slen, len);
}

static int is_bytes(const redisReply *r) {
    return r && r->type == REDIS_REPLY_STRING;
}

/* ------------------------------------------------------------------ reads */

/* EXISTS; for a signed cache a GET and its tag checked, as LMDB's contains
 * reads a forged entry as absent. */
static qv_status remote_contains(qv_cache *c, const qv_digest *key) {
    remote *t = state_of(c);
    char k[KEY_CAP];
    qv_redis_cmd cmd;
    qv__redis_cmd(&cmd, 1, c->signer ? "GET" : "EXISTS");
    qv__redis_arg(&cmd, k, key_of(t, 'c', key->bytes, k));
    redisReply *reply;
    qv_status st = qv__redis_run(t->r, &cmd, 1, &reply);
    if (st) return io_failed(c, st);
    size_t len;
    /* a signed tier asked GET: only a string whose tag checks is there */
    if (reply->type == REDIS_REPLY_NIL || (reply->type == REDIS_REPLY_INTEGER && (!reply->integer || c->signer)))
        st = QV_NOTFOUND;
    else if (reply->type == REDIS_REPLY_INTEGER) st = QV_OK;
    else if (!is_bytes(reply)) st = qv__redis_refused(t->r, reply, "a lookup");
    else st = payload_of(c, "calls", key->bytes, reply->str, reply->len, &len) ? QV_NOTFOUND : QV_OK;
    freeReplyObject(reply);
    return st;
}

static qv_status remote_get_with(qv_cache *c, const qv_digest *key, qv_result_cb cb, void *userdata,
                                 int64_t *duration_ns) {
    return qv__remote_get_entry(c, key, cb, userdata, duration_ns, NULL);
}

static uint8_t *copy_of(const void *data, size_t len) {
    uint8_t *p = malloc(len ? len : 1);
    if (p) memcpy(p, data, len);
    return p;
}

/* GET key's entry of kind 'c' or 'v': QV_OK with a string reply (the
 * caller frees it), QV_NOTFOUND, or why not. */
static qv_status get_entry(qv_cache *c, char kind, const uint8_t *digest, redisReply **out) {
    remote *t = state_of(c);
    char k[KEY_CAP];
    qv_redis_cmd cmd;
    qv__redis_cmd(&cmd, 1, "GET");
    qv__redis_arg(&cmd, k, key_of(t, kind, digest, k));
    qv_status st = qv__redis_run(t->r, &cmd, 1, out);
    if (st) return io_failed(c, st);
    if ((*out)->type == REDIS_REPLY_STRING) return QV_OK;
    st = (*out)->type == REDIS_REPLY_NIL ? QV_NOTFOUND : qv__redis_refused(t->r, *out, "a lookup");
    freeReplyObject(*out);
    *out = NULL;
    return st;
}

qv_status qv__remote_get_entry(qv_cache *c, const qv_digest *key, qv_result_cb cb, void *userdata,
                               int64_t *duration_ns, qv_remote_entry *keep) {
    redisReply *reply, *v = NULL;
    qv_status st = get_entry(c, 'c', key->bytes, &reply);
    if (st == QV_NOTFOUND) qv__cache_count(c, QV_STAT_MISSES, 1);
    if (st) return st;
    const uint8_t *rec = (const uint8_t *)reply->str, *data;
    size_t n, rs, re, len;
    if (payload_of(c, "calls", key->bytes, reply->str, reply->len, &n)) {
        freeReplyObject(reply);
        return qv__forged_miss(c, key);
    }
    /* the whole record, not only its result: a round trip costs far more */
    if (qv_validate(rec, n) || qv__record_result(rec, n, &rs, &re)) {
        st = qv__corrupt_miss(c, key, qv_errmsg());
        freeReplyObject(reply);
        return st;
    }
    data = rec + rs;
    len = re - rs;
    if (qv__record_is_ref(data, len)) {
        if ((st = get_entry(c, 'v', data + 6, &v)) && st != QV_NOTFOUND) {
            freeReplyObject(reply);
            return st;
        }
        if (!v && remote_contains(c, key) == QV_NOTFOUND) {
            /* the record went too between the two GETs (an evict, a clear,
             * the server's own eviction): a miss, not damage */
            qv__cache_count(c, QV_STAT_MISSES, 1);
            st = QV_NOTFOUND;
        } else if (v && payload_of(c, "values", data + 6, v->str, v->len, &len)) {
            st = qv__forged_miss(c, key);
        } else if (!v || qv_validate(v->str, len)) {
            st = qv__corrupt_miss(c, key, v ? "its result value is invalid"
                                            : "its result value is gone (evicted by the server?)");
        }
        if (st) {
            freeReplyObject(reply);
            if (v) freeReplyObject(v);
            return st;
        }
        data = (const uint8_t *)v->str;
    }
    if (duration_ns) *duration_ns = qv__record_duration(rec, n, re);
    qv__cache_count(c, QV_STAT_HITS, 1);
    if (keep) {
        keep->record = copy_of(rec, n);
        keep->record_len = n;
        keep->value = v ? copy_of(data, len) : NULL;
        keep->value_len = v ? len : 0;
        if (!keep->record || (v && !keep->value)) {
            free(keep->record);
            free(keep->value);
            memset(keep, 0, sizeof *keep);
        }
    }
    /* no connection is held: the replies are ours */
    st = cb(data, len, userdata);
    freeReplyObject(reply);
    if (v) freeReplyObject(v);
    return st;
}

typedef struct {
    qv_digest *digests;
    size_t n, cap;
} digest_list;

static qv_status collect_ref(int key, const uint8_t *item, size_t len, void *userdata) {
    digest_list *l = userdata;
    if (!qv__record_is_ref(item, len)) return QV_OK;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        qv_digest *d = realloc(l->digests, cap * sizeof *d);
        if (!d) return qv__nomem();
        l->digests = d;
        l->cap = cap;
    }
    memcpy(l->digests[l->n++].bytes, item + 6, 16);
    return QV_OK;
}

typedef struct {
    const qv_cache *c;
    const digest_list *refs;
    redisReply *values; /* MGET's array, one per ref */
} fetched;

static qv_status fetched_value(const uint8_t digest[16], const void **data, size_t *len, void *userdata) {
    const fetched *f = userdata;
    for (size_t i = 0; i < f->refs->n; i++) {
        if (memcmp(f->refs->digests[i].bytes, digest, 16)) continue;
        const redisReply *v = f->values->element[i];
        if (!is_bytes(v)) return QV_NOTFOUND;
        *data = v->str;
        return payload_of(f->c, "values", digest, v->str, v->len, len);
    }
    return QV_NOTFOUND;
}

/* Two round trips: the record, then every value it refers to at once. */
static qv_status remote_load(qv_cache *c, const qv_digest *key, qv_value **record) {
    remote *t = state_of(c);
    char k[KEY_CAP];
    qv_redis_cmd cmd;
    qv__redis_cmd(&cmd, 1, "GET");
    qv__redis_arg(&cmd, k, key_of(t, 'c', key->bytes, k));
    redisReply *rec = NULL, *values = NULL;
    qv_status st = qv__redis_run(t->r, &cmd, 1, &rec);
    if (st) return io_failed(c, st);
    digest_list refs = {0};
    char *keys = NULL;
    const char **argv = NULL;
    size_t *lens = NULL;
    if (rec->type == REDIS_REPLY_NIL) {
        st = QV_NOTFOUND;
        goto done;
    }
    if (!is_bytes(rec)) {
        st = qv__redis_refused(t->r, rec, "GET");
        goto done;
    }
    size_t rec_len;
    if ((st = payload_of(c, "calls", key->bytes, rec->str, rec->len, &rec_len))) goto corrupt;
    if ((st = qv__record_walk((const uint8_t *)rec->str, rec_len, collect_ref, &refs)))
        goto corrupt_or_nomem;
    if (refs.n) { /* MGET of every value at once */
        size_t words = refs.n + 1;
        argv = malloc(words * sizeof *argv);
        lens = malloc(words * sizeof *lens);
        keys = malloc(refs.n * KEY_CAP);
        if (!argv || !lens || !keys) {
            st = qv__nomem();
            goto done;
        }
        argv[0] = "MGET";
        lens[0] = 4;
        for (size_t i = 0; i < refs.n; i++) {
            argv[i + 1] = keys + i * KEY_CAP;
            lens[i + 1] = key_of(t, 'v', refs.digests[i].bytes, keys + i * KEY_CAP);
        }
        if ((st = qv__redis_run_argv(t->r, (int)words, argv, lens, &values))) {
            st = io_failed(c, st);
            goto done;
        }
        if (values->type != REDIS_REPLY_ARRAY || values->elements != refs.n) {
            st = qv__redis_refused(t->r, values, "MGET");
            goto done;
        }
    }
    fetched f = {c, &refs, values};
    st = qv__record_load(rec->str, rec_len, fetched_value, &f, record);
corrupt_or_nomem:
    if (st != QV_ECORRUPT && st != QV__EFORGED) goto done;
corrupt:
    if (st == QV__EFORGED) qv__cache_count(c, QV_STAT_FORGED, 1);
    char hex[33], why[512];
    qv_digest_hex(key, hex);
    snprintf(why, sizeof why, "%s", qv_errmsg());
    st = qv__error(QV_ECORRUPT, "%s: entry %s is corrupt: %s", c->path, hex, why);
done:
    freeReplyObject(rec);
    if (values) freeReplyObject(values);
    free(refs.digests);
    free(keys);
    free(argv);
    free(lens);
    return st;
}

/* ----------------------------------------------------------------- writes */

/* Values first, then the record, in one pipeline: Redis runs a
 * connection's commands in order, so a record is never there before its
 * values. A value is written over (SET, not SET NX) although it is the same
 * bytes whoever writes it: NX would save no bytes on the wire, and would
 * keep a garbage or forged value under the digest for good. A value the
 * server refused (full, read-only) takes its record back out rather than
 * leave it pointing at nothing. */
/* A read-only handle never writes the shared server, whoever asks (a stack
 * over it included). */
static qv_status refuse_readonly(const qv_cache *c) {
    return qv__error(QV_EREADONLY, "the remote tier %s was opened read-only", c->path);
}

static qv_status remote_put(qv_cache *c, pending *p) {
    if (c->flags & QV_CACHE_READONLY) return refuse_readonly(c);
    remote *t = state_of(c);
    size_t n = p->nrefs + 1;
    qv_redis_cmd *cmds = malloc(n * sizeof *cmds);
    char *keys = malloc(n * KEY_CAP);
    redisReply **replies = calloc(n, sizeof *replies);
    /* a signed cache stores payload || tag: one buffer for them all */
    size_t total = 0;
    for (size_t i = 0; c->signer && i < n; i++)
        total += (i < p->nrefs ? p->refs[i].len : p->record_len) + QV_SIGN_TAG_LEN;
    uint8_t *signed_bytes = total ? malloc(total) : NULL, *next = signed_bytes;
    qv_status st = QV_OK;
    if (!cmds || !keys || !replies || (total && !signed_bytes)) {
        st = qv__nomem();
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        char *k = keys + i * KEY_CAP;
        int value = i < p->nrefs;
        qv_redis_cmd *cmd = &cmds[i];
        qv__redis_cmd(cmd, 1, "SET");
        const uint8_t *digest = value ? p->refs[i].digest.bytes : p->key.bytes;
        const uint8_t *data = value ? p->refs[i].data : p->record;
        size_t len = value ? p->refs[i].len : p->record_len;
        qv__redis_arg(cmd, k, key_of(t, value ? 'v' : 'c', digest, k));
        if (c->signer) {
            memcpy(next, data, len);
            qv__sign(c->signer, value ? "values" : "calls", digest, 16, data, len, next + len);
            data = next;
            len += QV_SIGN_TAG_LEN;
            next += len;
        }
        qv__redis_arg(cmd, data, len);
    }
    if ((st = qv__redis_run(t->r, cmds, n, replies))) {
        st = io_failed(c, st);
        goto done;
    }
    for (size_t i = 0; i < n && !st; i++)
        if (replies[i]->type == REDIS_REPLY_ERROR) st = qv__redis_refused(t->r, replies[i], "a store");
    if (st && replies[n - 1]->type != REDIS_REPLY_ERROR) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qv_errmsg());
        qv_redis_cmd del;
        redisReply *r;
        qv__redis_cmd(&del, 1, "DEL");
        qv__redis_arg(&del, keys + p->nrefs * KEY_CAP, t->plen + 34);
        if (qv__redis_run(t->r, &del, 1, &r) == QV_OK) freeReplyObject(r);
        qv__error(st, "%s", msg);
    }
    if (!st) qv__cache_count(c, QV_STAT_STORES, 1);
done:
    for (size_t i = 0; replies && i < n; i++)
        if (replies[i]) freeReplyObject(replies[i]);
    free(replies);
    free(keys);
    free(cmds);
    free(signed_bytes);
    return st;
}

/* The record goes; its values stay (other records may share them) until the
 * server's own eviction takes them. */
static qv_status remote_evict(qv_cache *c, const qv_digest *key) {
    if (c->flags & QV_CACHE_READONLY) return refuse_readonly(c);
    remote *t = state_of(c);
    char k[KEY_CAP];
    qv_redis_cmd cmd;
    qv__redis_cmd(&cmd, 1, "DEL");
    qv__redis_arg(&cmd, k, key_of(t, 'c', key->bytes, k));
    redisReply *reply;
    qv_status st = qv__redis_run(t->r, &cmd, 1, &reply);
    if (st) return io_failed(c, st);
    st = reply->type != REDIS_REPLY_INTEGER ? qv__redis_refused(t->r, reply, "DEL")
         : reply->integer ? QV_OK
                          : QV_NOTFOUND;
    freeReplyObject(reply);
    return st;
}

static qv_status remote_sync(qv_cache *c) {
    return QV_OK; /* every store is on the server when it returns */
}

/* ------------------------------------------------------- scans, queries */

/* A SCAN pattern for <prefix><kind>:*, the prefix's glob characters escaped. */
static size_t pattern_of(const remote *t, char kind, char *out) {
    size_t n = 0;
    for (size_t i = 0; i < t->plen; i++) {
        if (strchr("*?[]\\", t->prefix[i])) out[n++] = '\\';
        out[n++] = t->prefix[i];
    }
    out[n++] = kind;
    out[n++] = ':';
    out[n++] = '*';
    out[n] = 0;
    return n;
}

typedef qv_status (*scan_visit)(redisReply *keys, void *userdata);

/* Every key of one kind, a batch at a time: SCAN walks the whole keyspace
 * (every key of the database, quiver's or not), so its cost grows with the
 * database, not with the answer. */
static qv_status scan_kind(qv_cache *c, char kind, scan_visit visit, void *userdata) {
    remote *t = state_of(c);
    char pattern[2 * MAX_PREFIX + 4], cursor[32] = "0";
    size_t plen = pattern_of(t, kind, pattern);
    qv_status st = QV_OK;
    do {
        qv_redis_cmd cmd;
        redisReply *reply;
        qv__redis_cmd(&cmd, 6, "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT);
        cmd.len[3] = plen;
        if ((st = qv__redis_run(t->r, &cmd, 1, &reply))) return io_failed(c, st);
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || !is_bytes(reply->element[0]) ||
            reply->element[0]->len >= sizeof cursor || reply->element[1]->type != REDIS_REPLY_ARRAY) {
            st = qv__redis_refused(t->r, reply, "SCAN");
        } else {
            memcpy(cursor, reply->element[0]->str, reply->element[0]->len);
            cursor[reply->element[0]->len] = 0;
            st = visit(reply->element[1], userdata);
        }
        freeReplyObject(reply);
    } while (!st && strcmp(cursor, "0"));
    return st;
}

static qv_status count_keys(redisReply *keys, void *userdata) {
    *(uint64_t *)userdata += keys->elements;
    return QV_OK;
}

typedef struct {
    qv_cache *c;
    const uint8_t *name; /* the name's encoding, or NULL for every call */
    size_t name_len;
    qv_digest *keys;
    size_t n, cap;
} query_scan;

typedef struct {
    const uint8_t *name;
    size_t len;
    int match;
} name_match;

static qv_status match_name(int key, const uint8_t *item, size_t len, void *userdata) {
    name_match *m = userdata;
    if (key == R_NAME) m->match = len == m->len && memcmp(item, m->name, len) == 0;
    return QV_OK;
}

static qv_status collect_calls(redisReply *keys, void *userdata) {
    query_scan *q = userdata;
    remote *t = state_of(q->c);
    redisReply *records = NULL;
    qv_status st = QV_OK;
    if (q->name && keys->elements) { /* the name is in the record: fetch them, a batch at once */
        size_t words = keys->elements + 1;
        const char **argv = malloc(words * sizeof *argv);
        size_t *lens = malloc(words * sizeof *lens);
        if (!argv || !lens) st = qv__nomem();
        else {
            argv[0] = "MGET";
            lens[0] = 4;
            for (size_t i = 0; i < keys->elements; i++) {
                argv[i + 1] = keys->element[i]->str;
                lens[i + 1] = keys->element[i]->len;
            }
            if ((st = qv__redis_run_argv(t->r, (int)words, argv, lens, &records))) st = io_failed(q->c, st);
            else if (records->type != REDIS_REPLY_ARRAY || records->elements != keys->elements)
                st = qv__redis_refused(t->r, records, "MGET");
        }
        free(argv);
        free(lens);
    }
    for (size_t i = 0; !st && i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        qv_digest d;
        if (!is_bytes(k) || k->len != t->plen + 34 || qv_digest_parse(&d, k->str + t->plen + 2, 32)) continue;
        if (q->name) {
            const redisReply *rec = records->element[i];
            name_match m = {q->name, q->name_len, 0};
            size_t len;
            if (!is_bytes(rec) || payload_of(q->c, "calls", d.bytes, rec->str, rec->len, &len) ||
                qv__record_walk((const uint8_t *)rec->str, len, match_name, &m) || !m.match)
                continue;
        }
        if (q->n == q->cap) {
            size_t cap = q->cap ? q->cap * 2 : 64;
            qv_digest *grown = realloc(q->keys, cap * sizeof *grown);
            if (!grown) {
                st = qv__nomem();
                break;
            }
            q->keys = grown;
            q->cap = cap;
        }
        q->keys[q->n++] = d;
    }
    if (records) freeReplyObject(records);
    return st;
}

/* Every stored call, or those under one name: a SCAN of the keyspace, and
 * for a name every record read and parsed (a remote tier has no name index;
 * docs/DECISIONS.md). */
static qv_status remote_query(qv_iter **out, qv_cache *c, const char *name) {
    query_scan q = {c, NULL, 0, NULL, 0, 0};
    uint8_t *enc_name = NULL;
    qv_status st = QV_OK;
    if (name) {
        qv_encoder *e = qv__thread_encoder_for(QV_ENCODER_RECORDS);
        const void *p;
        if (!e) return qv__nomem();
        qv_encoder_reset(e);
        if ((st = qv_encoder_text(e, name, strlen(name))) || (st = qv_encoder_finish(e, &p, &q.name_len))) return st;
        if (!(enc_name = malloc(q.name_len))) return qv__nomem();
        memcpy(enc_name, p, q.name_len);
        q.name = enc_name;
    }
    st = scan_kind(c, 'c', collect_calls, &q);
    free(enc_name);
    if (st) {
        free(q.keys);
        return st;
    }
    return qv__iter_new(out, q.keys, q.n);
}

/* Counters of this handle, and two counts that SCAN the keyspace (entries:
 * <prefix>c:* keys, values: <prefix>v:* keys; not DBSIZE, which would count
 * other prefixes' keys and everything else in the database). Bytes and the
 * size limit are the server's business (INFO memory, maxmemory): 0 here. */
static qv_status remote_stat(qv_cache *c, int which, uint64_t *out) {
    *out = 0;
    switch (which) {
    case QV_STAT_ENTRIES:
    case QV_STAT_VALUES:
        return scan_kind(c, which == QV_STAT_ENTRIES ? 'c' : 'v', count_keys, out);
    case QV_STAT_BYTES:
    case QV_STAT_MAX_BYTES:
    case QV_STAT_MAP_SIZE:
        return QV_OK;
    default:
        for (int i = 0; i < QV_SHARDS; i++) *out += atomic_load_explicit(&c->stats[i].n[which], memory_order_relaxed);
        return QV_OK;
    }
}

/* ------------------------------------------------------------ open, close */

static void remote_close(qv_cache *c) {
    remote *t = state_of(c);
    if (!t) return;
    qv__redis_close(t->r);
    qv__leases_close(t->threads);
    free(t);
}

static const qv_tier_ops remote_ops = {
    remote_contains, remote_get_with, remote_put, remote_load, remote_evict, remote_stat, remote_query, remote_sync,
    remote_close,
};

qv_status qv__remote_open(qv_cache **out, const char *url, const qv_cache_options *opts) {
    *out = NULL;
    qv_cache_options o;
    qv_status st = qv__cache_options_copy(&o, opts);
    if (st) return st;
    pthread_once(&scripts_once, scripts_init);
    qv_redis_url u;
    st = qv__redis_url_parse(&u, url);
    if (st) return st;
    if (strlen(u.prefix) > MAX_PREFIX) {
        st = qv__error(QV_EINVAL, "%s: the key prefix is longer than %d bytes", u.display, MAX_PREFIX);
        qv__redis_url_free(&u);
        return st;
    }
    uint32_t timeout_ms = o.timeout_ms ? o.timeout_ms : u.timeout_ms ? u.timeout_ms : DEFAULT_TIMEOUT_MS;
    remote *t = calloc(1, sizeof *t);
    if (!t) st = qv__nomem();
    else {
        t->plen = strlen(u.prefix);
        memcpy(t->prefix, u.prefix, t->plen + 1);
        st = qv__redis_open(&t->r, &u, timeout_ms);
        if (!st) st = qv__leases_open(&t->threads, NULL);
    }
    uint32_t inline_limit = o.inline_limit ? o.inline_limit : REMOTE_INLINE_LIMIT;
    if (!st && !(st = qv__cache_new_tier(out, u.display, inline_limit, &remote_ops, t))) {
        (*out)->flags = o.flags & QV_CACHE_READONLY;
        t = NULL;
        if ((st = qv__signer_from_options(&(*out)->signer, &o))) {
            qv_cache_close(*out);
            *out = NULL;
        }
    }
    if (t) {
        qv__redis_close(t->r);
        qv__leases_close(t->threads);
        free(t);
    }
    qv__redis_url_free(&u);
    return st;
}

/* ----------------------------------------------------------------- leases */

/* Held leases of this process, renewed by one background thread: a lease
 * held less than a third of its time is never touched, so short calls cost
 * nothing more than taking and giving back. */
struct qv_remote_lease {
    struct qv_remote_lease *next;
    qv_cache *cache; /* retained while held */
    char key[KEY_CAP];
    size_t key_len;
    char token[33];
    int64_t renewed_ns;
    pthread_t owner;
    pid_t pid; /* a child of fork() inherits the struct, not the lease */
};

static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t held_wake;
static qv_remote_lease *held;
static pid_t renewer_pid; /* the process whose renewer runs */
static pthread_once_t renewer_once = PTHREAD_ONCE_INIT;

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void renew(qv_cache *c, const char *key, size_t key_len, const char *token) {
    qv_redis_cmd cmd = {.argc = 3};
    redisReply *reply;
    qv__redis_arg(&cmd, key, key_len);
    qv__redis_arg(&cmd, token, 32);
    qv__redis_arg(&cmd, LEASE_TTL_TEXT, sizeof LEASE_TTL_TEXT - 1);
    /* a failed renewal is the holder's loss: its lease may expire and another
     * caller run the call too, which costs time, never a wrong answer */
    if (qv__redis_eval(state_of(c)->r, &renew_script, 1, &cmd, &reply) == QV_OK) freeReplyObject(reply);
    else qv__cache_count(c, QV_STAT_REMOTE_ERRORS, 1);
}

typedef struct {
    qv_cache *cache;
    char key[KEY_CAP];
    size_t key_len;
    char token[33];
} renewal;

static void *renewer(void *unused) {
    pthread_mutex_lock(&held_lock);
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t t = (int64_t)until.tv_nsec + LEASE_RENEW_NS / 4;
        until.tv_sec += t / 1000000000;
        until.tv_nsec = t % 1000000000;
        pthread_cond_timedwait(&held_wake, &held_lock, &until);
        if (renewer_pid != getpid()) break; /* a forked child's copy of the list is not ours */
        int64_t now = mono_ns();
        size_t n = 0;
        for (qv_remote_lease *l = held; l; l = l->next) n += now - l->renewed_ns >= LEASE_RENEW_NS;
        if (!n) continue;
        renewal *due = malloc(n * sizeof *due);
        if (!due) continue;
        n = 0;
        for (qv_remote_lease *l = held; l; l = l->next) {
            if (now - l->renewed_ns < LEASE_RENEW_NS) continue;
            l->renewed_ns = now;
            due[n].cache = qv__cache_retain(l->cache);
            memcpy(due[n].key, l->key, l->key_len);
            due[n].key_len = l->key_len;
            memcpy(due[n].token, l->token, sizeof l->token);
            n++;
        }
        /* round trips with no lock held */
        pthread_mutex_unlock(&held_lock);
        for (size_t i = 0; i < n; i++) {
            renew(due[i].cache, due[i].key, due[i].key_len, due[i].token);
            qv_cache_close(due[i].cache);
        }
        free(due);
        pthread_mutex_lock(&held_lock);
    }
    pthread_mutex_unlock(&held_lock);
    return NULL;
}

static void held_prepare(void) {
    pthread_mutex_lock(&held_lock);
}

static void held_parent(void) {
    pthread_mutex_unlock(&held_lock);
}

static void wake_init(void) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&held_wake, &a);
    pthread_condattr_destroy(&a);
}

/* The child holds none of its parent's leases (its parent renews and gives
 * them back) and has no renewer until it takes a lease of its own; the
 * condition may have had the parent's renewer waiting on it. */
static void held_child(void) {
    held = NULL;
    wake_init();
    pthread_mutex_unlock(&held_lock);
}

static void renewer_init(void) {
    wake_init();
    pthread_atfork(held_prepare, held_parent, held_child);
}

/* With held_lock held: a renewer for this process, started once. */
static void ensure_renewer_locked(void) {
    if (renewer_pid == getpid()) return;
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, renewer, NULL) == 0) renewer_pid = getpid();
    pthread_attr_destroy(&attr);
}

qv_status qv__remote_lease_acquire(qv_cache *cache, const qv_digest *key, int64_t wait_ns, int *outcome,
                                   qv_remote_lease **lease) {
    *lease = NULL;
    *outcome = QV_LEASE_TIMEOUT;
    if (cache->flags & QV_CACHE_READONLY) return QV_OK; /* writes nothing: runs without a lease */
    remote *t = state_of(cache);
    qv_remote_lease *l = calloc(1, sizeof *l);
    uint8_t random[16];
    if (!l) return qv__nomem();
    l->pid = getpid();
    /* never blocks, even before the entropy pool is ready (early boot, VMs) */
    if (getrandom(random, sizeof random, GRND_NONBLOCK) != (ssize_t)sizeof random) {
        /* unique enough: only this process's own leases could share it */
        uint64_t mix[2] = {(uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)l, (uint64_t)mono_ns()};
        memcpy(random, mix, sizeof random);
    }
    hex16(random, l->token);
    l->key_len = key_of(t, 'l', key->bytes, l->key);
    /* A call that makes the same call inside itself would wait for its own
     * lease, which its process keeps renewing: it runs without one, as a
     * lease table does for the thread that holds. */
    int mine = 0;
    pthread_mutex_lock(&held_lock);
    for (qv_remote_lease *h = held; h && !mine; h = h->next)
        mine = h->key_len == l->key_len && !memcmp(h->key, l->key, l->key_len) &&
               pthread_equal(h->owner, pthread_self());
    pthread_mutex_unlock(&held_lock);
    if (mine) {
        free(l);
        return QV_OK;
    }
    char record_key[KEY_CAP];
    qv_redis_cmd cmds[2];
    qv__redis_cmd(&cmds[0], 1, "SET");
    qv__redis_arg(&cmds[0], l->key, l->key_len);
    qv__redis_arg(&cmds[0], l->token, 32);
    qv__redis_arg(&cmds[0], "NX", 2);
    qv__redis_arg(&cmds[0], "PX", 2);
    qv__redis_arg(&cmds[0], LEASE_TTL_TEXT, sizeof LEASE_TTL_TEXT - 1);
    qv__redis_cmd(&cmds[1], 1, "EXISTS");
    qv__redis_arg(&cmds[1], record_key, key_of(t, 'c', key->bytes, record_key));
    int64_t deadline = mono_ns() + (wait_ns < 0 ? LEASE_DEFAULT_WAIT_NS : wait_ns), pause = LEASE_POLL_MIN_NS;
    qv_status st;
    for (;;) {
        redisReply *r[2];
        /* unreachable: run without a lease, never wait for the server */
        if ((st = qv__redis_run(t->r, cmds, 2, r))) {
            io_failed(cache, st);
            break;
        }
        int taken = r[0]->type == REDIS_REPLY_STATUS, refused = r[0]->type == REDIS_REPLY_ERROR;
        int stored = r[1]->type == REDIS_REPLY_INTEGER && r[1]->integer;
        freeReplyObject(r[0]);
        freeReplyObject(r[1]);
        if (taken && !stored) {
            l->cache = qv__cache_retain(cache);
            l->renewed_ns = mono_ns();
            l->owner = pthread_self();
            pthread_once(&renewer_once, renewer_init);
            pthread_mutex_lock(&held_lock);
            ensure_renewer_locked();
            l->next = held;
            held = l;
            pthread_mutex_unlock(&held_lock);
            *lease = l;
            *outcome = QV_LEASE_HELD;
            return QV_OK;
        }
        if (taken) { /* stored just before: give the lease straight back */
            l->cache = qv__cache_retain(cache);
            qv__remote_lease_release(l);
            l = NULL;
        }
        if (stored) {
            *outcome = QV_LEASE_DONE;
            break;
        }
        int64_t now = mono_ns();
        if (refused || now >= deadline) break; /* a full server refuses the lease too */
        int64_t nap = pause < deadline - now ? pause : deadline - now;
        struct timespec ts = {nap / 1000000000, nap % 1000000000};
        nanosleep(&ts, NULL);
        pause = pause * 2 > LEASE_POLL_MAX_NS ? LEASE_POLL_MAX_NS : pause * 2;
    }
    free(l);
    return QV_OK;
}

void qv__remote_lease_release(qv_remote_lease *l) {
    if (!l) return;
    pthread_mutex_lock(&held_lock);
    for (qv_remote_lease **p = &held; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            break;
        }
    pthread_mutex_unlock(&held_lock);
    if (l->pid != getpid()) { /* the parent's lease, which the parent gives back */
        qv_cache_close(l->cache);
        free(l);
        return;
    }
    qv_redis_cmd cmd = {.argc = 3};
    redisReply *reply;
    qv__redis_arg(&cmd, l->key, l->key_len);
    qv__redis_arg(&cmd, l->token, 32);
    /* unreachable: the lease expires on its own within its ttl */
    if (qv__redis_eval(state_of(l->cache)->r, &release_script, 1, &cmd, &reply) == QV_OK) freeReplyObject(reply);
    else qv__cache_count(l->cache, QV_STAT_REMOTE_ERRORS, 1);
    qv_cache_close(l->cache);
    free(l);
}
