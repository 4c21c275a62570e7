/* Futures: one completion, any number of waiters and callbacks, each
 * callback run exactly once whether it was registered before or after the
 * completion (the registration and the completion meet under one lock).
 *
 * fork(): a child may inherit a future's lock held, or its condition with
 * waiters, by threads that do not exist there; the first use in the child
 * makes both anew. A task's future whose task was submitted before the fork
 * is never completed in the child (the task is the parent's), so waiting on
 * it there fails at once instead of hanging. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

typedef struct callback {
    struct callback *next;
    qv_future_cb cb;
    void *userdata;
    void (*destroy)(void *userdata);
} callback;

struct qv_future {
    _Atomic int refs;
    pthread_mutex_t lock;
    pthread_cond_t done;
    _Atomic int state;
    uint8_t *result;
    size_t result_len;
    qv_status error;
    char *message;
    callback *callbacks; /* newest first; run oldest first */
    _Atomic uint64_t lock_gen; /* the fork generation lock and done were made in */
    int of_task;               /* completed by an executor's job ... */
    uint64_t task_gen;         /* ... submitted in this fork generation */
};

static pthread_mutex_t fork_fix_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fix_prepare(void) {
    pthread_mutex_lock(&fork_fix_lock);
}
static void fix_parent(void) {
    pthread_mutex_unlock(&fork_fix_lock);
}
static void fix_child(void) {
    pthread_mutex_init(&fork_fix_lock, NULL);
}
static void install_fork_handlers(void) {
    pthread_atfork(fix_prepare, fix_parent, fix_child);
}

static void init_sync(qv_future *f) {
    pthread_mutex_init(&f->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&f->done, &attr);
    pthread_condattr_destroy(&attr);
}

/* Before taking f's lock. One load when no fork() happened since f was made. */
static void after_fork(qv_future *f) {
    uint64_t gen = qv__fork_generation();
    if (QV_LIKELY(atomic_load_explicit(&f->lock_gen, memory_order_acquire) == gen)) return;
    pthread_mutex_lock(&fork_fix_lock);
    if (atomic_load_explicit(&f->lock_gen, memory_order_relaxed) != gen) {
        init_sync(f);
        atomic_store_explicit(&f->lock_gen, gen, memory_order_release);
    }
    pthread_mutex_unlock(&fork_fix_lock);
}

/* A pending future nobody in this process will complete. */
static qv_status orphaned(const qv_future *f) {
    if (f->of_task && f->task_gen != qv__fork_generation())
        return qv__error(QV_EMISUSE, "the future's task was submitted before fork(): it runs in the parent "
                                     "process, and this process will never see it complete");
    return QV_OK;
}

void qv__future_of_task(qv_future *f) {
    f->of_task = 1;
    f->task_gen = qv__fork_generation();
}

qv_status qv_future_new(qv_future **out) {
    if (!out) return qv__error(QV_EINVAL, "qv_future_new: out is NULL");
    qv_future *f = calloc(1, sizeof *f);
    if (!f) {
        *out = NULL;
        return qv__nomem();
    }
    atomic_init(&f->refs, 1);
    atomic_init(&f->state, QV_FUTURE_PENDING);
    pthread_once(&fork_once, install_fork_handlers);
    atomic_init(&f->lock_gen, qv__fork_generation());
    init_sync(f);
    *out = f;
    return QV_OK;
}

qv_future *qv_future_retain(qv_future *f) {
    if (f) atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void qv_future_free(qv_future *f) {
    if (!f || atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) return;
    /* callbacks of a future nobody completed never run, but their userdata
     * is still released */
    for (callback *c = f->callbacks, *next; c; c = next) {
        next = c->next;
        if (c->destroy) c->destroy(c->userdata);
        free(c);
    }
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->done);
    free(f->result);
    free(f->message);
    free(f);
}

