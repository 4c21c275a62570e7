/* Stacks: a cache over two others, a local tier read first and a remote one
 * under it (DESIGN section 4, docs/DECISIONS.md "Stacks").
 *
 * Reads try local, then remote; a remote hit is answered at once and copied
 * into local by the stack's worker thread, so the hit costs the remote round
 * trip and not a local commit. Stores go to local, then to remote: on the
 * caller's thread, or with QV_STACK_ASYNC through a bounded queue that the
 * same worker drains. The remote tier failing never fails a stack call: the
 * stack goes on from local, with one warning per outage (the remote tier's
 * own when its server is unreachable), and tries the remote
 * again on the next call (the remote tier's transport does the backoff).
 * Warnings are emitted on host threads (a call on the stack, sync, close),
 * never on the worker: a host's handler may not expect a thread it does not
 * know. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "remote.h"
#include "stack.h"
#include "tier.h"

#define DEFAULT_QUEUE_LIMIT 1024

enum { JOB_PUSH, JOB_COPY };

/* A store for the remote tier (its record and values copied into the same
 * allocation), or a remote hit to copy into local (key; p once built). */
typedef struct job {
    struct job *next;
    int kind;
    qv_digest key; /* JOB_COPY: the key hit (j->p.key is the call's once built) */
    pending p;
    /* JOB_COPY, once built: what j->p points to */
    void *call, *result, *record;
    valref *refs;
    qv_remote_entry fetched; /* JOB_COPY from a remote tier: the hit's bytes */
} job;

typedef struct {
    qv_cache *local, *remote; /* retained */
    uint32_t flags;
    size_t queue_limit;
    /* the worker's queue; lock is never held while a tier is called */
    pthread_mutex_t lock;
    pthread_cond_t work, idle;
    job *head, *tail;
    size_t queued;
    int busy, started;
    _Atomic int stopping;
    pthread_t thread;
    _Atomic uint64_t fork_gen, fixing_gen;
    /* faults */
    _Atomic int down;       /* the remote failed and has not answered since */
    _Atomic int warn_due;   /* a message below waits for a host thread to emit it */
    _Atomic int refused;    /* the remote answered with a refusal (full, read-only): warned once */
    _Atomic uint64_t dropped_unreported;
    char down_msg[384], refused_msg[384]; /* under lock */
} stack;

static const qv_tier_ops stack_ops;

static void free_job(job *j) {
    free(j->call);
    qv_free(j->result);
    free(j->record);
    free(j->refs);
    free(j->fetched.record);
    free(j->fetched.value);
    free(j);
}

/* ------------------------------------------------------------------ fork */

/* A child of fork() inherits the queue as the parent left it, but not the
 * worker: the parent's worker stores the parent's jobs, the child drops its
 * copies and starts a worker of its own when it needs one. The repair is
 * claimed with an atomic, as in cache.c, since the lock may be inherited
 * held. */
static void stack_after_fork(stack *s) {
    uint64_t gen = qv__fork_generation();
    if (QV_LIKELY(atomic_load_explicit(&s->fork_gen, memory_order_acquire) == gen)) return;
    uint64_t claimed = atomic_load(&s->fixing_gen);
    if (claimed != gen && atomic_compare_exchange_strong(&s->fixing_gen, &claimed, gen)) {
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->work, NULL);
        pthread_cond_init(&s->idle, NULL);
        for (job *j = s->head; j;) {
            job *next = j->next;
            free_job(j);
            j = next;
        }
        s->head = s->tail = NULL;
        s->queued = 0;
        s->busy = s->started = 0;
        atomic_store(&s->stopping, 0);
        atomic_store(&s->fork_gen, gen);
        return;
    }
    while (atomic_load(&s->fork_gen) != gen) sched_yield();
}

/* ---------------------------------------------------------------- faults */

/* The remote answered (a hit, a miss or a store): an outage, if any, is over,
 * and the next failure starts a new one, with a warning of its own. */
static inline void remote_answered(stack *s) {
    if (QV_UNLIKELY(atomic_load_explicit(&s->down, memory_order_relaxed))) atomic_store(&s->down, 0);
}

/* The remote failed with st (its message in qv_errmsg()). A miss or a
 * corrupt entry is no failure: the remote answered. The first failure of an
 * outage leaves a warning due. A refusal (a full or read-only server) warns
 * once per stack: the server answers reads meanwhile, so there is no outage
 * to end, and every store would warn again. */
