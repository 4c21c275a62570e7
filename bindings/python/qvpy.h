/* The Python binding's C, shared by its files: the types, hooks and helpers
 * the codec, the cache handle, the memo and the module's functions use
 * across files, and that python.swg's typemaps call. Never installed. */
#ifndef QVPY_H
#define QVPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quiver.h"

#define QVPY_NSTATUS 18 /* quiver status codes 0 .. -17 */

/* Encoders are per thread: encoding can call back into Python, which may let
 * another thread run. A nested use on the same thread (a hook that encodes)
 * gets a fresh encoder. */
typedef struct {
    qv_encoder *enc[2];
    int busy[2];
    qv_decoder *dec;
    int dec_busy;
    uint8_t *buf; /* hit results copied out of the read transaction */
    size_t buf_cap;
    /* The call whose stored result qvpy_lookup just read as a miss, with a
     * warning: the call runtime's second look at it (under the lease) says
     * nothing more, so a refused pickle is one warning, not two. */
    qv_digest refused;
    int has_refused;
} qvpy_tls;

typedef struct {
    PyObject_HEAD
    qv_cache *c;     /* NULL: closed, or a cache stack handled in Python */
    int own;         /* close c when done (not for the process-wide default) */
    int closing;     /* close() asked while calls were in flight */
    int trusted;     /* pickles in this cache may be loaded */
    int stack;       /* a cache stack: layers handled in Python */
    uint64_t corrupt_seen; /* QV_STAT_CORRUPT when last warned about */
    Py_ssize_t users;/* calls in flight on c; changed only with the GIL held */
    PyObject *dict;
    PyObject *weakrefs;
} qvpy_cache;

/* errors.c: quiver.Error and a subclass per status */
extern PyObject *qvpy_Error;
extern PyObject *qvpy_errors[QVPY_NSTATUS];
PyObject *qvpy_raise(qv_status st);
PyObject *qvpy_raise_msg(qv_status st, const char *msg);
void qvpy_make_errors(PyObject *m);

/* codec.c: per-thread encoders, the hooks Python registers, the value mapping */
extern pthread_key_t qvpy_tls_key;
void qvpy_tls_free(void *p);
qvpy_tls *qvpy_tls_get(void);
qv_encoder *qvpy_enc_acquire(int slot);
void qvpy_enc_release(int slot, qv_encoder *e);
extern PyObject *qvpy_encode_hook;
extern PyObject *qvpy_tag_hook;
extern PyObject *qvpy_tag_type;
extern PyObject *qvpy_ndarray_type;
extern PyObject *qvpy_default_getter;
extern PyObject *qvpy_active_var;
extern PyObject *qvpy_sig_miss;
extern PyObject *qvpy_sig_uncached;
extern PyObject *qvpy_sig_slow;
extern PyObject *qvpy_default_cache;
extern PyObject *qvpy_warning;
extern PyObject *qvpy_untrusted; /* the refusal to unpickle from a cache others could write */
int qvpy_enc_fail(qv_status st);
int qvpy_encode(qv_encoder *enc, PyObject *o);
int qvpy_encode_as(qv_encoder *enc, PyObject *o, int keyed);
extern __thread int qvpy_keying_paths;
PyObject *qvpy_decode_bytes(const void *data, size_t len, int trusted);

/* cache.c: CacheHandle, the active cache and the context handed to C, hits */
extern PyObject *qvpy_handle_class;
qv_cache *qvpy_cache_enter(PyObject *o);
void qvpy_cache_leave(PyObject *o);
extern PyTypeObject qvpy_cache_type;
PyObject *qvpy_cache_wrap(qv_cache *c, int own);
extern PyObject *qvpy_meta_getter;
qv_ctx *qvpy_provide(void *unused);
PyObject *qvpy_active_cache(void);
PyObject *qvpy_lookup(qvpy_cache *ch, const qv_digest *key);

/* memo.c: MemoBase */
extern PyObject *qvpy_nodefault;
int qvpy_store(PyObject *cache, const void *call, size_t call_len, const void *result, size_t result_len,
               long long start_ns, long long duration_ns, PyObject *meta);
extern PyTypeObject qvpy_memo_type;

/* module.c: the module's functions, its initialisation, trees for the typemaps */
int qvpy_digest_from(qv_digest *out, PyObject *o);
void qvpy_module_init(PyObject *m);
int qvpy_value_from_py(qv_value **out, PyObject *o);
PyObject *qvpy_value_to_py(const qv_value *v);

#endif
