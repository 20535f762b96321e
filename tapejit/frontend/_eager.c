/* The eager API's scalar recording path, in C.
 *
 * Recording `y = x * 3.0` on a 0-d tensor is a few checks, five stores into the tape's
 * arrays and a new Tensor. In Python that costs ~400 ns an operation, nearly all of it
 * bytecode. This extension does the same work for the common cases: Tensor's arithmetic
 * operators (through the number slots of TensorOps, Tensor's base class) and the
 * numpy-named unary functions (Unary objects). It follows the Python fast paths of
 * tapejit/tensor.py exactly and hands every other case to them:
 *
 *   - it reads and writes Tensor's and Tape's __slots__ in place (their offsets are
 *     looked up once, in configure());
 *   - it appends to the tape through the tape's memoryviews, and calls the tape's own
 *     _grow_ins / _grow_slots when it is full;
 *   - values come from tj_scalar_value(), generated from the opcode table
 *     (_eager_values.h), never from formulas written here.
 *
 * Nothing here owns state: the tape, the thread's recording state and every rule about
 * when to record stay in Python, which remains the reference (TAPEJIT_PURE_PYTHON=1 uses
 * it alone, and the tests compare both).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

#include "_eager_values.h"

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* offsets of Tensor's and Tape's __slots__ */
static struct {
    Py_ssize_t value, tape, base, shape, strides, bool_, rg, leaf_serial;
} tensor_slots;
static struct {
    Py_ssize_t n_ins, n_slots, ins_capacity, slot_capacity, serial;
    Py_ssize_t mv_ops, mv_out, mv_a, mv_b, mv_cv, mv_values;
} tape_slots;

static PyTypeObject *tensor_type = NULL;
static PyObject *recording_state = NULL;  /* tensor._state, a threading.local */
static PyObject *str_active = NULL, *str_grow_ins = NULL, *str_grow_slots = NULL;
static PyObject *empty_tuple = NULL;

/* the Python operators, for every case the C path does not take */
enum { FB_ADD, FB_RADD, FB_SUB, FB_RSUB, FB_MUL, FB_RMUL, FB_DIV, FB_RDIV, FB_POW, FB_RPOW, FB_NEG, FB_COUNT };
static const char *fallback_names[FB_COUNT] = {
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
    "__truediv__", "__rtruediv__", "__pow__", "__rpow__", "__neg__"};
static PyObject *fallbacks[FB_COUNT];
static PyObject *bind_scalar_leaf = NULL;   /* tensor._bind_scalar_leaf */

/* ---------------------------------------------------------------------------------- */
/* reading the Python objects                                                          */
/* ---------------------------------------------------------------------------------- */
static inline int small_int(PyObject *o, Py_ssize_t *out)
{
    if (o == NULL || !PyLong_CheckExact(o))
        return 0;
    Py_ssize_t v = PyLong_AsSsize_t(o);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return 1;
}

/* Whether x is a 0-d float tensor on `tape`, or a leaf that requires grad already bound
   to it (its _leaf_serial is the tape's serial); if so, its value and slot. */
static inline int scalar_on(PyObject *x, PyObject *tape, double *value, Py_ssize_t *slot)
{
    if (Py_TYPE(x) != tensor_type)
        return 0;
    PyObject *own = SLOT(x, tensor_slots.tape);
    if (own != tape) {
        if (own != Py_None || SLOT(x, tensor_slots.rg) != Py_True)
            return 0;
        Py_ssize_t serial, tape_serial;
        if (!small_int(SLOT(x, tensor_slots.leaf_serial), &serial)
                || !small_int(SLOT(tape, tape_slots.serial), &tape_serial) || serial != tape_serial)
            return 0;
    }
    PyObject *shape = SLOT(x, tensor_slots.shape);
    if (shape == NULL || !PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) != 0)
        return 0;
    PyObject *v = SLOT(x, tensor_slots.value);
    if (v == NULL || !PyFloat_Check(v))
        return 0;
    if (!small_int(SLOT(x, tensor_slots.base), slot))
        return 0;
    *value = PyFloat_AS_DOUBLE(v);
    return 1;
}