static void remote_failed(qv_cache *c, stack *s, qv_status st) {
    if (st == QV_NOTFOUND || st == QV_ECORRUPT) {
        remote_answered(s);
        return;
    }
    int expected = 0, unreachable = st == QV_EIO || st == QV_ETIMEOUT || st == QV_ECLOSED;
    char *msg;
    if (!unreachable) {
        if (atomic_exchange(&s->refused, 1)) return;
        msg = s->refused_msg;
    } else {
        if (!atomic_compare_exchange_strong(&s->down, &expected, 1)) return;
        /* A remote tier warns of an unreachable server itself, once per
         * outage (redis.c): a second warning would say the same. */
        if (s->remote->tier) return;
        msg = s->down_msg;
    }
    stack_after_fork(s);
    pthread_mutex_lock(&s->lock);
    if (!unreachable)
        snprintf(msg, sizeof s->refused_msg, "%s: the remote tier %s (%s); the local tier keeps what it refuses",
                 c->path, st == QV_EFULL ? "is full" : "refused a request", qv_errmsg());
    else
        snprintf(msg, sizeof s->down_msg,
                 "%s: the remote tier failed (%s); going on from the local tier alone until it answers again",
                 c->path, qv_errmsg());
    atomic_store(&s->warn_due, 1);
    pthread_mutex_unlock(&s->lock);
}

static void remote_met(qv_cache *c, stack *s, qv_status st) {
    if (st) remote_failed(c, s, st);
    else remote_answered(s);
}

/* Emit the warnings that are due, on a host thread with no lock held. Drops
 * are told once a run of them is over (drops), so a full queue makes one
 * warning, not one per store. */
static void flush_warnings(qv_cache *c, stack *s, int drops) {
    uint64_t dropped = drops ? atomic_exchange(&s->dropped_unreported, 0) : 0;
    if (dropped)
        qv__warn("%s: %llu asynchronous stores to the remote tier were dropped (the queue of %zu was full, or the "
                 "remote was down at close); the local tier has them",
                 c->path, (unsigned long long)dropped, s->queue_limit);
    if (QV_LIKELY(!atomic_load_explicit(&s->warn_due, memory_order_relaxed))) return;
    char down[sizeof s->down_msg], refused[sizeof s->refused_msg];
    stack_after_fork(s);
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->warn_due, 0);
    memcpy(down, s->down_msg, sizeof down);
    memcpy(refused, s->refused_msg, sizeof refused);
    s->down_msg[0] = s->refused_msg[0] = '\0';
    pthread_mutex_unlock(&s->lock);
    if (*down) qv__warn("%s", down);
    if (*refused) qv__warn("%s", refused);
}

/* ------------------------------------------------------------ the worker */

static qv_status tier_put(qv_cache *c, pending *p) {
    if (c->tier) return c->tier->put(c, p);
    if (c->flags & QV_CACHE_READONLY) return qv__error(QV_EREADONLY, "the cache at %s was opened read-only", c->path);
    return qv__group_commit(c, p);
}

/* A remote hit's record, loaded and rebuilt from its fields into j->p as
 * export and import do, with the local tier's inline limit: the call's
 * digest is checked again on the way, so a remote entry filed under another
 * call's key is not copied. 1 when j->p is ready to store. */
/* The value the hit brought along: the result's when it was by reference.
 * Any other (an argument stored by reference) was not fetched. */
static qv_status fetched_value(const uint8_t digest[16], const void **data, size_t *len, void *userdata) {
    const qv_remote_entry *e = userdata;
    qv_digest d;
    if (!e->value) return QV_NOTFOUND;
    qv_digest_bytes(&d, e->value, e->value_len);
    if (memcmp(d.bytes, digest, 16)) return QV_NOTFOUND;
    *data = e->value;
    *len = e->value_len;
    return QV_OK;
}

