/* The executor interface, memoized submission, and wrapping: a wrapped
 * executor answers cache hits itself, so a hit never reaches the pool. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct qv_executor {
    _Atomic int refs;
    qv_submit_fn submit;
    void *userdata;
    void (*destroy)(void *userdata);
    qv_executor *inner; /* set for a wrapping executor */
};

qv_status qv_executor_new(qv_executor **out, qv_submit_fn submit, void *userdata, void (*destroy)(void *userdata)) {
    qv_executor *ex = NULL;
    qv_status st = QV_OK;
    if (!out || !submit) st = qv__error(QV_EINVAL, "qv_executor_new: out and submit are required");
    else if (!(ex = calloc(1, sizeof *ex))) st = qv__nomem();
    if (st) {
        if (out) *out = NULL;
        if (destroy) destroy(userdata);
        return st;
    }
    atomic_init(&ex->refs, 1);
    ex->submit = submit;
    ex->userdata = userdata;
    ex->destroy = destroy;
    *out = ex;
    return QV_OK;
}

qv_executor *qv_executor_retain(qv_executor *ex) {
    if (ex) atomic_fetch_add_explicit(&ex->refs, 1, memory_order_relaxed);
    return ex;
}

void qv_executor_free(qv_executor *ex) {
    if (!ex || atomic_fetch_sub_explicit(&ex->refs, 1, memory_order_acq_rel) != 1) return;
    if (ex->destroy) ex->destroy(ex->userdata);
    qv_executor_free(ex->inner);
    free(ex);
}

qv_status qv_executor_wrap(qv_executor **out, qv_executor *ex) {
    if (!out || !ex) return qv__error(QV_EINVAL, "qv_executor_wrap: NULL argument");
    if (ex->inner) {
        *out = qv_executor_retain(ex); /* wrapping twice is wrapping once */
        return QV_OK;
    }
    qv_executor *w = calloc(1, sizeof *w);
    if (!w) {
        *out = NULL;
        return qv__nomem();
    }
    atomic_init(&w->refs, 1);
    w->inner = qv_executor_retain(ex);
    *out = w;
    return QV_OK;
}

qv_status qv_executor_post(qv_executor *ex, qv_job_fn run, void *job) {
    if (!ex || !run) return qv__error(QV_EINVAL, "qv_executor_post: NULL argument");
    while (ex->inner) ex = ex->inner;
    return ex->submit(run, job, ex->userdata);
}

typedef struct {
    qv_future *future;
    qv_task_fn task;
    void *userdata;
    void (*destroy)(void *userdata);
} job;

static void free_job(job *j) {
    if (j->destroy) j->destroy(j->userdata);
    qv_future_free(j->future);
    free(j);
}

static void run_job(void *p, int cancelled) {
    job *j = p;
    if (cancelled) {
        qv_future_cancel(j->future);
    } else {
        qv_status st = j->task(j->future, j->userdata);
        if (qv_future_state(j->future) == QV_FUTURE_PENDING) {
            if (st) qv_future_set_error(j->future, st, qv_errmsg());
            else qv_future_set_error(j->future, QV_EFAILED, "the task returned without completing its future");
        }
    }
    free_job(j);
}

qv_status qv_executor_submit(qv_future **out, qv_executor *ex, qv_task_fn task, void *userdata,
                             void (*destroy)(void *userdata)) {
    qv_status st = QV_OK;
    job *j = NULL;
    qv_future *f = NULL;
    if (out) *out = NULL;
    if (!out || !ex || !task) st = qv__error(QV_EINVAL, "qv_executor_submit: NULL argument");
    else if ((st = qv_future_new(&f)) == QV_OK && !(j = malloc(sizeof *j))) st = qv__nomem();
    if (st) {
        qv_future_free(f);
        if (destroy) destroy(userdata);
        return st;
    }
    qv__future_of_task(f);
    *j = (job){qv_future_retain(f), task, userdata, destroy};
    /* plain tasks pass straight through a wrapper */
    if ((st = qv_executor_post(ex, run_job, j))) {
        free_job(j);
        qv_future_free(f);
        return st;
    }
    *out = f;
    return QV_OK;
}

/* ------------------------------------------------------ memoized calls */

typedef struct {
    qv_ctx *ctx;
    qv_fn *fn;
    qv_value *args, *kwargs;
} call_task;

static void free_call_task(void *p) {
    call_task *t = p;
    qv_ctx_free(t->ctx);
    qv_fn_free(t->fn);
    qv_value_free(t->args);
    qv_value_free(t->kwargs);
    free(t);
}

typedef struct {
    call_task *task;
    qv_value *result;
} call_run;

static qv_status call_body(void *p) {
    call_run *r = p;
    return qv_fn_call_kw(r->task->fn, r->task->args, r->task->kwargs, &r->result);
}

/* On the worker: the submitter's context, then the memoized call (which
 * looks up again, so a result another worker stored meanwhile is a hit). */
static qv_status run_call(qv_future *future, void *p) {
    call_run r = {p, NULL};
    qv_status st = qv_ctx_run(r.task->ctx, call_body, &r);
    if (!st) st = qv_future_set_value(future, r.result);
    qv_value_free(r.result);
    return st;
}

static qv_status complete_from_cache(const void *data, size_t len, void *future) {
    return qv__future_set_trusted(future, data, len);
}

qv_status qv_executor_submit_call(qv_future **out, qv_executor *ex, qv_fn *fn, const qv_value *args,
                                  const qv_value *kwargs) {
    if (!out) return qv__error(QV_EINVAL, "qv_executor_submit_call: out is NULL");
    *out = NULL;
    if (!ex || !fn) return qv__error(QV_EINVAL, "qv_executor_submit_call: NULL argument");
    qv_status st;
    if (ex->inner) {
        /* a hit never reaches the pool */
        qv_cache *cache;
        qv_digest key;
        qv_future *f;
        if ((st = qv_ctx_current(&cache, NULL, NULL)) || (st = qv_fn_digest(&key, fn, args, kwargs))) return st;
        if ((st = qv_future_new(&f))) return st;
        /* the stored bytes go straight into the future: no tree, no re-encoding */
        if ((st = qv__fn_lookup_with(fn, cache, &key, complete_from_cache, f)) == QV_OK) {
            *out = f;
            return QV_OK;
        }
        qv_future_free(f);
        if (st != QV_NOTFOUND) return st;
    } else if (qv_value_type(args) != QV_TYPE_LIST || (kwargs && qv_value_type(kwargs) != QV_TYPE_MAP)) {
        return qv__error(QV_ETYPE, "args must be a list and kwargs a map");
    }
    call_task *t = calloc(1, sizeof *t);
    if (!t) return qv__nomem();
    t->fn = qv_fn_retain(fn);
    if ((st = qv_ctx_capture(&t->ctx)) || (st = qv_value_clone(&t->args, args)) ||
        (kwargs && (st = qv_value_clone(&t->kwargs, kwargs)))) {
        free_call_task(t);
        return st;
    }
    return qv_executor_submit(out, ex, run_call, t, free_call_task);
}
