/* The thread's active cache and metadata, and snapshots of them that other
 * threads can enter. A context is immutable once made, so a capture is a new
 * reference to the top of the stack, not a copy. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

struct qv_ctx {
    _Atomic int refs;
    qv_cache *cache; /* a reference of its own */
    uint8_t *meta;   /* encoding of a map, or NULL */
    size_t meta_len;
};

typedef struct {
    qv_ctx **frames;
    int depth, cap;
} ctx_stack;

static pthread_key_t stack_key;
static pthread_once_t stack_once = PTHREAD_ONCE_INIT;

/* A thread that exits with contexts pushed still releases them. */
static void free_stack(void *p) {
    ctx_stack *s = p;
    while (s->depth > 0) qv_ctx_free(s->frames[--s->depth]);
    free(s->frames);
    free(s);
}

static void make_key(void) {
    pthread_key_create(&stack_key, free_stack);
}

static ctx_stack *thread_stack(int create) {
    pthread_once(&stack_once, make_key);
    ctx_stack *s = pthread_getspecific(stack_key);
    if (!s && create && (s = calloc(1, sizeof *s))) pthread_setspecific(stack_key, s);
    return s;
}

/* ------------------------------------------------------------ the default */

/* DESIGN section 9, as ccache does it: QUIVER_CACHE, else the user's cache
 * directory, with a size limit, so that every process of every language on
 * the machine shares one cache with no configuration. */

#define DEFAULT_MAX_BYTES (UINT64_C(5) << 30)

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static qv_cache *default_cache;
static qv_status default_status;
static char default_error[512];

/* QUIVER_MAX_SIZE: bytes, or a count of K, M, G or T (binary multiples, as
 * ccache's max_size; "KiB" spelled out is accepted too). 0 is no limit. */
static qv_status parse_max_size(const char *text, uint64_t *out) {
    const char *p = text;
    uint64_t n = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (n > (UINT64_MAX - 9) / 10) goto bad;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (!digits) goto bad;
    int shift = 0;
    if (*p) {
        const char *units = "KMGT", *u = strchr(units, *p >= 'a' ? *p - 'a' + 'A' : *p);
        if (!u || !*u) goto bad;
        shift = 10 * (int)(u - units + 1);
        p++;
        if (!strcmp(p, "iB")) p += 2;
        if (*p) goto bad;
    }
    if (n > UINT64_MAX >> shift) goto bad;
    *out = n << shift;
    return QV_OK;
bad:
    return qv__error(QV_EINVAL,
                     "QUIVER_MAX_SIZE=%s is not a size: give bytes, or a number with K, M, G or T (binary "
                     "multiples: 5G is 5 GiB); 0 for no limit",
                     text);
}

/* Make the directories of path that are missing, private to the user: the
 * Python binding trusts pickles only from caches nobody else can write, and
 * the XDG spec asks the same of a cache home it has to create. Directories
 * that exist keep their modes: a shared cache is the user's choice. */
static qv_status make_private_dirs(const char *path) {
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof buf) return qv__error(QV_EINVAL, "the default cache path is too long: %s", path);
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p) continue;
        char c = *p;
        *p = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return qv__error(QV_EIO, "cannot create the default cache directory %s: %s", buf, strerror(errno));
        if (!(*p = c)) return QV_OK;
    }
}

/* Where the default lives: *path is QUIVER_CACHE, or a malloc'd path in *owned. */
static qv_status default_path(const char **path, char **owned) {
    const char *env = getenv("QUIVER_CACHE");
    *owned = NULL;
    if (env && *env) {
        /* a URL opens the remote tier; any other scheme is refused, never
         * taken for a directory */
        if (strstr(env, "://") && strncmp(env, "redis://", 8) && strncmp(env, "unix://", 7))
            return qv__error(QV_EINVAL,
                             "QUIVER_CACHE=%s: not a cache; give a directory, :memory:, "
                             "redis://host[:port][/db] or unix:///path/to/redis.sock",
                             env);
        *path = env;
        return QV_OK;
    }
    /* The XDG spec: a relative XDG_CACHE_HOME is invalid and ignored. */
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int use_xdg = xdg && xdg[0] == '/';
    if (!use_xdg && !(home && *home))
        return qv__error(QV_EINVAL, "no place for the default cache: neither HOME nor XDG_CACHE_HOME is set; "
                                    "set QUIVER_CACHE to a directory, or to :memory: for a private cache");
    const char *base = use_xdg ? xdg : home, *leaf = use_xdg ? "/quiver" : "/.cache/quiver";
    size_t n = strlen(base) + strlen(leaf) + 1;
    if (!(*owned = malloc(n))) return qv__nomem();
    snprintf(*owned, n, "%s%s", base, leaf);
    *path = *owned;
    return QV_OK;
}