static int build_copy(qv_cache *c, stack *s, job *j) {
    qv_digest key = j->key;
    if (qv_cache_contains(s->local, &key) == QV_OK) return 0; /* copied already, or stored since */
    qv_value *rec = NULL;
    qv_status st = QV_NOTFOUND;
    /* from the bytes the hit read when they hold everything, else read again */
    if (j->fetched.record)
        st = qv__record_load(j->fetched.record, j->fetched.record_len, fetched_value, &j->fetched, &rec);
    if (st) {
        if ((st = qv_cache_load(s->remote, &key, &rec))) {
            remote_failed(c, s, st);
            return 0;
        }
        remote_answered(s);
    }
    const qv_value *name = qv_value_map_find(rec, "name"), *version = qv_value_map_find(rec, "version"),
                   *args = qv_value_map_find(rec, "args"), *kwargs = qv_value_map_find(rec, "kwargs"),
                   *result = qv_value_map_find(rec, "result"), *meta = qv_value_map_find(rec, "meta"),
                   *lang = qv_value_map_find(rec, "lang");
    const char *n, *v = NULL, *l;
    size_t nlen, vlen = 0, llen, call_len, result_len, meta_len = 0;
    const void *call;
    void *meta_enc = NULL;
    char *lang_z = NULL;
    qv_encoder *calls = qv__thread_encoder_for(QV_ENCODER_CALLS);
    qv_encoder *records = qv__thread_encoder_for(QV_ENCODER_RECORDS);
    st = QV_ECORRUPT;
    if (!args || !kwargs || !result || !calls || !records || qv_value_get_text(name, &n, &nlen) ||
        qv_value_get_text(lang, &l, &llen) ||
        (qv_value_type(version) == QV_TYPE_TEXT && qv_value_get_text(version, &v, &vlen)))
        goto done;
    qv_store_info info = QV_STORE_INFO_INIT;
    qv_value_get_int(qv_value_map_find(rec, "start_ns"), &info.start_ns);
    qv_value_get_int(qv_value_map_find(rec, "duration_ns"), &info.duration_ns);
    qv_encoder_reset(calls);
    if (!(info.lang = lang_z = strndup(l, llen)) || qv_encoder_call_head(calls, n, nlen, v, vlen) ||
        qv_encoder_value(calls, args) || qv_encoder_value(calls, kwargs) ||
        qv_encoder_finish(calls, &call, &call_len) || !(j->call = malloc(call_len)) ||
        qv_value_encode(result, &j->result, &result_len) || (meta && qv_value_encode(meta, &meta_enc, &meta_len)))
        goto done;
    memcpy(j->call, call, call_len);
    info.meta = meta_enc;
    info.meta_len = meta_len;
    record_builder b = {records, s->local->inline_limit, NULL, 0, 0, 0};
    st = qv__record_prepare(&j->p, &b, &key, j->call, call_len, j->result, result_len, &info);
    j->refs = b.refs; /* the values point into j->call and j->result */
    /* the record is in this thread's encoder, which the next one reuses */
    if (!st && !(j->record = malloc(j->p.record_len))) st = qv__nomem();
    if (!st) {
        memcpy(j->record, j->p.record, j->p.record_len);
        j->p.record = j->record;
        j->p.refs = b.refs;
        j->p.nrefs = b.nrefs;
    }
done:
    qv_free(meta_enc);
    free(lang_z);
    qv_value_free(rec);
    return st == QV_OK;
}

/* Store ps into the tier c: in one commit when c is a store of its own.
 * QV_OK, or the first failure (remote: passed to remote_failed as met). */
static qv_status store_all(qv_cache *stack_c, stack *s, qv_cache *c, pending **ps, size_t n) {
    if (!c->tier && !(c->flags & QV_CACHE_READONLY)) {
        qv_status st = qv__group_commit_many(c, ps, n);
        if (c == s->remote) remote_met(stack_c, s, st);
        return st;
    }
    qv_status first = QV_OK;
    for (size_t i = 0; i < n; i++) {
        qv_status st = tier_put(c, ps[i]);
        if (c == s->remote) remote_met(stack_c, s, st);
        if (st && !first) first = st;
    }
    return first;
}

#define BATCH 64 /* jobs the worker takes at once: a local commit for all its copies */
#define GATHER_NS (1000 * 1000) /* how long a woken worker waits for a batch to fill */

/* Run a list of at most BATCH jobs: the copies into local, the stores into
 * remote, each in as few commits as the tier allows. */
