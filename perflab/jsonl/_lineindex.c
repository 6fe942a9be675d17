/* perflab.jsonl._lineindex: the line index of a mapped file, built at memory speed, and O(1)
 * lookups without Python between the size check and the copy.
 *
 * Why C: finding 200k newlines in 40 MB with numpy takes three passes (compare, pack,
 * unpack) at ~8 GB/s; glibc's memchr does one pass at the speed of memory. And a lookup
 * written in Python spends more on bytecode than on its one system call and its one copy.
 *
 * LineIndex(buffer, fd, on_shrink, threads) scans ``buffer`` (the read-only mapping of the
 * file open as ``fd``) for newlines in ``threads`` threads with the GIL released, checking
 * the file's size (lseek) before every 1 MiB it touches. line(i) copies the line out
 * under a SIGBUS guard, checking that the file did not shrink with one byte of the mapping
 * rather than a system call (see guarded_read). A file shorter than the buffer means its
 * lost pages would SIGBUS: ``on_shrink(True)`` is called instead, and is expected to raise
 * (it says what happened); if it does not, RuntimeError is raised. The reader that owns the
 * index builds the error messages; this module only finds and copies bytes.
 *
 * LineAccess is MemoryMappedReader's base class: its line() is a C method, so that
 * ``reader.line(i)`` runs no bytecode at all (a Python method in between cost 60 ns a
 * lookup, more than the copy). It keeps the reader's index in ``_lines`` and builds it
 * through the reader's ``_index()`` on first use.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define STEP ((Py_ssize_t)1 << 20) /* bytes scanned between two size checks */

typedef struct {
    PyObject_HEAD
    Py_buffer view;     /* the exported mapping; view.obj is NULL once released */
    int64_t *offsets;   /* line i is [offsets[i], offsets[i + 1] - 1) */
    Py_ssize_t lines;
    int fd;
    char last_byte;     /* the snapshot's last byte; 0: no sentinel, lseek every call */
    PyObject *on_shrink;
} LineIndex;

/* ------------------------------------------------------------------ the SIGBUS guard
 *
 * Reading a page of the mapping that a truncation removed raises SIGBUS, which would
 * kill the process. Reads of the mapping here run under a guard: a per-thread jump
 * buffer that our SIGBUS handler jumps back to, so the read fails instead (the JVM does
 * the same for its mapped buffers). A SIGBUS outside a guarded read goes on to the
 * handler ours replaced (faulthandler's, or the default: the process dies as before).
 */

static __thread sigjmp_buf *volatile guard __attribute__((tls_model("initial-exec")));

/* Arm and disarm the guard around the reads it covers: the fences keep the compiler from
 * moving the reads out of the guarded stretch (the handler is the only other reader). */
#define GUARD(jump) (guard = (jump), atomic_signal_fence(memory_order_seq_cst))
#define UNGUARD() (atomic_signal_fence(memory_order_seq_cst), guard = NULL)
static struct sigaction chained;         /* the SIGBUS disposition before ours */
static volatile sig_atomic_t passed_on;  /* a SIGBUS not ours was handed over already */

static void
on_sigbus(int signal_number, siginfo_t *info, void *context)
{
    sigjmp_buf *jump = guard;
    if (jump != NULL) {
        guard = NULL;
        siglongjmp(*jump, 1);
    }
    if (passed_on) { /* handlers chained in a circle (faulthandler enabled after us): end it */
        struct sigaction fatal;
        memset(&fatal, 0, sizeof fatal);
        fatal.sa_handler = SIG_DFL;
        sigaction(SIGBUS, &fatal, NULL);
        return;
    }
    passed_on = 1;
    if (chained.sa_flags & SA_SIGINFO) {
        chained.sa_sigaction(signal_number, info, context);
    }
    else if (chained.sa_handler != SIG_DFL && chained.sa_handler != SIG_IGN) {
        chained.sa_handler(signal_number);
    }
    else { /* the default action: returning re-runs the access, which now kills */
        struct sigaction fatal;
        memset(&fatal, 0, sizeof fatal);
        fatal.sa_handler = SIG_DFL;
        sigaction(SIGBUS, &fatal, NULL);
    }
}

