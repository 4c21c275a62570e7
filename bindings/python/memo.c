/* quiver._quiver.MemoBase: binding a call, its digest, the hit path in one
 * crossing, and the miss through the call runtime. */
#include "qvpy.h"

/* ------------------------------------------------------------------ Memo */

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *weakrefs;
    vectorcallfunc vectorcall;
    PyObject *fn;
    PyObject *name;       /* str */
    PyObject *version;    /* str or None */
    const char *name_s;
    Py_ssize_t name_n;
    const char *version_s;
    Py_ssize_t version_n;
    Py_ssize_t npos, nposonly;
    PyObject *pos_names;    /* tuple of str */
    PyObject *pos_defaults; /* tuple: a default, or qvpy_nodefault */
    PyObject *kwo_names;
    PyObject *kwo_defaults;
    PyObject *require;      /* tuple of names that must be passed, or NULL */
    char *pos_ignore, *kwo_ignore;
    Py_ssize_t npos_kept;
    int var_pos, var_kw;
    int any_ignore;
    int paths_by_content; /* a pathlib.Path argument is keyed by what it holds */
    /* The call's encoding up to its argument list (list head, marker, name,
     * version), made once by the core's qv_encoder_call_head for the hit
     * path's own encoder; NULL when that encoder never applies. */
    uint8_t *prefix;
    size_t prefix_n;
    /* A miss the hit path meets runs through the call runtime from C when
     * the memo asks nothing of Python per call (no meta= callable, not
     * isolated): miss_ready, with the options _compute would pass. */
    int miss_ready;
    unsigned int miss_flags;
    long long miss_wait_ns;
    PyObject *miss_meta;   /* the memo's own metadata, encoded, or NULL */
    PyObject *future_type; /* a result of this type is stored when it completes */
} qvpy_memo;

PyObject *qvpy_nodefault;
/* A ContextVar holding, while Memo.rerun runs, the set of call digests rerun
 * so far: every memoized call made inside runs again once, then hits, as in
 * Lua (a recursive memo reruns in linear time). Python makes it. */
static PyObject *qvpy_rerun_var;
/* Set (for good) once Python first sets the rerun variable: until then no
 * context holds a rerun, and a hit need not look the variable up (a lookup
 * of a variable that is unset misses Python's cache of it, and costs 100
 * instructions of a 4000-instruction hit). */
static int qvpy_rerun_seen;
/* The ContextVar of quiver.meta(...): while it holds anything, a miss
 * merges it in Python. */
static PyObject *qvpy_meta_var;

/* Encode [QV_CALL_MARKER, name, version, args, kwargs] of a call bound as
 * DESIGN section 3 says. Returns 0, -1 with an exception (EncodeError for an
 * argument that cannot be encoded), or 1 when the call does not bind (the
 * caller runs the function, which raises the proper TypeError) or a required
 * argument was not passed. */
static int qvpy_memo_encode_args(qvpy_memo *m, qv_encoder *enc, PyObject *args, PyObject *kwargs) {
    Py_ssize_t na = PyTuple_GET_SIZE(args);
    Py_ssize_t nk = kwargs ? PyDict_GET_SIZE(kwargs) : 0;
    if (na > m->npos && !m->var_pos) return 1;
    if (m->require) {
        Py_ssize_t nr = PyTuple_GET_SIZE(m->require);
        for (Py_ssize_t r = 0; r < nr; r++) {
            PyObject *name = PyTuple_GET_ITEM(m->require, r);
            int passed = 0;
            for (Py_ssize_t i = 0; i < m->npos && i < na; i++)
                if (PyTuple_GET_ITEM(m->pos_names, i) == name) passed = 1;
            if (!passed && nk) {
                int c = PyDict_Contains(kwargs, name);
                if (c < 0) return -1;
                passed = c;
            }
            if (!passed) return 1;
        }
    }
    qv_status st;
    if ((st = qv_encoder_call_head(enc, m->name_s, (size_t)m->name_n, m->version_s, (size_t)m->version_n)))
        return qvpy_enc_fail(st);
    Py_ssize_t extra = na > m->npos ? na - m->npos : 0;
    if ((st = qv_encoder_list(enc, (uint64_t)(m->npos_kept + extra)))) return qvpy_enc_fail(st);
    Py_ssize_t used = 0; /* keyword arguments matched to parameters */
    for (Py_ssize_t i = 0; i < m->npos; i++) {
        PyObject *v;
        if (i < na) {
            v = PyTuple_GET_ITEM(args, i);
            if (nk && i >= m->nposonly && PyDict_GetItemWithError(kwargs, PyTuple_GET_ITEM(m->pos_names, i))) return 1;
        } else {
            v = NULL;
            if (nk && i >= m->nposonly) {
                v = PyDict_GetItemWithError(kwargs, PyTuple_GET_ITEM(m->pos_names, i));
                if (!v && PyErr_Occurred()) return -1;
                if (v) used++;
            }
            if (!v) {
                v = PyTuple_GET_ITEM(m->pos_defaults, i);
                if (v == qvpy_nodefault) return 1;
            }
        }
        if (m->any_ignore && m->pos_ignore[i]) continue;
        Py_INCREF(v);
        int r = qvpy_encode(enc, v);
        Py_DECREF(v);
        if (r) return -1;
    }
    for (Py_ssize_t i = m->npos; i < na; i++) {
        if (qvpy_encode(enc, PyTuple_GET_ITEM(args, i))) return -1;
    }
    if ((st = qv_encoder_map_begin(enc))) return qvpy_enc_fail(st);
    Py_ssize_t nkwo = PyTuple_GET_SIZE(m->kwo_names);
    for (Py_ssize_t i = 0; i < nkwo; i++) {
        PyObject *name = PyTuple_GET_ITEM(m->kwo_names, i);
        PyObject *v = nk ? PyDict_GetItemWithError(kwargs, name) : NULL;
        if (!v && PyErr_Occurred()) return -1;
        if (v) used++;
        else if ((v = PyTuple_GET_ITEM(m->kwo_defaults, i)) == qvpy_nodefault) return 1;
        if (m->any_ignore && m->kwo_ignore[i]) continue;
        Py_INCREF(v);
        int r = qvpy_encode(enc, name);
        if (!r) r = qvpy_encode(enc, v);
        Py_DECREF(v);
        if (r) return -1;
    }
    if (used < nk) {
        if (!m->var_kw) return 1;
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(kwargs, &pos, &k, &v)) {
            int named = 0;
            for (Py_ssize_t i = m->nposonly; i < m->npos && !named; i++) {
                PyObject *pn = PyTuple_GET_ITEM(m->pos_names, i);
                named = pn == k || (PyUnicode_Check(k) && !PyUnicode_Compare(pn, k));
            }
            for (Py_ssize_t i = 0; i < nkwo && !named; i++) {
                PyObject *kn = PyTuple_GET_ITEM(m->kwo_names, i);
                named = kn == k || (PyUnicode_Check(k) && !PyUnicode_Compare(kn, k));
            }
            if (named) continue;
            Py_INCREF(k);
            Py_INCREF(v);
            int r = qvpy_encode(enc, k);
            if (!r) r = qvpy_encode(enc, v);
            Py_DECREF(k);
            Py_DECREF(v);
            if (r) return -1;
        }
    }
    if ((st = qv_encoder_map_end(enc))) return qvpy_enc_fail(st);
    return 0;
}