static void run_batch(qv_cache *c, stack *s, job *list) {
    pending *copies[BATCH], *pushes[BATCH];
    size_t nc = 0, np = 0;
    for (job *j = list; j; j = j->next) {
        if (j->kind == JOB_COPY) {
            /* a key hit again before its copy landed: copy it once */
            int again = 0;
            for (job *k = list; k != j && !again; k = k->next)
                again = k->kind == JOB_COPY && !memcmp(k->key.bytes, j->key.bytes, 16);
            if (!again && build_copy(c, s, j)) copies[nc++] = &j->p;
        } else {
            pushes[np++] = &j->p;
        }
    }
    if (nc) store_all(c, s, s->local, copies, nc); /* a copy that fails is fetched again next time */
    if (!np) return;
    /* Closing while the remote is down: one attempt is enough to know, the
     * rest would each wait for the remote tier's timeout. */
    if (atomic_load(&s->stopping) && atomic_load(&s->down)) {
        qv__cache_count(c, QV_STAT_DROPPED, np);
        atomic_fetch_add(&s->dropped_unreported, np);
        return;
    }
    store_all(c, s, s->remote, pushes, np);
}

static void *worker_main(void *arg) {
    qv_cache *c = arg;
    stack *s = c->tier_state;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stopping) pthread_cond_wait(&s->work, &s->lock);
        if (s->head && s->queued < BATCH && !s->stopping) {
            /* Let a batch gather: woken for every remote hit, the worker
             * would take a core from the callers once per hit. Asleep here,
             * off the condition, it is not woken by their signals. */
            pthread_mutex_unlock(&s->lock);
            nanosleep(&(struct timespec){0, GATHER_NS}, NULL);
            pthread_mutex_lock(&s->lock);
        }
        job *list = s->head, *last = list;
        if (!list) break;
        for (int n = 1; n < BATCH && last->next; n++) last = last->next;
        if (!(s->head = last->next)) s->tail = NULL;
        last->next = NULL;
        for (job *j = list; j; j = j->next) s->queued--;
        s->busy = 1;
        pthread_mutex_unlock(&s->lock);
        run_batch(c, s, list);
        for (job *j = list; j;) {
            job *next = j->next;
            free_job(j);
            j = next;
        }
        pthread_mutex_lock(&s->lock);
        s->busy = 0;
        if (!s->head) pthread_cond_broadcast(&s->idle);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Queue j for the worker, starting it when this process has none: 1 when
 * queued (the worker frees j), 0 when the queue is full, -1 when no thread
 * could be started. */
static int enqueue(qv_cache *c, stack *s, job *j, int *was_empty) {
    stack_after_fork(s);
    j->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->queued >= s->queue_limit) {
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    if (!s->started) {
        if (pthread_create(&s->thread, NULL, worker_main, c)) {
            pthread_mutex_unlock(&s->lock);
            return -1;
        }
        s->started = 1;
    }
    if (was_empty) *was_empty = !s->queued && !s->busy;
    if (s->tail) s->tail->next = j;
    else s->head = j;
    s->tail = j;
    s->queued++;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->lock);
    return 1;
}

