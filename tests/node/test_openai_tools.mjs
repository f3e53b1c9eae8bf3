// Tool calling and reasoning through the official `openai` npm client, on a
// model file carrying a real chat template (stories260K's vocabulary, random
// weights; the parsers themselves are tested on recorded outputs of each
// format in tests/test_chat_parse.c).  Checked here: the `tools` API
// (tools, tool_choice auto / none / required / named, assistant tool_calls and
// tool results in the history) rendered through Qwen 2.5's template;
// streaming and non-streaming agree; the client's 400s for tool_choice
// misuse; --reasoning-parser deepseek_r1 filling reasoning_content (the
// model never writes </think>, so all of its output is reasoning), streamed
// as delta.reasoning_content.  Servers are always stopped.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { BUILD, KVSERVE, SHARED, STORIES, check, servers, startServer, stopServer, tally } from './kvs_node_util.mjs';


const client = (srv, key = KEY) => new OpenAI({ baseURL: `http://127.0.0.1:${srv.port}/v1`, apiKey: key,
                                                 maxRetries: 0, timeout: 120000 });


const TOOLS = [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];

async function collect(stream) {
  const out = { role: null, content: null, reasoning: null, calls: [], finish: null, n: 0 };
  for await (const ch of stream) {
    out.n++;
    const c = ch.choices[0];
    if (!c) continue;
    const d = c.delta ?? {};
    if (d.role) out.role = d.role;
    if (typeof d.content === 'string' && d.content.length) out.content = (out.content ?? '') + d.content;
    if (typeof d.reasoning_content === 'string') out.reasoning = (out.reasoning ?? '') + d.reasoning_content;
    for (const t of d.tool_calls ?? []) {
      if (t.id) out.calls[t.index] = { id: t.id, name: t.function.name, arguments: '' };
      out.calls[t.index].arguments += t.function?.arguments ?? '';
    }
    if (c.finish_reason) out.finish = c.finish_reason;
  }
  return out;
}

async function main() {
  const qwenModel = path.join(BUILD, 'node_tools_qwen.gguf');
  execFileSync(KVSERVE, ['synth', '-o', qwenModel, '--preset', 'stories260k', '--vocab-from', STORIES,
                         '--chat-template', path.join(SHARED, 'templates', 'Qwen-Qwen2.5-7B-Instruct.jinja'),
                         '--seed', '5', '--init-scale', '3', '--ctx', '4096'], { timeout: 120000 });
  const srv = await startServer(qwenModel, ['--enable-auto-tool-choice', '--tool-call-parser', 'hermes',
                                            '--served-model-name', 'qwen']);
  const c = client(srv, 'none');
  const messages = [{ role: 'developer', content: 'Use tools.' }, { role: 'user', content: 'Weather in Paris?' }];
  let first;
  await check('tools, tool_choice auto', async () => {
    const r = await c.chat.completions.create({ model: 'qwen', messages, tools: TOOLS, max_tokens: 12,
                                                temperature: 0 });
    const ch = r.choices[0];
    assert.equal(ch.message.role, 'assistant');
    assert.ok(['length', 'stop', 'tool_calls'].includes(ch.finish_reason), ch.finish_reason);
    if (ch.message.tool_calls) {
      for (const t of ch.message.tool_calls) JSON.parse(t.function.arguments);
    } else {
      assert.equal(typeof ch.message.content, 'string');
    }
    first = ch.message;
  });
  await check('tools stream = non-stream', async () => {
    const s = await c.chat.completions.create({ model: 'qwen', messages, tools: TOOLS, max_tokens: 12,
                                                temperature: 0, stream: true });
    const got = await collect(s);
    assert.equal(got.role, 'assistant');
    assert.equal(got.content, first.content ?? null);
    assert.equal(got.calls.length, (first.tool_calls ?? []).length);
  });
  await check('history with tool_calls and tool results', async () => {
    const hist = [...messages,
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function',
        function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '{"temperature": 22}' }];
    for (const tool_choice of ['auto', 'none', 'required', { type: 'function', function: { name: 'get_weather' } }]) {
      const r = await c.chat.completions.create({ model: 'qwen', messages: hist, tools: TOOLS, tool_choice,
                                                  max_tokens: 6, temperature: 0 });
      assert.ok(r.choices[0].message, JSON.stringify(tool_choice));
    }
  });
  await check('tool_choice errors are 400s', async () => {
    await assert.rejects(c.chat.completions.create({ model: 'qwen', messages, tools: TOOLS, max_tokens: 4,
      tool_choice: { type: 'function', function: { name: 'nope' } } }), (e) => e.status === 400);
    await assert.rejects(c.chat.completions.create({ model: 'qwen', messages, tool_choice: 'required',
                                                     max_tokens: 4 }), (e) => e.status === 400);
    await assert.rejects(c.chat.completions.create({ model: 'qwen', max_tokens: 4, messages: [...messages,
      { role: 'assistant', tool_calls: [{ id: 'x', type: 'function', function: { name: 'get_weather',
        arguments: '{not json' } }] }] }), (e) => e.status === 400 && /arguments/.test(e.message));
    await assert.rejects(c.chat.completions.create({ model: 'qwen', max_tokens: 4,
      messages: [{ role: 'user', content: [] }] }), (e) => e.status === 400 && /empty array/.test(e.message));
  });
  assert.equal(await stopServer(srv), 0);

  const plain = await startServer(qwenModel, ['--served-model-name', 'qwen']);
  await check('auto without --enable-auto-tool-choice', async () => {
    await assert.rejects(client(plain, 'none').chat.completions.create({ model: 'qwen', messages, tools: TOOLS,
      tool_choice: 'auto', max_tokens: 4 }), (e) => e.status === 400 && /enable-auto-tool-choice/.test(e.message));
  });
  assert.equal(await stopServer(plain), 0);

  const r1Model = path.join(BUILD, 'node_tools_r1.gguf');
  execFileSync(KVSERVE, ['synth', '-o', r1Model, '--preset', 'stories260k', '--vocab-from', STORIES,
                         '--chat-template', path.join(SHARED, 'templates', 'deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja'),
                         '--seed', '7', '--init-scale', '3', '--ctx', '4096'], { timeout: 120000 });
  const r1 = await startServer(r1Model, ['--reasoning-parser', 'deepseek_r1', '--served-model-name', 'r1']);
  const rc = client(r1, 'none');
  const q = [{ role: 'user', content: 'Why is the sky blue?' }];
  let reasoning;
  await check('reasoning_content (deepseek_r1)', async () => {
    const r = await rc.chat.completions.create({ model: 'r1', messages: q, max_tokens: 16, temperature: 0 });
    const m = r.choices[0].message;
    reasoning = m.reasoning_content;
    assert.equal(typeof reasoning, 'string');
    assert.ok(reasoning.length > 0);
    assert.equal(m.content, null);
  });
  await check('delta.reasoning_content stream', async () => {
    const got = await collect(await rc.chat.completions.create({ model: 'r1', messages: q, max_tokens: 16,
                                                                 temperature: 0, stream: true }));
    assert.equal(got.reasoning, reasoning);
    assert.equal(got.content, null);
  });
  assert.equal(await stopServer(r1), 0);
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
