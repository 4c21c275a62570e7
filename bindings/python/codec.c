/* Python objects to canonical CBOR and back, straight through the core's
 * streaming encoder and pull decoder (DESIGN section 3). */
#include "qvpy.h"

/* ------------------------------------------------- per-thread codec state */

pthread_key_t qvpy_tls_key;
static __thread qvpy_tls *qvpy_tls_cur;

void qvpy_tls_free(void *p) {
    qvpy_tls *t = p;
    qv_encoder_free(t->enc[0]);
    qv_encoder_free(t->enc[1]);
    qv_decoder_free(t->dec);
    free(t->buf);
    free(t);
}

qvpy_tls *qvpy_tls_get(void) {
    qvpy_tls *t = qvpy_tls_cur;
    if (t) return t;
    t = calloc(1, sizeof *t);
    if (!t || qv_encoder_new(&t->enc[0]) || qv_encoder_new(&t->enc[1]) || qv_decoder_new(&t->dec)) {
        if (t) qvpy_tls_free(t);
        PyErr_NoMemory();
        return NULL;
    }
    pthread_setspecific(qvpy_tls_key, t);
    qvpy_tls_cur = t;
    return t;
}

/* slot 0: calls, slot 1: results and plain values. */
qv_encoder *qvpy_enc_acquire(int slot) {
    qvpy_tls *t = qvpy_tls_get();
    if (!t) return NULL;
    if (!t->busy[slot]) {
        t->busy[slot] = 1;
        return t->enc[slot];
    }
    qv_encoder *e;
    if (qv_encoder_new(&e)) {
        PyErr_NoMemory();
        return NULL;
    }
    return e;
}

void qvpy_enc_release(int slot, qv_encoder *e) {
    qvpy_tls *t = qvpy_tls_cur;
    if (t && e == t->enc[slot]) t->busy[slot] = 0;
    else qv_encoder_free(e);
}

static qv_decoder *qvpy_dec_acquire(void) {
    qvpy_tls *t = qvpy_tls_get();
    if (!t) return NULL;
    if (!t->dec_busy) {
        t->dec_busy = 1;
        return t->dec;
    }
    qv_decoder *d;
    if (qv_decoder_new(&d)) {
        PyErr_NoMemory();
        return NULL;
    }
    return d;
}

static void qvpy_dec_release(qv_decoder *d) {
    qvpy_tls *t = qvpy_tls_cur;
    if (t && d == t->dec) t->dec_busy = 0;
    else qv_decoder_free(d);
}

/* ------------------------------------------------------ hooks from Python */

PyObject *qvpy_encode_hook;  /* obj -> a replacement object to encode */
PyObject *qvpy_tag_hook;     /* (tag, content, trusted) -> object */
PyObject *qvpy_tag_type;     /* quiver.Tag: (tag, value) */
PyObject *qvpy_ndarray_type; /* numpy.ndarray once numpy has been seen */
PyObject *qvpy_default_getter; /* () -> the default Cache */
PyObject *qvpy_active_var;   /* the ContextVar holding the active Cache */
PyObject *qvpy_sig_miss;
PyObject *qvpy_sig_uncached;
PyObject *qvpy_sig_slow;
PyObject *qvpy_default_cache; /* cached result of qvpy_default_getter */
PyObject *qvpy_warning;
PyObject *qvpy_untrusted;       /* quiver.QuiverWarning */

/* ---------------------------------------------------------------- encoder */

int qvpy_enc_fail(qv_status st) {
    qvpy_raise(st);
    return -1;
}

#define QVPY_TRY(call) do { qv_status st_ = (call); if (st_) return qvpy_enc_fail(st_); } while (0)