/* Install our handler unless it is in place (another may have replaced it since). Called
 * with the GIL held, before any guarded read. */
static int
install_guard(void)
{
    struct sigaction current, ours;
    if (sigaction(SIGBUS, NULL, &current) != 0)
        return -1;
    if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_sigbus)
        return 0;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = on_sigbus;
    ours.sa_flags = SA_SIGINFO | SA_NODEFER; /* NODEFER: no mask to restore after the jump */
    sigemptyset(&ours.sa_mask);
    chained = current;
    return sigaction(SIGBUS, &ours, NULL);
}

/* One thread's share of the scan: the offset after each newline in [low, high). */
typedef struct {
    const char *data;
    Py_ssize_t low, high, size;
    int fd;
    int64_t *found;
    Py_ssize_t count, capacity;
    int shrunk;     /* the file got shorter than size: stopped before touching lost pages */
    int no_memory;
} Scan;

static int
file_shrunk(int fd, Py_ssize_t size)
{
    off_t now = lseek(fd, 0, SEEK_END);
    return now < 0 || now < (off_t)size;
}

static void *
scan_range(void *arg)
{
    Scan *scan = arg;
    const char *data = scan->data;
    sigjmp_buf jump;
    if (sigsetjmp(jump, 0) != 0) { /* a page vanished under memchr: the file shrank */
        scan->shrunk = 1;
        return NULL;
    }
    GUARD(&jump);
    for (Py_ssize_t begin = scan->low; begin < scan->high; begin += STEP) {
        if (file_shrunk(scan->fd, scan->size)) {
            UNGUARD();
            scan->shrunk = 1;
            return NULL;
        }
        const char *at = data + begin;
        const char *end = data + (begin + STEP < scan->high ? begin + STEP : scan->high);
        while (at < end) {
            const char *newline = memchr(at, '\n', (size_t)(end - at));
            if (newline == NULL)
                break;
            if (scan->count == scan->capacity) {
                Py_ssize_t grown = scan->capacity ? scan->capacity * 2 : 4096;
                int64_t *more = realloc(scan->found, (size_t)grown * sizeof(int64_t));
                if (more == NULL) {
                    UNGUARD();
                    scan->no_memory = 1;
                    return NULL;
                }
                scan->found = more;
                scan->capacity = grown;
            }
            scan->found[scan->count++] = (int64_t)(newline - data) + 1;
            at = newline + 1;
        }
    }
    UNGUARD();
    return NULL;
}

static int guarded_read(LineIndex *self, char *to, int64_t start, Py_ssize_t length);

/* Calls on_shrink(True), which should raise; returns -1 with an exception set. True: the
 * shrink was seen here, even if the file has grown back by the time on_shrink looks. */
static int
report_shrink(LineIndex *self)
{
    PyObject *result = PyObject_CallOneArg(self->on_shrink, Py_True);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    PyErr_SetString(PyExc_RuntimeError, "the file shrank under the line index");
    return -1;
}

