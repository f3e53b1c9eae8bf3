/* jinja_eval.c - the tree-walking evaluator and the public entry points of
 * jinja.h.  Scoping follows Jinja2: `for` bodies and macro calls get their
 * own frame (an assignment inside a loop iteration is gone after it; that is
 * what namespace() is for), `if` does not. */
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_internal.h"

enum { CTL_NONE, CTL_BREAK, CTL_CONTINUE };

struct jframe {
    jframe *parent;
    size_t n, cap;
    const char **names;
    jv *vals;
};

struct kvs_jinja {
    jarena arena; /* the AST */
    jnode *root;
};

typedef struct rstate {
    jbuf *out;
    int ctl;
} rstate;

/* the current output and loop control live in the context */
static rstate *RS(jctx *c)
{
    return c->rs;
}

void jstep(jctx *c)
{
    if (++c->steps > c->max_steps)
        jfail(c, KVS_E_BUDGET, "template exceeds its step limit (%llu loop iterations, calls and outputs)",
              (unsigned long long)c->max_steps);
}

jframe *jframe_new(jctx *c, jframe *parent)
{
    jframe *f = jalloc(c, sizeof *f);
    memset(f, 0, sizeof *f);
    f->parent = parent;
    return f;
}

void jframe_set(jctx *c, jframe *f, const char *name, jv v)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0) {
            f->vals[i] = v;
            return;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        f->names = jgrow(c, f->names, f->n, cap, sizeof *f->names);
        f->vals = jgrow(c, f->vals, f->n, cap, sizeof *f->vals);
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
}

bool jframe_get(jframe *f, const char *name, jv *out)
{
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (strcmp(f->names[i], name) == 0) {
                *out = f->vals[i];
                return true;
            }
    return false;
}

static void emit(jctx *c, const char *s, size_t n)
{
    jbuf *b = RS(c)->out;
    if (b->n + n > c->max_output)
        jfail(c, KVS_E_BUDGET, "template output exceeds its limit (%zu bytes)", c->max_output);
    jbuf_put(c, b, s, n);
}

static void emit_value(jctx *c, jv v)
{
    if (v.t == JV_STR) {
        emit(c, v.s.p, v.s.n);
        return;
    }
    jbuf tmp = {0};
    jv_write_str(c, &tmp, v);
    emit(c, tmp.p, tmp.n);
}

static void enter(jctx *c)
{
    if (++c->depth > c->max_depth)
        jfail(c, KVS_E_BUDGET, "template recursion too deep (more than %d levels)", c->max_depth);
}

/* ---- expressions ---- */

/* Evaluate n's arguments into a jargs (`first`, when not NULL, is prepended).  The parser marks
 * `*xs` with the name "*" and `**d` with "**": their items are spread into the call. */
static jv eval_args(jctx *c, jframe *f, const jnode *n, size_t skip, jv *first, jargs *a)
{
    size_t k = n->nk + (first ? 1 : 0), cap = k ? k : 1;
    jv *v = jalloc(c, cap * sizeof *v);
    const char **kw = jalloc(c, cap * sizeof *kw);
    size_t i = 0;
    if (first) {
        v[i] = *first;
        kw[i++] = NULL;
    }
    for (size_t j = skip; j < n->nk; j++) {
        const char *name = n->names ? n->names[j] : NULL;
        jv x = jeval(c, f, n->kids[j]);
        if (name && (strcmp(name, "*") == 0 || strcmp(name, "**") == 0)) {
            bool star = name[1] == '\0';
            if (!star && x.t != JV_DICT)
                jfail(c, KVS_E_INVALID, "argument after ** must be a mapping, not %s", jv_typename(x));
            jlist *items = star ? jv_iter(c, x) : NULL;
            size_t add = star ? items->n : x.d->n;
            if (i + add + (n->nk - j) > cap) {
                cap = i + add + (n->nk - j) + 1;
                jv *nv = jalloc(c, cap * sizeof *nv);
                const char **nk = jalloc(c, cap * sizeof *nk);
                memcpy(nv, v, i * sizeof *nv);
                memcpy(nk, kw, i * sizeof *nk);
                v = nv;
                kw = nk;
            }
            for (size_t q = 0; q < add; q++) {
                if (star) {
                    v[i] = items->v[q];
                    kw[i++] = NULL;
                } else {
                    if (x.d->k[q].t != JV_STR)
                        jfail(c, KVS_E_INVALID, "keywords must be strings");
                    v[i] = x.d->v[q];
                    kw[i++] = jstrdup(c, x.d->k[q].s.p, x.d->k[q].s.n);
                }
            }
            continue;
        }
        v[i] = x;
        kw[i++] = name;
    }
    a->n = i;
    a->v = v;
    a->kw = kw;
    return jv_none();
}