/* The thread's recording tape (a new reference), or NULL without an error when none. */
static inline PyObject *active_tape(void)
{
    if (tensor_type == NULL)
        return NULL;
    PyObject *tape = PyObject_GetAttr(recording_state, str_active);
    if (tape == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (tape == Py_None) {
        Py_DECREF(tape);
        return NULL;
    }
    return tape;
}

/* A Python int or float operand as a double (bool and other types: no). */
static inline int number(PyObject *o, double *out)
{
    if (PyFloat_CheckExact(o)) {
        *out = PyFloat_AS_DOUBLE(o);
        return 1;
    }
    if (PyLong_CheckExact(o)) {
        double v = PyLong_AsDouble(o);
        if (v == -1.0 && PyErr_Occurred()) {   /* too large for a double: Python decides */
            PyErr_Clear();
            return 0;
        }
        *out = v;
        return 1;
    }
    return 0;
}

/* Element `index` of a memoryview of `itemsize`-byte items, or NULL when the view is too
   short: the Python path then decides (C writes nothing out of bounds, whatever state the
   tape's Python attributes are in). */
static inline char *element(PyObject *view, Py_ssize_t index, Py_ssize_t itemsize)
{
    if (view == NULL || !PyMemoryView_Check(view))
        return NULL;
    Py_buffer *b = PyMemoryView_GET_BUFFER(view);
    if (b->readonly || b->itemsize != itemsize || index < 0 || (index + 1) * itemsize > b->len)
        return NULL;
    return (char *)b->buf + index * itemsize;
}

static inline int set_int(PyObject *obj, Py_ssize_t offset, Py_ssize_t value)
{
    PyObject *v = PyLong_FromSsize_t(value);
    if (v == NULL)
        return -1;
    Py_XSETREF(SLOT(obj, offset), v);
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* recording                                                                          */
/* Fill a new 0-d tensor's slots: its value and base slot (references stolen), the tape
   it views and whether it is boolean (references taken). */
static void fill_scalar(PyObject *t, PyObject *value, PyObject *tape, PyObject *base, PyObject *is_bool)
{
    SLOT(t, tensor_slots.value) = value;
    Py_INCREF(tape);
    SLOT(t, tensor_slots.tape) = tape;
    SLOT(t, tensor_slots.base) = base;
    Py_INCREF(empty_tuple);
    SLOT(t, tensor_slots.shape) = empty_tuple;
    Py_INCREF(empty_tuple);
    SLOT(t, tensor_slots.strides) = empty_tuple;
    Py_INCREF(is_bool);
    SLOT(t, tensor_slots.bool_) = is_bool;
}

/* ---------------------------------------------------------------------------------- */
/* Append `code` (operands slot_a, slot_b when has_b, immediate c when has_c) with the
   computed value, and return the new 0-d tensor; NULL with an error set on failure,
   NULL without one when the tape is not in the state the fast path expects. */
static PyObject *record(PyObject *tape, int code, Py_ssize_t slot_a, int has_b, Py_ssize_t slot_b,
                        int has_c, double c, double value)
{
    Py_ssize_t i, capacity, out, slot_capacity;
    if (!small_int(SLOT(tape, tape_slots.n_ins), &i) || !small_int(SLOT(tape, tape_slots.ins_capacity), &capacity))
        return NULL;
    if (i >= capacity) {
        PyObject *r = PyObject_CallMethodNoArgs(tape, str_grow_ins);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
        if (!small_int(SLOT(tape, tape_slots.ins_capacity), &capacity) || i >= capacity)
            return NULL;
    }
    if (!small_int(SLOT(tape, tape_slots.n_slots), &out) || !small_int(SLOT(tape, tape_slots.slot_capacity), &slot_capacity))
        return NULL;
    if (out >= slot_capacity) {
        PyObject *need = PyLong_FromSsize_t(out + 1);
        if (need == NULL)
            return NULL;
        PyObject *r = PyObject_CallMethodOneArg(tape, str_grow_slots, need);
        Py_DECREF(need);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
        if (!small_int(SLOT(tape, tape_slots.slot_capacity), &slot_capacity) || out >= slot_capacity)
            return NULL;
    }
    char *op_at = element(SLOT(tape, tape_slots.mv_ops), i, 1);
    char *out_at = element(SLOT(tape, tape_slots.mv_out), i, 4);
    char *a_at = element(SLOT(tape, tape_slots.mv_a), i, 4);
    char *b_at = has_b ? element(SLOT(tape, tape_slots.mv_b), i, 4) : out_at;
    char *c_at = has_c ? element(SLOT(tape, tape_slots.mv_cv), i, 8) : out_at;
    char *value_at = element(SLOT(tape, tape_slots.mv_values), out, 8);
    if (!op_at || !out_at || !a_at || !b_at || !c_at || !value_at)
        return NULL;
    PyObject *boxed = PyFloat_FromDouble(value);
    if (boxed == NULL)
        return NULL;
    PyObject *base = PyLong_FromSsize_t(out);
    if (base == NULL) {
        Py_DECREF(boxed);
        return NULL;
    }
    PyObject *t = tensor_type->tp_alloc(tensor_type, 0);
    if (t == NULL) {
        Py_DECREF(boxed);
        Py_DECREF(base);
        return NULL;
    }
    if (set_int(tape, tape_slots.n_ins, i + 1) < 0 || set_int(tape, tape_slots.n_slots, out + 1) < 0) {
        Py_DECREF(boxed);
        Py_DECREF(base);
        Py_DECREF(t);
        return NULL;
    }
    *(uint8_t *)op_at = (uint8_t)code;
    *(int32_t *)out_at = (int32_t)out;
    *(int32_t *)a_at = (int32_t)slot_a;
    if (has_b)
        *(int32_t *)b_at = (int32_t)slot_b;
    if (has_c)
        *(double *)c_at = c;
    *(double *)value_at = value;
    fill_scalar(t, boxed, tape, base, Py_False);
    return t;
}

/* Record one-operand `code` (immediate c when has_c) on x: a 0-d tensor on the recording
   tape, or a 0-d leaf that requires grad, which joins the eager recording as Python's
   _bind_scalar_leaf decides. Returns the new tensor, or NULL: with an error set (raise
   it) or without one (take the Python path). */
static PyObject *record_on(int code, PyObject *x, int has_c, double c)
{
    if (tensor_type == NULL || Py_TYPE(x) != tensor_type)
        return NULL;
    double a, value;
    Py_ssize_t slot;
    PyObject *tape = active_tape();
    if (tape == NULL || !scalar_on(x, tape, &a, &slot)) {
        Py_XDECREF(tape);
        if (SLOT(x, tensor_slots.tape) != Py_None || SLOT(x, tensor_slots.rg) != Py_True)
            return NULL;
        tape = PyObject_CallOneArg(bind_scalar_leaf, x);     /* the eager tape, x bound to it; or None */
        if (tape == NULL)
            return NULL;
        if (tape == Py_None || !scalar_on(x, tape, &a, &slot)) {
            Py_DECREF(tape);
            return NULL;
        }
    }
    PyObject *result = NULL;
    if (tj_scalar_value(code, a, 0.0, c, &value))
        result = record(tape, code, slot, 0, 0, has_c, c, value);
    Py_DECREF(tape);
    return result;
}

/* Record two-operand `code` on 0-d tensors x and y, both on the recording tape (or leaves
   bound to it); NULL as above. */
static PyObject *record_pair(int code, PyObject *x, PyObject *y)
{
    PyObject *tape = active_tape();
    if (tape == NULL)
        return NULL;
    double a, b, value;
    Py_ssize_t slot_a, slot_b;
    PyObject *result = NULL;
    if (scalar_on(x, tape, &a, &slot_a) && scalar_on(y, tape, &b, &slot_b) && tj_scalar_value(code, a, b, 0.0, &value))
        result = record(tape, code, slot_a, 1, slot_b, 0, 0.0, value);
    Py_DECREF(tape);
    return result;
}

/* x op y for a 0-d tensor and a Python number, on either side, or two 0-d tensors:
   code_c for tensor op number, code_rc for number op tensor, code_tt for two tensors
   (-1: none). NULL as above. */
static PyObject *try_binary(int code_tt, int code_c, int code_rc, PyObject *x, PyObject *y)
{
    double c;
    if (Py_TYPE(x) == tensor_type) {
        if (number(y, &c))
            return code_c >= 0 ? record_on(code_c, x, 1, c) : NULL;
        return code_tt >= 0 && Py_TYPE(y) == tensor_type ? record_pair(code_tt, x, y) : NULL;
    }
    if (code_rc >= 0 && number(x, &c))
        return record_on(code_rc, y, 1, c);
    return NULL;
}

/* Python operator k (borrowed), or NULL with an error before configure() ran */
static PyObject *fallback(int k)
{
    if (fallbacks[k] == NULL)
        PyErr_SetString(PyExc_RuntimeError, "tapejit._eager is not configured (tapejit.tensor does it on import)");
    return fallbacks[k];
}

/* the Python operator for this case: fallbacks[forward](v, w) when v is a Tensor, else
   the reflected one with the tensor first */
static PyObject *python_binary(int forward, int reflected, PyObject *v, PyObject *w)
{
    int tensor_first = tensor_type != NULL && PyObject_TypeCheck(v, tensor_type);
    PyObject *fn = fallback(tensor_first ? forward : reflected);
    if (fn == NULL)
        return NULL;
    return tensor_first ? PyObject_CallFunctionObjArgs(fn, v, w, NULL) : PyObject_CallFunctionObjArgs(fn, w, v, NULL);
}

#define BINARY_SLOT(fname, code_tt, code_c, code_rc, FORWARD, REFLECTED)             \
    static PyObject *fname(PyObject *v, PyObject *w)                                   \
    {                                                                                  \
        PyObject *r = try_binary(code_tt, code_c, code_rc, v, w);                      \
        if (r != NULL || PyErr_Occurred())                                             \
            return r;                                                                  \
        return python_binary(FORWARD, REFLECTED, v, w);                                \
    }

BINARY_SLOT(tensor_add, TJ_OP_ADD, TJ_OP_ADD_C, TJ_OP_ADD_C, FB_ADD, FB_RADD)
BINARY_SLOT(tensor_mul, TJ_OP_MUL, TJ_OP_MUL_C, TJ_OP_MUL_C, FB_MUL, FB_RMUL)
BINARY_SLOT(tensor_div, TJ_OP_DIV, TJ_OP_DIV_C, TJ_OP_RDIV_C, FB_DIV, FB_RDIV)

/* x - c records x + (-c), as the Python path does */
static PyObject *tensor_sub(PyObject *v, PyObject *w)
{
    PyObject *r;
    double c;
    if (Py_TYPE(v) == tensor_type && number(w, &c))
        r = record_on(TJ_OP_ADD_C, v, 1, -c);
    else
        r = try_binary(TJ_OP_SUB, -1, TJ_OP_RSUB_C, v, w);
    if (r != NULL || PyErr_Occurred())
        return r;
    return python_binary(FB_SUB, FB_RSUB, v, w);
}

/* x ** 2 is recorded as square (numpy's choice: exact and cheaper), x ** c as pow_c,
   c ** x as rpow_c; a tensor exponent takes the Python path */
static PyObject *tensor_pow(PyObject *v, PyObject *w, PyObject *modulo)
{
    if (modulo != Py_None)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *r = NULL;
    double c;
    if (Py_TYPE(v) == tensor_type && number(w, &c))
        r = c == 2.0 ? record_on(TJ_OP_SQUARE, v, 0, 0.0) : record_on(TJ_OP_POW_C, v, 1, c);
    else if (Py_TYPE(w) == tensor_type && number(v, &c))
        r = record_on(TJ_OP_RPOW_C, w, 1, c);
    if (r != NULL || PyErr_Occurred())
        return r;
    return python_binary(FB_POW, FB_RPOW, v, w);
}

static PyObject *tensor_neg(PyObject *x)
{
    PyObject *r = record_on(TJ_OP_NEG, x, 0, 0.0);
    if (r != NULL || PyErr_Occurred())
        return r;
    PyObject *fn = fallback(FB_NEG);
    return fn == NULL ? NULL : PyObject_CallOneArg(fn, x);
}

static PyNumberMethods tensor_ops_number = {
    .nb_add = tensor_add,
    .nb_subtract = tensor_sub,
    .nb_multiply = tensor_mul,
    .nb_true_divide = tensor_div,
    .nb_power = tensor_pow,
    .nb_negative = tensor_neg,
};

static PyTypeObject TensorOpsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tapejit._eager.TensorOps",
    .tp_doc = PyDoc_STR("Tensor's arithmetic operators: 0-d operands on the recording tape are "
                        "recorded here, everything else by tapejit.tensor's Python operators."),
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_as_number = &tensor_ops_number,
};

/* ---------------------------------------------------------------------------------- */
/* Unary: a numpy-named function of one tensor (tj.sin, tj.exp, ...)                   */
/* ---------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    int code;
    PyObject *fallback;      /* the Python function: every other case, and its name and doc */
    vectorcallfunc vectorcall;
} UnaryObject;

