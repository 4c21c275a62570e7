/* quiver._quiver.CacheHandle, and the hit lookup that decodes a stored
 * result with the GIL released around the store. */
#include "qvpy.h"

/* ------------------------------------------------------------ CacheHandle */

PyObject *qvpy_handle_class = (PyObject *)&qvpy_cache_type; /* what qv_cache_open returns */

static void qvpy_cache_really_close(qvpy_cache *h) {
    qv_cache *c = h->c;
    h->c = NULL;
    if (c && h->own) {
        Py_BEGIN_ALLOW_THREADS
        qv_cache_close(c);
        Py_END_ALLOW_THREADS
    }
}

/* Borrow h's qv_cache for one call; NULL with ClosedError when it is closed. */
qv_cache *qvpy_cache_enter(PyObject *o) {
    if (!PyObject_TypeCheck(o, &qvpy_cache_type)) {
        PyErr_Format(PyExc_TypeError, "expected a quiver.Cache, not %.100s", Py_TYPE(o)->tp_name);
        return NULL;
    }
    qvpy_cache *h = (qvpy_cache *)o;
    if (!h->c || h->closing) {
        qvpy_raise_msg(QV_ECLOSED, "the cache is closed");
        return NULL;
    }
    h->users++;
    return h->c;
}

void qvpy_cache_leave(PyObject *o) {
    qvpy_cache *h = (qvpy_cache *)o;
    if (--h->users == 0 && h->closing) qvpy_cache_really_close(h);
}

static PyObject *qvpy_cache_new_obj(PyTypeObject *type, PyObject *args, PyObject *kw) {
    qvpy_cache *h = (qvpy_cache *)type->tp_alloc(type, 0);
    return (PyObject *)h;
}

static void qvpy_cache_dealloc(qvpy_cache *h) {
    PyObject_GC_UnTrack(h);
    if (h->weakrefs) PyObject_ClearWeakRefs((PyObject *)h);
    Py_CLEAR(h->dict);
    if (h->users == 0) qvpy_cache_really_close(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static int qvpy_cache_traverse(qvpy_cache *h, visitproc visit, void *arg) {
    Py_VISIT(h->dict);
    Py_VISIT(Py_TYPE(h));
    return 0;
}

static int qvpy_cache_clear(qvpy_cache *h) {
    Py_CLEAR(h->dict);
    return 0;
}

static PyObject *qvpy_cache_close_m(qvpy_cache *h, PyObject *unused) {
    if (h->users > 0) h->closing = 1; /* the last call in flight closes it */
    else qvpy_cache_really_close(h);
    Py_RETURN_NONE;
}

static PyObject *qvpy_cache_path_g(qvpy_cache *h, void *unused) {
    if (!h->c) Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(qv_cache_path(h->c));
}

static PyObject *qvpy_cache_closed_g(qvpy_cache *h, void *unused) {
    return PyBool_FromLong((!h->c && !h->stack) || h->closing);
}

static PyObject *qvpy_cache_stack_g(qvpy_cache *h, void *unused) {
    return PyBool_FromLong(h->stack);
}

static int qvpy_cache_stack_s(qvpy_cache *h, PyObject *v, void *unused) {
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0) return -1;
    h->stack = b;
    return 0;
}

static PyObject *qvpy_cache_trusted_g(qvpy_cache *h, void *unused) {
    return PyBool_FromLong(h->trusted);
}

static int qvpy_cache_trusted_s(qvpy_cache *h, PyObject *v, void *unused) {
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0) return -1;
    h->trusted = b;
    return 0;
}

static PyMethodDef qvpy_cache_methods[] = {
    {"close", (PyCFunction)qvpy_cache_close_m, METH_NOARGS,
     "Release the cache. Calls in flight on other threads finish first; later calls raise quiver.ClosedError."},
    {NULL}};

static PyGetSetDef qvpy_cache_getset[] = {
    {"path", (getter)qvpy_cache_path_g, NULL, "The absolute directory, or ':memory:'; None when closed.", NULL},
    {"closed", (getter)qvpy_cache_closed_g, NULL, "Whether close() was called.", NULL},
    {"_stack", (getter)qvpy_cache_stack_g, (setter)qvpy_cache_stack_s, "Whether this is a cache stack.", NULL},
    {"_trusted", (getter)qvpy_cache_trusted_g, (setter)qvpy_cache_trusted_s, "Whether pickles may be loaded.", NULL},
    {NULL}};