static jv do_slice(jctx *c, jv obj, jv start, jv stop, jv step)
{
    int64_t len;
    if (obj.t == JV_STR)
        len = (int64_t)ju8_count(obj.s.p, obj.s.n);
    else if (obj.t == JV_LIST)
        len = (int64_t)obj.l->n;
    else if (obj.t == JV_UNDEF)
        jfail(c, KVS_E_INVALID, "%s", obj.undef ? obj.undef : "cannot slice an undefined value");
    else
        jfail(c, KVS_E_INVALID, "'%s' object is not subscriptable", jv_typename(obj));
    int64_t st = 1;
    if (step.t == JV_INT)
        st = step.i;
    else if (step.t != JV_NONE && step.t != JV_UNDEF)
        jfail(c, KVS_E_INVALID, "slice indices must be integers or None");
    if (st == 0)
        jfail(c, KVS_E_INVALID, "slice step cannot be zero");
    int64_t a, b;
    if (start.t == JV_NONE || start.t == JV_UNDEF)
        a = st > 0 ? 0 : len - 1;
    else if (start.t == JV_INT || start.t == JV_BOOL) {
        a = start.t == JV_INT ? start.i : start.b;
        if (a < 0)
            a += len;
        if (a < 0)
            a = st > 0 ? 0 : -1;
        if (a > len)
            a = st > 0 ? len : len - 1;
        if (st < 0 && a >= len)
            a = len - 1;
    } else
        jfail(c, KVS_E_INVALID, "slice indices must be integers or None");
    if (stop.t == JV_NONE || stop.t == JV_UNDEF)
        b = st > 0 ? len : -1;
    else if (stop.t == JV_INT || stop.t == JV_BOOL) {
        b = stop.t == JV_INT ? stop.i : stop.b;
        if (b < 0)
            b += len;
        if (b < 0)
            b = st > 0 ? 0 : -1;
        if (b > len)
            b = len;
    } else
        jfail(c, KVS_E_INVALID, "slice indices must be integers or None");
    if (obj.t == JV_STR) {
        /* code point offsets */
        size_t *offs = jalloc(c, ((size_t)len + 1) * sizeof *offs);
        size_t i = 0, k = 0, adv;
        while (i < obj.s.n) {
            offs[k++] = i;
            ju8_decode(obj.s.p + i, obj.s.n - i, &adv);
            i += adv;
        }
        offs[k] = obj.s.n;
        if (st == 1)
            return a < b ? jv_strn(obj.s.p + offs[a], offs[b] - offs[a]) : jv_cstr("");
        jbuf out = {0};
        for (int64_t x = a; st > 0 ? x < b : x > b; x += st)
            jbuf_put(c, &out, obj.s.p + offs[x], offs[x + 1] - offs[x]);
        return jbuf_str(&out);
    }
    jv out = jv_list(c, 0);
    out.tuple = obj.tuple;
    for (int64_t x = a; st > 0 ? x < b : x > b; x += st)
        jlist_push(c, out.l, obj.l->v[x]);
    return out;
}

static bool contains(jctx *c, jv hay, jv needle)
{
    switch (hay.t) {
    case JV_STR:
        if (needle.t != JV_STR)
            jfail(c, KVS_E_INVALID, "'in <string>' requires string as left operand, not %s", jv_typename(needle));
        if (needle.s.n == 0)
            return true;
        if (needle.s.n > hay.s.n)
            return false;
        for (size_t i = 0; i + needle.s.n <= hay.s.n; i++)
            if (memcmp(hay.s.p + i, needle.s.p, needle.s.n) == 0)
                return true;
        return false;
    case JV_LIST:
        for (size_t i = 0; i < hay.l->n; i++)
            if (jv_eq(hay.l->v[i], needle))
                return true;
        return false;
    case JV_DICT:
    case JV_NS: {
        jv o;
        if ((needle.t == JV_LIST && !needle.tuple) || needle.t == JV_DICT)
            jfail(c, KVS_E_INVALID, "unhashable type: '%s'", jv_typename(needle));
        return jdict_get(hay.d, needle, &o);
    }
    case JV_UNDEF:
        return false;
    default:
        jfail(c, KVS_E_INVALID, "argument of type '%s' is not iterable", jv_typename(hay));
    }
}