static int qvpy_memo_encode_call(qvpy_memo *m, qv_encoder *enc, PyObject *args, PyObject *kwargs) {
    int saved = qvpy_keying_paths;
    qvpy_keying_paths = m->paths_by_content;
    int r = qvpy_memo_encode_args(m, enc, args, kwargs);
    qvpy_keying_paths = saved;
    return r;
}

static int qvpy_is_encode_error(void) {
    return PyErr_ExceptionMatches(qvpy_errors[-QV_EENCODE]);
}

/* The memoized lookup of one call in cache (a CacheHandle). New reference:
 * the value, or one of the signals (miss, uncached: does not bind or lacks a
 * required argument, slow: the cache is a stack). rerun: the calls rerun so
 * far; a call not among them is added and is a miss without a lookup. */
static PyObject *qvpy_memo_get(qvpy_memo *m, PyObject *cache, PyObject *args, PyObject *kwargs, PyObject *rerun) {
    if (!PyObject_TypeCheck(cache, &qvpy_cache_type)) {
        PyErr_Format(PyExc_TypeError, "expected a quiver.Cache, not %.100s", Py_TYPE(cache)->tp_name);
        return NULL;
    }
    qvpy_cache *h = (qvpy_cache *)cache;
    qv_encoder *enc = qvpy_enc_acquire(0);
    if (!enc) return NULL;
    qv_encoder_reset_for_digest(enc);
    int r = qvpy_memo_encode_call(m, enc, args, kwargs);
    qv_digest key;
    if (!r) {
        qv_status st = qv_encoder_digest(enc, &key);
        if (st) {
            qvpy_raise(st);
            r = -1;
        }
    }
    qvpy_enc_release(0, enc);
    if (r < 0) return NULL;
    if (r > 0) {
        Py_INCREF(qvpy_sig_uncached);
        return qvpy_sig_uncached;
    }
    if (rerun) {
        PyObject *digest = PyBytes_FromStringAndSize((const char *)key.bytes, sizeof key.bytes);
        int seen = digest ? PySet_Contains(rerun, digest) : -1;
        if (!seen && PySet_Add(rerun, digest)) seen = -1;
        Py_XDECREF(digest);
        if (seen < 0) return NULL;
        if (!seen) {
            Py_INCREF(qvpy_sig_miss);
            return qvpy_sig_miss;
        }
    }
    if (h->stack) {
        Py_INCREF(qvpy_sig_slow);
        return qvpy_sig_slow;
    }
    qv_cache *c = qvpy_cache_enter(cache);
    if (!c) return NULL;
    PyObject *v = qvpy_lookup(h, &key);
    qvpy_cache_leave(cache);
    return v;
}
static PyObject *qvpy_signal(PyObject *v) {
    return v == qvpy_sig_miss || v == qvpy_sig_uncached || v == qvpy_sig_slow ? v : NULL;
}

/* The set of calls rerun so far inside Memo.rerun (a new reference), else
 * NULL: outside a rerun (*failed 0), or with an exception (*failed 1). */
static PyObject *qvpy_rerunning(int *failed) {
    PyObject *v = NULL;
    *failed = 0;
    if (!qvpy_rerun_var || !qvpy_rerun_seen) return NULL;
    if (PyContextVar_Get(qvpy_rerun_var, NULL, &v)) {
        *failed = 1;
        return NULL;
    }
    if (v && PyAnySet_Check(v)) return v;
    Py_XDECREF(v);
    return NULL;
}

static PyObject *qvpy_memo_missed(qvpy_memo *m, PyObject *v, PyObject *cache, PyObject *args, PyObject *kwargs);

static PyObject *qvpy_memo_call(qvpy_memo *m, PyObject *args, PyObject *kwargs) {
    int failed;
    PyObject *rerun = qvpy_rerunning(&failed);
    if (failed) return NULL;
    PyObject *cache = qvpy_active_cache();
    if (!cache) {
        Py_XDECREF(rerun);
        return NULL;
    }
    PyObject *v = qvpy_memo_get(m, cache, args, kwargs, rerun);
    Py_XDECREF(rerun);
    if (v && !qvpy_signal(v)) {
        Py_DECREF(cache);
        return v;
    }
    return qvpy_memo_missed(m, v, cache, args, kwargs);
}

/* After a lookup that did not hit (v: a signal, or NULL with an exception):
 * the miss in Python, or the exception. Takes v and cache. */
