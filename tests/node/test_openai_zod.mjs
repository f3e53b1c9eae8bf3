// Structured output through the official `openai` npm client's zod helpers:
// `zodResponseFormat` (openai/helpers/zod) turns a zod schema into a strict
// `response_format: json_schema`, and `client.chat.completions.parse` sends
// it and parses the answer into `message.parsed`.  The oracle is zod itself:
// every parsed object must pass `Schema.safeParse` (zod's own validation of
// types, bounds, enums, array lengths and nesting), greedy and sampled,
// on a model with a real chat template (Qwen 2.5's) and random weights, so
// that only the grammar makes the output valid.  A schema kvserve cannot
// express is a 400 the client raises as BadRequestError naming the feature.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { BUILD, KVSERVE, SHARED, STORIES, check, servers, startServer, stopServer, tally } from './kvs_node_util.mjs';



// Bounded strings and numbers, so that a random model's outputs finish.
const SCHEMAS = {
  person: z.object({
    name: z.string().max(12),
    age: z.number().int().min(0).max(130),
    color: z.enum(['red', 'green', 'blue']),
    member: z.boolean(),
  }),
  order: z.object({
    id: z.string().max(8),
    items: z.array(z.object({ sku: z.string().max(6), qty: z.number().int().min(1).max(9) })).min(1).max(3),
    note: z.string().max(10).nullable(),
  }),
  answer: z.object({
    verdict: z.enum(['yes', 'no', 'unsure']),
    confidence: z.number().min(0),
    tags: z.array(z.enum(['a', 'b', 'c'])).max(2),
  }),
};

async function main() {
  const model = path.join(BUILD, 'node_zod_qwen.gguf');
  execFileSync(KVSERVE, ['synth', '-o', model, '--preset', 'stories260k', '--vocab-from', STORIES,
                         '--chat-template', path.join(SHARED, 'templates', 'Qwen-Qwen2.5-7B-Instruct.jinja'),
                         '--seed', '3']);
  const srv = await startServer(model, ['--served-model-name', 'zod-test', '--max-model-len', '512']);
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${srv.port}/v1`, apiKey: 'none', maxRetries: 0,
                              timeout: 120000 });
  const parse = client.chat.completions.parse
    ? (body) => client.chat.completions.parse(body)
    : (body) => client.beta.chat.completions.parse(body);
  let validated = 0;
  for (const [name, Schema] of Object.entries(SCHEMAS)) {
    await check(`zodResponseFormat '${name}': parsed objects validate`, async () => {
      const rf = zodResponseFormat(Schema, name);
      assert.equal(rf.type, 'json_schema');
      assert.equal(rf.json_schema.strict, true);
      for (const [temperature, seed] of [[0, undefined], [1, 1], [1, 2], [0.7, 3]]) {
        const c = await parse({
          model: 'zod-test', messages: [{ role: 'user', content: `Give me a ${name} as JSON.` }],
          response_format: rf, max_tokens: 300, temperature, seed,
        });
        const ch = c.choices[0];
        assert.equal(ch.finish_reason, 'stop', JSON.stringify(ch));
        const parsed = ch.message.parsed;
        assert.ok(parsed && typeof parsed === 'object', JSON.stringify(ch.message));
        assert.deepEqual(parsed, JSON.parse(ch.message.content));
        const v = Schema.safeParse(parsed);
        assert.ok(v.success, `${name}: ${ch.message.content}: ${JSON.stringify(v.error?.issues)}`);
        validated++;
      }
    });
  }
  await check('streamed with the zod response_format: JSON that validates', async () => {
    const stream = await client.chat.completions.create({
      model: 'zod-test', messages: [{ role: 'user', content: 'A person.' }], stream: true, max_tokens: 300,
      temperature: 1, seed: 9, response_format: zodResponseFormat(SCHEMAS.person, 'person'),
    });
    let text = '';
    let finish = null;
    for await (const ch of stream) {
      text += ch.choices[0]?.delta?.content ?? '';
      finish = ch.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(finish, 'stop');
    assert.ok(SCHEMAS.person.safeParse(JSON.parse(text)).success, text);
  });
  await check('a zod schema kvserve cannot express: BadRequestError', async () => {
    const Bad = z.object({ id: z.string().email() }); // format "email" is not supported
    await assert.rejects(
      parse({ model: 'zod-test', messages: [{ role: 'user', content: 'x' }], max_tokens: 5,
              response_format: zodResponseFormat(Bad, 'bad') }),
      (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /email/.test(e.message));
  });
  assert.ok(validated >= 12, `only ${validated} parsed outputs validated`);
  assert.equal(await stopServer(srv), 0);
  console.log(`${tally.passed} checks passed (${validated} parsed objects validated by zod)`);
}

main().catch(async (e) => {
  console.error('FAIL:', e);
  for (const s of servers) {
    console.error('--- server log ---\n' + s.log);
    await stopServer(s);
  }
  process.exit(1);
});
