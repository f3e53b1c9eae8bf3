/*
 * chat_template.h - turn OpenAI-style chat messages into a prompt string.
 *
 * A model ships its chat format as a Jinja template (GGUF key
 * `tokenizer.chat_template`).  kvserve has no Jinja interpreter yet, so this
 * module recognises which *known* template a model carries and renders that
 * format natively, byte for byte what Hugging Face transformers produces with
 * Jinja2 (sandboxed environment, trim_blocks, lstrip_blocks, no tools).
 *
 *     kvs_chat_format f;
 *     if (kvs_chat_detect(tmpl, &f, &err) != KVS_OK) ...   // 4xx/5xx
 *     char *prompt;
 *     kvs_chat_opts o = {.add_generation_prompt = true, .bos = "<s>", .eos = "</s>",
 *                        .template_text = tmpl};
 *     kvs_chat_render_opts(f, msgs, n, &o, &prompt, &err);
 *     ...
 *     free(prompt);
 *
 * Recognition is strict, so that a rendering is never approximate: a template
 * is accepted only when it prints nothing outside its {{ }} / {% %} tags and
 * its tags, whitespace between them aside, are those of a known template,
 * except inside branches that only run with tools (see chat_template.c).  A
 * template of a known family (markers like "<|start_header_id|>",
 * "<|im_start|>", "[INST]", "<start_of_turn>", "<|user|>", "<｜User｜>") that
 * differs anywhere else is refused with KVS_E_UNSUPPORTED, naming the family.
 *
 * Messages: roles "system", "user" and "assistant" with string content.
 * "tool" is rejected (KVS_E_UNSUPPORTED: tool calls need the Jinja
 * interpreter), any other role is KVS_E_INVALID.  Where the real template
 * calls raise_exception (Llama 2, Gemma and the newer Mistral formats demand
 * alternating user/assistant turns) rendering fails with KVS_E_INVALID and the
 * template's own error text.  The templates' quirks are kept, because the
 * output must be what transformers would feed the model: Mistral 7B v0.3
 * ignores system messages, Phi-3.5 drops an empty one, Mistral Nemo puts the
 * system message into the last user turn only (none if the conversation ends
 * with the assistant), DeepSeek-R1 puts the last system message after BOS,
 * and Qwen3 / DeepSeek-R1 strip "<think>" reasoning from earlier turns.
 *
 * Text from the template: kvserve keeps no copy of the models' default system
 * messages.  Qwen2.5 and Mistral Small 3.2 print one when the conversation has
 * no system message, and their renderers read it from the model's template at
 * render time, so these formats need kvs_chat_opts.template_text (the string
 * kvs_chat_detect recognised); without it rendering fails with KVS_E_INVALID.
 *
 * Dates: Llama 3.1 prints "Today Date: 26 Jul 2024" unless `date_string` is
 * given; Llama 3.2 and Mistral Small 3.2 print today's date via strftime_now.
 * Rendering never reads the clock: the caller passes the date in
 * kvs_chat_opts, and the default is the fixed date 2024-07-26, so that the
 * output (and the prefix cache) is deterministic.
 */
#ifndef KVS_SERVER_CHAT_TEMPLATE_H
#define KVS_SERVER_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

typedef struct kvs_chat_msg {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* UTF-8, NUL-terminated; must not be NULL */
} kvs_chat_msg;

typedef enum kvs_chat_format {
    KVS_CHAT_LLAMA2,         /* "llama2": [INST] <<SYS>> (transformers' LLaMA default) */
    KVS_CHAT_LLAMA3,         /* "llama3": Llama 3.1 / 3.3, fixed date 26 Jul 2024 */
    KVS_CHAT_LLAMA3_2,       /* "llama3.2": Llama 3.2, date from strftime_now */
    KVS_CHAT_CHATML,         /* "chatml": plain ChatML, no default system (Qwen3-Coder) */
    KVS_CHAT_QWEN2_5,        /* "qwen2.5": ChatML + the template's default system turn */
    KVS_CHAT_QWEN3,          /* "qwen3": ChatML + <think> handling of assistant turns */
    KVS_CHAT_MISTRAL_V3,     /* "mistral-v3": " [INST] x [/INST]" (7B v0.3, no system) */
    KVS_CHAT_MISTRAL_NEMO,   /* "mistral-nemo": "[INST]x[/INST]", system in last turn */
    KVS_CHAT_MISTRAL_SMALL3, /* "mistral-small-3.2": [SYSTEM_PROMPT] with default */
    KVS_CHAT_GEMMA,          /* "gemma": <start_of_turn>user/model (Gemma 2) */
    KVS_CHAT_PHI3,           /* "phi3": <|user|> ... <|end|> (Phi-3.5) */
    KVS_CHAT_DEEPSEEK_R1,    /* "deepseek-r1": <｜User｜>/<｜Assistant｜> (R1 distills) */
    KVS_CHAT_FORMAT_COUNT
} kvs_chat_format;

/* Everything besides the messages that a template reads.  Zero-initialise
 * and set what you need: `kvs_chat_opts o = {0};` is a valid default. */
typedef struct kvs_chat_opts {
    bool add_generation_prompt; /* end with the assistant header, as in HF */
    const char *bos;            /* BOS piece, e.g. "<s>"; NULL renders "" */
    const char *eos;            /* EOS piece, e.g. "</s>"; NULL renders "" */
    const char *date_string;    /* Llama 3.x `date_string`; NULL = not passed */
    int year, month, day;       /* what strftime_now returns; all 0 = 2024-07-26 */
    bool disable_thinking;      /* Qwen3: pass enable_thinking=false */
    const char *template_text;  /* the template kvs_chat_detect recognised; needed by
                                   qwen2.5 and mistral-small-3.2 (see above) */
} kvs_chat_opts;

/* Recognise the format implemented by `template_str` (the GGUF
 * tokenizer.chat_template value).  NULL or "" -> KVS_E_NOT_FOUND ("model has
 * no chat template"); an unknown template or an unknown variant of a known
 * family -> KVS_E_UNSUPPORTED with a message listing the supported formats. */
kvs_status kvs_chat_detect(const char *template_str, kvs_chat_format *out, kvs_error *err);

/* A short stable name ("llama3", "qwen2.5", ...); "unknown" when out of range. */
const char *kvs_chat_format_name(kvs_chat_format f);

/* Comma-separated list of all format names, for messages and --help. */
const char *kvs_chat_supported_list(void);

/* Render `n` >= 1 messages in format `f`.  `bos`/`eos` are the tokenizer's
 * BOS/EOS piece strings (NULL = ""), add_generation_prompt as in HF; other
 * options take their defaults (fixed date 2024-07-26, no template text, so
 * qwen2.5 and mistral-small-3.2 fail with KVS_E_INVALID: use
 * kvs_chat_render_opts for them).  On success *out is a malloc'ed
 * NUL-terminated string owned by the caller; on failure *out is NULL. */
kvs_status kvs_chat_render(kvs_chat_format f, const kvs_chat_msg *msgs, size_t n,
                           bool add_generation_prompt, const char *bos, const char *eos,
                           char **out, kvs_error *err);

/* The same with all options; `opts` NULL means all defaults.  A date that is
 * set must be a real calendar date in years 1000..9999 (else KVS_E_INVALID).
 * opts->template_text must be given for qwen2.5 and mistral-small-3.2, and be
 * a template of format `f` (else KVS_E_INVALID). */
kvs_status kvs_chat_render_opts(kvs_chat_format f, const kvs_chat_msg *msgs, size_t n,
                                const kvs_chat_opts *opts, char **out, kvs_error *err);

#endif
