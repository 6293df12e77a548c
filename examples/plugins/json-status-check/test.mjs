// check.js under Node (its fetch is Node's): no wasm, no cargo.
//
//   node --test test.mjs        (or: npm test)

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { check, parseCondition, parseConfig, resolvePointer } from './check.js';

let server;
let base;
let port;

before(async () => {
  server = http.createServer((req, res) => {
    const send = (status, body, type = 'application/json') => {
      res.writeHead(status, { 'content-type': type });
      res.end(typeof body === 'string' ? body : JSON.stringify(body));
    };
    if (req.url === '/status') return send(200, { status: 'ok', metrics: { 'error/ratio': 0.01, p90: null }, replicas: [3, 4] });
    if (req.url === '/bad') return send(200, { status: 'degraded', metrics: { 'error/ratio': 0.3 } });
    if (req.url === '/503') return send(503, { status: 'down' });
    if (req.url === '/text') return send(200, 'ok', 'text/plain');
    if (req.url === '/slow') return setTimeout(() => send(200, { status: 'ok' }), 1000);
    if (req.url.startsWith('/rel/')) return send(200, { release: req.url.slice(5) });
    send(404, { error: 'not found' });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = server.address().port;
  base = `http://127.0.0.1:${port}`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

const target = (endpoints = []) => ({ environment: 'production', slot: '1.2.0', release: '1.2.0', endpoints });
const run = (config, endpoints) => check(target(endpoints), JSON.stringify(config));

test('pass_if judges a number found by pointer, with ~1 escapes', async () => {
  const m = await run({ url: `${base}/status`, pointer: '/metrics/error~1ratio', pass_if: '< 0.05' });
  assert.equal(m.verdict, 'pass');
  assert.equal(m.value, 0.01);
  assert.equal(m.detail, `${base}/status: /metrics/error~1ratio is 0.01, meets < 0.05`);
  const bad = await run({ url: `${base}/bad`, pointer: '/metrics/error~1ratio', pass_if: '< 0.05' });
  assert.deepEqual([bad.verdict, bad.value], ['fail', 0.3]);
  assert.match(bad.detail, /is 0.3, does not meet < 0.05$/);
  const count = await run({ url: `${base}/status`, pointer: '/replicas/1', pass_if: '>= 3' });
  assert.deepEqual([count.verdict, count.value], ['pass', 4]);
});

test('no number to compare is inconclusive', async () => {
  for (const pointer of ['/metrics/p90', '/nope', '/status', '/replicas/7']) {
    const m = await run({ url: `${base}/status`, pointer, pass_if: '< 1' });
    assert.equal(m.verdict, 'inconclusive', pointer);
    assert.equal(m.value, undefined);
  }
});

test('expect compares any JSON value', async () => {
  assert.equal((await run({ url: `${base}/status`, pointer: '/status', expect: 'ok' })).verdict, 'pass');
  assert.equal((await run({ url: `${base}/status`, pointer: '/replicas', expect: [3, 4] })).verdict, 'pass');
  const m = await run({ url: `${base}/bad`, pointer: '/status', expect: 'ok' });
  assert.equal(m.verdict, 'fail');
  assert.equal(m.detail, `${base}/bad: /status is "degraded", expected "ok"`);
  assert.equal((await run({ url: `${base}/status`, pointer: '/missing', expect: 'ok' })).detail, `${base}/status: /missing is missing`);
});

test('a non-2xx answer or a body that is not JSON fails', async () => {
  const m = await run({ url: `${base}/503`, pointer: '/status', expect: 'ok' });
  assert.deepEqual([m.verdict, m.detail], ['fail', `${base}/503: status 503`]);
  const t = await run({ url: `${base}/text`, pointer: '/status', expect: 'ok' });
  assert.equal(t.verdict, 'fail');
  assert.match(t.detail, /body is not JSON/);
});

test('templates: {endpoint} probes every endpoint, {release} and {slot} are filled', async () => {
  const ep = `127.0.0.1:${port}`;
  const m = await run({ url: 'http://{endpoint}/rel/{release}', pointer: '/release', expect: '1.2.0' }, [ep, ep]);
  assert.deepEqual([m.verdict, m.detail], ['pass', `2 of 2 endpoints pass: http://${ep}/rel/1.2.0: /release is "1.2.0"`]);
  const none = await run({ url: 'http://{endpoint}/status', expect: 'ok' }, []);
  assert.equal(none.verdict, 'inconclusive');
});

test('an endpoint that does not answer fails; a status server that does not answer is an error', async () => {
  const down = 'http://127.0.0.1:1';
  const ep = `127.0.0.1:${port}`;
  const m = await run({ url: 'http://{endpoint}/status', pointer: '/status', expect: 'ok' }, [ep, '127.0.0.1:1']);
  assert.equal(m.verdict, 'fail');
  assert.match(m.detail, /^1 of 2 endpoints fail: http:\/\/127.0.0.1:1\/status: /);
  await assert.rejects(run({ url: `${down}/status`, pointer: '/status', expect: 'ok' }), (e) => e.payload.startsWith(`${down}/status: `));
  await assert.rejects(run({ url: `${base}/slow`, expect: 'ok', timeout_ms: 100 }), (e) => e.payload === `${base}/slow: no answer within 100 ms`);
});

test('bad config is reported at once', () => {
  assert.throws(() => parseConfig(JSON.stringify({ urll: 'x', pointer: 'status', expect: 1, pass_if: '< 1', timeout_ms: 0 })), (e) => {
    for (const part of ['unknown key `urll`', '`url` is required', '`pointer` must be a JSON pointer', 'set exactly one of `expect`', '`timeout_ms` must be']) {
      assert.ok(e.payload.includes(part), `${part} in ${e.payload}`);
    }
    return true;
  });
  assert.throws(() => parseConfig(JSON.stringify({ url: 'http://x/', pass_if: '~ 3' })), (e) =>
    e.payload === 'config: pass_if: invalid condition `~ 3`: use <, <=, >, >=, ==, != and a number, or `between LOW HIGH`');
});

test('conditions parse and hold as the Rust SDK says', () => {
  assert.ok(parseCondition('< 0.05').holds(0.01));
  assert.ok(!parseCondition('< 0.05').holds(0.05));
  assert.ok(parseCondition('<= 0.05').holds(0.05));
  assert.ok(parseCondition('>= 0.99').holds(0.99));
  assert.ok(parseCondition('== 1').holds(1));
  assert.ok(!parseCondition('!= 0').holds(0));
  assert.ok(parseCondition('  between   0.1 0.5 ').holds(0.1));
  assert.ok(!parseCondition('between 0.1 0.5').holds(0.6));
  assert.equal(parseCondition('<   5.0').text, '< 5');
  for (const bad of ['', '<', 'about 3', '< x', '< NaN', 'between 2 1', 'between 1', '< 1 2']) {
    assert.throws(() => parseCondition(bad), undefined, bad);
  }
  for (const text of ['< 1', '<= 1', '> 1', '>= 1', '== 1', '!= 1', 'between 0 1']) {
    assert.ok(!parseCondition(text).holds(NaN), text);
  }
});

test('JSON pointers (RFC 6901 examples)', () => {
  const doc = { foo: ['bar', 'baz'], '': 0, 'a/b': 1, 'c%d': 2, 'e^f': 3, 'g|h': 4, 'i\\j': 5, 'k"l': 6, ' ': 7, 'm~n': 8 };
  assert.deepEqual(resolvePointer(doc, ''), doc);
  assert.deepEqual(resolvePointer(doc, '/foo'), ['bar', 'baz']);
  assert.equal(resolvePointer(doc, '/foo/0'), 'bar');
  assert.equal(resolvePointer(doc, '/'), 0);
  assert.equal(resolvePointer(doc, '/a~1b'), 1);
  assert.equal(resolvePointer(doc, '/c%d'), 2);
  assert.equal(resolvePointer(doc, '/ '), 7);
  assert.equal(resolvePointer(doc, '/m~0n'), 8);
  assert.equal(resolvePointer(doc, '/foo/01'), undefined);
  assert.equal(resolvePointer(doc, '/foo/-'), undefined);
});