static int
LineIndex_init(LineIndex *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"buffer", "fd", "on_shrink", "threads", NULL};
    PyObject *buffer, *on_shrink;
    int fd, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiO|i:LineIndex", keywords, &buffer, &fd,
                                     &on_shrink, &threads))
        return -1;
    if (self->view.obj != NULL || self->offsets != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "LineIndex is already initialised");
        return -1;
    }
    if (!PyCallable_Check(on_shrink)) {
        PyErr_SetString(PyExc_TypeError, "on_shrink must be callable");
        return -1;
    }
    if (threads < 1 || threads > 64) {
        PyErr_Format(PyExc_ValueError, "threads must be in 1..64, got %d", threads);
        return -1;
    }
    if (install_guard() != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_SIMPLE) < 0)
        return -1;
    self->fd = fd;
    Py_INCREF(on_shrink);
    self->on_shrink = on_shrink;

    Py_ssize_t size = self->view.len;
    const char *data = self->view.buf;
    /* Split on STEP boundaries so every share is whole steps, but the last. */
    Py_ssize_t steps = (size + STEP - 1) / STEP;
    if (threads > steps)
        threads = steps > 0 ? (int)steps : 1;
    Scan scans[64];
    memset(scans, 0, sizeof(Scan) * (size_t)threads);
    for (int t = 0; t < threads; t++) {
        scans[t].data = data;
        scans[t].low = steps * t / threads * STEP;
        scans[t].high = t + 1 == threads ? size : steps * (t + 1) / threads * STEP;
        scans[t].size = size;
        scans[t].fd = fd;
    }
    pthread_t workers[64];
    int started = 0, start_failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&workers[t], NULL, scan_range, &scans[t]) != 0) {
            start_failed = 1;
            break;
        }
        started = t;
    }
    scan_range(&scans[0]);
    for (int t = 1; t <= started; t++)
        pthread_join(workers[t], NULL);
    if (start_failed) /* scan what no thread took, here */
        for (int t = started + 1; t < threads; t++)
            scan_range(&scans[t]);
    Py_END_ALLOW_THREADS

    int shrunk = 0, no_memory = 0;
    Py_ssize_t total = 0;
    for (int t = 0; t < threads; t++) {
        shrunk |= scans[t].shrunk;
        no_memory |= scans[t].no_memory;
        total += scans[t].count;
    }
    int error = 0;
    if (no_memory) {
        PyErr_NoMemory();
        error = 1;
    }
    else if (shrunk) {
        report_shrink(self);
        error = 1;
    }
    else {
        /* 0, the offset after each newline, and size + 1 for a last line without one. */
        int unterminated = size > 0 && data[size - 1] != '\n';
        self->offsets = PyMem_Malloc((size_t)(total + 1 + unterminated) * sizeof(int64_t));
        if (self->offsets == NULL) {
            PyErr_NoMemory();
            error = 1;
        }
        else {
            int64_t *out = self->offsets;
            *out++ = 0;
            for (int t = 0; t < threads; t++) {
                memcpy(out, scans[t].found, (size_t)scans[t].count * sizeof(int64_t));
                out += scans[t].count;
            }
            if (unterminated)
                *out = (int64_t)size + 1;
            self->lines = total + unterminated;
            if (size > 0 && !guarded_read(self, &self->last_byte, size - 1, 1)) {
                report_shrink(self);
                error = 1;
            }
        }
    }
    for (int t = 0; t < threads; t++)
        free(scans[t].found);
    if (error) {
        PyBuffer_Release(&self->view);
        return -1;
    }
    return 0;
}

/* Copy ``length`` bytes at ``start`` of the mapping into ``to``; 0 if the file shrank.
 *
 * The size check: a file shorter than the snapshot has either zeroed its last byte
 * (truncation clears the rest of the page) or removed its page, so reading that one byte
 * tells as an lseek would, in a nanosecond instead of 230. It is read before and after
 * the copy, which runs under the guard, so a truncation racing with the copy fails the
 * read too. A snapshot that ends in a zero byte has no sentinel: lseek every time. */
static int
guarded_read(LineIndex *self, char *to, int64_t start, Py_ssize_t length)
{
    const volatile char *data = self->view.buf;
    Py_ssize_t last = self->view.len - 1;
    char sentinel = self->last_byte;
    if (sentinel == 0 && file_shrunk(self->fd, self->view.len))
        return 0;
    sigjmp_buf jump;
    if (sigsetjmp(jump, 0) != 0)
        return 0; /* SIGBUS: pages the truncation removed */
    GUARD(&jump);
    if (sentinel != 0 && data[last] != sentinel) {
        UNGUARD(); /* changed: the lseek says if it shrank, or was rewritten as long */
        if (file_shrunk(self->fd, self->view.len))
            return 0;
        sentinel = 0;
        GUARD(&jump);
    }
    memcpy(to, (const char *)data + start, (size_t)length);
    int intact = sentinel == 0 || data[last] == sentinel; /* else cut during the copy */
    UNGUARD();
    return intact;
}

