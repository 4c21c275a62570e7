/* C glue the Go wrapper needs: cgo cannot take the address of an exported Go
 * function in Go code, nor keep a message per OS thread. */
#ifndef QUIVER_GO_SHIM_H
#define QUIVER_GO_SHIM_H

#include <stdint.h>

#include "quiver.h"

/* qv_fn_new with the Go trampoline as body and a cgo.Handle as userdata. */
qv_status quiver_go_fn_new(qv_fn **out, const char *name, const char *version, uintptr_t handle);
/* The message of a Go body that failed on this thread (copied), and taking it
 * back (the caller frees it with free; NULL when there is none). */
void quiver_go_body_failed(const char *message);
char *quiver_go_body_error(void);
/* The Memo.Call state of this thread: swap in a new one (returning the old),
 * and read it. */
uintptr_t quiver_go_call_swap(uintptr_t state);
uintptr_t quiver_go_call_current(void);

#endif