static bool compare(jctx *c, int op, jv a, jv b)
{
    if (op == T_EQ)
        return jv_eq(a, b);
    if (op == T_NE)
        return !jv_eq(a, b);
    if (op == T_IN)
        return contains(c, b, a);
    if (op == T_NOTIN)
        return !contains(c, b, a);
    if (a.t == JV_UNDEF || b.t == JV_UNDEF) {
        jv u = a.t == JV_UNDEF ? a : b;
        jfail(c, KVS_E_INVALID, "%s", u.undef ? u.undef : "'<' not supported with an undefined value");
    }
    int r = jv_cmp(c, a, b);
    if (op == T_LT)
        return r < 0;
    if (op == T_GT)
        return r > 0;
    if (op == T_LE)
        return r <= 0;
    return r >= 0;
}

static jv lookup(jctx *c, jframe *f, const jnode *n)
{
    jv v;
    if (jframe_get(f, n->s, &v))
        return v;
    return jv_undef_msg(c, "'%s' is undefined", n->s);
}

jv jeval(jctx *c, jframe *f, const jnode *n)
{
    jv a, b;
    jargs args;
    enter(c);
    jv r;
    switch (n->kind) {
    case N_LIT:
        r = n->lit;
        break;
    case N_NAME:
        r = lookup(c, f, n);
        break;
    case N_ATTR:
        r = jgetattr(c, jeval(c, f, n->a), n->s, n->sn);
        break;
    case N_ITEM:
        a = jeval(c, f, n->a);
        b = jeval(c, f, n->b);
        r = jgetitem(c, a, b);
        break;
    case N_SLICE: {
        if (!n->a)
            jfail(c, KVS_E_INTERNAL, "line %d: a slice without an object", n->line);
        a = jeval(c, f, n->a);
        jv s1 = n->b ? jeval(c, f, n->b) : jv_none(), s2 = n->c ? jeval(c, f, n->c) : jv_none(),
           s3 = n->d ? jeval(c, f, n->d) : jv_none();
        r = do_slice(c, a, s1, s2, s3);
        break;
    }
    case N_CALL: {
        jv callee = jeval(c, f, n->a);
        eval_args(c, f, n, 0, NULL, &args);
        r = jcall(c, f, callee, args.n, args.v, args.kw);
        break;
    }
    case N_FILTER: {
        if (!n->a)
            jfail(c, KVS_E_INTERNAL, "filter without operand");
        a = jeval(c, f, n->a);
        eval_args(c, f, n, 0, NULL, &args);
        jstep(c);
        r = jfilter(c, f, n->s, a, &args);
        break;
    }
    case N_TEST: {
        a = jeval(c, f, n->a);
        eval_args(c, f, n, 0, NULL, &args);
        bool t = jtest(c, f, n->s, a, &args);
        r = jv_bool(n->neg ? !t : t);
        break;
    }
    case N_NEG:
    case N_POS:
        a = jeval(c, f, n->a);
        if (a.t == JV_INT)
            r = jv_int(n->kind == N_NEG ? -a.i : a.i);
        else if (a.t == JV_BOOL)
            r = jv_int(n->kind == N_NEG ? -(int64_t)a.b : a.b);
        else if (a.t == JV_FLOAT)
            r = jv_float(n->kind == N_NEG ? -a.f : a.f);
        else if (a.t == JV_UNDEF)
            jfail(c, KVS_E_INVALID, "%s", a.undef ? a.undef : "undefined value in an arithmetic expression");
        else
            jfail(c, KVS_E_INVALID, "bad operand type for unary %c: '%s'", n->kind == N_NEG ? '-' : '+',
                  jv_typename(a));
        break;
    case N_NOT:
        r = jv_bool(!jv_truthy(jeval(c, f, n->a)));
        break;
    case N_AND:
        a = jeval(c, f, n->a);
        r = jv_truthy(a) ? jeval(c, f, n->b) : a;
        break;
    case N_OR:
        a = jeval(c, f, n->a);
        r = jv_truthy(a) ? a : jeval(c, f, n->b);
        break;
    case N_BIN:
        a = jeval(c, f, n->a);
        b = jeval(c, f, n->b);
        r = jbinop(c, n->op, a, b);
        break;
    case N_CMP: {
        a = jeval(c, f, n->a);
        r = jv_bool(true);
        for (size_t i = 0; i < n->nk; i++) {
            b = jeval(c, f, n->kids[i]);
            if (!compare(c, n->ops[i], a, b)) {
                r = jv_bool(false);
                break;
            }
            a = b;
        }
        break;
    }
    case N_COND:
        if (jv_truthy(jeval(c, f, n->b)))
            r = jeval(c, f, n->a);
        else if (n->c)
            r = jeval(c, f, n->c);
        else
            r = jv_undef_msg(c, "the inline if-expression on line %d evaluated to false and no else section was defined.",
                             n->line);
        break;
    case N_LIST:
    case N_TUPLE:
        r = jv_list(c, n->nk);
        r.tuple = n->kind == N_TUPLE;
        for (size_t i = 0; i < n->nk; i++)
            r.l->v[r.l->n++] = jeval(c, f, n->kids[i]);
        break;
    case N_DICT:
        r = jv_dict(c, n->nk);
        for (size_t i = 0; i < n->nk; i++) {
            jv k = jeval(c, f, n->kids[i]);
            jdict_set(c, r.d, k, jeval(c, f, n->defs[i]));
        }
        break;
    case N_CONCAT: {
        jbuf out = {0};
        for (size_t i = 0; i < n->nk; i++)
            jv_write_str(c, &out, jeval(c, f, n->kids[i]));
        r = jbuf_str(&out);
        break;
    }
    default:
        jfail(c, KVS_E_INTERNAL, "line %d: not an expression", n->line);
    }
    c->depth--;
    return r;
}

