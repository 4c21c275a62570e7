/* The module's functions (encode, decode, digests, cache maintenance, hooks)
 * and its initialisation. */
#include "qvpy.h"

#include <stdatomic.h>

/* -------------------------------------------------------- module natives */

static PyObject *qvpy_n_encode(PyObject *self, PyObject *args) {
    PyObject *o;
    if (!PyArg_ParseTuple(args, "O", &o)) return NULL;
    qv_encoder *enc = qvpy_enc_acquire(1);
    if (!enc) return NULL;
    qv_encoder_reset(enc);
    PyObject *r = NULL;
    if (!qvpy_encode_as(enc, o, 1)) {
        const void *data;
        size_t len;
        qv_status st = qv_encoder_finish(enc, &data, &len);
        r = st ? qvpy_raise(st) : PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    }
    qvpy_enc_release(1, enc);
    return r;
}

static PyObject *qvpy_n_decode(PyObject *self, PyObject *args) {
    Py_buffer view;
    int trusted = 1;
    if (!PyArg_ParseTuple(args, "y*|p", &view, &trusted)) return NULL;
    PyObject *r = qvpy_decode_bytes(view.buf, (size_t)view.len, trusted);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *qvpy_n_digest(PyObject *self, PyObject *args) {
    PyObject *o;
    int raw = 0;
    if (!PyArg_ParseTuple(args, "O|p", &o, &raw)) return NULL;
    qv_encoder *enc = qvpy_enc_acquire(1);
    if (!enc) return NULL;
    qv_encoder_reset_for_digest(enc);
    PyObject *r = NULL;
    if (!qvpy_encode_as(enc, o, 1)) {
        qv_digest d;
        qv_status st = qv_encoder_digest(enc, &d);
        if (st) {
            qvpy_raise(st);
        } else if (raw) {
            r = PyBytes_FromStringAndSize((const char *)d.bytes, 16);
        } else {
            char hex[33];
            qv_digest_hex(&d, hex);
            r = PyUnicode_FromStringAndSize(hex, 32);
        }
    }
    qvpy_enc_release(1, enc);
    return r;
}

/* [QV_CALL_MARKER, name, version, args, kwargs] of a call already bound:
 * args a sequence of positional values, kwargs a dict. */
static int qvpy_encode_bound_call(qv_encoder *enc, const char *name, Py_ssize_t nn, const char *version,
                                  Py_ssize_t vn, PyObject *args, PyObject *kwargs) {
    PyObject *seq = PySequence_Fast(args, "args must be a sequence");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int r = -1;
    qv_status st;
    if ((st = qv_encoder_call_head(enc, name, (size_t)nn, version, (size_t)vn)) ||
        (st = qv_encoder_list(enc, (uint64_t)n))) {
        qvpy_raise(st);
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (qvpy_encode(enc, PySequence_Fast_GET_ITEM(seq, i))) goto out;
    r = qvpy_encode(enc, kwargs);
out:
    Py_DECREF(seq);
    return r;
}

/* call_encoding(name, version, args, kwargs): the call's canonical encoding. */
static PyObject *qvpy_n_call_encoding(PyObject *self, PyObject *a) {
    const char *name, *version;
    Py_ssize_t nn, vn;
    PyObject *args, *kwargs;
    if (!PyArg_ParseTuple(a, "s#z#OO!", &name, &nn, &version, &vn, &args, &PyDict_Type, &kwargs)) return NULL;
    qv_encoder *enc = qvpy_enc_acquire(0);
    if (!enc) return NULL;
    qv_encoder_reset(enc);
    PyObject *r = NULL;
    if (!qvpy_encode_bound_call(enc, name, nn, version, vn, args, kwargs)) {
        const void *data;
        size_t len;
        qv_status st = qv_encoder_finish(enc, &data, &len);
        r = st ? qvpy_raise(st) : PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    }
    qvpy_enc_release(0, enc);
    return r;
}

int qvpy_digest_from(qv_digest *out, PyObject *o) {
    if (PyUnicode_Check(o)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (!s) return -1;
        qv_status st = qv_digest_parse(out, s, (size_t)n);
        if (st) {
            qvpy_raise_msg(QV_EINVAL, "a digest is 32 hex characters or 16 bytes");
            return -1;
        }
        return 0;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE)) {
        PyErr_Clear();
        qvpy_raise_msg(QV_EINVAL, "a digest is 32 hex characters or 16 bytes");
        return -1;
    }
    int ok = view.len == 16;
    if (ok) memcpy(out->bytes, view.buf, 16);
    PyBuffer_Release(&view);
    if (!ok) {
        qvpy_raise_msg(QV_EINVAL, "a digest is 32 hex characters or 16 bytes");
        return -1;
    }
    return 0;
}

/* cache_get(cache, digest): the stored result decoded, or the miss signal. */
static PyObject *qvpy_n_cache_get(PyObject *self, PyObject *a) {
    PyObject *cache, *key;
    qv_digest d;
    if (!PyArg_ParseTuple(a, "OO", &cache, &key) || qvpy_digest_from(&d, key)) return NULL;
    if (!qvpy_cache_enter(cache)) return NULL;
    PyObject *r = qvpy_lookup((qvpy_cache *)cache, &d);
    qvpy_cache_leave(cache);
    return r;
}

/* cache_get_raw(cache, digest): the stored result's encoding, or None. */
static PyObject *qvpy_n_cache_get_raw(PyObject *self, PyObject *a) {
    PyObject *cache, *key;
    qv_digest d;
    if (!PyArg_ParseTuple(a, "OO", &cache, &key) || qvpy_digest_from(&d, key)) return NULL;
    qv_cache *c = qvpy_cache_enter(cache);
    if (!c) return NULL;
    void *data = NULL;
    size_t len = 0;
    qv_status st;
    Py_BEGIN_ALLOW_THREADS
    st = qv_cache_get(c, &d, &data, &len);
    Py_END_ALLOW_THREADS
    qvpy_cache_leave(cache);
    if (st == QV_NOTFOUND) Py_RETURN_NONE;
    if (st) return qvpy_raise(st);
    PyObject *r = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    qv_free(data);
    return r;
}

/* cache_store_raw(cache, call, result, start_ns, duration_ns, meta): store
 * encodings as they are (result: an encoding; meta: an encoded map or None). */
static PyObject *qvpy_n_cache_store_raw(PyObject *self, PyObject *a) {
    PyObject *cache, *meta;
    Py_buffer call, result;
    long long start_ns, duration_ns;
    if (!PyArg_ParseTuple(a, "Oy*y*LLO", &cache, &call, &result, &start_ns, &duration_ns, &meta)) return NULL;
    int r = qvpy_store(cache, call.buf, (size_t)call.len, result.buf, (size_t)result.len, start_ns, duration_ns, meta);
    PyBuffer_Release(&call);
    PyBuffer_Release(&result);
    if (r) return NULL;
    Py_RETURN_NONE;
}

/* cache_query(cache, name or None): the digests (hex) of the stored calls. */
static PyObject *qvpy_n_cache_query(PyObject *self, PyObject *a) {
    PyObject *cache;
    const char *name;
    if (!PyArg_ParseTuple(a, "Oz", &cache, &name)) return NULL;
    qv_cache *c = qvpy_cache_enter(cache);
    if (!c) return NULL;
    qv_iter *it = NULL;
    qv_status st;
    Py_BEGIN_ALLOW_THREADS
    st = qv_cache_query(&it, c, name);
    Py_END_ALLOW_THREADS
    qvpy_cache_leave(cache);
    if (st) return qvpy_raise(st);
    PyObject *list = PyList_New(0);
    qv_digest d;
    while (list && (st = qv_iter_next(it, &d)) == QV_OK) {
        char hex[33];
        qv_digest_hex(&d, hex);
        PyObject *s = PyUnicode_FromStringAndSize(hex, 32);
        if (!s || PyList_Append(list, s)) Py_CLEAR(list);
        Py_XDECREF(s);
    }
    qv_iter_free(it);
    if (list && st != QV_NOTFOUND) {
        Py_DECREF(list);
        return qvpy_raise(st);
    }
    return list;
}

/* cache_load(cache, digest): the call record as a dict (KeyError on a miss). */
static PyObject *qvpy_n_cache_load(PyObject *self, PyObject *a) {
    PyObject *cache, *key;
    qv_digest d;
    if (!PyArg_ParseTuple(a, "OO", &cache, &key) || qvpy_digest_from(&d, key)) return NULL;
    qv_cache *c = qvpy_cache_enter(cache);
    if (!c) return NULL;
    qv_value *rec = NULL;
    void *data = NULL;
    size_t len = 0;
    qv_status st;
    Py_BEGIN_ALLOW_THREADS
    st = qv_cache_load(c, &d, &rec);
    if (!st) st = qv_value_encode(rec, &data, &len);
    qv_value_free(rec);
    Py_END_ALLOW_THREADS
    int trusted = ((qvpy_cache *)cache)->trusted;
    qvpy_cache_leave(cache);
    if (st) return qvpy_raise(st);
    PyObject *r = qvpy_decode_bytes(data, len, trusted);
    qv_free(data);
    return r;
}

static PyObject *qvpy_n_cache_open(PyObject *self, PyObject *a) {
    const char *path, *secret = NULL;
    Py_ssize_t secret_len = 0;
    unsigned int durability, flags, timeout_ms = 0;
    unsigned long long max_bytes, map_size;
    if (!PyArg_ParseTuple(a, "sIIKK|Iz#", &path, &durability, &flags, &max_bytes, &map_size, &timeout_ms, &secret,
                          &secret_len))
        return NULL;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.durability = durability;
    o.flags = flags;
    o.max_bytes = max_bytes;
    o.map_size = map_size;
    o.timeout_ms = timeout_ms;
    o.secret = secret;
    o.secret_len = (size_t)secret_len;
    qv_cache *c = NULL;
    qv_status st;
    Py_BEGIN_ALLOW_THREADS
    st = qv_cache_open(&c, path, &o);
    Py_END_ALLOW_THREADS
    if (st) return qvpy_raise(st);
    return qvpy_cache_wrap(c, 1);
}

static atomic_int qvpy_exiting;

/* warnings_to_stderr(): from now on the core's warnings are its stderr
 * line. Registered with atexit: a thread of the core (a stack's queue) that
 * asked for the GIL once finalization had begun would never get it back,
 * with whatever it was doing unfinished, so no warning asks for it after
 * the interpreter starts to exit. */
static PyObject *qvpy_n_warnings_to_stderr(PyObject *self, PyObject *unused) {
    atomic_store(&qvpy_exiting, 1);
    Py_RETURN_NONE;
}

/* cache_stack(local, remote, flags, queue_limit): the core's stack of two
 * caches, a cache of its own that retains both. */
static PyObject *qvpy_n_cache_stack(PyObject *self, PyObject *a) {
    PyObject *local, *remote;
    unsigned int flags, queue_limit;
    if (!PyArg_ParseTuple(a, "OOII", &local, &remote, &flags, &queue_limit)) return NULL;
    qv_cache *lc = qvpy_cache_enter(local);
    if (!lc) return NULL;
    qv_cache *rc = qvpy_cache_enter(remote);
    if (!rc) {
        qvpy_cache_leave(local);
        return NULL;
    }
    qv_stack_options o = QV_STACK_OPTIONS_INIT;
    o.flags = flags;
    o.queue_limit = queue_limit;
    qv_cache *c = NULL;
    qv_status st;
    Py_BEGIN_ALLOW_THREADS
    st = qv_cache_stack(&c, lc, rc, &o);
    Py_END_ALLOW_THREADS
    qvpy_cache_leave(remote);
    qvpy_cache_leave(local);
    if (st) return qvpy_raise(st);
    return qvpy_cache_wrap(c, 1);
}

/* A yes-or-no question about a cache, asked of the core. */
static PyObject *cache_says(PyObject *a, int (*question)(const qv_cache *)) {
    PyObject *cache;
    if (!PyArg_ParseTuple(a, "O", &cache)) return NULL;
    qv_cache *c = qvpy_cache_enter(cache);
    if (!c) return NULL;
    int yes = question(c);
    qvpy_cache_leave(cache);
    return PyBool_FromLong(yes);
}

static PyObject *qvpy_n_cache_signed(PyObject *self, PyObject *a) {
    return cache_says(a, qv_cache_signed);
}

static PyObject *qvpy_n_cache_readonly(PyObject *self, PyObject *a) {
    return cache_says(a, qv_cache_readonly);
}

/* The core's warnings (a remote tier down, stores dropped) as QuiverWarning.
 * They come from whichever thread met the problem, a pool's or a stack's
 * queue included, which may never have run Python: the GIL is taken for
 * them. While the interpreter goes away it cannot be, and the core's own
 * stderr line says it instead. An exception pending on this thread is kept,
 * and a warning turned into an error (a filter) is reported as unraisable,
 * since no Python caller is there to receive it. */
static void qvpy_warning_cb(const char *message, void *unused) {
#if PY_VERSION_HEX >= 0x030D0000
    int finalizing = !Py_IsInitialized() || Py_IsFinalizing();
#else
    int finalizing = !Py_IsInitialized() || _Py_IsFinalizing();
#endif
    if (finalizing || atomic_load(&qvpy_exiting) || !qvpy_warning) {
        fprintf(stderr, "quiver: warning: %s\n", message);
        return;
    }
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyErr_WarnEx(qvpy_warning, message, 1)) PyErr_WriteUnraisable(qvpy_warning);
    PyErr_Restore(type, value, tb);
    PyGILState_Release(g);
}
static PyObject *qvpy_n_cache_default(PyObject *self, PyObject *unused) {
    qv_cache *c = NULL;
    qv_status st = qv_cache_default(&c);
    if (st) return qvpy_raise(st);
    return qvpy_cache_wrap(c, 0);
}