static PyObject *
LineIndex_line(LineIndex *self, PyObject *index)
{
    Py_ssize_t at;
    if (PyLong_CheckExact(index))
        at = PyLong_AsSsize_t(index);
    else if (!PyBool_Check(index) && PyIndex_Check(index))  /* numpy ints too; not True */
        at = PyNumber_AsSsize_t(index, NULL);
    else
        return PyErr_Format(PyExc_TypeError, "index must be an int, got %s", Py_TYPE(index)->tp_name);
    if (at == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear();
        at = PY_SSIZE_T_MAX;  /* out of range whichever its sign */
    }
    else if (at < 0)
        at += self->lines;
    if (at < 0 || at >= self->lines)
        return PyErr_Format(PyExc_IndexError, "line index %S out of range for %zd lines", index,
                            self->lines);
    if (self->view.obj == NULL) {
        PyErr_SetString(PyExc_ValueError, "the line index was released (its reader is closed)");
        return NULL;
    }
    int64_t start = self->offsets[at];
    Py_ssize_t length = (Py_ssize_t)(self->offsets[at + 1] - 1 - start);
    PyObject *line = PyBytes_FromStringAndSize(NULL, length); /* allocated outside the guard */
    if (line == NULL)
        return NULL;
    if (!guarded_read(self, PyBytes_AS_STRING(line), start, length)) {
        Py_DECREF(line);
        report_shrink(self);
        return NULL;
    }
    return line;
}

static PyObject *
LineIndex_offsets(LineIndex *self, PyObject *Py_UNUSED(ignored))
{
    /* A copy of the offsets (lines + 1 int64), for tests and for numpy. */
    if (self->offsets == NULL) {
        PyErr_SetString(PyExc_ValueError, "LineIndex was not initialised");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)self->offsets,
                                     (Py_ssize_t)((self->lines + 1) * (Py_ssize_t)sizeof(int64_t)));
}

static PyObject *
LineIndex_release(LineIndex *self, PyObject *Py_UNUSED(ignored))
{
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    Py_RETURN_NONE;
}

static Py_ssize_t
LineIndex_len(LineIndex *self)
{
    return self->lines;
}

static int
LineIndex_traverse(LineIndex *self, visitproc visit, void *arg)
{
    Py_VISIT(self->on_shrink);
    Py_VISIT(self->view.obj);
    return 0;
}

static int
LineIndex_clear(LineIndex *self)
{
    Py_CLEAR(self->on_shrink);
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    return 0;
}

