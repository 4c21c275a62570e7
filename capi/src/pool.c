/* quiver's thread pool: one locked ring of jobs, workers started on demand up
 * to the target, retiring after an idle timeout and coming back when work
 * arrives. Retired workers are joined by whoever next starts or stops one.
 *
 * fork(): every pool's lock is held across it (pthread_atfork), so a child
 * inherits each pool in a consistent state; the child then forgets the
 * parent's workers (threads that do not exist there) and the parent's queued
 * jobs (the parent runs them), and starts workers of its own on demand. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_IDLE_MS 30000

typedef struct {
    qv_job_fn run;
    void *job;
} slot;

typedef struct worker {
    struct worker *next;
    pthread_t thread;
    int exited; /* the thread has left: join it */
    struct qv_pool *pool;
} worker;

struct qv_pool {
    _Atomic int refs;
    struct qv_pool *next_live, *prev_live; /* every pool, for fork() */
    pthread_mutex_t lock;
    pthread_cond_t work;  /* workers wait for jobs */
    pthread_cond_t space; /* submitters wait for room in a bounded queue */
    pthread_cond_t gone;  /* shutdown waits for workers to exit */
    slot *ring;
    size_t cap, head, count;
    uint32_t target, alive, idle, queue_bound, idle_ms;
    uint64_t completed, started;
    int shutdown;
    worker *workers;
    void (*initializer)(void *);
    void *userdata;
    void (*destroy)(void *);
    qv_executor *executor;
};

qv_status qv_pool_options_init(qv_pool_options *opts, uint32_t version) {
    if (!opts) return qv__error(QV_EINVAL, "qv_pool_options_init: opts is NULL");
    if (version == 0 || version > QV_POOL_OPTIONS_VERSION)
        return qv__error(QV_EINVAL, "qv_pool_options version %u is not supported (1..%d)", version,
                         QV_POOL_OPTIONS_VERSION);
    qv_pool_options d = QV_POOL_OPTIONS_INIT;
    *opts = d;
    opts->version = version;
    return QV_OK;
}

static uint32_t cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (uint32_t)n : 1;
}

/* Join workers that have exited. Called with the lock held. */
static void reap(qv_pool *p) {
    for (worker **w = &p->workers; *w;) {
        if ((*w)->exited) {
            worker *dead = *w;
            *w = dead->next;
            pthread_join(dead->thread, NULL);
            free(dead);
        } else {
            w = &(*w)->next;
        }
    }
}

static void *worker_main(void *arg) {
    worker *self = arg;
    qv_pool *p = self->pool;
    if (p->initializer) p->initializer(p->userdata);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->count == 0 && !p->shutdown && p->alive <= p->target) {
            p->idle++;
            struct timespec deadline;
            clock_gettime(CLOCK_MONOTONIC, &deadline);
            deadline.tv_sec += p->idle_ms / 1000;
            deadline.tv_nsec += (long)(p->idle_ms % 1000) * 1000000;
            if (deadline.tv_nsec >= 1000000000) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000;
            }
            int rc = pthread_cond_timedwait(&p->work, &p->lock, &deadline);
            p->idle--;
            if (rc == ETIMEDOUT && p->count == 0) goto retire;
        }
        if (p->alive > p->target || (p->count == 0 && p->shutdown)) goto retire;
        slot s = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        if (p->queue_bound) pthread_cond_signal(&p->space);
        pthread_mutex_unlock(&p->lock);
        s.run(s.job, 0);
        pthread_mutex_lock(&p->lock);
        p->completed++;
    }
retire:
    p->alive--;
    self->exited = 1;
    pthread_cond_broadcast(&p->gone);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Called with the lock held. */
static qv_status spawn(qv_pool *p) {
    reap(p);
    worker *w = calloc(1, sizeof *w);
    if (!w) return qv__nomem();
    w->pool = p;
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc) {
        free(w);
        return qv__error(QV_EIO, "cannot start a pool worker: %s", strerror(rc));
    }
    w->next = p->workers;
    p->workers = w;
    p->alive++;
    p->started++;
    return QV_OK;
}

/* ------------------------------------------------------------------ fork */

/* Lock order: shared_lock, live_lock, then each pool's lock. */
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static qv_pool *shared;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static qv_pool *live;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void init_conds(qv_pool *p) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->work, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&p->space, NULL);
    pthread_cond_init(&p->gone, NULL);
}

static void fork_prepare(void) {
    pthread_mutex_lock(&shared_lock);
    pthread_mutex_lock(&live_lock);
    for (qv_pool *p = live; p; p = p->next_live) pthread_mutex_lock(&p->lock);
}