/* A cache stack's handle: no qv_cache of its own. */
static PyObject *qvpy_n_stack_handle(PyObject *self, PyObject *unused) {
    qvpy_cache *h = (qvpy_cache *)PyObject_CallNoArgs(qvpy_handle_class);
    if (!h) return NULL;
    h->stack = 1;
    h->trusted = 1;
    return (PyObject *)h;
}

static PyObject *qvpy_n_cache_stats(PyObject *self, PyObject *a) {
    PyObject *cache;
    if (!PyArg_ParseTuple(a, "O", &cache)) return NULL;
    qv_cache *c = qvpy_cache_enter(cache);
    if (!c) return NULL;
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < QV_STAT_COUNT; i++) {
        uint64_t v = 0;
        qv_status st;
        Py_BEGIN_ALLOW_THREADS
        st = qv_cache_stat(c, i, &v);
        Py_END_ALLOW_THREADS
        if (st) {
            Py_CLEAR(d);
            qvpy_raise(st);
            break;
        }
        PyObject *n = PyLong_FromUnsignedLongLong(v);
        if (!n || PyDict_SetItemString(d, qv_stat_name(i), n)) Py_CLEAR(d);
        Py_XDECREF(n);
    }
    qvpy_cache_leave(cache);
    return d;
}

static int add_function(const char *name, size_t len, const qv_function_stats *f, void *userdata) {
    PyObject *key = PyUnicode_DecodeUTF8(name, (Py_ssize_t)len, "surrogateescape");
    PyObject *row = key ? Py_BuildValue("{sKsKsKsKsKsK}", "hits", (unsigned long long)f->hits, "misses",
                                        (unsigned long long)f->misses, "stores", (unsigned long long)f->stores,
                                        "evictions", (unsigned long long)f->evictions, "corrupt",
                                        (unsigned long long)f->corrupt, "saved_ns", (unsigned long long)f->saved_ns)
                        : NULL;
    int failed = !row || PyDict_SetItem(userdata, key, row);
    Py_XDECREF(key);
    Py_XDECREF(row);
    return failed;
}