static int qvpy_encode_bigint(qv_encoder *enc, PyObject *o) {
    /* Values beyond 64 bits: sign and big-endian magnitude (of -1 - v when negative). */
    int negative = PyObject_RichCompareBool(o, Py_False, Py_LT);
    if (negative < 0) return -1;
    PyObject *mag = negative ? PyNumber_Invert(o) : (Py_INCREF(o), o);
    if (!mag) return -1;
    PyObject *bits = PyObject_CallMethod(mag, "bit_length", NULL);
    Py_ssize_t nbits = bits ? PyLong_AsSsize_t(bits) : -1;
    Py_XDECREF(bits);
    if (nbits < 0) {
        Py_DECREF(mag);
        return -1;
    }
    PyObject *raw = PyObject_CallMethod(mag, "to_bytes", "ns", (nbits + 7) / 8, "big");
    Py_DECREF(mag);
    if (!raw) return -1;
    qv_status st = qv_encoder_bigint(enc, negative, PyBytes_AS_STRING(raw), (size_t)PyBytes_GET_SIZE(raw));
    Py_DECREF(raw);
    return st ? qvpy_enc_fail(st) : 0;
}

static int qvpy_encode_int(qv_encoder *enc, PyObject *o) {
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (!overflow) {
        if (v == -1 && PyErr_Occurred()) return -1;
        QVPY_TRY(qv_encoder_int(enc, v));
        return 0;
    }
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(o);
        if (!(u == (unsigned long long)-1 && PyErr_Occurred())) {
            QVPY_TRY(qv_encoder_uint(enc, u));
            return 0;
        }
        PyErr_Clear();
    }
    return qvpy_encode_bigint(enc, o);
}

/* A set: the encoder's canonical set sorts the elements by their encodings
 * and writes equal ones once, as every binding's sets do. */
static int qvpy_encode_set(qv_encoder *enc, PyObject *o) {
    Py_ssize_t n = PySet_GET_SIZE(o), got = 0;
    qv_status st = qv_encoder_set_begin(enc);
    if (st) return qvpy_enc_fail(st);
    PyObject *it = PyObject_GetIter(o), *item;
    if (!it) return -1;
    while ((item = PyIter_Next(it))) {
        int r = qvpy_encode(enc, item);
        Py_DECREF(item);
        if (r) {
            Py_DECREF(it);
            return -1;
        }
        got++;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return -1;
    if (got != n) {
        PyErr_SetString(PyExc_RuntimeError, "set changed size during encoding");
        return -1;
    }
    if ((st = qv_encoder_set_end(enc))) return qvpy_enc_fail(st);
    return 0;
}

/* Megabyte buffers are hashed (or copied) without the GIL: the caller holds
 * the object, and an exported buffer cannot be resized under us. */
static qv_status qvpy_enc_bytes(qv_encoder *enc, const void *p, size_t n) {
    if (n < (64u << 10)) return qv_encoder_bytes(enc, p, n);
    qv_status st;
    Py_BEGIN_ALLOW_THREADS
    st = qv_encoder_bytes(enc, p, n);
    Py_END_ALLOW_THREADS
    return st;
}

/* RFC 8746 typed-array tag for a little-endian buffer format, or 0. */
static uint64_t qvpy_typed_tag(const char *fmt, Py_ssize_t itemsize) {
    if (!fmt) return 0;
    if (*fmt == '<' || *fmt == '=' || *fmt == '@') fmt++;
    else if (*fmt == '>' || *fmt == '!') return 0; /* big-endian: the hook converts it */
    if (!fmt[0] || fmt[1]) return 0;
    char c = fmt[0];
    char kind = strchr("bhilq", c) ? 'i' : strchr("BHILQ", c) ? 'u' : strchr("efd", c) ? 'f' : 0;
    return kind && itemsize > 0 ? qv_typed_array_tag(kind, (uint32_t)itemsize, 1) : 0;
}

/* A C-contiguous little-endian numeric ndarray: tag 40 [shape, typed array],
 * the data hashed or copied where it lies. 1: done; 0: not this fast case. */
static int qvpy_encode_ndarray(qv_encoder *enc, PyObject *o) {
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)) {
        PyErr_Clear();
        return 0;
    }
    uint64_t tag = qvpy_typed_tag(view.format, view.itemsize);
    int rc = 0;
    if (tag) {
        qv_status st;
        if ((st = qv_encoder_tag(enc, QV_TAG_NDARRAY)) || (st = qv_encoder_list(enc, 2)) ||
            (st = qv_encoder_list(enc, (uint64_t)view.ndim))) {
            rc = qvpy_enc_fail(st);
            goto out;
        }
        for (int i = 0; i < view.ndim; i++) {
            if ((st = qv_encoder_uint(enc, (uint64_t)view.shape[i]))) {
                rc = qvpy_enc_fail(st);
                goto out;
            }
        }
        if ((st = qv_encoder_tag(enc, tag)) || (st = qvpy_enc_bytes(enc, view.buf, (size_t)view.len))) {
            rc = qvpy_enc_fail(st);
            goto out;
        }
        rc = 1;
    }