static void fork_parent(void) {
    for (qv_pool *p = live; p; p = p->next_live) pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&live_lock);
    pthread_mutex_unlock(&shared_lock);
}

/* The only thread of the child. Workers that were waiting are still counted
 * in the condition variables, which would make the child's first signal wait
 * for them: everything is made anew. Jobs queued or running at the fork are
 * dropped without a call: their userdata belongs to the parent, which runs
 * them (a future of such a job refuses to be waited on in the child). When a
 * task forked, its thread goes on in the child as that pool's one worker. */
static void fork_child(void) {
    for (qv_pool *p = live; p; p = p->next_live) {
        worker *self = NULL;
        for (worker *w = p->workers, *next; w; w = next) {
            next = w->next;
            if (!w->exited && pthread_equal(w->thread, pthread_self())) self = w;
            else free(w);
        }
        if (self) self->next = NULL;
        p->workers = self;
        p->alive = self ? 1 : 0;
        p->idle = 0;
        p->head = p->count = 0;
        init_conds(p);
        pthread_mutex_init(&p->lock, NULL);
    }
    pthread_mutex_init(&live_lock, NULL);
    pthread_mutex_init(&shared_lock, NULL);
}

static void install_fork_handlers(void) {
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ------------------------------------------------------------------ pool */

static qv_status grow_ring(qv_pool *p) {
    size_t cap = p->cap ? p->cap * 2 : 1024;
    slot *r = malloc(cap * sizeof *r);
    if (!r) return qv__nomem();
    for (size_t i = 0; i < p->count; i++) r[i] = p->ring[(p->head + i) % p->cap];
    free(p->ring);
    p->ring = r;
    p->cap = cap;
    p->head = 0;
    return QV_OK;
}

static qv_status pool_submit(qv_job_fn run, void *job, void *userdata) {
    qv_pool *p = userdata;
    pthread_mutex_lock(&p->lock);
    while (p->queue_bound && p->count >= p->queue_bound && !p->shutdown) pthread_cond_wait(&p->space, &p->lock);
    qv_status st = QV_OK;
    if (p->shutdown) st = qv__error(QV_EMISUSE, "the pool is shut down");
    else if (p->count == p->cap) st = grow_ring(p);
    if (st) {
        pthread_mutex_unlock(&p->lock);
        return st;
    }
    p->ring[(p->head + p->count) % p->cap] = (slot){run, job};
    p->count++;
    /* wake an idle worker, or start one when none is idle and there is room */
    if (p->idle > 0) pthread_cond_signal(&p->work);
    else if (p->alive < p->target && (st = spawn(p)) && p->alive == 0) {
        p->count--; /* nobody would ever run it */
        pthread_mutex_unlock(&p->lock);
        return st;
    }
    pthread_mutex_unlock(&p->lock);
    return QV_OK;
}

qv_status qv_pool_new(qv_pool **out, const qv_pool_options *opts) {
    if (!out) {
        if (opts && opts->destroy) opts->destroy(opts->userdata); /* a failed registration still releases */
        return qv__error(QV_EINVAL, "qv_pool_new: out is NULL");
    }
    *out = NULL;
    qv_pool_options o = QV_POOL_OPTIONS_INIT;
    if (opts) {
        if (opts->version == 0 || opts->version > QV_POOL_OPTIONS_VERSION) {
            if (opts->destroy) opts->destroy(opts->userdata);
            return qv__error(QV_EINVAL, "qv_pool_options version %u is not supported", opts->version);
        }
        o = *opts;
    }
    qv_pool *p = calloc(1, sizeof *p);
    if (!p) {
        if (o.destroy) o.destroy(o.userdata);
        return qv__nomem();
    }
    atomic_init(&p->refs, 1);
    pthread_mutex_init(&p->lock, NULL);
    init_conds(p);
    p->target = o.workers ? o.workers : cpus();
    p->idle_ms = o.idle_timeout_ms ? o.idle_timeout_ms : DEFAULT_IDLE_MS;
    p->queue_bound = o.queue_bound;
    p->initializer = o.initializer;
    p->userdata = o.userdata;
    p->destroy = o.destroy;
    pthread_once(&fork_once, install_fork_handlers);
    pthread_mutex_lock(&live_lock);
    p->next_live = live;
    if (live) live->prev_live = p;
    live = p;
    pthread_mutex_unlock(&live_lock);
    qv_status st = qv_executor_new(&p->executor, pool_submit, p, NULL);
    if (st) {
        p->destroy = NULL;
        qv_pool_free(p);
        if (o.destroy) o.destroy(o.userdata);
        return st;
    }
    *out = p;
    return QV_OK;
}

qv_pool *qv_pool_retain(qv_pool *pool) {
    if (pool) atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
    return pool;
}

qv_executor *qv_pool_executor(qv_pool *pool) {
    return pool ? pool->executor : NULL;
}

qv_status qv_pool_resize(qv_pool *pool, uint32_t workers) {
    if (!pool) return qv__error(QV_EINVAL, "qv_pool_resize: pool is NULL");
    pthread_mutex_lock(&pool->lock);
    pool->target = workers ? workers : cpus();
    qv_status st = QV_OK;
    /* start what queued work needs now; extra workers retire as they notice */
    while (!st && !pool->shutdown && pool->alive < pool->target && pool->count > pool->idle) st = spawn(pool);
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->lock);
    return st;
}