/* ---- macros ---- */

static jv render_to_string(jctx *c, jframe *f, jnode *body)
{
    jbuf out = {0};
    rstate rs = {.out = &out};
    void *saved = c->rs;
    c->rs = &rs;
    jrender_body(c, f, body);
    c->rs = saved;
    jv v = jbuf_str(&out);
    v.safe = true;
    return v;
}

static jv call_macro(jctx *c, jmacro *m, size_t nargs, const jv *args, const char **kw, jmacro *caller)
{
    const jnode *d = m->def;
    jframe *f = jframe_new(c, m->closure);
    bool *set = jalloc(c, (d->nn ? d->nn : 1) * sizeof *set);
    memset(set, 0, (d->nn ? d->nn : 1) * sizeof *set);
    jv varargs = jv_list(c, 0), kwargs = jv_dict(c, 0);
    varargs.tuple = true;
    size_t pos = 0;
    for (size_t i = 0; i < nargs; i++) {
        if (kw && kw[i]) {
            size_t p;
            for (p = 0; p < d->nn; p++)
                if (strcmp(d->names[p], kw[i]) == 0)
                    break;
            if (p < d->nn) {
                jframe_set(c, f, d->names[p], args[i]);
                set[p] = true;
            } else if (d->kind == N_MACRO && !(d->op & JMACRO_KWARGS)) {
                jfail(c, KVS_E_INVALID, "macro '%s' takes no keyword argument '%s'", m->name ? m->name : "caller", kw[i]);
            } else {
                jdict_set(c, kwargs.d, jv_cstr(kw[i]), args[i]);
            }
        } else if (pos < d->nn) {
            jframe_set(c, f, d->names[pos], args[i]);
            set[pos++] = true;
        } else if (d->kind == N_MACRO && !(d->op & JMACRO_VARARGS)) {
            jfail(c, KVS_E_INVALID, "macro '%s' takes not more than %zu argument(s)", m->name ? m->name : "caller",
                  d->nn);
        } else {
            jlist_push(c, varargs.l, args[i]);
        }
    }
    if (caller && d->kind == N_MACRO && !(d->op & JMACRO_CALLER) && (d->op & JMACRO_KWARGS)) {
        jv cv = {.t = JV_MACRO, .mac = caller}; /* Jinja2: then caller is one of the kwargs */
        jdict_set(c, kwargs.d, jv_cstr("caller"), cv);
        caller = NULL;
    }
    if (caller && d->kind == N_MACRO && !(d->op & JMACRO_CALLER))
        jfail(c, KVS_E_INVALID,
              "macro '%s' was invoked with two values for the special caller argument. This is most likely a bug.",
              m->name ? m->name : "caller");
    for (size_t p = 0; p < d->nn; p++)
        if (!set[p]) {
            jv dv = d->defs[p] ? jeval(c, f, d->defs[p]) : jv_undef_msg(c, "parameter '%s' was not provided",
                                                                          d->names[p]);
            jframe_set(c, f, d->names[p], dv);
        }
    jframe_set(c, f, "varargs", varargs);
    jframe_set(c, f, "kwargs", kwargs);
    if (caller) {
        jv cv = {.t = JV_MACRO, .mac = caller};
        jframe_set(c, f, "caller", cv);
    }
    enter(c);
    jv out = render_to_string(c, f, d->b);
    c->depth--;
    return out;
}