out:
    PyBuffer_Release(&view);
    return rc;
}

static int qvpy_encode_buffer(qv_encoder *enc, PyObject *o) {
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_C_CONTIGUOUS)) return -1;
    qv_status st = qvpy_enc_bytes(enc, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return st ? qvpy_enc_fail(st) : 0;
}

/* Set while a stored result is encoded: no call is found by its bytes, so
 * the hook may pickle it with the fast pickler instead of the canonical one. */
static __thread int qvpy_encoding_result;
/* Set while a memo that keys paths by content encodes its call: the hook
 * then replaces a pathlib.Path with what it holds (docs/FORMAT.md 3.4). */
__thread int qvpy_keying_paths;

static int qvpy_encode_hooked(qv_encoder *enc, PyObject *o) {
    if (!qvpy_encode_hook) {
        PyErr_Format(qvpy_errors[-QV_EENCODE], "cannot encode an object of type %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    PyObject *keyed = qvpy_encoding_result ? Py_False : qvpy_keying_paths ? PyLong_FromLong(2) : Py_True;
    if (!keyed) return -1;
    PyObject *r = PyObject_CallFunctionObjArgs(qvpy_encode_hook, o, keyed, NULL);
    if (keyed != Py_False && keyed != Py_True) Py_DECREF(keyed);
    if (!r) return -1;
    int rc;
    if (r == o) {
        PyErr_Format(qvpy_errors[-QV_EENCODE], "the encoder hook returned the %.100s it was given", Py_TYPE(o)->tp_name);
        rc = -1;
    } else {
        rc = qvpy_encode(enc, r);
    }
    Py_DECREF(r);
    return rc;
}

int qvpy_encode(qv_encoder *enc, PyObject *o) {
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type) return qvpy_encode_int(enc, o);
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (!s) {
            PyErr_Clear();
            qvpy_raise_msg(QV_EENCODE, "text with lone surrogates is not valid UTF-8");
            return -1;
        }
        QVPY_TRY(qv_encoder_text_trusted(enc, s, (size_t)n));
        return 0;
    }
    if (t == &PyFloat_Type) {
        QVPY_TRY(qv_encoder_float(enc, PyFloat_AS_DOUBLE(o)));
        return 0;
    }
    if (o == Py_None) {
        QVPY_TRY(qv_encoder_null(enc));
        return 0;
    }
    if (o == Py_True || o == Py_False) {
        QVPY_TRY(qv_encoder_bool(enc, o == Py_True));
        return 0;
    }
    if (t == &PyBytes_Type) {
        QVPY_TRY(qvpy_enc_bytes(enc, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o)));
        return 0;
    }
    if ((PyObject *)t == qvpy_tag_type) {
        PyObject *tag = PyTuple_GET_ITEM(o, 0);
        unsigned long long v = PyLong_AsUnsignedLongLong(tag);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        QVPY_TRY(qv_encoder_tag(enc, v));
        if (Py_EnterRecursiveCall(" while encoding")) return -1;
        int r = qvpy_encode(enc, PyTuple_GET_ITEM(o, 1));
        Py_LeaveRecursiveCall();
        return r;
    }
    if (t == &PyTuple_Type || t == &PyList_Type) {
        int is_list = t == &PyList_Type;
        Py_ssize_t n = is_list ? PyList_GET_SIZE(o) : PyTuple_GET_SIZE(o);
        if (!is_list) QVPY_TRY(qv_encoder_tag(enc, QV_TAG_TUPLE));
        QVPY_TRY(qv_encoder_list(enc, (uint64_t)n));
        if (Py_EnterRecursiveCall(" while encoding")) return -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (is_list && PyList_GET_SIZE(o) != n) {
                Py_LeaveRecursiveCall();
                PyErr_SetString(PyExc_RuntimeError, "list changed size during encoding");
                return -1;
            }
            PyObject *item = is_list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i);
            Py_INCREF(item);
            int r = qvpy_encode(enc, item);
            Py_DECREF(item);
            if (r) {
                Py_LeaveRecursiveCall();
                return -1;
            }
        }
        Py_LeaveRecursiveCall();
        return 0;
    }
    if (t == &PyDict_Type) {
        QVPY_TRY(qv_encoder_map_begin(enc));
        if (Py_EnterRecursiveCall(" while encoding")) return -1;
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        int r = 0;
        while (!r && PyDict_Next(o, &pos, &k, &v)) {
            Py_INCREF(k);
            Py_INCREF(v);
            r = qvpy_encode(enc, k);
            if (!r) r = qvpy_encode(enc, v);
            Py_DECREF(k);
            Py_DECREF(v);
        }
        Py_LeaveRecursiveCall();
        if (r) return -1;
        QVPY_TRY(qv_encoder_map_end(enc));
        return 0;
    }
    if (t == &PySet_Type || t == &PyFrozenSet_Type) {
        if (Py_EnterRecursiveCall(" while encoding")) return -1;
        int r = qvpy_encode_set(enc, o);
        Py_LeaveRecursiveCall();
        return r;
    }
    if (qvpy_ndarray_type && (PyObject *)t == qvpy_ndarray_type) {
        int r = qvpy_encode_ndarray(enc, o);
        if (r) return r < 0 ? -1 : 0;
        return qvpy_encode_hooked(enc, o);
    }
    if (t == &PyByteArray_Type || t == &PyMemoryView_Type) {
        if (qvpy_encode_buffer(enc, o) == 0) return 0;
        if (!PyErr_ExceptionMatches(PyExc_BufferError)) return -1;
        PyErr_Clear(); /* a non-contiguous view: the hook copies it */
    }
    return qvpy_encode_hooked(enc, o);
}

