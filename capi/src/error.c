/* Status codes and the thread-local last error message. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local char last_message[1024];

static const struct {
    const char *name;
    const char *text;
} codes[] = {
    {"QV_OK", "success"},
    {"QV_NOTFOUND", "not found"},
    {"QV_EINVAL", "invalid argument"},
    {"QV_ENOMEM", "out of memory"},
    {"QV_EDECODE", "input is not canonical CBOR"},
    {"QV_EENCODE", "value cannot be encoded canonically"},
    {"QV_ESTORE", "storage engine error"},
    {"QV_EFULL", "cache is full"},
    {"QV_EREADONLY", "cache is read-only"},
    {"QV_ECORRUPT", "stored entry is corrupt"},
    {"QV_ECLOSED", "handle is closed"},
    {"QV_EMISUSE", "API misuse"},
    {"QV_EIO", "operating system error"},
    {"QV_ERANGE", "number out of range"},
    {"QV_ETYPE", "wrong type"},
    {"QV_ETIMEOUT", "timed out"},
    {"QV_ECANCELLED", "cancelled"},
    {"QV_EFAILED", "failed"},
};

#define NCODES ((int)(sizeof codes / sizeof codes[0]))

const char *qv_strerror(qv_status status) {
    if (status > 0 || -status >= NCODES) return "unknown status";
    return codes[-status].text;
}

const char *qv_status_name(qv_status status) {
    if (status > 0 || -status >= NCODES) return "QV_EUNKNOWN";
    return codes[-status].name;
}

const char *qv_errmsg(void) {
    return last_message[0] ? last_message : "no error";
}

qv_status qv__error(qv_status status, const char *fmt, ...) {
    /* Callers may pass the current message as an argument: format aside. */
    char buf[sizeof last_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(last_message, buf, sizeof buf);
    return status;
}

qv_status qv_error_set(qv_status status, const char *message) {
    if (!message) last_message[0] = 0;
    else snprintf(last_message, sizeof last_message, "%s", message);
    return status;
}

int qv__error_is_set(void) {
    return last_message[0] != 0;
}

qv_status qv__nomem(void) {
    return qv__error(QV_ENOMEM, "out of memory");
}

void qv_free(void *p) {
    free(p);
}

const char *qv_version(void) {
    return QV_VERSION_STRING;
}

/* ------------------------------------------------------------- warnings */

/* The handler is reference-counted so that it can be replaced while another
 * thread is inside it: the old one is destroyed when its last caller returns,
 * and no lock of ours is held while it runs. */
typedef struct warning_handler {
    qv_warning_cb cb;
    void *userdata;
    void (*destroy)(void *);
    _Atomic int refs;
} warning_handler;

static pthread_mutex_t handler_lock = PTHREAD_MUTEX_INITIALIZER;
static warning_handler *handler;

static void handler_release(warning_handler *h) {
    if (!h || atomic_fetch_sub(&h->refs, 1) != 1) return;
    if (h->destroy) h->destroy(h->userdata);
    free(h);
}

void qv_set_warning_handler(qv_warning_cb cb, void *userdata, void (*destroy)(void *userdata)) {
    warning_handler *h = NULL;
    if (cb && (h = malloc(sizeof *h))) {
        h->cb = cb;
        h->userdata = userdata;
        h->destroy = destroy;
        atomic_init(&h->refs, 1);
    }
    pthread_mutex_lock(&handler_lock);
    warning_handler *old = handler;
    handler = h;
    pthread_mutex_unlock(&handler_lock);
    handler_release(old);
}

void qv__warn(const char *fmt, ...) {
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&handler_lock);
    warning_handler *h = handler;
    if (h) atomic_fetch_add(&h->refs, 1);
    pthread_mutex_unlock(&handler_lock);
    if (!h) {
        fprintf(stderr, "quiver: warning: %s\n", message);
        return;
    }
    h->cb(message, h->userdata);
    handler_release(h);
}