qv_status qv_pool_stat(qv_pool *pool, int which, uint64_t *out) {
    if (!pool || !out) return qv__error(QV_EINVAL, "qv_pool_stat: NULL argument");
    pthread_mutex_lock(&pool->lock);
    qv_status st = QV_OK;
    switch (which) {
    case QV_POOL_STAT_WORKERS: *out = pool->alive; break;
    case QV_POOL_STAT_TARGET: *out = pool->target; break;
    case QV_POOL_STAT_QUEUED: *out = pool->count; break;
    case QV_POOL_STAT_COMPLETED: *out = pool->completed; break;
    case QV_POOL_STAT_STARTED: *out = pool->started; break;
    default: st = qv__error(QV_EINVAL, "unknown pool statistic %d", which);
    }
    pthread_mutex_unlock(&pool->lock);
    return st;
}

qv_status qv_pool_shutdown(qv_pool *pool, int cancel_pending) {
    if (!pool) return qv__error(QV_EINVAL, "qv_pool_shutdown: pool is NULL");
    pthread_mutex_lock(&pool->lock);
    pool->shutdown = 1;
    slot *dropped = NULL;
    size_t ndropped = 0;
    if (cancel_pending && pool->count) {
        dropped = malloc(pool->count * sizeof *dropped);
        for (; dropped && pool->count; pool->count--) {
            dropped[ndropped++] = pool->ring[pool->head];
            pool->head = (pool->head + 1) % pool->cap;
        }
    }
    /* queued work still needs hands when it is to run */
    if (!cancel_pending && pool->count && pool->alive == 0 && pool->target) spawn(pool);
    pthread_cond_broadcast(&pool->work);
    pthread_cond_broadcast(&pool->space);
    pthread_mutex_unlock(&pool->lock);
    for (size_t i = 0; i < ndropped; i++) dropped[i].run(dropped[i].job, 1);
    free(dropped);
    pthread_mutex_lock(&pool->lock);
    while (pool->alive > 0) pthread_cond_wait(&pool->gone, &pool->lock);
    reap(pool);
    pthread_mutex_unlock(&pool->lock);
    return QV_OK;
}

void qv_pool_free(qv_pool *pool) {
    if (!pool || atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_lock(&live_lock);
    if (pool->prev_live) pool->prev_live->next_live = pool->next_live;
    else live = pool->next_live;
    if (pool->next_live) pool->next_live->prev_live = pool->prev_live;
    pthread_mutex_unlock(&live_lock);
    qv_pool_shutdown(pool, 0);
    if (pool->destroy) pool->destroy(pool->userdata);
    qv_executor_free(pool->executor);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->work);
    pthread_cond_destroy(&pool->space);
    pthread_cond_destroy(&pool->gone);
    free(pool->ring);
    free(pool);
}

/* ------------------------------------------------------- the shared pool */

qv_status qv_pool_shared(qv_pool **out, uint32_t workers, int restart) {
    if (!out) return qv__error(QV_EINVAL, "qv_pool_shared: out is NULL");
    *out = NULL;
    pthread_once(&fork_once, install_fork_handlers);
    pthread_mutex_lock(&shared_lock);
    qv_status st = QV_OK;
    qv_pool *replaced = NULL;
    if (shared && restart) {
        replaced = shared; /* current holders keep it until they let go */
        shared = NULL;
    }
    if (!shared) {
        qv_pool_options o = QV_POOL_OPTIONS_INIT;
        o.workers = workers;
        st = qv_pool_new(&shared, &o);
    } else if (workers && workers != shared->target) {
        st = qv_pool_resize(shared, workers);
    }
    if (!st) *out = qv_pool_retain(shared);
    pthread_mutex_unlock(&shared_lock);
    /* Outside the lock: the last reference waits for the queued work, whose
     * tasks may fork (fork_prepare takes shared_lock) or ask for the pool. */
    qv_pool_free(replaced);
    return st;
}