/* o encoded as a result (keyed: 0) or as a value whose digest matters (keyed: 1). */
int qvpy_encode_as(qv_encoder *enc, PyObject *o, int keyed) {
    int saved = qvpy_encoding_result, paths = qvpy_keying_paths;
    qvpy_encoding_result = !keyed;
    qvpy_keying_paths = 0;
    int r = qvpy_encode(enc, o);
    qvpy_encoding_result = saved;
    qvpy_keying_paths = paths;
    return r;
}

/* ---------------------------------------------------------------- decoder */

static PyObject *qvpy_decode_item(qv_decoder *dec, int key, int trusted);

static PyObject *qvpy_dec_fail(qv_status st) {
    if (st == QV_NOTFOUND) return qvpy_raise_msg(QV_EDECODE, "truncated: the input ends early");
    return qvpy_raise(st);
}

static PyObject *qvpy_bytes_to_int(const uint8_t *m, size_t len, int negative) {
    PyObject *mag = PyObject_CallMethod((PyObject *)&PyLong_Type, "from_bytes", "y#s", (const char *)m,
                                        (Py_ssize_t)len, "big");
    if (!mag || !negative) return mag;
    PyObject *r = PyNumber_Invert(mag);
    Py_DECREF(mag);
    return r;
}

/* The items of the list just returned by next, as a list or a tuple; keys:
 * they must be hashable (elements of a set, of a tuple that is a key). */
static PyObject *qvpy_decode_list_items(qv_decoder *dec, uint64_t n, int as_tuple, int keys, int trusted) {
    PyObject *r = as_tuple ? PyTuple_New((Py_ssize_t)n) : PyList_New((Py_ssize_t)n);
    if (!r) return NULL;
    for (uint64_t i = 0; i < n; i++) {
        PyObject *item = qvpy_decode_item(dec, keys, trusted);
        if (!item) {
            Py_DECREF(r);
            return NULL;
        }
        if (as_tuple) PyTuple_SET_ITEM(r, (Py_ssize_t)i, item);
        else PyList_SET_ITEM(r, (Py_ssize_t)i, item);
    }
    return r;
}

