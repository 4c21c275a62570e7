/* Keyed batches: every task's outcome is kept under its key, a failure is
 * just another outcome, and progress is reported at a bounded rate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

typedef struct {
    char *key;
    qv_fn *fn;
    qv_value *args, *kwargs;
    qv_future *future;
    qv_value *result;
    qv_status status;
    char *message;
} entry;

struct qv_batch {
    entry *entries;
    size_t n, cap;
    int ran;
};

qv_status qv_batch_new(qv_batch **out) {
    if (!out) return qv__error(QV_EINVAL, "qv_batch_new: out is NULL");
    *out = calloc(1, sizeof **out);
    return *out ? QV_OK : qv__nomem();
}

void qv_batch_free(qv_batch *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n; i++) {
        entry *e = &b->entries[i];
        free(e->key);
        qv_fn_free(e->fn);
        qv_value_free(e->args);
        qv_value_free(e->kwargs);
        qv_future_free(e->future);
        qv_value_free(e->result);
        free(e->message);
    }
    free(b->entries);
    free(b);
}

size_t qv_batch_count(const qv_batch *b) {
    return b ? b->n : 0;
}

static entry *find(qv_batch *b, const char *key) {
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->entries[i].key, key) == 0) return &b->entries[i];
    return NULL;
}

qv_status qv_batch_add(qv_batch *b, const char *key, qv_fn *fn, const qv_value *args, const qv_value *kwargs) {
    if (!b || !key || !fn || !args) return qv__error(QV_EINVAL, "qv_batch_add: NULL argument");
    if (b->ran) return qv__error(QV_EMISUSE, "qv_batch_add: the batch already ran (batches are one shot)");
    if (find(b, key)) return qv__error(QV_EINVAL, "qv_batch_add: key '%s' is already in the batch", key);
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        entry *e = realloc(b->entries, cap * sizeof *e);
        if (!e) return qv__nomem();
        b->entries = e;
        b->cap = cap;
    }
    entry e = {0};
    qv_status st = QV_OK;
    if (!(e.key = strdup(key))) st = qv__nomem();
    if (!st) st = qv_value_clone(&e.args, args);
    if (!st && kwargs) st = qv_value_clone(&e.kwargs, kwargs);
    if (st) {
        free(e.key);
        qv_value_free(e.args);
        return st;
    }
    e.fn = qv_fn_retain(fn);
    b->entries[b->n++] = e;
    return QV_OK;
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void keep_error(entry *e, qv_status st) {
    e->status = st;
    e->message = strdup(qv_errmsg());
}

qv_status qv_batch_run(qv_batch *b, qv_executor *ex, qv_progress_fn progress, double interval_s, void *userdata) {
    if (!b) return qv__error(QV_EINVAL, "qv_batch_run: batch is NULL");
    if (b->ran) return qv__error(QV_EMISUSE, "qv_batch_run: the batch already ran (batches are one shot)");
    b->ran = 1;
    /* Report at most every interval, never more often than every millisecond
     * (a shorter wait would spin the waiting thread); an interval that is not
     * positive, not a number or beyond any wait means the final report only. */
    int periodic = progress && interval_s > 0 && interval_s < 1e9;
    if (periodic && interval_s < 1e-3) interval_s = 1e-3;
    int64_t wait_ns = periodic ? (int64_t)(interval_s * 1e9) : -1;
    double t0 = seconds(), last = t0;
    uint64_t done = 0, failed = 0, total = b->n;
    for (size_t i = 0; i < b->n; i++) {
        entry *e = &b->entries[i];
        qv_status st = ex ? qv_executor_submit_call(&e->future, ex, e->fn, e->args, e->kwargs)
                          : qv_fn_call_kw(e->fn, e->args, e->kwargs, &e->result);
        if (st) {
            keep_error(e, st);
            failed++;
        } else if (!ex) {
            done++;
        }
        if (periodic && seconds() - last >= interval_s) {
            last = seconds();
            progress(done, failed, total, last - t0, userdata);
        }
    }
    /* collect in order; while waiting, report progress at the interval */
    for (size_t i = 0; ex && i < b->n; i++) {
        entry *e = &b->entries[i];
        if (!e->future) continue;
        while (qv_future_wait(e->future, wait_ns) == QV_ETIMEOUT) {
            uint64_t finished = 0;
            for (size_t j = i; j < b->n; j++)
                if (b->entries[j].future && qv_future_state(b->entries[j].future) != QV_FUTURE_PENDING) finished++;
            last = seconds();
            progress(done + finished, failed, total, last - t0, userdata);
        }
        qv_status st = qv_future_value(e->future, &e->result);
        if (st) {
            keep_error(e, st);
            failed++;
        } else {
            done++;
        }
    }
    if (progress) progress(done, failed, total, seconds() - t0, userdata);
    return QV_OK;
}

qv_status qv_batch_result(qv_batch *b, const char *key, qv_value **result) {
    if (!result) return qv__error(QV_EINVAL, "qv_batch_result: result is NULL");
    *result = NULL;
    if (!b || !key) return qv__error(QV_EINVAL, "qv_batch_result: NULL argument");
    entry *e = find(b, key);
    if (!e) return QV_NOTFOUND;
    if (!b->ran) return qv__error(QV_EMISUSE, "qv_batch_result: the batch has not run");
    if (e->status) return qv__error(e->status, "%s", e->message ? e->message : qv_strerror(e->status));
    return qv_value_clone(result, e->result);
}