static void
LineIndex_dealloc(LineIndex *self)
{
    PyObject_GC_UnTrack(self);
    LineIndex_clear(self);
    PyMem_Free(self->offsets);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef LineIndex_methods[] = {
    {"line", (PyCFunction)LineIndex_line, METH_O,
     "line($self, index, /)\n--\n\nLine ``index`` (negative counts from the end) without its newline."},
    {"offsets", (PyCFunction)LineIndex_offsets, METH_NOARGS,
     "offsets($self, /)\n--\n\nThe int64 start offsets, then one past the last line's end (bytes)."},
    {"release", (PyCFunction)LineIndex_release, METH_NOARGS,
     "release($self, /)\n--\n\nDrop the buffer export, so the mapping can close."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods LineIndex_as_sequence = {
    .sq_length = (lenfunc)LineIndex_len,
};

static PyTypeObject LineIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "perflab.jsonl._lineindex.LineIndex",
    .tp_doc = "LineIndex(buffer, fd, on_shrink, threads=1): newline offsets of a mapped file.",
    .tp_basicsize = sizeof(LineIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)LineIndex_init,
    .tp_dealloc = (destructor)LineIndex_dealloc,
    .tp_traverse = (traverseproc)LineIndex_traverse,
    .tp_clear = (inquiry)LineIndex_clear,
    .tp_methods = LineIndex_methods,
    .tp_as_sequence = &LineIndex_as_sequence,
};

/* ------------------------------------------------------------------ LineAccess */

typedef struct {
    PyObject_HEAD
    PyObject *lines;  /* the index (a LineIndex, or any object with .line), or None */
} LineAccess;

static PyObject *
LineAccess_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    LineAccess *self = (LineAccess *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->lines = Py_NewRef(Py_None);
    return (PyObject *)self;
}

static PyObject *
LineAccess_line(LineAccess *self, PyObject *index)
{
    PyObject *lines = self->lines;
    if (Py_IS_TYPE(lines, &LineIndexType))  /* the common case */
        return LineIndex_line((LineIndex *)lines, index);
    if (lines == Py_None) {
        lines = PyObject_CallMethod((PyObject *)self, "_index", NULL);  /* raises if closed */
        if (lines == NULL)
            return NULL;
        Py_DECREF(lines);  /* the reader keeps it in _lines */
        if (Py_IS_TYPE(lines, &LineIndexType))
            return LineIndex_line((LineIndex *)lines, index);
    }
    return PyObject_CallMethod(lines, "line", "O", index);  /* another index type */
}

static int
LineAccess_traverse(LineAccess *self, visitproc visit, void *arg)
{
    Py_VISIT(self->lines);  /* a subclass's type is visited by subtype_traverse */
    return 0;
}

static int
LineAccess_clear(LineAccess *self)
{
    Py_CLEAR(self->lines);
    return 0;
}

static void
LineAccess_dealloc(LineAccess *self)
{
    /* a subclass's type is released by subtype_dealloc, which calls this */
    PyObject_GC_UnTrack(self);
    LineAccess_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
LineAccess_get_lines(LineAccess *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->lines != NULL ? self->lines : Py_None);
}

static int
LineAccess_set_lines(LineAccess *self, PyObject *value, void *Py_UNUSED(closure))
{
    Py_XSETREF(self->lines, Py_NewRef(value != NULL ? value : Py_None));
    return 0;
}

static PyGetSetDef LineAccess_getset[] = {
    {"_lines", (getter)LineAccess_get_lines, (setter)LineAccess_set_lines,
     "The line index, or None until it is built.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef LineAccess_methods[] = {
    {"line", (PyCFunction)LineAccess_line, METH_O,
     "line($self, index, /)\n--\n\n"
     "Line ``index`` (negative counts from the end) without its newline; O(1).\n\n"
     "A file that shrank raises FileTruncatedError instead of a SIGBUS: the copy runs\n"
     "under a SIGBUS guard, and the snapshot's last byte, read before and after it, is\n"
     "zeroed or gone once the file is shorter (an lseek then confirms). The offsets index\n"
     "is built on first use."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LineAccessType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "perflab.jsonl._lineindex.LineAccess",
    .tp_doc = "Base of MemoryMappedReader: line(i) in C over the index kept in _lines.",
    .tp_basicsize = sizeof(LineAccess),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = LineAccess_new,
    .tp_dealloc = (destructor)LineAccess_dealloc,
    .tp_traverse = (traverseproc)LineAccess_traverse,
    .tp_clear = (inquiry)LineAccess_clear,
    .tp_methods = LineAccess_methods,
    .tp_getset = LineAccess_getset,
};

static struct PyModuleDef lineindex_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "perflab.jsonl._lineindex",
    .m_doc = "The line index of a mapped file: memchr-speed build, O(1) checked lookups.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__lineindex(void)
{
    if (PyType_Ready(&LineIndexType) < 0 || PyType_Ready(&LineAccessType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&lineindex_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "LineIndex", (PyObject *)&LineIndexType) < 0 ||
        PyModule_AddObjectRef(module, "LineAccess", (PyObject *)&LineAccessType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
