// Unit tests of app.js under Node: `npm test` (testing/ stands in for the host).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { host } from './testing/host.js';
import { notifierApi, render } from './app.js';

const event = {
  kind: 'succeeded',
  runId: 'run-42',
  pipeline: 'api',
  environment: 'production',
  release: { version: '1.2.0', notes: undefined, params: [] },
  message: 'error ratio 0.31 above 0.05',
  fields: [],
  url: undefined,
  timestampMs: 1700000000000n,
};

test('a line names pipeline, release and environment', () => {
  assert.equal(render('deploys', event), 'deploys: api 1.2.0 in production: error ratio 0.31 above 0.05');
});

test('notify logs one line; an unknown config key is an error', () => {
  host.config = { prefix: 'deploys' };
  notifierApi.notify(event);
  assert.deepEqual(host.lines.at(-1), { level: 'info', message: render('deploys', event), fields: [['run_id', 'run-42']] });
  host.config = { prefx: 'deploys' };
  assert.throws(() => notifierApi.notify(event), /unknown key `prefx`/);
});