static PyObject *qvpy_memo_missed(qvpy_memo *m, PyObject *v, PyObject *cache, PyObject *args, PyObject *kwargs) {
    if (!v) {
        if (!qvpy_is_encode_error()) {
            Py_DECREF(cache);
            return NULL;
        }
        /* An argument with no encoding: the Python side warns and runs uncached. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        v = value;
    }
    PyObject *kw = kwargs ? (Py_INCREF(kwargs), kwargs) : PyDict_New();
    PyObject *r = kw ? PyObject_CallMethod((PyObject *)m, "_miss", "OOOO", v, cache, args, kw) : NULL;
    Py_XDECREF(kw);
    Py_DECREF(v);
    Py_DECREF(cache);
    return r;
}

/* ------------------------------------------------- the hit path's encoder */

/* Most hits are calls with a few positional ints and short strings. Their
 * encoding is the prefix, the argument list and an empty map, written here
 * straight into a stack buffer and hashed in one shot: the general encoder
 * (call_head's UTF-8 check of the name, per-item bookkeeping, the map sort)
 * is a quarter of such a hit. Each item is written exactly as qvpy_encode
 * writes it (DESIGN section 3); anything else takes the general path. */
#define QVPY_FAST_MAX 512

/* Append o's encoding to buf (n bytes used); 0 when o is not an int of 64
 * bits, a str, None or a bool, or does not fit. */
static int qvpy_fast_item(uint8_t *buf, size_t *n, PyObject *o) {
    PyTypeObject *t = Py_TYPE(o);
    if (*n + 10 > QVPY_FAST_MAX) return 0;
    if (t == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        *n += v >= 0 ? qv_cbor_head(buf + *n, 0, (uint64_t)v) : qv_cbor_head(buf + *n, 1, (uint64_t)(-(v + 1)));
        return 1;
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(o, &len);
        if (!s) {
            PyErr_Clear(); /* lone surrogates: the general path says so */
            return 0;
        }
        if (*n + 10 + (size_t)len > QVPY_FAST_MAX) return 0;
        *n += qv_cbor_head(buf + *n, 3, (uint64_t)len);
        memcpy(buf + *n, s, (size_t)len);
        *n += (size_t)len;
        return 1;
    }
    if (o == Py_None || o == Py_True || o == Py_False) {
        buf[(*n)++] = o == Py_None ? 0xf6 : o == Py_True ? 0xf5 : 0xf4;
        return 1;
    }
    return 0;
}

/* The call of m with argv[0 .. na) and no keyword arguments, encoded into
 * buf (QVPY_FAST_MAX bytes, *len used) and hashed: 1, or 0 when the general
 * path must encode it (it also binds and raises). */
static int qvpy_memo_fast_key(qvpy_memo *m, PyObject *const *argv, Py_ssize_t na, uint8_t *buf, size_t *len,
                              qv_digest *key) {
    if (na > m->npos && !m->var_pos) return 0;
    Py_ssize_t count = na > m->npos ? na : m->npos;
    size_t n = m->prefix_n;
    memcpy(buf, m->prefix, n);
    n += qv_cbor_head(buf + n, 4, (uint64_t)count);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *v = i < na ? argv[i] : PyTuple_GET_ITEM(m->pos_defaults, i);
        if (v == qvpy_nodefault || !qvpy_fast_item(buf, &n, v)) return 0;
    }
    buf[n++] = 0xa0; /* no keyword arguments: the empty map */
    qv_digest_bytes(key, buf, n);
    *len = n;
    return 1;
}

/* Make the prefix, when the hit path's encoder applies to m's calls: no
 * keyword-only parameters, nothing ignored or required, a short name. */
static int qvpy_memo_make_prefix(qvpy_memo *m) {
    if (m->require || m->any_ignore || PyTuple_GET_SIZE(m->kwo_names)) return 0;
    qv_encoder *enc;
    if (qv_encoder_new(&enc)) {
        PyErr_NoMemory();
        return -1;
    }
    const void *data;
    size_t len;
    /* the call with no arguments: the prefix, then [] and {} */
    qv_status st = qv_encoder_call_head(enc, m->name_s, (size_t)m->name_n, m->version_s, (size_t)m->version_n);
    if (!st) st = qv_encoder_list(enc, 0);
    if (!st) st = qv_encoder_map_begin(enc);
    if (!st) st = qv_encoder_map_end(enc);
    if (!st) st = qv_encoder_finish(enc, &data, &len);
    int r = 0;
    if (st) {
        qvpy_raise(st);
        r = -1;
    } else if (len >= 2 && len + 64 <= QVPY_FAST_MAX && !memcmp((const uint8_t *)data + len - 2, "\x80\xa0", 2)) {
        if (!(m->prefix = PyMem_Malloc(len - 2))) {
            PyErr_NoMemory();
            r = -1;
        } else {
            memcpy(m->prefix, data, len - 2);
            m->prefix_n = len - 2;
        }
    }
    qv_encoder_free(enc);
    return r;
}

static PyObject *qvpy_memo_fast_miss(qvpy_memo *m, PyObject *cache, PyObject *const *argv, Py_ssize_t na,
                                     const uint8_t *call, size_t call_len, const qv_digest *key);

/* Calls from Python land here: a call with positional arguments the hit
 * path's encoder takes is looked up without an argument tuple; every other
 * call, and a miss, goes the way tp_call does. */
static PyObject *qvpy_memo_vectorcall(PyObject *self, PyObject *const *argv, size_t nargsf, PyObject *kwnames) {
    qvpy_memo *m = (qvpy_memo *)self;
    Py_ssize_t na = PyVectorcall_NARGS(nargsf);
    qv_digest key;
    PyObject *cache = NULL, *v = NULL;
    int rerun = 0;
    if (qvpy_rerun_seen) {
        PyObject *set = qvpy_rerunning(&rerun);
        if (rerun) return NULL;
        rerun = set != NULL; /* the general path adds the call to it */
        Py_XDECREF(set);
    }
    uint8_t call[QVPY_FAST_MAX];
    size_t call_len;
    if (m->prefix && !rerun && (!kwnames || !PyTuple_GET_SIZE(kwnames)) &&
        qvpy_memo_fast_key(m, argv, na, call, &call_len, &key)) {
        if (!(cache = qvpy_active_cache())) return NULL;
        qvpy_cache *h = (qvpy_cache *)cache;
        /* quiver.Cache, the class set_hooks checked, before the subtype walk */
        int handle = (PyObject *)Py_TYPE(cache) == qvpy_handle_class || PyObject_TypeCheck(cache, &qvpy_cache_type);
        if (handle && h->c && !h->closing && !h->stack) {
            h->users++; /* qvpy_cache_enter, checked above */
            v = qvpy_lookup(h, &key);
            qvpy_cache_leave(cache);
            if (v == qvpy_sig_miss && m->miss_ready && m->fn) { /* fn: not cleared by the collector */
                PyObject *r = qvpy_memo_fast_miss(m, cache, argv, na, call, call_len, &key);
                if (r != qvpy_sig_miss) {
                    Py_DECREF(v);
                    v = r;
                }
            }
            if (!v || v != qvpy_sig_miss) {
                Py_DECREF(cache);
                return v;
            }
        } else {
            Py_CLEAR(cache); /* a stack, closed, or not a cache: tp_call's way says what to do */
        }
    }
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *args = PyTuple_New(na), *kwargs = nk ? PyDict_New() : NULL;
    int bad = !args || (nk && !kwargs);
    for (Py_ssize_t i = 0; !bad && i < na; i++) {
        Py_INCREF(argv[i]);
        PyTuple_SET_ITEM(args, i, argv[i]);
    }
    for (Py_ssize_t i = 0; !bad && i < nk; i++) bad = PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), argv[na + i]);
    PyObject *r = NULL;
    if (bad) {
        Py_XDECREF(v);
        Py_XDECREF(cache);
    } else if (cache) {
        r = qvpy_memo_missed(m, v, cache, args, kwargs);
    } else {
        r = qvpy_memo_call(m, args, kwargs);
    }
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return r;
}