static PyObject *unary_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    UnaryObject *u = (UnaryObject *)self;
    if (PyVectorcall_NARGS(nargsf) == 1 && kwnames == NULL) {
        PyObject *r = record_on(u->code, args[0], 0, 0.0);
        if (r != NULL || PyErr_Occurred())
            return r;
    }
    return PyObject_Vectorcall(u->fallback, args, nargsf, kwnames);
}

static PyObject *unary_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    int code;
    PyObject *fallback;
    static char *keywords[] = {"code", "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO:Unary", keywords, &code, &fallback))
        return NULL;
    double probe;
    if (!tj_scalar_value(code, 1.0, 1.0, 1.0, &probe)) {
        PyErr_Format(PyExc_ValueError, "opcode %d has no C value", code);
        return NULL;
    }
    UnaryObject *u = (UnaryObject *)type->tp_alloc(type, 0);
    if (u == NULL)
        return NULL;
    u->code = code;
    Py_INCREF(fallback);
    u->fallback = fallback;
    u->vectorcall = unary_vectorcall;
    return (PyObject *)u;
}

static int unary_traverse(UnaryObject *u, visitproc visit, void *arg)
{
    Py_VISIT(u->fallback);
    return 0;
}

static int unary_clear(UnaryObject *u)
{
    Py_CLEAR(u->fallback);
    return 0;
}

