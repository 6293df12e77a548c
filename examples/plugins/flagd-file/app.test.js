// Unit tests of app.js under Node: `npm test` (testing/ stands in for the
// host; Node's own fetch() talks to flag_files.py, started here).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { host } from './testing/host.js';
import { exposureApi, problems } from './app.js';

const dir = mkdtempSync(join(tmpdir(), 'flagd-file-'));
let service;
let port;

before(async () => {
  service = spawn('python3', [new URL('./flag_files.py', import.meta.url).pathname, '--port', '0', '--dir', dir,
    '--record', join(dir, 'requests.jsonl'), '--token', 't0ken']);
  port = await new Promise((resolve) => service.stdout.once('data', (d) => resolve(Number(String(d).trim()))));
  host.config = { url: `http://127.0.0.1:${port}/flags/{environment}.flagd.json`, token_secret: 'FLAGS' };
  host.secrets = { FLAGS: 't0ken' };
});

after(() => service.kill());

const file = () => JSON.parse(readFileSync(join(dir, 'staging.flagd.json'), 'utf8'));

test('the config is checked key by key', () => {
  assert.deepEqual(problems('{"url": "http://x/{environment}.json"}'), []);
  assert.deepEqual(problems('{"url": "x"}').map((p) => p.field), ['url']);
  assert.deepEqual(problems('{"uri": "http://x"}').map((p) => p.field), ['uri', 'url']);
  assert.throws(() => exposureApi.validate('{}'), (e) => e.payload[0].field === 'url');
});

test('set and get through the file service', async () => {
  const declared = { state: 'ENABLED', variants: { on: true, off: false }, defaultVariant: 'off' };
  writeFileSync(join(dir, 'staging.flagd.json'), JSON.stringify({ flags: { 'checkout-v2': declared } }));
  await exposureApi.setExposure('checkout-v2', 'staging', 30);
  assert.deepEqual(file().flags['checkout-v2'].targeting, { fractional: [['on', 30], ['off', 70]] });
  const status = await exposureApi.getExposure('checkout-v2', 'staging');
  assert.equal(status.percent, 30);
  assert.equal(status.enabled, true);
  await exposureApi.setExposure('checkout-v2', 'staging', 0);
  assert.deepEqual(file().flags['checkout-v2'], declared);
  await assert.rejects(exposureApi.setExposure('nope', 'staging', 10), /not in the file/);
});