static int qvpy_memo_init(qvpy_memo *m, PyObject *args, PyObject *kw) {
    static char *names[] = {"fn", "name", "version", "pos_names", "pos_defaults", "nposonly", "kwo_names",
                            "kwo_defaults", "var_pos", "var_kw", "ignore", "require", "paths_by_content", NULL};
    PyObject *fn, *name, *version, *pos_names, *pos_defaults, *kwo_names, *kwo_defaults, *ignore, *require;
    Py_ssize_t nposonly;
    int var_pos, var_kw, paths_by_content = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OUOO!O!nO!O!ppOO|p", names, &fn, &name, &version, &PyTuple_Type,
                                     &pos_names, &PyTuple_Type, &pos_defaults, &nposonly, &PyTuple_Type, &kwo_names,
                                     &PyTuple_Type, &kwo_defaults, &var_pos, &var_kw, &ignore, &require,
                                     &paths_by_content))
        return -1;
    if (version != Py_None && !PyUnicode_Check(version)) {
        PyErr_SetString(PyExc_TypeError, "version must be a str or None");
        return -1;
    }
    if (PyTuple_GET_SIZE(pos_names) != PyTuple_GET_SIZE(pos_defaults) ||
        PyTuple_GET_SIZE(kwo_names) != PyTuple_GET_SIZE(kwo_defaults)) {
        PyErr_SetString(PyExc_ValueError, "names and defaults differ in length");
        return -1;
    }
    if (m->fn) {
        PyErr_SetString(PyExc_RuntimeError, "a Memo is set up once");
        return -1;
    }
    Py_ssize_t ns, vs = 0;
    const char *n = PyUnicode_AsUTF8AndSize(name, &ns);
    const char *v = version == Py_None ? NULL : PyUnicode_AsUTF8AndSize(version, &vs);
    if (!n || (version != Py_None && !v)) return -1;
    Py_ssize_t npos = PyTuple_GET_SIZE(pos_names), nkwo = PyTuple_GET_SIZE(kwo_names);
    m->pos_ignore = PyMem_Calloc((size_t)npos + 1, 1);
    m->kwo_ignore = PyMem_Calloc((size_t)nkwo + 1, 1);
    if (!m->pos_ignore || !m->kwo_ignore) {
        PyErr_NoMemory();
        return -1;
    }
    m->npos_kept = npos;
    for (Py_ssize_t i = 0; i < npos; i++) {
        PyObject *pn = PyTuple_GET_ITEM(pos_names, i);
        int c = PySequence_Contains(ignore, pn);
        if (c < 0) return -1;
        if (c) {
            m->pos_ignore[i] = 1;
            m->npos_kept--;
            m->any_ignore = 1;
        }
    }
    for (Py_ssize_t i = 0; i < nkwo; i++) {
        int c = PySequence_Contains(ignore, PyTuple_GET_ITEM(kwo_names, i));
        if (c < 0) return -1;
        if (c) {
            m->kwo_ignore[i] = 1;
            m->any_ignore = 1;
        }
    }
    Py_INCREF(fn);
    m->fn = fn;
    Py_INCREF(name);
    m->name = name;
    Py_INCREF(version);
    m->version = version;
    m->name_s = n;
    m->name_n = ns;
    m->version_s = v;
    m->version_n = vs;
    m->npos = npos;
    m->nposonly = nposonly;
    Py_INCREF(pos_names);
    m->pos_names = pos_names;
    Py_INCREF(pos_defaults);
    m->pos_defaults = pos_defaults;
    Py_INCREF(kwo_names);
    m->kwo_names = kwo_names;
    Py_INCREF(kwo_defaults);
    m->kwo_defaults = kwo_defaults;
    m->var_pos = var_pos;
    m->var_kw = var_kw;
    m->paths_by_content = paths_by_content;
    if (require != Py_None) {
        if (!(m->require = PySequence_Tuple(require))) return -1;
    }
    if (qvpy_memo_make_prefix(m)) return -1;
    /* Python 3.11 does not pass the vectorcall flag on to a subclass made in
     * Python (3.12 does when it keeps tp_call): set it on one that calls
     * the way this type does (Memo; not AsyncMemo, whose __call__ is its own). */
    PyTypeObject *tp = Py_TYPE(m);
    if (tp->tp_call == (ternaryfunc)qvpy_memo_call && tp->tp_vectorcall_offset == offsetof(qvpy_memo, vectorcall))
        tp->tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL;
    m->vectorcall = qvpy_memo_vectorcall;
    return 0;
}