jv jcall(jctx *c, jframe *f, jv callee, size_t nargs, const jv *args, const char **kwnames)
{
    jargs a = {nargs, args, kwnames};
    jstep(c);
    switch (callee.t) {
    case JV_MACRO:
        return call_macro(c, callee.mac, nargs, args, kwnames, callee.mac->caller);
    case JV_FUNC:
        return jcall_global(c, f, callee.i, &a);
    case JV_METHOD:
        return jcall_method(c, f, callee.bm, &a);
    case JV_JOINER: {
        jbound b = {callee, "__call__"};
        return jcall_method(c, f, &b, &a);
    }
    case JV_LOOP:
        if (nargs != 1)
            jfail(c, KVS_E_INVALID, "loop() takes one argument");
        return jloop_recurse(c, callee.loop, args[0]);
    case JV_UNDEF:
        jfail(c, KVS_E_INVALID, "%s", callee.undef ? callee.undef : "'Undefined' object is not callable");
    default:
        jfail(c, KVS_E_INVALID, "'%s' object is not callable", jv_typename(callee));
    }
}

/* ---- statements ---- */

static void assign(jctx *c, jframe *f, const jnode *target, jv v)
{
    if (target->kind == N_NAME) {
        jframe_set(c, f, target->s, v);
        return;
    }
    if (target->kind == N_ATTR) {
        jv ns = lookup(c, f, target->a);
        if (ns.t != JV_NS)
            jfail(c, KVS_E_INVALID, "line %d: Can only set attributes on namespace objects (set %s.%s)",
                  target->line, target->a->s, target->s);
        jdict_set(c, ns.d, jv_cstr(target->s), v);
        return;
    }
    if (target->kind == N_TUPLE) {
        jlist *items = jv_iter(c, v);
        if (items->n != target->nk)
            jfail(c, KVS_E_INVALID, "%s values to unpack (expected %zu, got %zu)",
                  items->n > target->nk ? "too many" : "not enough", target->nk, items->n);
        for (size_t i = 0; i < target->nk; i++)
            assign(c, f, target->kids[i], items->v[i]);
        return;
    }
    jfail(c, KVS_E_INVALID, "line %d: cannot assign to this target", target->line);
}

static void run_for(jctx *c, jframe *f, const jnode *n, jv seq, int depth0)
{
    jlist *items = jv_iter(c, seq);
    if (n->c) { /* {% for x in xs if cond %}: filter first, loop.* counts what is left */
        jv kept = jv_list(c, 0);
        for (size_t i = 0; i < items->n; i++) {
            jstep(c);
            jframe *lf = jframe_new(c, f);
            assign(c, lf, n->a, items->v[i]);
            if (jv_truthy(jeval(c, lf, n->c)))
                jlist_push(c, kept.l, items->v[i]);
        }
        items = kept.l;
    }
    jloop *lp = jalloc(c, sizeof *lp);
    memset(lp, 0, sizeof *lp);
    lp->items = items;
    lp->depth0 = depth0;
    lp->node = n;
    lp->frame = f;
    jv lv = {.t = JV_LOOP, .loop = lp};
    for (size_t i = 0; i < items->n; i++) {
        jstep(c);
        lp->index0 = i;
        jframe *lf = jframe_new(c, f);
        jframe_set(c, lf, "loop", lv);
        assign(c, lf, n->a, items->v[i]);
        jrender_body(c, lf, n->d);
        int ctl = RS(c)->ctl;
        RS(c)->ctl = CTL_NONE;
        if (ctl == CTL_BREAK)
            break;
    }
    if (items->n == 0 && n->els)
        jrender_body(c, f, n->els);
}

static void render_for(jctx *c, jframe *f, jnode *n)
{
    run_for(c, f, n, jeval(c, f, n->b), 0);
}

