/*
 * jinja_internal.h - what the Jinja interpreter's files share.
 *
 * Memory: an arena (jarena) owns everything a parse or a render allocates;
 * it counts its bytes against a limit.  Errors: jfail() longjmps to the
 * jmp_buf of the current context (jctx), set by the public entry points.
 */
#ifndef KVS_CHAT_JINJA_INTERNAL_H
#define KVS_CHAT_JINJA_INTERNAL_H

#include <locale.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/jinja.h"

/* ---- arena ---- */
typedef struct jchunk {
    struct jchunk *next;
    size_t used, cap;
    max_align_t data[];
} jchunk;

typedef struct jctx jctx;

typedef struct jarena {
    jchunk *head;
    size_t total, limit;
} jarena;

/* ---- values ---- */
typedef enum {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT,
    JV_NS,    /* namespace(): a dict whose entries `set ns.x = v` changes */
    JV_FUNC,  /* a global function or filter-like builtin (id in .i) */
    JV_METHOD,/* a bound method: .bm */
    JV_MACRO, /* a macro (or caller): .mac */
    JV_LOOP,  /* the `loop` object of a for loop: .loop */
    JV_CYCLER, JV_JOINER,
} jv_type;

typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jbound jbound;
typedef struct jmacro jmacro;
typedef struct jloop jloop;

typedef struct jv {
    uint8_t t;
    bool tuple;      /* a list made by a tuple literal (prints as (a, b)) */
    bool safe;       /* Markup (from |safe, macros): skipped by |e */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        jlist *l;
        jdict *d;
        jbound *bm;
        jmacro *mac;
        jloop *loop;
        const char *undef; /* the error an attribute access raises (NULL: plain) */
        struct jv *cyc;     /* cycler / joiner state: a small array in the arena */
    };
} jv;

struct jlist {
    size_t n, cap;
    jv *v;
};

struct jdict {
    size_t n, cap;
    jv *k, *v;
};

struct jbound {
    jv self;
    const char *name;
};

struct jloop {
    jlist *items;
    size_t index0;
    int depth0;
    const struct jnode *node; /* the N_FOR (for loop(...) in recursive loops) */
    struct jframe *frame;     /* where the loop runs */
    jv changed_last;          /* loop.changed(): the previous arguments */
    bool changed_seen;
};

/* ---- tokens (operators double as N_BIN / N_CMP operators) ---- */
enum {
    T_EOF, T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT,
    T_ADD, T_SUB, T_MUL, T_DIV, T_FLOORDIV, T_MOD, T_POW, T_TILDE, T_EQ, T_NE, T_LT, T_GT, T_LE, T_GE,
    T_ASSIGN, T_LPAREN, T_RPAREN, T_LBRACK, T_RBRACK, T_LBRACE, T_RBRACE, T_COMMA, T_DOT, T_COLON, T_PIPE,
    T_SEMI,
    T_IN, T_NOTIN, /* comparison pseudo-operators of N_CMP */
};

/* ---- AST ---- */
typedef enum {
    /* expressions */
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_NEG, N_POS, N_NOT, N_AND, N_OR,
    N_BIN, N_CMP, N_COND, N_LIST, N_TUPLE, N_DICT, N_CONCAT,
    /* statements */
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_FILTERBLOCK, N_BREAK, N_CONTINUE,
    N_BODY, N_NOP,
} jnode_kind;

/* N_MACRO's op: what its body reads (as Jinja2, it accepts a caller / extra arguments only then) */
enum { JMACRO_CALLER = 1, JMACRO_VARARGS = 2, JMACRO_KWARGS = 4 };

typedef struct jnode jnode;
struct jnode {
    uint8_t kind;
    bool neg;            /* N_TEST: `is not`; N_FOR: recursive */
    int op;              /* N_BIN / N_CMP operator (token type) */
    int line;
    const char *s;       /* name, attribute, filter/test name, text */
    size_t sn;
    jv lit;              /* N_LIT */
    jnode *a, *b, *c, *d;
    jnode **kids;        /* args, items, body statements, compare operands */
    size_t nk;
    const char **names;  /* keyword argument names (NULL entries = positional), targets, params */
    size_t nn;
    int *ops;            /* N_CMP: one operator per operand after the first */
    jnode **defs;        /* N_MACRO defaults (NULL = none), N_DICT values */
    jnode *els;          /* else body */
};

/* ---- context ---- */
typedef struct jframe jframe;

struct jmacro {
    const jnode *def;    /* N_MACRO (or N_CALLBLOCK for caller) */
    jframe *closure;
    jmacro *caller;      /* the caller() available inside, or NULL */
    const char *name;
};

struct jctx {
    jmp_buf jb;
    jarena arena;
    char err[512];
    kvs_status st;
    bool raised;
    /* render state */
    void *rs;            /* the current output and loop-control state (jinja_eval.c) */
    size_t max_output;
    uint64_t steps, max_steps;
    int depth, max_depth;
    time_t now;
    jframe *globals;
    locale_t loc;        /* C.UTF-8 for Unicode case mapping (made on first use; (locale_t)0: none) */
    bool loc_tried;
    /* lexer / parser state */
    const char *src;
    size_t src_len;
};

