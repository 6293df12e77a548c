// Unit tests of app.js under Node: `npm test` (testing/ stands in for the host).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { host } from './testing/host.js';
import { exposureApi, problems, toStatus } from './app.js';

test('the config is checked key by key', () => {
  assert.deepEqual(problems('{"api_url": "http://127.0.0.1:8080"}'), []);
  assert.deepEqual(problems('{"api_url": "127.0.0.1:8080"}').map((p) => p.field), ['api_url']);
  assert.deepEqual(problems('{"api_ur": "http://x"}').map((p) => p.field), ['api_ur', 'api_url']);
  assert.throws(() => exposureApi.validate('{}'), (e) => e.payload[0].field === 'api_url');
});

test('the service answer becomes the status', () => {
  assert.deepEqual(toStatus({ percent: 10, enabled: true, revision: 7 }), { percent: 10, enabled: true, revision: '7' });
  assert.throws(() => toStatus({ enabled: true }), /unexpected answer/);
});

test('a percent above 100 is refused before any request', async () => {
  host.config = { api_url: 'http://127.0.0.1:9' };
  await assert.rejects(exposureApi.setExposure('checkout-v2', 'production', 150), /150% is not a percent/);
});