static int qvpy_memo_traverse(qvpy_memo *m, visitproc visit, void *arg) {
    Py_VISIT(m->dict);
    Py_VISIT(m->fn);
    Py_VISIT(m->pos_defaults);
    Py_VISIT(m->kwo_defaults);
    Py_VISIT(m->future_type);
    Py_VISIT(Py_TYPE(m));
    return 0;
}

static int qvpy_memo_clear(qvpy_memo *m) {
    Py_CLEAR(m->dict);
    Py_CLEAR(m->fn);
    Py_CLEAR(m->pos_defaults);
    Py_CLEAR(m->kwo_defaults);
    Py_CLEAR(m->future_type);
    return 0;
}

static void qvpy_memo_dealloc(qvpy_memo *m) {
    PyObject_GC_UnTrack(m);
    if (m->weakrefs) PyObject_ClearWeakRefs((PyObject *)m);
    qvpy_memo_clear(m);
    Py_CLEAR(m->name);
    Py_CLEAR(m->version);
    Py_CLEAR(m->pos_names);
    Py_CLEAR(m->kwo_names);
    Py_CLEAR(m->require);
    Py_CLEAR(m->miss_meta);
    PyMem_Free(m->pos_ignore);
    PyMem_Free(m->kwo_ignore);
    PyMem_Free(m->prefix);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static int qvpy_memo_ready(qvpy_memo *m) {
    if (m->fn) return 1;
    PyErr_SetString(PyExc_RuntimeError, "the Memo was not set up");
    return 0;
}

static PyObject *qvpy_kwargs_arg(PyObject *kwargs) {
    if (kwargs == Py_None) return NULL;
    if (!PyDict_Check(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "kwargs must be a dict");
        return NULL;
    }
    return kwargs;
}

/* _get(cache, args, kwargs): the stored result, or a signal. */
static PyObject *qvpy_memo_get_m(qvpy_memo *m, PyObject *a) {
    PyObject *cache, *args, *kwargs;
    if (!qvpy_memo_ready(m) || !PyArg_ParseTuple(a, "OO!O", &cache, &PyTuple_Type, &args, &kwargs)) return NULL;
    if (kwargs != Py_None && !qvpy_kwargs_arg(kwargs)) return NULL;
    return qvpy_memo_get(m, cache, args, kwargs == Py_None ? NULL : kwargs, NULL);
}

/* The call's canonical encoding; *out borrowed from enc until it is released. */
static int qvpy_memo_call_bytes(qvpy_memo *m, qv_encoder *enc, PyObject *args, PyObject *kwargs, const void **out,
                                size_t *len) {
    qv_encoder_reset(enc);
    int r = qvpy_memo_encode_call(m, enc, args, kwargs);
    if (r) return r;
    qv_status st = qv_encoder_finish(enc, out, len);
    if (st) {
        qvpy_raise(st);
        return -1;
    }
    return 0;
}

/* _call(args, kwargs): (digest hex, call encoding), or None when the call
 * does not bind or lacks a required argument. */
static PyObject *qvpy_memo_call_m(qvpy_memo *m, PyObject *a) {
    PyObject *args, *kwargs;
    if (!qvpy_memo_ready(m) || !PyArg_ParseTuple(a, "O!O", &PyTuple_Type, &args, &kwargs)) return NULL;
    if (kwargs != Py_None && !qvpy_kwargs_arg(kwargs)) return NULL;
    qv_encoder *enc = qvpy_enc_acquire(0);
    if (!enc) return NULL;
    const void *data;
    size_t len;
    int r = qvpy_memo_call_bytes(m, enc, args, kwargs == Py_None ? NULL : kwargs, &data, &len);
    PyObject *res = NULL;
    if (r == 0) {
        qv_digest d;
        char hex[33];
        qv_digest_bytes(&d, data, len);
        qv_digest_hex(&d, hex);
        res = Py_BuildValue("sy#", hex, (const char *)data, (Py_ssize_t)len);
    } else if (r > 0) {
        res = Py_None;
        Py_INCREF(res);
    }
    qvpy_enc_release(0, enc);
    return res;
}

int qvpy_store(PyObject *cache, const void *call, size_t call_len, const void *result, size_t result_len,
                      long long start_ns, long long duration_ns, PyObject *meta) {
    Py_buffer mv = {0};
    if (meta != Py_None && PyObject_GetBuffer(meta, &mv, PyBUF_SIMPLE)) return -1;
    qv_cache *c = qvpy_cache_enter(cache);
    if (!c) {
        if (meta != Py_None) PyBuffer_Release(&mv);
        return -1;
    }
    qv_store_info info = QV_STORE_INFO_INIT;
    info.start_ns = start_ns;
    info.duration_ns = duration_ns;
    info.lang = "python";
    if (meta != Py_None) {
        info.meta = mv.buf;
        info.meta_len = (uint64_t)mv.len;
    }
    qv_status st;
    Py_BEGIN_ALLOW_THREADS
    st = qv_cache_store(c, NULL, call, call_len, result, result_len, &info);
    Py_END_ALLOW_THREADS
    qvpy_cache_leave(cache);
    if (meta != Py_None) PyBuffer_Release(&mv);
    if (st) {
        qvpy_raise(st);
        return -1;
    }
    return 0;
}

/* _store(cache, args, kwargs, result, start_ns, duration_ns, meta): True when
 * stored, False when the call does not bind. meta: an encoded map or None. */
static PyObject *qvpy_memo_store_m(qvpy_memo *m, PyObject *a) {
    PyObject *cache, *args, *kwargs, *result, *meta;
    long long start_ns, duration_ns;
    if (!qvpy_memo_ready(m) ||
        !PyArg_ParseTuple(a, "OO!OOLLO", &cache, &PyTuple_Type, &args, &kwargs, &result, &start_ns, &duration_ns, &meta))
        return NULL;
    if (kwargs != Py_None && !qvpy_kwargs_arg(kwargs)) return NULL;
    qv_encoder *enc = qvpy_enc_acquire(0);
    if (!enc) return NULL;
    const void *call;
    size_t call_len;
    int r = qvpy_memo_call_bytes(m, enc, args, kwargs == Py_None ? NULL : kwargs, &call, &call_len);
    if (r) {
        qvpy_enc_release(0, enc);
        if (r < 0) return NULL;
        Py_RETURN_FALSE;
    }
    qv_encoder *renc = qvpy_enc_acquire(1);
    if (!renc) {
        qvpy_enc_release(0, enc);
        return NULL;
    }
    qv_encoder_reset(renc);
    const void *res;
    size_t res_len;
    r = qvpy_encode_as(renc, result, 0);
    if (!r) {
        qv_status st = qv_encoder_finish(renc, &res, &res_len);
        if (st) r = qvpy_enc_fail(st);
    }
    if (!r) r = qvpy_store(cache, call, call_len, res, res_len, start_ns, duration_ns, meta);
    qvpy_enc_release(1, renc);
    qvpy_enc_release(0, enc);
    if (r) return NULL;
    Py_RETURN_TRUE;
}

/* ------------------------------------------------- the call runtime */

/* A miss of a Python memo through qv_call_run: the lease is waited on with
 * the GIL released (its holder may be another thread of this process that
 * needs the GIL to finish), and taken back only to run Python code. */
typedef struct {
    PyThreadState *ts;
    PyObject *runner;      /* runner(args, kwargs) runs the function */
    PyObject *args, *kwargs;
    PyObject *const *argv; /* else runner(*argv[0 .. nargs)): the function itself */
    Py_ssize_t nargs;
    PyObject *future_type; /* a result of this type is stored when it completes, by Python */
    int trusted;
    qv_encoder *renc;
    PyObject *result;      /* what the function returned, or the hit decoded */
    PyObject *err_type, *err_value, *err_tb; /* the function's exception */
    int deferred;          /* the result is a future */
    int quiet;             /* qvpy_lookup has warned about this call's stored result */
} qvpy_run;

static qv_status qvpy_run_hit(const void *data, size_t len, void *userdata) {
    qvpy_run *r = userdata;
    PyEval_RestoreThread(r->ts);
    PyObject *v = qvpy_decode_bytes(data, len, r->trusted);
    qv_status st = QV_OK;
    if (v) {
        Py_XSETREF(r->result, v);
    } else {
        /* Valid CBOR that Python cannot rebuild, or will not (a pickle from a
         * cache others could write): a miss, and the new result replaces it. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (!r->quiet && PyErr_WarnFormat(qvpy_warning ? qvpy_warning : PyExc_RuntimeWarning, 1,
                                          "a stored result could not be decoded and was read as a miss: %S; the "
                                          "call runs again and its result replaces the entry (to read it instead, "
                                          "make its types importable here or quiver.register their decoder)",
                                          value))
            PyErr_Clear();
        r->quiet = 1;
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        st = QV_NOTFOUND;
    }
    r->ts = PyEval_SaveThread();
    return st;
}

static qv_status qvpy_run_body(const void **result, size_t *len, void *userdata) {
    qvpy_run *r = userdata;
    PyEval_RestoreThread(r->ts);
    qv_status st = QV_OK;
    PyObject *v = r->argv ? PyObject_Vectorcall(r->runner, r->argv, (size_t)r->nargs, NULL)
                          : PyObject_CallFunctionObjArgs(r->runner, r->args, r->kwargs, NULL);
    if (!v) {
        PyErr_Fetch(&r->err_type, &r->err_value, &r->err_tb);
        st = qv_error_set(QV_EFAILED, "the function raised");
    } else {
        Py_XSETREF(r->result, v);
        int is_future = r->future_type != Py_None ? PyObject_IsInstance(v, r->future_type) : 0;
        if (is_future > 0) {
            r->deferred = 1;
            st = qv_error_set(QV_EENCODE, "a future: its result is stored when it completes");
        } else {
            qv_encoder_reset(r->renc);
            int e = is_future < 0 ? -1 : qvpy_encode_as(r->renc, v, 0);
            if (!e) e = qv_encoder_finish(r->renc, result, len) ? -1 : 0;
            if (e) {
                PyObject *type, *value, *tb;
                PyErr_Fetch(&type, &value, &tb);
                PyObject *text = value ? PyObject_Str(value) : NULL;
                const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
                st = qv_error_set(QV_EENCODE, msg ? msg : "the result cannot be encoded");
                PyErr_Clear();
                Py_XDECREF(text);
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
            }
        }
    }
    r->ts = PyEval_SaveThread();
    return st;
}

/* One call through the runtime, the GIL released but to run Python: the
 * status; run holds the result, or the function's exception. */
static qv_status qvpy_run_through(qv_cache *c, const qv_digest *key, const void *call, size_t call_len,
                                  const qv_call_options *o, qvpy_run *run, int *outcome) {
    qvpy_tls *t = qvpy_tls_get(); /* made already: the caller's encoders are in it */
    if (!t) PyErr_Clear();
    else if (t->has_refused) {
        run->quiet = !memcmp(&t->refused, key, sizeof *key);
        t->has_refused = 0;
    }
    run->ts = PyEval_SaveThread();
    qv_status st = qv_call_run(outcome, c, key, call, call_len, o, qvpy_run_hit, qvpy_run_body, run);
    PyEval_RestoreThread(run->ts);
    return st;
}

/* _run_call(cache, args, kwargs, runner, meta, flags, wait_ns, future_type):
 * (outcome, value, why). outcome is QV_CALL_HIT, QV_CALL_STORED or the
 * negative status of a store that failed, why its message; the function's
 * own exception propagates. None when the call does not bind. */
static PyObject *qvpy_memo_run_call_m(qvpy_memo *m, PyObject *a) {
    PyObject *cache, *args, *kwargs, *runner, *meta, *future_type;
    unsigned int flags;
    long long wait_ns;
    if (!qvpy_memo_ready(m) || !PyArg_ParseTuple(a, "OO!OOOILO", &cache, &PyTuple_Type, &args, &kwargs, &runner,
                                                 &meta, &flags, &wait_ns, &future_type))
        return NULL;
    if (kwargs != Py_None && !qvpy_kwargs_arg(kwargs)) return NULL;
    if (!PyObject_TypeCheck(cache, &qvpy_cache_type)) {
        PyErr_Format(PyExc_TypeError, "expected a quiver.Cache, not %.100s", Py_TYPE(cache)->tp_name);
        return NULL;
    }
    Py_buffer mv = {0};
    if (meta != Py_None && PyObject_GetBuffer(meta, &mv, PyBUF_SIMPLE)) return NULL;
    qv_encoder *enc = qvpy_enc_acquire(0), *renc = enc ? qvpy_enc_acquire(1) : NULL;
    PyObject *out = NULL;
    const void *call;
    size_t call_len;
    int r = renc ? qvpy_memo_call_bytes(m, enc, args, kwargs == Py_None ? NULL : kwargs, &call, &call_len) : -1;
    qv_cache *c = r == 0 ? qvpy_cache_enter(cache) : NULL;
    if (r > 0) {
        out = Py_None;
        Py_INCREF(out);
    } else if (c) {
        PyObject *kw = kwargs == Py_None ? PyDict_New() : (Py_INCREF(kwargs), kwargs);
        qvpy_run run = {NULL, runner, args, kw, NULL, 0, future_type, ((qvpy_cache *)cache)->trusted, renc};
        qv_call_options o = QV_CALL_OPTIONS_INIT;
        o.flags = flags;
        o.wait_timeout_ns = wait_ns;
        o.lang = "python";
        if (meta != Py_None) {
            o.meta = mv.buf;
            o.meta_len = (uint64_t)mv.len;
        }
        qv_digest key;
        qv_digest_bytes(&key, call, call_len);
        int outcome = QV_CALL_HIT;
        qv_status st = kw ? qvpy_run_through(c, &key, call, call_len, &o, &run, &outcome) : QV_OK;
        qvpy_cache_leave(cache);
        if (!kw) {
            /* PyDict_New failed: its exception is set */
        } else if (run.err_type) {
            PyErr_Restore(run.err_type, run.err_value, run.err_tb);
        } else if (st) {
            qvpy_raise(st);
        } else if (outcome < 0 && !run.deferred) {
            out = Py_BuildValue("iOs", outcome, run.result, qv_errmsg());
        } else {
            out = Py_BuildValue("iOO", outcome, run.result ? run.result : Py_None, Py_None);
        }
        Py_XDECREF(run.result);
        Py_XDECREF(kw);
    }
    if (renc) qvpy_enc_release(1, renc);
    if (enc) qvpy_enc_release(0, enc);
    if (meta != Py_None) PyBuffer_Release(&mv);
    return out;
}

static long long qvpy_clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A miss the hit path met, when the memo is miss_ready: run through the
 * runtime from here, with no argument tuple and no Python frame of ours.
 * The result, NULL with an exception, or qvpy_sig_miss (borrowed) when the
 * general path must take the call: quiver.meta(...) is active, or the cache
 * stands in for another process's. A result that was not stored goes to
 * Memo._ran, which warns or stores a future's result when it completes. */
static PyObject *qvpy_memo_fast_miss(qvpy_memo *m, PyObject *cache, PyObject *const *argv, Py_ssize_t na,
                                     const uint8_t *call, size_t call_len, const qv_digest *key) {
    static PyObject *stand_in_name;
    PyObject *meta = NULL;
    if (qvpy_meta_var && PyContextVar_Get(qvpy_meta_var, NULL, &meta)) return NULL;
    int plain = !meta || (PyDict_Check(meta) && PyDict_GET_SIZE(meta) == 0);
    Py_XDECREF(meta);
    if (!stand_in_name && !(stand_in_name = PyUnicode_InternFromString("_stand_in"))) return NULL;
    PyObject *stand_in = plain ? PyObject_GetAttr(cache, stand_in_name) : NULL;
    if (!stand_in) PyErr_Clear();
    plain = plain && stand_in == Py_False;
    Py_XDECREF(stand_in);
    if (!plain) return qvpy_sig_miss;

    qv_cache *c = qvpy_cache_enter(cache);
    if (!c) return NULL;
    qv_encoder *renc = qvpy_enc_acquire(1);
    if (!renc) {
        qvpy_cache_leave(cache);
        return NULL;
    }
    qvpy_run run = {NULL, m->fn, NULL, NULL, argv, na, m->future_type, ((qvpy_cache *)cache)->trusted, renc};
    qv_call_options o = QV_CALL_OPTIONS_INIT;
    o.flags = m->miss_flags;
    o.wait_timeout_ns = m->miss_wait_ns;
    o.lang = "python";
    if (m->miss_meta) {
        o.meta = PyBytes_AS_STRING(m->miss_meta);
        o.meta_len = (uint64_t)PyBytes_GET_SIZE(m->miss_meta);
    }
    long long start = qvpy_clock_ns(CLOCK_REALTIME), t0 = qvpy_clock_ns(CLOCK_MONOTONIC);
    int outcome = QV_CALL_HIT;
    qv_status st = qvpy_run_through(c, key, call, call_len, &o, &run, &outcome);
    PyObject *why = !st && outcome < 0 && !run.deferred ? PyUnicode_FromString(qv_errmsg()) : NULL;
    qvpy_cache_leave(cache);
    qvpy_enc_release(1, renc);
    PyObject *out = NULL;
    if (run.err_type) {
        PyErr_Restore(run.err_type, run.err_value, run.err_tb);
    } else if (st) {
        qvpy_raise(st);
    } else if (outcome >= 0) {
        out = run.result ? run.result : Py_None;
        Py_INCREF(out);
    } else {
        PyObject *args = PyTuple_New(na), *kwargs = args ? PyDict_New() : NULL;
        for (Py_ssize_t i = 0; kwargs && i < na; i++) {
            Py_INCREF(argv[i]);
            PyTuple_SET_ITEM(args, i, argv[i]);
        }
        if (kwargs && (why || run.deferred))
            out = PyObject_CallMethod((PyObject *)m, "_ran", "OOOiOOLLi", cache, args, kwargs, outcome,
                                      run.result ? run.result : Py_None, why ? why : Py_None, start, t0, 3);
        Py_XDECREF(args);
        Py_XDECREF(kwargs);
    }
    Py_XDECREF(why);
    Py_XDECREF(run.result);
    return out;
}

/* _miss_in_c(meta, flags, wait_ns, future_type): a miss the hit path meets
 * runs through the runtime from C, with these options; _compute's own. */
static PyObject *qvpy_memo_miss_in_c(qvpy_memo *m, PyObject *a) {
    PyObject *meta, *future_type;
    unsigned int flags;
    long long wait_ns;
    if (!qvpy_memo_ready(m) || !PyArg_ParseTuple(a, "OILO", &meta, &flags, &wait_ns, &future_type)) return NULL;
    if (meta != Py_None && !PyBytes_Check(meta)) {
        PyErr_SetString(PyExc_TypeError, "meta must be bytes or None");
        return NULL;
    }
    Py_XSETREF(m->miss_meta, meta == Py_None ? NULL : (Py_INCREF(meta), meta));
    Py_INCREF(future_type);
    Py_XSETREF(m->future_type, future_type);
    m->miss_flags = flags;
    m->miss_wait_ns = wait_ns;
    m->miss_ready = 1;
    Py_RETURN_NONE;
}

static PyObject *qvpy_memo_get_name(qvpy_memo *m, void *unused) {
    if (!qvpy_memo_ready(m)) return NULL;
    Py_INCREF(m->name);
    return m->name;
}

static PyObject *qvpy_memo_get_version(qvpy_memo *m, void *unused) {
    if (!qvpy_memo_ready(m)) return NULL;
    Py_INCREF(m->version);
    return m->version;
}

static PyObject *qvpy_memo_get_fn(qvpy_memo *m, void *unused) {
    if (!qvpy_memo_ready(m)) return NULL;
    Py_INCREF(m->fn);
    return m->fn;
}

/* _set_context_vars(rerun, meta): the ContextVars that say a rerun is under
 * way and hold quiver.meta(...). */
static PyObject *qvpy_memo_set_context_vars(PyObject *unused, PyObject *a) {
    PyObject *rerun, *meta;
    if (!PyArg_ParseTuple(a, "O!O!", &PyContextVar_Type, &rerun, &PyContextVar_Type, &meta)) return NULL;
    Py_INCREF(rerun);
    Py_XSETREF(qvpy_rerun_var, rerun);
    Py_INCREF(meta);
    Py_XSETREF(qvpy_meta_var, meta);
    Py_RETURN_NONE;
}

/* _rerun_seen(): a rerun is about to set the rerun variable. */
static PyObject *qvpy_memo_rerun_seen(PyObject *unused, PyObject *noarg) {
    qvpy_rerun_seen = 1;
    Py_RETURN_NONE;
}

static PyMethodDef qvpy_memo_methods[] = {
    {"_rerun_seen", (PyCFunction)qvpy_memo_rerun_seen, METH_NOARGS | METH_STATIC,
     "_rerun_seen(): say that a rerun is about to set the rerun variable; hits look it up from then on."},
    {"_set_context_vars", (PyCFunction)qvpy_memo_set_context_vars, METH_VARARGS | METH_STATIC,
     "_set_context_vars(rerun, meta): the ContextVars holding the calls rerun so far inside Memo.rerun, and "
     "quiver.meta(...) (a miss merges what it holds in Python)."},
    {"_miss_in_c", (PyCFunction)qvpy_memo_miss_in_c, METH_VARARGS,
     "_miss_in_c(meta, flags, wait_ns, future_type): a miss of a positional call runs through the runtime "
     "from C with these options."},
    {"_get", (PyCFunction)qvpy_memo_get_m, METH_VARARGS, "_get(cache, args, kwargs): the stored result or a signal."},
    {"_call", (PyCFunction)qvpy_memo_call_m, METH_VARARGS, "_call(args, kwargs): (digest, call encoding) or None."},
    {"_store", (PyCFunction)qvpy_memo_store_m, METH_VARARGS,
     "_store(cache, args, kwargs, result, start_ns, duration_ns, meta): store one call."},
    {"_run_call", (PyCFunction)qvpy_memo_run_call_m, METH_VARARGS,
     "_run_call(cache, args, kwargs, runner, meta, flags, wait_ns, future_type): a miss through the call "
     "runtime: (outcome, value, why)."},
    {NULL}};

static PyGetSetDef qvpy_memo_getset[] = {
    {"name", (getter)qvpy_memo_get_name, NULL, "The name calls are stored under.", NULL},
    {"version", (getter)qvpy_memo_get_version, NULL, "The version (None when unversioned).", NULL},
    {"__wrapped__", (getter)qvpy_memo_get_fn, NULL, "The function itself.", NULL},
    {NULL}};

PyTypeObject qvpy_memo_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "quiver._quiver.MemoBase",
    .tp_basicsize = sizeof(qvpy_memo),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(qvpy_memo, vectorcall),
    .tp_doc = "A memoized function: binding, encoding, lookup and decoding of a hit in one call.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)qvpy_memo_init,
    .tp_call = (ternaryfunc)qvpy_memo_call,
    .tp_dealloc = (destructor)qvpy_memo_dealloc,
    .tp_traverse = (traverseproc)qvpy_memo_traverse,
    .tp_clear = (inquiry)qvpy_memo_clear,
    .tp_methods = qvpy_memo_methods,
    .tp_getset = qvpy_memo_getset,
    .tp_dictoffset = offsetof(qvpy_memo, dict),
    .tp_weaklistoffset = offsetof(qvpy_memo, weakrefs),
};