PyTypeObject qvpy_cache_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "quiver._quiver.CacheHandle",
    .tp_basicsize = sizeof(qvpy_cache),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A qv_cache with a count of the calls in flight on it.",
    .tp_new = qvpy_cache_new_obj,
    .tp_dealloc = (destructor)qvpy_cache_dealloc,
    .tp_traverse = (traverseproc)qvpy_cache_traverse,
    .tp_clear = (inquiry)qvpy_cache_clear,
    .tp_methods = qvpy_cache_methods,
    .tp_getset = qvpy_cache_getset,
    .tp_dictoffset = offsetof(qvpy_cache, dict),
    .tp_weaklistoffset = offsetof(qvpy_cache, weakrefs),
};

PyObject *qvpy_cache_wrap(qv_cache *c, int own) {
    qvpy_cache *h = (qvpy_cache *)PyObject_CallNoArgs(qvpy_handle_class);
    if (!h) {
        if (own) qv_cache_close(c);
        return NULL;
    }
    if (!PyObject_TypeCheck((PyObject *)h, &qvpy_cache_type)) {
        Py_DECREF(h);
        if (own) qv_cache_close(c);
        PyErr_SetString(PyExc_TypeError, "the handle class is not a CacheHandle");
        return NULL;
    }
    h->c = c;
    h->own = own;
    h->trusted = 1;
    return (PyObject *)h;
}

/* The active cache: the context variable's value, else the default one. New reference. */
PyObject *qvpy_meta_getter; /* () -> the encoded active metadata, or None */

/* The context Python code has active (the contextvars), for C code it calls:
 * a memoized C function pointer called through ctypes inside
 * `with quiver.cache(c)` memoizes into c. Called on whatever thread asks,
 * with or without the GIL; a stack hands C its first cache. */
qv_ctx *qvpy_provide(void *unused) {
    /* A C thread may ask while the interpreter is going away: the GIL cannot
     * be had then, and the default cache answers instead. */
#if PY_VERSION_HEX >= 0x030D0000
    if (!Py_IsInitialized() || Py_IsFinalizing()) return NULL;
#else
    if (!Py_IsInitialized() || _Py_IsFinalizing()) return NULL;
#endif
    PyGILState_STATE g = PyGILState_Ensure();
    qv_ctx *ctx = NULL;
    PyObject *c = qvpy_active_cache();
    while (c && PyObject_TypeCheck(c, &qvpy_cache_type) && ((qvpy_cache *)c)->stack) {
        PyObject *layers = PyObject_GetAttrString(c, "_layers");
        PyObject *first = layers && PySequence_Check(layers) ? PySequence_GetItem(layers, 0) : NULL;
        Py_XDECREF(layers);
        Py_SETREF(c, first);
    }
    qv_cache *cc = c ? qvpy_cache_enter(c) : NULL;
    PyObject *meta = cc && qvpy_meta_getter ? PyObject_CallNoArgs(qvpy_meta_getter) : NULL;
    if (cc && (!qvpy_meta_getter || meta)) {
        int has = meta && PyBytes_Check(meta);
        qv_ctx_new(&ctx, cc, has ? PyBytes_AS_STRING(meta) : NULL, has ? (size_t)PyBytes_GET_SIZE(meta) : 0);
    }
    Py_XDECREF(meta);
    if (cc) qvpy_cache_leave(c);
    Py_XDECREF(c);
    if (PyErr_Occurred()) PyErr_WriteUnraisable(NULL); /* C asked, not Python: nobody else would see it */
    PyGILState_Release(g);
    return ctx;
}

PyObject *qvpy_active_cache(void) {
    PyObject *v = NULL;
    if (qvpy_active_var && PyContextVar_Get(qvpy_active_var, NULL, &v)) return NULL;
    if (v) return v;
    if (!qvpy_default_cache) {
        if (!qvpy_default_getter) return qvpy_raise_msg(QV_EMISUSE, "quiver is not initialised");
        PyObject *d = PyObject_CallNoArgs(qvpy_default_getter);
        if (!d) return NULL;
        qvpy_default_cache = d;
    }
    Py_INCREF(qvpy_default_cache);
    return qvpy_default_cache;
}