static PyObject *qvpy_decode_item(qv_decoder *dec, int key, int trusted) {
    qv_type type;
    qv_status st = qv_decoder_next(dec, &type);
    if (st) return qvpy_dec_fail(st);
    switch (type) {
    case QV_TYPE_NULL: Py_RETURN_NONE;
    case QV_TYPE_BOOL: {
        int b;
        qv_decoder_get_bool(dec, &b);
        return PyBool_FromLong(b);
    }
    case QV_TYPE_INT: {
        int neg;
        uint64_t n;
        qv_decoder_get_cbor_int(dec, &neg, &n);
        if (!neg) return PyLong_FromUnsignedLongLong(n);
        if (n <= (uint64_t)INT64_MAX) return PyLong_FromLongLong(-(long long)n - 1);
        PyObject *p = PyLong_FromUnsignedLongLong(n);
        if (!p) return NULL;
        PyObject *r = PyNumber_Invert(p);
        Py_DECREF(p);
        return r;
    }
    case QV_TYPE_BIGINT: {
        int neg;
        const uint8_t *m;
        size_t len;
        qv_decoder_get_bigint(dec, &neg, &m, &len);
        return qvpy_bytes_to_int(m, len, neg);
    }
    case QV_TYPE_FLOAT: {
        double d;
        qv_decoder_get_float(dec, &d);
        return PyFloat_FromDouble(d);
    }
    case QV_TYPE_TEXT: {
        const uint8_t *s;
        size_t len;
        qv_decoder_get_data(dec, &s, &len);
        return PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)len, "strict");
    }
    case QV_TYPE_BYTES: {
        const uint8_t *s;
        size_t len;
        qv_decoder_get_data(dec, &s, &len);
        return PyBytes_FromStringAndSize((const char *)s, (Py_ssize_t)len);
    }
    case QV_TYPE_LIST: {
        uint64_t n;
        qv_decoder_get_count(dec, &n);
        if (key) return qvpy_raise_msg(QV_ETYPE, "a list cannot be a key of a Python dict or an element of a set");
        if (Py_EnterRecursiveCall(" while decoding")) return NULL;
        PyObject *r = qvpy_decode_list_items(dec, n, 0, 0, trusted);
        Py_LeaveRecursiveCall();
        return r;
    }
    case QV_TYPE_MAP: {
        uint64_t n;
        qv_decoder_get_count(dec, &n);
        if (key) return qvpy_raise_msg(QV_ETYPE, "a map cannot be a key of a Python dict or an element of a set");
        PyObject *d = PyDict_New();
        if (!d || Py_EnterRecursiveCall(" while decoding")) {
            Py_XDECREF(d);
            return NULL;
        }
        for (uint64_t i = 0; i < n; i++) {
            PyObject *k = qvpy_decode_item(dec, 1, trusted);
            PyObject *v = k ? qvpy_decode_item(dec, 0, trusted) : NULL;
            int bad = !v || PyDict_SetItem(d, k, v);
            /* CBOR keys 1, true and 1.0 are distinct; Python would merge them and lose a value. */
            if (!bad && PyDict_GET_SIZE(d) != (Py_ssize_t)i + 1) {
                qvpy_raise_msg(QV_EDECODE, "a map has two distinct keys that are equal in Python (such as 1, "
                                           "true and 1.0)");
                bad = 1;
            }
            if (bad) {
                Py_XDECREF(k);
                Py_XDECREF(v);
                Py_DECREF(d);
                Py_LeaveRecursiveCall();
                return NULL;
            }
            Py_DECREF(k);
            Py_DECREF(v);
        }
        Py_LeaveRecursiveCall();
        return d;
    }
    case QV_TYPE_TAG: {
        uint64_t tag;
        qv_decoder_get_tag(dec, &tag);
        if (Py_EnterRecursiveCall(" while decoding")) return NULL;
        PyObject *r = NULL;
        if (tag == QV_TAG_TUPLE || tag == QV_TAG_SET) {
            qv_type ct;
            if ((st = qv_decoder_next(dec, &ct))) {
                r = qvpy_dec_fail(st);
            } else if (ct == QV_TYPE_LIST) {
                uint64_t n;
                qv_decoder_get_count(dec, &n);
                if (tag == QV_TAG_TUPLE) {
                    r = qvpy_decode_list_items(dec, n, 1, key, trusted);
                } else {
                    PyObject *items = qvpy_decode_list_items(dec, n, 1, 1, trusted);
                    if (items) {
                        r = key ? PyFrozenSet_New(items) : PySet_New(items);
                        Py_DECREF(items);
                        if (r && PySet_GET_SIZE(r) != (Py_ssize_t)n) {
                            Py_CLEAR(r);
                            qvpy_raise_msg(QV_EDECODE, "a set has two distinct elements that are equal in Python "
                                                       "(such as 1, true and 1.0)");
                        }
                    }
                }
            } else {
                r = qvpy_raise_msg(QV_EDECODE, tag == QV_TAG_TUPLE ? "a tuple tag whose content is not a list"
                                                                   : "a set tag whose content is not a list");
            }
        } else {
            PyObject *content = qvpy_decode_item(dec, 0, trusted);
            if (content) {
                if (qvpy_tag_hook) {
                    r = PyObject_CallFunction(qvpy_tag_hook, "KOi", (unsigned long long)tag, content, trusted);
                } else {
                    r = PyObject_CallFunction(qvpy_tag_type ? qvpy_tag_type : (PyObject *)&PyTuple_Type, "KO",
                                              (unsigned long long)tag, content);
                }
                Py_DECREF(content);
            }
        }
        Py_LeaveRecursiveCall();
        return r;
    }
    }
    return qvpy_raise_msg(QV_EDECODE, "unknown item type");
}