static void run_callbacks(qv_future *f, callback *list) {
    /* reverse: registration order */
    callback *ordered = NULL;
    while (list) {
        callback *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    for (callback *c = ordered, *next; c; c = next) {
        next = c->next;
        c->cb(f, c->userdata);
        if (c->destroy) c->destroy(c->userdata);
        free(c);
    }
}

/* Move f from pending to state; the caller has filled in the outcome fields
 * it owns only if this succeeds, so they are passed in. */
static qv_status complete(qv_future *f, int state, uint8_t *result, size_t len, qv_status error, char *message) {
    after_fork(f);
    pthread_mutex_lock(&f->lock);
    if (atomic_load(&f->state) != QV_FUTURE_PENDING) {
        pthread_mutex_unlock(&f->lock);
        free(result);
        free(message);
        return qv__error(QV_EMISUSE, "the future was already complete");
    }
    f->result = result;
    f->result_len = len;
    f->error = error;
    f->message = message;
    callback *list = f->callbacks;
    f->callbacks = NULL;
    atomic_store(&f->state, state);
    pthread_cond_broadcast(&f->done);
    /* Keep f alive through its callbacks even if one drops the last
     * reference the caller relied on. */
    qv_future_retain(f);
    pthread_mutex_unlock(&f->lock);
    run_callbacks(f, list);
    qv_future_free(f);
    return QV_OK;
}

qv_status qv_future_set_result(qv_future *f, const void *data, size_t len) {
    if (!f || (!data && len)) return qv__error(QV_EINVAL, "qv_future_set_result: NULL argument");
    qv_status st = qv_validate(data, len);
    return st ? st : qv__future_set_trusted(f, data, len);
}

qv_status qv__future_set_trusted(qv_future *f, const void *data, size_t len) {
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return qv__nomem();
    memcpy(copy, data, len);
    return complete(f, QV_FUTURE_DONE, copy, len, QV_OK, NULL);
}

qv_status qv_future_set_value(qv_future *f, const qv_value *v) {
    if (!f || !v) return qv__error(QV_EINVAL, "qv_future_set_value: NULL argument");
    void *data;
    size_t len;
    qv_status st = qv_value_encode(v, &data, &len);
    if (st) return st;
    return complete(f, QV_FUTURE_DONE, data, len, QV_OK, NULL);
}

qv_status qv_future_set_error(qv_future *f, qv_status status, const char *message) {
    if (!f) return qv__error(QV_EINVAL, "qv_future_set_error: future is NULL");
    if (status >= 0) return qv__error(QV_EINVAL, "qv_future_set_error: status %d is not an error", status);
    char *copy = strdup(message ? message : qv_strerror(status));
    if (!copy) return qv__nomem();
    return complete(f, QV_FUTURE_FAILED, NULL, 0, status, copy);
}

qv_status qv_future_cancel(qv_future *f) {
    if (!f) return qv__error(QV_EINVAL, "qv_future_cancel: future is NULL");
    char *message = strdup("cancelled");
    if (!message) return qv__nomem();
    return complete(f, QV_FUTURE_CANCELLED, NULL, 0, QV_ECANCELLED, message);
}

int qv_future_state(const qv_future *f) {
    return f ? atomic_load(&((qv_future *)f)->state) : QV_FUTURE_PENDING;
}

qv_status qv_future_wait(qv_future *f, int64_t timeout_ns) {
    if (!f) return qv__error(QV_EINVAL, "qv_future_wait: future is NULL");
    if (atomic_load(&f->state) != QV_FUTURE_PENDING) return QV_OK;
    qv_status st = orphaned(f);
    if (st) return st;
    after_fork(f);
    struct timespec deadline;
    if (timeout_ns >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += timeout_ns / 1000000000;
        deadline.tv_nsec += timeout_ns % 1000000000;
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
    }
    pthread_mutex_lock(&f->lock);
    int rc = 0;
    while (atomic_load(&f->state) == QV_FUTURE_PENDING && rc != ETIMEDOUT)
        rc = timeout_ns >= 0 ? pthread_cond_timedwait(&f->done, &f->lock, &deadline) : pthread_cond_wait(&f->done, &f->lock);
    int pending = atomic_load(&f->state) == QV_FUTURE_PENDING;
    pthread_mutex_unlock(&f->lock);
    if (pending) return qv__error(QV_ETIMEOUT, "the future did not complete within %.3f s", timeout_ns / 1e9);
    return QV_OK;
}

qv_status qv_future_result(qv_future *f, const void **data, size_t *len) {
    if (!f || !data || !len) return qv__error(QV_EINVAL, "qv_future_result: NULL argument");
    switch (atomic_load(&f->state)) {
    case QV_FUTURE_DONE:
        *data = f->result;
        *len = f->result_len;
        return QV_OK;
    case QV_FUTURE_PENDING:
        return qv__error(QV_EMISUSE, "the future is still pending");
    default:
        return qv__error(f->error, "%s", f->message);
    }
}

qv_status qv_future_value(qv_future *f, qv_value **out) {
    if (!out) return qv__error(QV_EINVAL, "qv_future_value: out is NULL");
    *out = NULL;
    const void *data;
    size_t len;
    qv_status st = qv_future_result(f, &data, &len);
    return st ? st : qv_value_decode(out, data, len);
}

qv_status qv_future_on_done(qv_future *f, qv_future_cb cb, void *userdata, void (*destroy)(void *userdata)) {
    callback *c = NULL;
    qv_status st = QV_OK;
    if (!f || !cb) st = qv__error(QV_EINVAL, "qv_future_on_done: NULL argument");
    else if (!(c = malloc(sizeof *c))) st = qv__nomem();
    if (st) {
        if (destroy) destroy(userdata);
        return st;
    }
    c->cb = cb;
    c->userdata = userdata;
    c->destroy = destroy;
    after_fork(f);
    pthread_mutex_lock(&f->lock);
    if (atomic_load(&f->state) == QV_FUTURE_PENDING) {
        if ((st = orphaned(f))) {
            pthread_mutex_unlock(&f->lock);
            free(c);
            if (destroy) destroy(userdata);
            return st;
        }
        c->next = f->callbacks;
        f->callbacks = c;
        pthread_mutex_unlock(&f->lock);
        return QV_OK;
    }
    pthread_mutex_unlock(&f->lock);
    c->next = NULL;
    run_callbacks(f, c);
    return QV_OK;
}
