// kvserve's HTTP server driven by the official `openai` npm client:
// completions and chat, streaming and not, models, and the client's error
// classes for 400 / 401 / 404.  The greedy text is checked against llama2.c's
// run of stories260K (shared/expected).  Servers are always stopped.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { BUILD, KVSERVE, SHARED, STORIES, check, servers, startServer, stopServer, tally } from './kvs_node_util.mjs';

const KEY = 'sk-node-test';

const client = (srv, key = KEY) => new OpenAI({ baseURL: `http://127.0.0.1:${srv.port}/v1`, apiKey: key,
                                                 maxRetries: 0, timeout: 120000 });

async function main() {
  const expected = readFileSync(path.join(SHARED, 'expected', 'stories260K_greedy_once_upon_a_time_n64.txt'), 'utf8');
  const srv = await startServer(STORIES, ['--api-key', KEY]);
  const c = client(srv);

  await check('models.list', async () => {
    const ids = [];
    for await (const m of c.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['stories260K']);
  });

  let text;
  await check('completions (greedy = llama2.c)', async () => {
    const r = await c.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 59,
                                           temperature: 0 });
    text = r.choices[0].text;
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.prompt_tokens, 5);
    assert.equal(r.usage.completion_tokens, 59);
    assert.ok(expected.startsWith('Once upon a time' + text), JSON.stringify(text));
  });

  await check('completions stream', async () => {
    const s = await c.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 59,
                                           temperature: 0, stream: true, stream_options: { include_usage: true } });
    let got = '', usage = null, finish = null;
    for await (const ch of s) {
      if (ch.usage) usage = ch.usage;
      for (const x of ch.choices) {
        got += x.text;
        if (x.finish_reason) finish = x.finish_reason;
      }
    }
    assert.equal(got, text);
    assert.equal(finish, 'length');
    assert.deepEqual([usage.prompt_tokens, usage.completion_tokens, usage.total_tokens], [5, 59, 64]);
  });

  await check('completions with a list of prompts', async () => {
    const r = await c.completions.create({ model: 'stories260K', prompt: ['Once upon a time', 'Lily'], max_tokens: 6,
                                           temperature: 0, n: 2 });
    assert.deepEqual(r.choices.map((x) => x.index), [0, 1, 2, 3]); // prompt-major, as OpenAI numbers them
    const lily = await c.completions.create({ model: 'stories260K', prompt: 'Lily', max_tokens: 6, temperature: 0 });
    assert.ok(expected.startsWith('Once upon a time' + r.choices[0].text), r.choices[0].text);
    assert.equal(r.choices[1].text, r.choices[0].text);
    assert.equal(r.choices[2].text, lily.choices[0].text);
    assert.equal(r.choices[3].text, lily.choices[0].text);
    assert.equal(r.usage.prompt_tokens, 5 + lily.usage.prompt_tokens);
    assert.equal(r.usage.completion_tokens, 24);
    const ids = await c.completions.create({ model: 'stories260K', prompt: [[1, 403, 407, 261, 378], [1, 403]],
                                             max_tokens: 6, temperature: 0 });
    assert.equal(ids.choices.length, 2);
    assert.equal(ids.choices[0].text, r.choices[0].text);
    assert.equal(ids.usage.prompt_tokens, 7);
  });

  await check('models.retrieve', async () => {
    const m = await c.models.retrieve('stories260K');
    assert.equal(m.id, 'stories260K');
    assert.equal(m.object, 'model');
    await assert.rejects(c.models.retrieve('nope'),
                         (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
  });

  await check('stream usage: null until the usage chunk', async () => {
    const s = await c.completions.create({ model: 'stories260K', prompt: ['Once upon a time', 'Lily'], max_tokens: 5,
                                           temperature: 0, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const ch of s) chunks.push(ch);
    const last = chunks.pop();
    assert.ok(chunks.length >= 10 && chunks.every((ch) => ch.usage === null), JSON.stringify(chunks[0]));
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, 10);
  });

  await check('stop_reason, echo, logit_bias, min_tokens', async () => {
    const r = await c.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 40,
                                           temperature: 0, stop: ['Lily'] });
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.choices[0].stop_reason, 'Lily');
    const e = await c.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 0,
                                           echo: true, logprobs: 1 });
    assert.equal(e.choices[0].text, 'Once upon a time');
    assert.equal(e.choices[0].logprobs.tokens.length, 5);
    assert.equal(e.choices[0].logprobs.token_logprobs[0], null);
    assert.ok(e.choices[0].logprobs.token_logprobs.slice(1).every((x) => x < 0));
    const b = await c.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 20,
                                           temperature: 0, logit_bias: { 2: 100 }, min_tokens: 4 });
    assert.equal(b.choices[0].finish_reason, 'stop');
    assert.equal(b.choices[0].stop_reason, null);
    assert.equal(b.usage.completion_tokens, 5);
    await assert.rejects(c.completions.create({ model: 'stories260K', prompt: 'a', suffix: 'b' }),
                         (x) => x instanceof OpenAI.BadRequestError && x.param === 'suffix');
  });

  await check('errors map to the client\'s classes', async () => {
    await assert.rejects(c.completions.create({ model: 'nope', prompt: 'a' }),
                         (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found');
    await assert.rejects(c.completions.create({ model: 'stories260K', prompt: 'a', temperature: 9 }),
                         (e) => e instanceof OpenAI.BadRequestError && e.param === 'temperature');
    await assert.rejects(client(srv, 'wrong').models.list(),
                         (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
    await assert.rejects(c.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: 'x' }] }),
                         (e) => e instanceof OpenAI.BadRequestError && /chat template/.test(e.message));
  });

  // A model with a chat template: stories260K's vocabulary, random weights, Llama 2's template.
  const chatModel = path.join(BUILD, 'node_chat_test.gguf');
  execFileSync(KVSERVE, ['synth', '-o', chatModel, '--preset', 'stories260k', '--vocab-from', STORIES,
                         '--chat-template', path.join(SHARED, 'templates', 'hf-internal-testing-llama-tokenizer-llama2.jinja'),
                         '--seed', '3', '--init-scale', '3'], { timeout: 120000 });
  const chatSrv = await startServer(chatModel, ['--api-key', KEY, '--served-model-name', 'chat']);
  const cc = client(chatSrv);
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Tell me a story.' }];
  let content;
  await check('chat.completions', async () => {
    const r = await cc.chat.completions.create({ model: 'chat', messages, max_tokens: 16, temperature: 0 });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0].message.role, 'assistant');
    content = r.choices[0].message.content;
    assert.equal(typeof content, 'string');
    assert.ok(r.usage.prompt_tokens > 10 && r.usage.completion_tokens >= 1);
  });

  await check('chat.completions stream', async () => {
    const s = await cc.chat.completions.create({ model: 'chat', messages, max_tokens: 16, temperature: 0,
                                                 stream: true });
    let got = '', role = null, n = 0;
    for await (const ch of s) {
      n++;
      const d = ch.choices[0]?.delta ?? {};
      if (d.role) role = d.role;
      got += d.content ?? '';
    }
    assert.equal(role, 'assistant');
    assert.equal(got, content);
    assert.ok(n >= 2);
  });

  await check('chat developer role = system', async () => {
    const dev = [{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: 'Tell me a story.' }];
    const a = await cc.chat.completions.create({ model: 'chat', messages: dev, max_tokens: 16, temperature: 0 });
    const b = await cc.chat.completions.create({ model: 'chat', messages, max_tokens: 16, temperature: 0 });
    assert.equal(a.usage.prompt_tokens, b.usage.prompt_tokens); // OpenAI's newer system role renders as system
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    assert.equal(a.choices[0].message.content, content);
  });

  await check('SIGTERM exits 0', async () => {
    assert.equal(await stopServer(chatSrv), 0);
    assert.equal(await stopServer(srv), 0);
  });
  console.log(`${tally.passed} checks passed`);
}

const guard = setTimeout(() => {
  console.error('timed out');
  for (const s of servers) s.proc.kill('SIGKILL');
  process.exit(1);
}, 300000);

try {
  await main();
  clearTimeout(guard);
} catch (e) {
  console.error('FAIL', e);
  for (const s of servers) { console.error('--- server log ---\n' + s.log.slice(-2000)); }
  await Promise.all(servers.map(stopServer));
  process.exit(1);
}