static qv_status open_default_cache(void) {
    qv_cache_options opts = QV_CACHE_OPTIONS_INIT;
    const char *size = getenv("QUIVER_MAX_SIZE");
    int sized = size && *size;
    qv_status st = sized ? parse_max_size(size, &opts.max_bytes) : QV_OK;
    const char *path;
    char *owned;
    if (st || (st = default_path(&path, &owned))) return st;
    int memory = !strcmp(path, ":memory:"), url = strstr(path, "://") != NULL;
    /* a memory cache keeps its own default limit unless QUIVER_MAX_SIZE says;
     * a remote tier's size is the server's (maxmemory) */
    if (!sized && !memory) opts.max_bytes = DEFAULT_MAX_BYTES;
    if (!memory && !url && (st = make_private_dirs(path))) {
        free(owned);
        return st;
    }
    st = qv_cache_open(&default_cache, path, &opts);
    free(owned);
    return st;
}

static void open_default(void) {
    if ((default_status = open_default_cache())) {
        size_t n = strlen(qv_errmsg());
        if (n >= sizeof default_error) n = sizeof default_error - 1;
        memcpy(default_error, qv_errmsg(), n);
        default_error[n] = 0;
    }
}

qv_status qv_cache_default(qv_cache **out) {
    if (!out) return qv__error(QV_EINVAL, "qv_cache_default: out is NULL");
    pthread_once(&default_once, open_default);
    *out = default_cache;
    if (default_status) return qv__error(default_status, "the default cache: %s", default_error);
    return QV_OK;
}

/* ------------------------------------------------------------------ frames */

static qv_status new_ctx(qv_ctx **out, qv_cache *cache, const uint8_t *meta, size_t meta_len) {
    qv_ctx *c = calloc(1, sizeof *c);
    if (!c) return qv__nomem();
    if (meta && !(c->meta = malloc(meta_len))) {
        free(c);
        return qv__nomem();
    }
    if (meta) memcpy(c->meta, meta, meta_len);
    c->meta_len = meta ? meta_len : 0;
    c->cache = qv__cache_retain(cache);
    atomic_init(&c->refs, 1);
    *out = c;
    return QV_OK;
}

static qv_ctx *top(void) {
    ctx_stack *s = thread_stack(0);
    return s && s->depth ? s->frames[s->depth - 1] : NULL;
}

static qv_status push_frame(qv_ctx *ctx) {
    ctx_stack *s = thread_stack(1);
    if (!s) return qv__nomem();
    if (s->depth == s->cap) {
        int cap = s->cap ? s->cap * 2 : 8;
        qv_ctx **f = realloc(s->frames, cap * sizeof *f);
        if (!f) return qv__nomem();
        s->frames = f;
        s->cap = cap;
    }
    s->frames[s->depth++] = ctx;
    return QV_OK;
}

/* outer's entries whose keys inner lacks, then inner's: inner keys win. */
static qv_status merge_meta(const uint8_t *outer, size_t outer_len, const qv_value *inner, void **out, size_t *len) {
    qv_value *merged, *o = NULL;
    qv_status st = qv_value_new_map(&merged);
    if (st) return st;
    if (outer && (st = qv_value_decode(&o, outer, outer_len))) goto done;
    for (size_t i = 0; o && i < qv_value_count(o); i++) {
        const qv_value *k = qv_value_map_key(o, i);
        int shadowed = 0;
        for (size_t j = 0; !shadowed && j < qv_value_count(inner); j++)
            shadowed = qv_value_compare(k, qv_value_map_key(inner, j)) == 0;
        if (shadowed) continue;
        qv_value *kc, *vc;
        if ((st = qv_value_clone(&kc, k))) goto done;
        if ((st = qv_value_clone(&vc, qv_value_map_value(o, i)))) {
            qv_value_free(kc);
            goto done;
        }
        if ((st = qv_value_map_set(merged, kc, vc))) goto done;
    }
    for (size_t j = 0; j < qv_value_count(inner); j++) {
        qv_value *kc, *vc;
        if ((st = qv_value_clone(&kc, qv_value_map_key(inner, j)))) goto done;
        if ((st = qv_value_clone(&vc, qv_value_map_value(inner, j)))) {
            qv_value_free(kc);
            goto done;
        }
        if ((st = qv_value_map_set(merged, kc, vc))) goto done;
    }
    st = qv_value_encode(merged, out, len);
done:
    qv_value_free(o);
    qv_value_free(merged);
    return st;
}

qv_status qv_ctx_push(qv_cache *cache, const qv_value *meta) {
    if (meta && qv_value_type(meta) != QV_TYPE_MAP) return qv__error(QV_ETYPE, "qv_ctx_push: meta must be a map");
    qv_ctx *outer = top();
    qv_status st;
    if (!cache) {
        if (outer) cache = outer->cache;
        else if ((st = qv_cache_default(&cache))) return st;
    }
    const uint8_t *m = outer ? outer->meta : NULL;
    size_t mlen = outer ? outer->meta_len : 0;
    void *merged = NULL;
    if (meta && qv_value_count(meta)) {
        if ((st = merge_meta(m, mlen, meta, &merged, &mlen))) return st;
        m = merged;
    }
    qv_ctx *ctx;
    st = new_ctx(&ctx, cache, m, mlen);
    qv_free(merged);
    if (st) return st;
    if ((st = push_frame(ctx))) qv_ctx_free(ctx);
    return st;
}