/* The results most hits return, an integer of at most 63 bits, null or a
 * bool, read from their one head without a decoder (a third of a small hit's
 * decoding cost); NULL, with no exception, for anything else, including a
 * head that is not the shortest form, which the decoder then refuses. */
static PyObject *qvpy_decode_small(const uint8_t *p, size_t len) {
    static const uint8_t width[4] = {1, 2, 4, 8};
    uint8_t major = p[0] >> 5, ai = p[0] & 31;
    if (major == 7) {
        if (len != 1) return NULL;
        if (ai == 22) Py_RETURN_NONE;
        if (ai == 20) Py_RETURN_FALSE;
        if (ai == 21) Py_RETURN_TRUE;
        return NULL;
    }
    if (major > 1) return NULL;
    uint64_t v = ai;
    if (ai >= 24) {
        if (ai > 27 || len != 1u + width[ai - 24]) return NULL;
        v = 0;
        for (size_t i = 1; i < len; i++) v = v << 8 | p[i];
        static const uint64_t least[4] = {24, 0x100, 0x10000, 0x100000000u};
        if (v < least[ai - 24]) return NULL;
    } else if (len != 1) {
        return NULL;
    }
    if (v > (uint64_t)INT64_MAX) return NULL;
    return PyLong_FromLongLong(major ? -(long long)v - 1 : (long long)v);
}

/* One complete item from data; trusted says whether pickles may be loaded. */
PyObject *qvpy_decode_bytes(const void *data, size_t len, int trusted) {
    if (len && len <= 9) {
        PyObject *r = qvpy_decode_small(data, len);
        if (r) return r;
    }
    qv_decoder *dec = qvpy_dec_acquire();
    if (!dec) return NULL;
    qv_decoder_reset(dec, data, len);
    PyObject *r = qvpy_decode_item(dec, 0, trusted);
    if (r) {
        qv_type t;
        qv_status st = qv_decoder_next(dec, &t);
        if (st != QV_NOTFOUND) {
            Py_DECREF(r);
            r = st ? qvpy_raise(st) : qvpy_raise_msg(QV_EDECODE, "trailing bytes after the item");
        }
    }
    qvpy_dec_release(dec);
    return r;
}