_Noreturn void jfail(jctx *c, kvs_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void *jalloc(jctx *c, size_t n);
/* A new arena array of cap elements of `size` bytes whose first n (n <= cap) are copied from old
 * (NULL when n is 0): how the arena's growable arrays grow (the old one is left to the arena). */
void *jgrow(jctx *c, const void *old, size_t n, size_t cap, size_t size);
void jarena_free(jarena *a);
/* Release what a context holds besides its arena (the case-mapping locale). */
void jctx_release(jctx *c);
char *jstrdup(jctx *c, const char *s, size_t n);

/* values */
static inline jv jv_undef(void) { jv v = {.t = JV_UNDEF}; return v; }
static inline jv jv_none(void) { jv v = {.t = JV_NONE}; return v; }
static inline jv jv_bool(bool b) { jv v = {.t = JV_BOOL, .b = b}; return v; }
static inline jv jv_int(int64_t i) { jv v = {.t = JV_INT, .i = i}; return v; }
static inline jv jv_float(double f) { jv v = {.t = JV_FLOAT, .f = f}; return v; }
static inline jv jv_strn(const char *p, size_t n) { jv v = {.t = JV_STR}; v.s.p = p; v.s.n = n; return v; }
jv jv_str(jctx *c, const char *p, size_t n);       /* copied */
jv jv_cstr(const char *static_text);               /* not copied */
jv jv_undef_msg(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
jv jv_list(jctx *c, size_t cap);
jv jv_dict(jctx *c, size_t cap);
void jlist_push(jctx *c, jlist *l, jv v);
void jdict_set(jctx *c, jdict *d, jv k, jv v);
bool jdict_get(const jdict *d, jv k, jv *out);
bool jdict_gets(const jdict *d, const char *k, jv *out);

bool jv_truthy(jv v);
bool jv_eq(jv a, jv b);
int jv_cmp(jctx *c, jv a, jv b);    /* <0, 0, >0; fails on unorderable types */
const char *jv_typename(jv v);      /* Python's type name: 'str', 'dict', ... */
bool jv_iterable(jv v);
jlist *jv_iter(jctx *c, jv v);      /* list of items (dict: keys; str: chars); fails if not iterable */
size_t jv_len(jctx *c, jv v);       /* len(); fails when there is none */
bool jv_is_seq(jv v);

/* text: str() and repr() as Python writes them */
typedef struct jbuf {
    char *p;
    size_t n, cap;
} jbuf;
void jbuf_put(jctx *c, jbuf *b, const char *s, size_t n);
void jbuf_puts(jctx *c, jbuf *b, const char *s);
jv jbuf_str(jbuf *b);
void jv_write_str(jctx *c, jbuf *b, jv v);
void jv_write_repr(jctx *c, jbuf *b, jv v);
jv jv_to_str(jctx *c, jv v);
void jfloat_repr(double f, char *buf, size_t cap);
/* json.dumps(v, ensure_ascii, indent (NULL = none), separators, sort_keys) */
void jv_write_json(jctx *c, jbuf *b, jv v, bool ensure_ascii, const char *indent, const char *item_sep,
                   const char *key_sep, bool sort_keys, int level);
jv jv_from_json(jctx *c, const void *json /* json_t */);

/* UTF-8 helpers */
size_t ju8_count(const char *s, size_t n);                 /* code points */
size_t ju8_offset(const char *s, size_t n, size_t cp);     /* byte offset of code point cp (clamped) */
uint32_t ju8_decode(const char *s, size_t n, size_t *adv); /* one code point (bad bytes: the byte) */
bool ju_isspace(uint32_t cp);

/* lexer + parser */
jnode *jparse(jctx *c);

/* evaluator */
void jrender_body(jctx *c, jframe *f, jnode *body);
jv jeval(jctx *c, jframe *f, const jnode *n);
jframe *jframe_new(jctx *c, jframe *parent);
void jframe_set(jctx *c, jframe *f, const char *name, jv v);
bool jframe_get(jframe *f, const char *name, jv *out);
jv jcall(jctx *c, jframe *f, jv callee, size_t nargs, const jv *args, const char **kwnames);
/* loop(items) inside a recursive for loop: the body over items, one level deeper, as a string. */
jv jloop_recurse(jctx *c, jloop *lp, jv items);
void jstep(jctx *c);

/* builtins */
typedef struct jargs {
    size_t n;
    const jv *v;
    const char **kw; /* kw[i] != NULL: keyword argument */
} jargs;
/* Arguments by position or keyword: positional index pos, or name; *out set when present. */
bool jarg(const jargs *a, size_t pos, const char *name, jv *out);
jv jfilter(jctx *c, jframe *f, const char *name, jv v, const jargs *a);
bool jtest(jctx *c, jframe *f, const char *name, jv v, const jargs *a);
bool jfilter_exists(const char *name);
bool jtest_exists(const char *name);
jv jgetattr(jctx *c, jv obj, const char *name, size_t n);   /* obj.name */
jv jgetitem(jctx *c, jv obj, jv key);                        /* obj[key] */
jv jcall_method(jctx *c, jframe *f, jbound *m, const jargs *a);
jv jcall_global(jctx *c, jframe *f, int64_t id, const jargs *a);
void jglobals_install(jctx *c, jframe *g);
jv jbinop(jctx *c, int op, jv a, jv b);

#endif