static void unary_dealloc(UnaryObject *u)
{
    PyObject_GC_UnTrack(u);
    unary_clear(u);
    Py_TYPE(u)->tp_free((PyObject *)u);
}

/* other attributes, and name, doc, module and pickling (below), are the Python function's */
static PyObject *unary_getattro(PyObject *self, PyObject *name)
{
    PyObject *r = PyObject_GenericGetAttr(self, name);
    if (r != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return r;
    PyErr_Clear();
    return PyObject_GetAttr(((UnaryObject *)self)->fallback, name);
}

static PyObject *unary_reduce(PyObject *self, PyObject *unused)
{
    return PyObject_GetAttrString(((UnaryObject *)self)->fallback, "__qualname__");
}

static PyObject *unary_repr(PyObject *self)
{
    return PyObject_Repr(((UnaryObject *)self)->fallback);
}

static PyObject *unary_fallback_attribute(PyObject *self, void *name)
{
    return PyObject_GetAttrString(((UnaryObject *)self)->fallback, (const char *)name);
}

static PyGetSetDef unary_getset[] = {
    {"__doc__", unary_fallback_attribute, NULL, NULL, "__doc__"},
    {"__name__", unary_fallback_attribute, NULL, NULL, "__name__"},
    {"__qualname__", unary_fallback_attribute, NULL, NULL, "__qualname__"},
    {"__module__", unary_fallback_attribute, NULL, NULL, "__module__"},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef unary_methods[] = {
    {"__reduce__", unary_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef unary_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(UnaryObject, fallback), READONLY, NULL},
    {"code", T_INT, offsetof(UnaryObject, code), READONLY, NULL},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(UnaryObject, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject UnaryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tapejit._eager.Unary",
    .tp_doc = PyDoc_STR("Unary(code, fallback): opcode `code` on a 0-d tensor on the recording tape, "
                        "recorded in C; fallback(x) for everything else."),
    .tp_basicsize = sizeof(UnaryObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = unary_new,
    .tp_dealloc = (destructor)unary_dealloc,
    .tp_traverse = (traverseproc)unary_traverse,
    .tp_clear = (inquiry)unary_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(UnaryObject, vectorcall),
    .tp_getattro = unary_getattro,
    .tp_repr = unary_repr,
    .tp_methods = unary_methods,
    .tp_members = unary_members,
    .tp_getset = unary_getset,
};

/* ---------------------------------------------------------------------------------- */
/* configure(Tensor, Tape, state, operators)                                           */
/* ---------------------------------------------------------------------------------- */
static int slot_offset(PyObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *descr = PyObject_GetAttrString(type, name);
    if (descr == NULL)
        return -1;
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%R.%s must be a __slots__ member", type, name);
        Py_DECREF(descr);
        return -1;
    }
    *offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    Py_DECREF(descr);
    return 0;
}

static PyObject *configure(PyObject *module, PyObject *args)
{
    PyObject *tensor, *tape, *state, *operators, *bind;
    if (!PyArg_ParseTuple(args, "O!O!OO!O:configure", &PyType_Type, &tensor, &PyType_Type, &tape, &state,
                          &PyDict_Type, &operators, &bind))
        return NULL;
    if (!PyCallable_Check(bind)) {
        PyErr_SetString(PyExc_TypeError, "configure: bind_scalar_leaf must be callable");
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)tensor, &TensorOpsType)) {
        PyErr_SetString(PyExc_TypeError, "configure: the tensor type must derive from TensorOps");
        return NULL;
    }
    struct { PyObject *type; const char *name; Py_ssize_t *offset; } slots[] = {
        {tensor, "_value", &tensor_slots.value}, {tensor, "_tape", &tensor_slots.tape},
        {tensor, "_base", &tensor_slots.base}, {tensor, "_shape", &tensor_slots.shape},
        {tensor, "_strides", &tensor_slots.strides}, {tensor, "_bool", &tensor_slots.bool_},
        {tensor, "_rg", &tensor_slots.rg}, {tensor, "_leaf_serial", &tensor_slots.leaf_serial},
        {tape, "n_ins", &tape_slots.n_ins}, {tape, "n_slots", &tape_slots.n_slots},
        {tape, "ins_capacity", &tape_slots.ins_capacity}, {tape, "slot_capacity", &tape_slots.slot_capacity},
        {tape, "serial", &tape_slots.serial}, {tape, "_mv_ops", &tape_slots.mv_ops},
        {tape, "_mv_out", &tape_slots.mv_out}, {tape, "_mv_a", &tape_slots.mv_a},
        {tape, "_mv_b", &tape_slots.mv_b}, {tape, "_mv_cv", &tape_slots.mv_cv},
        {tape, "_mv_values", &tape_slots.mv_values},
    };
    for (size_t k = 0; k < sizeof(slots) / sizeof(slots[0]); k++)
        if (slot_offset(slots[k].type, slots[k].name, slots[k].offset) < 0)
            return NULL;
    PyObject *found[FB_COUNT];
    for (int k = 0; k < FB_COUNT; k++) {
        found[k] = PyDict_GetItemString(operators, fallback_names[k]);
        if (found[k] == NULL || !PyCallable_Check(found[k])) {
            PyErr_Format(PyExc_KeyError, "configure: no Python operator %s", fallback_names[k]);
            return NULL;
        }
    }
    for (int k = 0; k < FB_COUNT; k++) {
        Py_INCREF(found[k]);
        Py_XSETREF(fallbacks[k], found[k]);
    }
    Py_INCREF(state);
    Py_XSETREF(recording_state, state);
    Py_INCREF(bind);
    Py_XSETREF(bind_scalar_leaf, bind);
    Py_INCREF(tensor);
    Py_XSETREF(tensor_type, (PyTypeObject *)tensor);
    Py_RETURN_NONE;
}

/* scalars(tape, base, step, values, is_bool): the 0-d tensors of a recorded vector's
   elements, element k at slot base + k*step with the Python float values[k] as its
   value; nothing is recorded. Tensor.__iter__'s loop in C (W's recording iterates 2,500
   softmax results). */
static PyObject *scalars(PyObject *module, PyObject *args)
{
    PyObject *tape, *values, *is_bool;
    Py_ssize_t base, step;
    if (!PyArg_ParseTuple(args, "OnnO!O!:scalars", &tape, &base, &step, &PyList_Type, &values, &PyBool_Type,
                          &is_bool))
        return NULL;
    if (tensor_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "scalars: configure() was not called");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(values);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *slot = PyLong_FromSsize_t(base + k * step);
        PyObject *t = slot == NULL ? NULL : tensor_type->tp_alloc(tensor_type, 0);
        if (t == NULL) {
            Py_XDECREF(slot);
            Py_DECREF(out);
            return NULL;
        }
        PyObject *value = PyList_GET_ITEM(values, k);
        Py_INCREF(value);
        fill_scalar(t, value, tape, slot, is_bool);
        PyList_SET_ITEM(out, k, t);
    }
    return out;
}