/* Wait until the worker has done everything queued so far. */
static void drain(stack *s) {
    stack_after_fork(s);
    pthread_mutex_lock(&s->lock);
    while (s->started && (s->head || s->busy)) pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

/* fetched: the hit's bytes, taken over (freed here when not queued). */
static void request_copy(qv_cache *c, stack *s, const qv_digest *key, qv_remote_entry *fetched) {
    job *j = calloc(1, sizeof *j);
    if (j) {
        j->kind = JOB_COPY;
        j->key = *key;
        j->fetched = *fetched;
        memset(fetched, 0, sizeof *fetched);
        if (enqueue(c, s, j, NULL) == 1) return;
        free_job(j);
        return;
    }
    /* a copy is an optimisation: the next hit asks again */
    free(fetched->record);
    free(fetched->value);
}

/* A store for the remote tier, queued: the pending's record and values are
 * the caller's, so the job carries copies. 1 when the queue had drained
 * before this store: drops before it, if any, are a run that is over. */
static int push_async(qv_cache *c, stack *s, const pending *p) {
    size_t size = sizeof(job) + p->nrefs * sizeof(valref) + p->record_len;
    for (size_t i = 0; i < p->nrefs; i++) size += p->refs[i].len;
    job *j = malloc(size);
    if (!j) {
        qv__cache_count(c, QV_STAT_DROPPED, 1);
        atomic_fetch_add(&s->dropped_unreported, 1);
        return 0;
    }
    memset(j, 0, sizeof *j);
    j->kind = JOB_PUSH;
    j->p.key = p->key;
    memcpy(j->p.name_key, p->name_key, sizeof p->name_key);
    valref *refs = (valref *)(j + 1);
    uint8_t *bytes = (uint8_t *)(refs + p->nrefs);
    memcpy(bytes, p->record, p->record_len);
    j->p.record = bytes;
    j->p.record_len = p->record_len;
    bytes += p->record_len;
    for (size_t i = 0; i < p->nrefs; i++) {
        refs[i].digest = p->refs[i].digest;
        memcpy(bytes, p->refs[i].data, p->refs[i].len);
        refs[i].data = bytes;
        refs[i].len = p->refs[i].len;
        bytes += p->refs[i].len;
    }
    j->p.refs = p->nrefs ? refs : NULL;
    j->p.nrefs = p->nrefs;
    int was_empty = 0;
    int queued = enqueue(c, s, j, &was_empty);
    if (queued == 1) return was_empty;
    if (queued < 0) {
        run_batch(c, s, j); /* no thread: store it now */
    } else {
        qv__cache_count(c, QV_STAT_DROPPED, 1);
        atomic_fetch_add(&s->dropped_unreported, 1);
    }
    free(j);
    return 0;
}

/* ------------------------------------------------------------------- ops */

typedef struct {
    qv_result_cb cb;
    void *userdata;
    int called;
} relay;

/* Tells a hit whose callback failed from a miss. */
static qv_status relay_cb(const void *data, size_t len, void *userdata) {
    relay *r = userdata;
    r->called = 1;
    return r->cb(data, len, r->userdata);
}

static qv_status stack_get_with(qv_cache *c, const qv_digest *key, qv_result_cb cb, void *userdata,
                                int64_t *duration_ns) {
    stack *s = c->tier_state;
    relay r = {cb, userdata, 0};
    qv_status st = qv__cache_get_with(s->local, key, relay_cb, &r, duration_ns);
    if (QV_LIKELY(r.called)) {
        qv__cache_count(c, QV_STAT_HITS, 1);
        return st;
    }
    qv_remote_entry fetched = {0};
    st = qv__remote_is(s->remote) ? qv__remote_get_entry(s->remote, key, relay_cb, &r, duration_ns, &fetched)
                                  : qv__cache_get_with(s->remote, key, relay_cb, &r, duration_ns);
    if (r.called) {
        (void)qv__fn_took_corrupt(key); /* a corrupt local entry, answered: no miss to count it with */
        qv__cache_count(c, QV_STAT_HITS, 1);
        qv__cache_count(c, QV_STAT_REMOTE_HITS, 1);
        remote_answered(s);
        request_copy(c, s, key, &fetched);
        return st;
    }
    free(fetched.record);
    free(fetched.value);
    qv__cache_count(c, QV_STAT_MISSES, 1);
    if (st != QV_NOTFOUND) {
        remote_failed(c, s, st);
        flush_warnings(c, s, 0);
    } else {
        remote_answered(s);
    }
    return QV_NOTFOUND;
}

static qv_status stack_contains(qv_cache *c, const qv_digest *key) {
    stack *s = c->tier_state;
    if (qv_cache_contains(s->local, key) == QV_OK) return QV_OK;
    qv_status st = qv_cache_contains(s->remote, key);
    if (st == QV_OK || st == QV_NOTFOUND) {
        remote_answered(s);
        return st;
    }
    remote_failed(c, s, st);
    flush_warnings(c, s, 0);
    return QV_NOTFOUND;
}

static qv_status stack_load(qv_cache *c, const qv_digest *key, qv_value **record) {
    stack *s = c->tier_state;
    qv_status st = qv_cache_load(s->local, key, record);
    if (st != QV_NOTFOUND && st != QV_ECORRUPT) return st;
    qv_status rs = qv_cache_load(s->remote, key, record);
    if (rs == QV_OK || rs == QV_NOTFOUND || rs == QV_ECORRUPT) {
        remote_answered(s);
        return rs == QV_NOTFOUND ? st : rs; /* a corrupt local entry says so when remote has none */
    }
    remote_failed(c, s, rs);
    flush_warnings(c, s, 0);
    return st;
}

/* Local decides the outcome: a stack store succeeds when the local one does. */
static qv_status stack_put(qv_cache *c, pending *p) {
    stack *s = c->tier_state;
    qv_status st = tier_put(s->local, p);
    if (st) return st;
    qv__cache_count(c, QV_STAT_STORES, 1);
    int drained = 0;
    if (s->flags & QV_STACK_ASYNC) {
        drained = push_async(c, s, p);
    } else {
        qv_status rs = tier_put(s->remote, p);
        if (rs) remote_failed(c, s, rs);
        else remote_answered(s);
    }
    flush_warnings(c, s, drained);
    return QV_OK;
}

static qv_status stack_evict(qv_cache *c, const qv_digest *key) {
    stack *s = c->tier_state;
    drain(s); /* a queued store of key must not land after its eviction */
    qv_status st = qv_cache_evict(s->local, key);
    qv_status rs = qv_cache_evict(s->remote, key);
    if (rs != QV_OK && rs != QV_NOTFOUND) {
        remote_failed(c, s, rs);
        flush_warnings(c, s, 0);
    } else {
        remote_answered(s);
    }
    if (st == QV_OK || rs == QV_OK) return QV_OK;
    return st;
}

static qv_status stack_stat(qv_cache *c, int which, uint64_t *out) {
    stack *s = c->tier_state;
    switch (which) {
    case QV_STAT_HITS:
    case QV_STAT_MISSES:
    case QV_STAT_STORES:
    case QV_STAT_REMOTE_HITS:
    case QV_STAT_DROPPED:
        *out = 0;
        for (int i = 0; i < QV_SHARDS; i++) *out += atomic_load_explicit(&c->stats[i].n[which], memory_order_relaxed);
        return QV_OK;
    case QV_STAT_REMOTE_ERRORS:
        return qv_cache_stat(s->remote, which, out);
    case QV_STAT_CORRUPT: /* met by the tiers' own lookups */
    case QV_STAT_FORGED: {
        uint64_t l = 0, r = 0;
        qv_status st = qv_cache_stat(s->local, which, &l);
        if (!st) st = qv_cache_stat(s->remote, which, &r);
        *out = l + r;
        return st;
    }
    default:
        return qv_cache_stat(s->local, which, out);
    }
}

typedef struct {
    qv_digest *keys;
    size_t n, cap;
} keyset;

static qv_status collect(keyset *ks, qv_cache *c, const char *name) {
    qv_iter *it;
    qv_status st = qv_cache_query(&it, c, name);
    if (st) return st;
    size_t more = qv_iter_count(it);
    if (ks->n + more > ks->cap) {
        size_t cap = ks->n + more;
        qv_digest *keys = realloc(ks->keys, (cap ? cap : 1) * sizeof *keys);
        if (!keys) {
            qv_iter_free(it);
            return qv__nomem();
        }
        ks->keys = keys;
        ks->cap = cap;
    }
    while (ks->n < ks->cap && qv_iter_next(it, &ks->keys[ks->n]) == QV_OK) ks->n++;
    qv_iter_free(it);
    return QV_OK;
}

static int digest_cmp(const void *a, const void *b) {
    return memcmp(a, b, sizeof(qv_digest));
}

static qv_status stack_query(qv_iter **out, qv_cache *c, const char *name) {
    stack *s = c->tier_state;
    keyset ks = {NULL, 0, 0};
    qv_status st = collect(&ks, s->local, name);
    if (st) {
        free(ks.keys);
        return st;
    }
    qv_status rs = collect(&ks, s->remote, name);
    if (rs == QV_ENOMEM) {
        free(ks.keys);
        return rs;
    }
    if (rs) {
        remote_failed(c, s, rs);
        flush_warnings(c, s, 0);
    } else {
        remote_answered(s);
    }
    /* a key in both tiers is one call */
    if (ks.n) qsort(ks.keys, ks.n, sizeof *ks.keys, digest_cmp);
    size_t n = 0;
    for (size_t i = 0; i < ks.n; i++)
        if (!n || memcmp(&ks.keys[n - 1], &ks.keys[i], sizeof *ks.keys)) ks.keys[n++] = ks.keys[i];
    return qv__iter_new(out, ks.keys, n);
}

static qv_status stack_sync(qv_cache *c) {
    stack *s = c->tier_state;
    drain(s);
    qv_status st = qv_cache_sync(s->local);
    qv_status rs = qv_cache_sync(s->remote);
    if (rs) remote_failed(c, s, rs);
    flush_warnings(c, s, 1);
    return st;
}

/* Closing waits for the queue: every store queued is attempted, and while
 * the remote is down only one waits for its timeout (run_batch). */
static void stack_close(qv_cache *c) {
    stack *s = c->tier_state;
    stack_after_fork(s);
    pthread_mutex_lock(&s->lock);
    int started = s->started;
    s->stopping = 1;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->lock);
    if (started) pthread_join(s->thread, NULL);
    flush_warnings(c, s, 1);
    qv_cache_close(s->local);
    qv_cache_close(s->remote);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static const qv_tier_ops stack_ops = {
    stack_contains, stack_get_with, stack_put,  stack_load,  stack_evict,
    stack_stat,     stack_query,    stack_sync, stack_close,
};

/* ---------------------------------------------------------------- public */

qv_status qv_stack_options_init(qv_stack_options *opts, uint32_t version) {
    if (!opts) return qv__error(QV_EINVAL, "qv_stack_options_init: opts is NULL");
    if (version == 0 || version > QV_STACK_OPTIONS_VERSION)
        return qv__error(QV_EINVAL, "qv_stack_options version %u is not supported (1..%d)", version,
                         QV_STACK_OPTIONS_VERSION);
    qv_stack_options d = QV_STACK_OPTIONS_INIT;
    *opts = d;
    opts->version = version;
    return QV_OK;
}

qv_status qv_cache_stack(qv_cache **out, qv_cache *local, qv_cache *remote, const qv_stack_options *opts) {
    if (!out) return qv__error(QV_EINVAL, "qv_cache_stack: out is NULL");
    *out = NULL;
    if (!local || !remote) return qv__error(QV_EINVAL, "qv_cache_stack: NULL cache");
    if (local == remote) return qv__error(QV_EINVAL, "qv_cache_stack: local and remote are the same cache");
    qv_stack_options o = QV_STACK_OPTIONS_INIT;
    if (opts) {
        if (opts->version == 0 || opts->version > QV_STACK_OPTIONS_VERSION)
            return qv__error(QV_EINVAL, "qv_stack_options version %u is not supported (1..%d)", opts->version,
                             QV_STACK_OPTIONS_VERSION);
        o = *opts;
    }
    if (o.flags & ~QV_STACK_ASYNC) return qv__error(QV_EINVAL, "qv_cache_stack: unknown flags 0x%x", o.flags);
    stack *s = calloc(1, sizeof *s);
    if (!s) return qv__nomem();
    const char *lp = qv_cache_path(local), *rp = qv_cache_path(remote);
    size_t len = strlen(lp) + strlen(rp) + sizeof "stack(, )";
    char *path = malloc(len);
    if (!path) {
        free(s);
        return qv__nomem();
    }
    snprintf(path, len, "stack(%s, %s)", lp, rp);
    s->flags = o.flags;
    s->queue_limit = o.queue_limit ? o.queue_limit : DEFAULT_QUEUE_LIMIT;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->idle, NULL);
    atomic_init(&s->fork_gen, qv__fork_generation());
    atomic_init(&s->fixing_gen, qv__fork_generation());
    qv_cache *c;
    qv_status st = qv__cache_new_tier(&c, path, local->inline_limit, &stack_ops, s);
    free(path);
    if (st) {
        pthread_cond_destroy(&s->work);
        pthread_cond_destroy(&s->idle);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return st;
    }
    s->local = qv__cache_retain(local);
    s->remote = qv__cache_retain(remote);
    /* A remote that is down now is met here, and warned of once, rather
     * than by the first call. */
    qv_digest probe;
    memset(&probe, 0, sizeof probe);
    qv_status rs = qv_cache_contains(remote, &probe);
    if (rs != QV_OK && rs != QV_NOTFOUND) {
        remote_failed(c, s, rs);
        flush_warnings(c, s, 0);
    }
    *out = c;
    return QV_OK;
}

int qv__stack_tiers(qv_cache *cache, qv_cache **local, qv_cache **remote) {
    if (!cache || cache->tier != &stack_ops) {
        *local = *remote = NULL;
        return 0;
    }
    stack *s = cache->tier_state;
    *local = s->local;
    *remote = s->remote;
    return 1;
}