/* The read is short and never waits for a writer, so it runs with the GIL
 * held, which add_function needs. */
static PyObject *qvpy_n_function_stats(PyObject *self, PyObject *a) {
    PyObject *cache;
    if (!PyArg_ParseTuple(a, "O", &cache)) return NULL;
    qv_cache *c = qvpy_cache_enter(cache);
    if (!c) return NULL;
    PyObject *d = PyDict_New();
    qv_status st = d ? qv_cache_function_stats(c, add_function, d) : QV_OK;
    qvpy_cache_leave(cache);
    if (d && (st || PyErr_Occurred())) {
        Py_CLEAR(d);
        if (!PyErr_Occurred()) qvpy_raise(st);
    }
    return d;
}

static PyObject *qvpy_n_set_hooks(PyObject *self, PyObject *a, PyObject *kw) {
    static char *names[] = {"encode", "tag", "tag_type", "default", "active", "miss", "uncached", "slow",
                            "nodefault", "warning", "handle_class", "meta", "untrusted", NULL};
    PyObject *o[13];
    if (!PyArg_ParseTupleAndKeywords(a, kw, "OOOOOOOOOOOOO", names, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6],
                                     &o[7], &o[8], &o[9], &o[10], &o[11], &o[12]))
        return NULL;
    if (!PyContextVar_CheckExact(o[4])) {
        PyErr_SetString(PyExc_TypeError, "active must be a ContextVar");
        return NULL;
    }
    if (!PyType_Check(o[10]) || !PyType_IsSubtype((PyTypeObject *)o[10], &qvpy_cache_type)) {
        PyErr_SetString(PyExc_TypeError, "handle_class must subclass CacheHandle");
        return NULL;
    }
    PyObject **slots[] = {&qvpy_encode_hook, &qvpy_tag_hook, &qvpy_tag_type, &qvpy_default_getter, &qvpy_active_var,
                          &qvpy_sig_miss, &qvpy_sig_uncached, &qvpy_sig_slow, &qvpy_nodefault, &qvpy_warning,
                          &qvpy_handle_class, &qvpy_meta_getter, &qvpy_untrusted};
    for (int i = 0; i < 13; i++) {
        Py_INCREF(o[i]);
        if (i == 10 && *slots[i] == (PyObject *)&qvpy_cache_type) *slots[i] = NULL;
        Py_XSETREF(*slots[i], o[i]);
    }
    Py_CLEAR(qvpy_default_cache);
    Py_RETURN_NONE;
}