jv jloop_recurse(jctx *c, jloop *lp, jv items)
{
    if (!lp->node || !lp->node->neg)
        jfail(c, KVS_E_INVALID, "Tried to call non recursive loop.  Maybe you forgot the 'recursive' modifier.");
    enter(c);
    jbuf out = {0};
    rstate rs = {.out = &out};
    void *saved = c->rs;
    c->rs = &rs;
    run_for(c, lp->frame, lp->node, items, lp->depth0 + 1);
    c->rs = saved;
    c->depth--;
    jv v = jbuf_str(&out);
    v.safe = true;
    return v;
}

/* Applies the filter chain of a {% set x | f | g %} or {% filter f | g %} block to v: the chain's
 * nodes are linked outermost first through ->a (at most 64 are taken), and run innermost first. */
static jv apply_filter_chain(jctx *c, jframe *f, const jnode *chain_head, jv v)
{
    const jnode *chain[64];
    size_t k = 0;
    for (const jnode *x = chain_head; x && k < 64; x = x->a)
        chain[k++] = x;
    while (k-- > 0) {
        jargs a;
        eval_args(c, f, chain[k], 0, NULL, &a);
        v = jfilter(c, f, chain[k]->s, v, &a);
    }
    return v;
}

static void render_node(jctx *c, jframe *f, jnode *n)
{
    jstep(c);
    switch (n->kind) {
    case N_TEXT:
        emit(c, n->s, n->sn);
        return;
    case N_OUT:
        emit_value(c, jeval(c, f, n->a));
        return;
    case N_IF:
        while (n) {
            if (n->kind != N_IF) { /* else body */
                jrender_body(c, f, n);
                return;
            }
            if (jv_truthy(jeval(c, f, n->a))) {
                jrender_body(c, f, n->b);
                return;
            }
            n = n->els;
        }
        return;
    case N_FOR:
        render_for(c, f, n);
        return;
    case N_SET:
        assign(c, f, n->a, jeval(c, f, n->b));
        return;
    case N_SETBLOCK: {
        jv v = render_to_string(c, jframe_new(c, f), n->b); /* the body has its own scope */
        if (n->c)
            v = apply_filter_chain(c, f, n->c, v);
        assign(c, f, n->a, v);
        return;
    }
    case N_FILTERBLOCK: {
        jv v = render_to_string(c, jframe_new(c, f), n->b);
        v = apply_filter_chain(c, f, n->c, v);
        if (v.t != JV_STR) /* Jinja2 writes the filter's result as it is: it must be a string */
            jfail(c, KVS_E_INVALID, "sequence item 0: expected str instance, %s found", jv_typename(v));
        emit_value(c, v);
        return;
    }
    case N_MACRO: {
        jmacro *m = jalloc(c, sizeof *m);
        m->def = n;
        m->closure = f;
        m->caller = NULL;
        m->name = n->s;
        jv mv = {.t = JV_MACRO, .mac = m};
        jframe_set(c, f, n->s, mv);
        return;
    }
    case N_CALLBLOCK: {
        jmacro *caller = jalloc(c, sizeof *caller);
        caller->def = n;
        caller->closure = f;
        caller->caller = NULL;
        caller->name = NULL; /* Jinja2's anonymous macro */
        jv callee = jeval(c, f, n->a->a);
        jargs a;
        eval_args(c, f, n->a, 0, NULL, &a);
        if (callee.t != JV_MACRO)
            jfail(c, KVS_E_INVALID, "line %d: {%% call %%} needs a macro", n->line);
        emit_value(c, call_macro(c, callee.mac, a.n, a.v, a.kw, caller));
        return;
    }
    case N_BREAK:
        RS(c)->ctl = CTL_BREAK;
        return;
    case N_CONTINUE:
        RS(c)->ctl = CTL_CONTINUE;
        return;
    case N_BODY:
        if (n->neg) {
            jframe *sf = jframe_new(c, f);
            jrender_body(c, sf, n);
        } else {
            jrender_body(c, f, n);
        }
        return;
    default:
        jfail(c, KVS_E_INTERNAL, "line %d: not a statement", n->line);
    }
}