qv_status qv_ctx_pop(void) {
    ctx_stack *s = thread_stack(0);
    if (!s || s->depth == 0)
        return qv__error(QV_EMISUSE, "qv_ctx_pop: this thread has no context pushed (push and pop on the same thread)");
    qv_ctx_free(s->frames[--s->depth]);
    return QV_OK;
}

int qv_ctx_depth(void) {
    ctx_stack *s = thread_stack(0);
    return s ? s->depth : 0;
}

/* ------------------------------------------------- a binding's own context */

typedef struct {
    qv_ctx_provider fn;
    void *userdata;
    void (*destroy)(void *userdata);
} provider;

static _Atomic(provider *) the_provider;

qv_status qv_ctx_set_provider(qv_ctx_provider fn, void *userdata, void (*destroy)(void *userdata)) {
    provider *p = NULL;
    if (fn && !(p = malloc(sizeof *p))) {
        if (destroy) destroy(userdata);
        return qv__nomem();
    }
    if (p) *p = (provider){fn, userdata, destroy};
    provider *old = atomic_exchange(&the_provider, p);
    if (old && old->destroy) old->destroy(old->userdata);
    free(old);
    return QV_OK;
}

/* What the binding running this thread says is active, as a new reference;
 * NULL when there is no provider or it says "none". */
static qv_ctx *provided(void) {
    provider *p = atomic_load_explicit(&the_provider, memory_order_acquire);
    return p ? p->fn(p->userdata) : NULL;
}

qv_status qv_ctx_new(qv_ctx **out, qv_cache *cache, const void *meta, size_t meta_len) {
    if (!out) return qv__error(QV_EINVAL, "qv_ctx_new: out is NULL");
    *out = NULL;
    if (!cache) return qv__error(QV_EINVAL, "qv_ctx_new: cache is NULL");
    if (meta) {
        qv_decoder dec;
        qv_type t;
        qv_decoder_reset(&dec, meta, meta_len);
        qv_status st = qv_validate(meta, meta_len);
        if (!st && (st = qv_decoder_next(&dec, &t)) == QV_OK && t != QV_TYPE_MAP) st = QV_ETYPE;
        if (st) return qv__error(st == QV_ETYPE ? QV_ETYPE : QV_EDECODE, "qv_ctx_new: meta must be the canonical encoding of a map");
    }
    return new_ctx(out, cache, meta, meta_len);
}

qv_status qv__ctx_hold(qv_ctx **held, qv_cache **cache, const void **meta, size_t *meta_len) {
    *held = NULL;
    qv_ctx *ctx = top();
    if (!ctx && (*held = ctx = provided()) == NULL) {
        *meta = NULL;
        *meta_len = 0;
        return qv_cache_default(cache);
    }
    *cache = ctx->cache;
    *meta = ctx->meta;
    *meta_len = ctx->meta_len;
    return QV_OK;
}

qv_status qv_ctx_current(qv_cache **cache, const void **meta, size_t *meta_len) {
    qv_ctx *ctx = top();
    if (meta) *meta = ctx ? ctx->meta : NULL;
    if (meta_len) *meta_len = ctx ? ctx->meta_len : 0;
    if (!cache) return QV_OK;
    if (ctx) {
        *cache = ctx->cache;
        return QV_OK;
    }
    return qv_cache_default(cache);
}

qv_status qv_ctx_capture(qv_ctx **out) {
    if (!out) return qv__error(QV_EINVAL, "qv_ctx_capture: out is NULL");
    *out = NULL;
    qv_ctx *ctx = top();
    if (ctx) {
        *out = qv_ctx_retain(ctx);
        return QV_OK;
    }
    if ((*out = provided())) return QV_OK;
    qv_cache *cache;
    qv_status st = qv_cache_default(&cache);
    return st ? st : new_ctx(out, cache, NULL, 0);
}

qv_ctx *qv_ctx_retain(qv_ctx *ctx) {
    if (ctx) atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
    return ctx;
}

void qv_ctx_free(qv_ctx *ctx) {
    if (!ctx || atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1) return;
    qv_cache_close(ctx->cache);
    free(ctx->meta);
    free(ctx);
}

qv_status qv_ctx_enter(qv_ctx *ctx) {
    if (!ctx) return qv__error(QV_EINVAL, "qv_ctx_enter: ctx is NULL");
    qv_status st = push_frame(qv_ctx_retain(ctx));
    if (st) qv_ctx_free(ctx);
    return st;
}

qv_status qv_ctx_run(qv_ctx *ctx, qv_status (*fn)(void *userdata), void *userdata) {
    if (!fn) return qv__error(QV_EINVAL, "qv_ctx_run: fn is NULL");
    qv_status st = qv_ctx_enter(ctx);
    if (st) return st;
    int depth = qv_ctx_depth();
    st = fn(userdata);
    /* whatever fn left pushed goes too: the thread gets back what it had */
    while (qv_ctx_depth() >= depth) qv_ctx_pop();
    return st;
}