static PyMethodDef module_methods[] = {
    {"scalars", scalars, METH_VARARGS,
     PyDoc_STR("scalars(tape, base, step, values, is_bool): 0-d tensors viewing slots base + k*step of "
               "tape, with the floats of the list values; nothing is recorded.")},
    {"configure", configure, METH_VARARGS,
     PyDoc_STR("configure(Tensor, Tape, state, operators, bind_scalar_leaf): slot offsets, the "
               "thread-local recording state, the Python operators (by dunder name) the C path hands "
               "other cases to, and the function that binds a 0-d leaf to the eager tape.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef eager_module = {
    PyModuleDef_HEAD_INIT, "tapejit._eager",
    PyDoc_STR("The eager API's scalar recording path in C (optional; see tapejit/_eager.c)."),
    -1, module_methods,
};

PyMODINIT_FUNC PyInit__eager(void)
{
    /* object's allocator, so that object.__new__(Tensor) stays allowed (a static base
       without tp_new would forbid instances) */
    TensorOpsType.tp_new = PyBaseObject_Type.tp_new;
    if (PyType_Ready(&TensorOpsType) < 0 || PyType_Ready(&UnaryType) < 0)
        return NULL;
    str_active = PyUnicode_InternFromString("active");
    str_grow_ins = PyUnicode_InternFromString("_grow_ins");
    str_grow_slots = PyUnicode_InternFromString("_grow_slots");
    empty_tuple = PyTuple_New(0);
    if (str_active == NULL || str_grow_ins == NULL || str_grow_slots == NULL || empty_tuple == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&eager_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TensorOpsType);
    Py_INCREF(&UnaryType);
    if (PyModule_AddObject(m, "TensorOps", (PyObject *)&TensorOpsType) < 0
            || PyModule_AddObject(m, "Unary", (PyObject *)&UnaryType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
