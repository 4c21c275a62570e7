#include <stdlib.h>
#include <string.h>

#include "_cgo_export.h"
#include "shim.h"

qv_status quiver_go_fn_new(qv_fn **out, const char *name, const char *version, uintptr_t handle) {
    /* cgo declares exported functions without const: the same ABI. */
    return qv_fn_new(out, name, version, (qv_fn_callback)quiverGoBody, (void *)handle, quiverGoRelease);
}

/* A Go body runs on the thread that called qv_fn_call, which the wrapper keeps
 * locked, so a thread-local carries its message back to that call. */
static _Thread_local char *body_error;

void quiver_go_body_failed(const char *message) {
    free(body_error);
    body_error = strdup(message);
}

char *quiver_go_body_error(void) {
    char *m = body_error;
    body_error = NULL;
    return m;
}

/* The context of the Memo.Call running on this thread (a cgo.Handle, 0 when
 * none), for the body it runs: the body runs on the same locked thread. */
static _Thread_local uintptr_t call_state;

uintptr_t quiver_go_call_swap(uintptr_t state) {
    uintptr_t old = call_state;
    call_state = state;
    return old;
}

uintptr_t quiver_go_call_current(void) { return call_state; }