static PyObject *qvpy_n_set_ndarray_type(PyObject *self, PyObject *t) {
    if (!PyType_Check(t)) {
        PyErr_SetString(PyExc_TypeError, "expected a type");
        return NULL;
    }
    Py_INCREF(t);
    Py_XSETREF(qvpy_ndarray_type, t);
    Py_RETURN_NONE;
}

/* typed_array_type(tag) -> (kind, size, little_endian), or None: the core's
 * RFC 8746 table. */
static PyObject *qvpy_n_typed_array_type(PyObject *self, PyObject *a) {
    unsigned long long tag;
    if (!PyArg_ParseTuple(a, "K", &tag)) return NULL;
    char kind;
    uint32_t size;
    int le;
    if (qv_typed_array_type(tag, &kind, &size, &le, NULL)) Py_RETURN_NONE;
    return Py_BuildValue("(C I O)", kind, size, le ? Py_True : Py_False);
}

static PyMethodDef qvpy_natives[] = {
    {"typed_array_type", qvpy_n_typed_array_type, METH_VARARGS,
     "typed_array_type(tag) -> (kind, size, little_endian) of an RFC 8746 typed array, or None."},
    {"encode", qvpy_n_encode, METH_VARARGS, "encode(obj) -> bytes: the canonical encoding."},
    {"decode", qvpy_n_decode, METH_VARARGS, "decode(data, trusted=True) -> obj."},
    {"digest", qvpy_n_digest, METH_VARARGS, "digest(obj, raw=False) -> 32 hex characters (or 16 bytes)."},
    {"call_encoding", qvpy_n_call_encoding, METH_VARARGS, "call_encoding(name, version, args, kwargs) -> bytes."},
    {"cache_open", qvpy_n_cache_open, METH_VARARGS,
     "cache_open(path, durability, flags, max_bytes, map_size, timeout_ms=0, secret=None)."},
    {"cache_default", qvpy_n_cache_default, METH_NOARGS, "The process-wide default cache (DESIGN section 9)."},
    {"stack_handle", qvpy_n_stack_handle, METH_NOARGS, "A handle for a cache stack."},
    {"cache_stack", qvpy_n_cache_stack, METH_VARARGS, "cache_stack(local, remote, flags, queue_limit) -> cache."},
    {"cache_signed", qvpy_n_cache_signed, METH_VARARGS, "cache_signed(cache) -> whether its entries are signed."},
    {"cache_readonly", qvpy_n_cache_readonly, METH_VARARGS, "cache_readonly(cache) -> whether it refuses stores."},
    {"warnings_to_stderr", qvpy_n_warnings_to_stderr, METH_NOARGS,
     "From now on the core's warnings go to stderr, not to Python (registered with atexit)."},
    {"cache_get", qvpy_n_cache_get, METH_VARARGS, "cache_get(cache, digest) -> value or the miss signal."},
    {"cache_get_raw", qvpy_n_cache_get_raw, METH_VARARGS, "cache_get_raw(cache, digest) -> bytes or None."},
    {"cache_store_raw", qvpy_n_cache_store_raw, METH_VARARGS,
     "cache_store_raw(cache, call, result, start_ns, duration_ns, meta)."},
    {"cache_query", qvpy_n_cache_query, METH_VARARGS, "cache_query(cache, name) -> [digest hex]."},
    {"cache_load", qvpy_n_cache_load, METH_VARARGS, "cache_load(cache, digest) -> record dict."},
    {"cache_stats", qvpy_n_cache_stats, METH_VARARGS, "cache_stats(cache) -> {name: count}."},
    {"function_stats", qvpy_n_function_stats, METH_VARARGS,
     "function_stats(cache) -> {function name: {hits, misses, stores, evictions, corrupt, saved_ns}}."},
    {"set_hooks", (PyCFunction)(void (*)(void))qvpy_n_set_hooks, METH_VARARGS | METH_KEYWORDS,
     "Connect the Python layer."},
    {"set_ndarray_type", qvpy_n_set_ndarray_type, METH_O, "Encode this type's instances as numpy arrays."},
    {NULL}};