/* ------------------------------------------------------------ hit lookup */

typedef struct {
    PyThreadState *ts; /* NULL: the lookup holds the GIL */
    int trusted;
    PyObject *value;   /* decoded in place (large results) */
    int copied;        /* the result is in the thread buffer */
    size_t len;
    qvpy_tls *tls;
} qvpy_hit;

/* Large results are decoded inside the read transaction (one copy, into
 * Python objects) and small ones copied out, so the GIL is only taken back
 * once the transaction has ended. */
#define QVPY_DECODE_IN_PLACE (64u * 1024u)

static qv_status qvpy_hit_cb(const void *data, size_t len, void *userdata) {
    qvpy_hit *h = userdata;
    if (len >= QVPY_DECODE_IN_PLACE) {
        if (h->ts) PyEval_RestoreThread(h->ts);
        h->value = qvpy_decode_bytes(data, len, h->trusted);
        if (h->ts) h->ts = PyEval_SaveThread();
        return QV_OK;
    }
    qvpy_tls *t = h->tls;
    if (t->buf_cap < len) {
        uint8_t *b = realloc(t->buf, len);
        if (!b) return QV_ENOMEM;
        t->buf = b;
        t->buf_cap = len;
    }
    memcpy(t->buf, data, len);
    h->len = len;
    h->copied = 1;
    return QV_OK;
}

/* Look key up in h's cache (entered by the caller); returns the decoded
 * value (new ref), qvpy_sig_miss (new ref) on a miss, or NULL with an
 * exception. A corrupt entry is a miss with a QuiverWarning. */
PyObject *qvpy_lookup(qvpy_cache *ch, const qv_digest *key) {
    qvpy_tls *t = qvpy_tls_get();
    if (!t) return NULL;
    qvpy_hit h = {NULL, ch->trusted, NULL, 0, 0, t};
    uint64_t corrupt = 0;
    t->has_refused = 0;
    /* A hit on LMDB or memory keeps the GIL: letting it go and taking it
     * back is 400 of a hit's 3000 instructions, and such a read waits on no
     * Python code and no network. A remote tier's round trip lets it go. */
    const char *where = qv_cache_path(ch->c);
    int local = where[0] == '/' || !strcmp(where, ":memory:");
    if (!local) h.ts = PyEval_SaveThread();
    qv_status st = qv_cache_get_with(ch->c, key, qvpy_hit_cb, &h);
    if (st == QV_NOTFOUND) qv_cache_stat(ch->c, QV_STAT_CORRUPT, &corrupt);
    if (!local) PyEval_RestoreThread(h.ts);
    if (st == QV_NOTFOUND) {
        if (corrupt > ch->corrupt_seen) {
            ch->corrupt_seen = corrupt;
            if (PyErr_WarnFormat(qvpy_warning ? qvpy_warning : PyExc_RuntimeWarning, 1,
                                 "a corrupt cache entry was read as a miss: %s; the call runs again and "
                                 "replaces it (cache.verify(repair=True) removes any others)", qv_errmsg()))
                return NULL;
        }
        Py_INCREF(qvpy_sig_miss);
        return qvpy_sig_miss;
    }
    if (st) {
        Py_XDECREF(h.value);
        return qvpy_raise(st);
    }
    PyObject *v = h.copied ? qvpy_decode_bytes(t->buf, h.len, ch->trusted) : h.value;
    if (!v && (!PyErr_ExceptionMatches(qvpy_Error) || (qvpy_untrusted && PyErr_ExceptionMatches(qvpy_untrusted)))) {
        /* Valid CBOR that Python cannot rebuild (a pickle of a class that is
         * gone), or will not (a pickle from a cache others could write): a
         * miss, so the call runs again and replaces it; the warning says why. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        int w = PyErr_WarnFormat(qvpy_warning ? qvpy_warning : PyExc_RuntimeWarning, 1,
                                 "a stored result could not be decoded and was read as a miss: %S; the call "
                                 "runs again and its result replaces the entry (to read it instead, make "
                                 "its types importable here or quiver.register their decoder)", value);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        if (w) return NULL;
        t->refused = *key;
        t->has_refused = 1;
        Py_INCREF(qvpy_sig_miss);
        return qvpy_sig_miss;
    }
    return v;
}