void jrender_body(jctx *c, jframe *f, jnode *body)
{
    enter(c);
    for (size_t i = 0; i < body->nk; i++) {
        jnode *k = body->kids[i];
        if (k->kind == N_BODY && !k->neg)
            jrender_body(c, f, k);
        else if (k->kind == N_BODY)
            render_node(c, f, k);
        else
            render_node(c, f, k);
        if (RS(c)->ctl != CTL_NONE)
            break;
    }
    c->depth--;
}

/* ---- public API ---- */

static void ctx_init(jctx *c, size_t mem_limit)
{
    memset(c, 0, sizeof *c);
    c->arena.limit = mem_limit;
    c->max_depth = 200;
}

kvs_status kvs_jinja_parse(const char *src, size_t len, kvs_jinja **out, kvs_error *err)
{
    *out = NULL;
    jctx *volatile c = malloc(sizeof *c);
    kvs_jinja *volatile t = calloc(1, sizeof *t);
    if (!c || !t) {
        free(c);
        free(t);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory parsing a template");
    }
    ctx_init(c, (size_t)64 << 20);
    c->src = src;
    c->src_len = len;
    if (setjmp(c->jb)) {
        kvs_status st = c->st;
        kvs_fail(err, st, "chat template: %s", c->err);
        jarena_free(&c->arena);
        free(c);
        free(t);
        return st;
    }
    t->root = jparse(c);
    t->arena = c->arena;
    free(c);
    *out = t;
    return KVS_OK;
}

void kvs_jinja_free(kvs_jinja *t)
{
    if (!t)
        return;
    jarena_free(&t->arena);
    free(t);
}

kvs_status kvs_jinja_render(const kvs_jinja *t, json_t *vars, kvs_jinja_opts *opts, char **out, size_t *out_len,
                            kvs_error *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    kvs_jinja_opts o = opts ? *opts : (kvs_jinja_opts){0};
    if (opts)
        opts->raised = false;
    jctx *volatile c = malloc(sizeof *c);
    if (!c)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory rendering a template");
    ctx_init(c, o.max_memory ? o.max_memory : (size_t)256 << 20);
    c->max_output = o.max_output ? o.max_output : (size_t)16 << 20;
    c->max_steps = o.max_steps ? o.max_steps : 20000000;
    c->max_depth = o.max_depth > 0 ? o.max_depth : 200;
    c->now = o.now;
    if (c->now == 0) {
        struct tm tm = {.tm_year = 124, .tm_mon = 6, .tm_mday = 26, .tm_hour = 13, .tm_min = 5, .tm_isdst = -1};
        c->now = mktime(&tm);
    }
    if (setjmp(c->jb)) {
        kvs_status st = c->st;
        if (c->raised) {
            if (opts)
                opts->raised = true;
            kvs_fail(err, st, "%s", c->err);
        } else {
            kvs_fail(err, st, "chat template: %s", c->err);
        }
        jctx_release(c);
        jarena_free(&c->arena);
        free(c);
        return st;
    }
    jframe *builtins = jframe_new(c, NULL);
    jglobals_install(c, builtins);
    jframe *g = jframe_new(c, builtins);
    c->globals = g;
    if (vars && json_is_object(vars)) {
        const char *k;
        json_t *v;
        json_object_foreach(vars, k, v)
        {
            jframe_set(c, g, k, jv_from_json(c, v));
        }
    }
    jbuf b = {0};
    rstate rs = {.out = &b};
    c->rs = &rs;
    jrender_body(c, g, t->root);
    char *res = malloc(b.n + 1);
    if (!res) {
        jctx_release(c);
        jarena_free(&c->arena);
        free(c);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory rendering a template");
    }
    if (b.n)
        memcpy(res, b.p, b.n);
    res[b.n] = '\0';
    if (out_len)
        *out_len = b.n;
    *out = res;
    jctx_release(c);
    jarena_free(&c->arena);
    free(c);
    return KVS_OK;
}

char *kvs_jinja_json_dumps(const json_t *v)
{
    jctx *volatile c = malloc(sizeof *c);
    if (!c)
        return NULL;
    ctx_init(c, (size_t)256 << 20);
    char *volatile res = NULL;
    if (setjmp(c->jb) == 0) {
        jbuf b = {0};
        jv_write_json(c, &b, jv_from_json(c, v), false, NULL, ", ", ": ", false, 0);
        res = malloc(b.n + 1);
        if (res) {
            if (b.n)
                memcpy(res, b.p, b.n);
            res[b.n] = '\0';
        }
    }
    jarena_free(&c->arena);
    free(c);
    return res;
}