void qvpy_module_init(PyObject *m) {
    pthread_key_create(&qvpy_tls_key, qvpy_tls_free);
    qvpy_make_errors(m);
    if (PyType_Ready(&qvpy_cache_type) < 0 || PyType_Ready(&qvpy_memo_type) < 0) return;
    Py_INCREF(&qvpy_cache_type);
    PyModule_AddObject(m, "CacheHandle", (PyObject *)&qvpy_cache_type);
    Py_INCREF(&qvpy_memo_type);
    PyModule_AddObject(m, "MemoBase", (PyObject *)&qvpy_memo_type);
    PyModule_AddFunctions(m, qvpy_natives);
    qv_ctx_set_provider(qvpy_provide, NULL, NULL);
    qv_set_warning_handler(qvpy_warning_cb, NULL, NULL);
}
int qvpy_value_from_py(qv_value **out, PyObject *o) {
    qv_encoder *enc = qvpy_enc_acquire(1);
    if (!enc) return -1;
    qv_encoder_reset(enc);
    int r = qvpy_encode(enc, o);
    if (!r) {
        const void *data;
        size_t len;
        qv_status st = qv_encoder_finish(enc, &data, &len);
        if (!st) st = qv_value_decode(out, data, len);
        if (st) r = qvpy_enc_fail(st);
    }
    qvpy_enc_release(1, enc);
    return r;
}

PyObject *qvpy_value_to_py(const qv_value *v) {
    void *data;
    size_t len;
    qv_status st = qv_value_encode(v, &data, &len);
    if (st) return qvpy_raise(st);
    PyObject *r = qvpy_decode_bytes(data, len, 1);
    qv_free(data);
    return r;
}
