// Unit tests of app.js under Node: `npm test` (testing/ stands in for the
// host; fetch() is Node's).
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';

import { host } from './testing/host.js';
import { healthCheckApi, measure } from './app.js';

test('the verdict follows the healthy fraction', () => {
  assert.equal(measure(2, 2, 1.0).verdict, 'pass');
  assert.equal(measure(1, 2, 1.0).verdict, 'fail');
  assert.equal(measure(1, 2, 0.5).value, 0.5);
  assert.equal(measure(0, 0, 1.0).verdict, 'inconclusive');
});

test('check asks every endpoint', async () => {
  const server = http.createServer((req, res) => {
    res.writeHead(req.url === '/healthz' ? 200 : 503);
    res.end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `127.0.0.1:${server.address().port}`;
  try {
    host.config = {};
    const target = { environment: 'staging', slot: '1.4.0', release: '1.4.0', endpoints: [endpoint, endpoint] };
    assert.equal((await healthCheckApi.check(target)).detail, '2 of 2 endpoints healthy');
    host.config = { path: '/sick', min_ratio: 0.5 };
    assert.equal((await healthCheckApi.check(target)).verdict, 'fail');
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
