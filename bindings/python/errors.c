/* Python exceptions for quiver status codes: quiver.Error and its subclasses. */
#include "qvpy.h"

/* ---------------------------------------------------------------- errors */

PyObject *qvpy_Error;
PyObject *qvpy_errors[QVPY_NSTATUS]; /* by -status */

static PyObject *qvpy_error_class(qv_status st) {
    if (st < 0 && -st < QVPY_NSTATUS && qvpy_errors[-st]) return qvpy_errors[-st];
    return qvpy_Error;
}

/* Raise the exception for st with the thread's message; returns NULL. */
PyObject *qvpy_raise(qv_status st) {
    /* QV_NOTFOUND is an answer and leaves no message of its own. */
    const char *msg = st == QV_NOTFOUND ? NULL : qv_errmsg();
    return qvpy_raise_msg(st, msg && *msg ? msg : qv_strerror(st));
}

PyObject *qvpy_raise_msg(qv_status st, const char *msg) {
    PyObject *exc = PyObject_CallFunction(qvpy_error_class(st), "s", msg);
    if (!exc) return NULL;
    PyObject *code = PyLong_FromLong(st);
    if (code) {
        PyObject_SetAttrString(exc, "status", code);
        Py_DECREF(code);
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

void qvpy_make_errors(PyObject *m) {
    static const struct { qv_status st; const char *name; PyObject **extra; } table[] = {
        {QV_NOTFOUND, "NotFoundError", &PyExc_KeyError},
        {QV_EINVAL, "InvalidArgumentError", &PyExc_ValueError},
        {QV_ENOMEM, "NoMemoryError", &PyExc_MemoryError},
        {QV_EDECODE, "DecodeError", &PyExc_ValueError},
        {QV_EENCODE, "EncodeError", &PyExc_ValueError},
        {QV_ESTORE, "StoreError", NULL},
        {QV_EFULL, "FullError", NULL},
        {QV_EREADONLY, "ReadOnlyError", NULL},
        {QV_ECORRUPT, "CorruptError", NULL},
        {QV_ECLOSED, "ClosedError", NULL},
        {QV_EMISUSE, "MisuseError", NULL},
        {QV_EIO, "IOError", &PyExc_OSError},
        {QV_ERANGE, "RangeError", &PyExc_OverflowError},
        {QV_ETYPE, "TypeError", &PyExc_TypeError},
        {QV_ETIMEOUT, "TimeoutError", &PyExc_TimeoutError},
        {QV_ECANCELLED, "CancelledError", NULL},
        {QV_EFAILED, "FailedError", NULL},
    };
    qvpy_Error = PyErr_NewExceptionWithDoc("quiver.Error",
        "Base of quiver's errors; .status is the C status code.", NULL, NULL);
    if (!qvpy_Error) return;
    Py_INCREF(qvpy_Error);
    PyModule_AddObject(m, "Error", qvpy_Error);
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        char full[64];
        snprintf(full, sizeof full, "quiver.%s", table[i].name);
        PyObject *bases = table[i].extra ? PyTuple_Pack(2, qvpy_Error, *table[i].extra) : PyTuple_Pack(1, qvpy_Error);
        if (!bases) return;
        PyObject *cls = PyErr_NewException(full, bases, NULL);
        Py_DECREF(bases);
        if (!cls) return;
        qvpy_errors[-table[i].st] = cls;
        Py_INCREF(cls);
        PyModule_AddObject(m, table[i].name, cls);
    }
}
