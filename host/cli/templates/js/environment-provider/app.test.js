// Unit tests of app.js under Node: `npm test` (testing/ stands in for the
// host; fetch() is Node's), against a stand-in for the platform's API.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { host } from './testing/host.js';
import { providerApi, toStatus } from './app.js';

let server;
const requests = [];
const slots = {};

before(async () => {
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, body: body ? JSON.parse(body) : undefined });
      const slot = decodeURIComponent(req.url.split('/slots/')[1] ?? '');
      if (req.method === 'PUT' && slot) slots[slot] = JSON.parse(body);
      if (req.method === 'DELETE' && !(slot in slots)) res.writeHead(404);
      delete slots[slot];
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  host.config = { api_url: `http://127.0.0.1:${server.address().port}/` };
});

after(() => {
  server.closeAllConnections();
  server.close();
});

const target = { environment: 'staging', service: 'staging-web', serviceSpec: '{"port": 8080}' };

test('apply-slot states the desired slot; removing a missing slot succeeds', async () => {
  const spec = { name: '1.4.0', release: { version: '1.4.0', notes: undefined, params: [] }, replicas: 2 };
  await providerApi.applySlot(target, spec);
  assert.deepEqual(requests.at(-1), {
    method: 'PUT',
    url: '/services/staging-web/slots/1.4.0',
    body: { release: '1.4.0', replicas: 2, spec: '{"port": 8080}' },
  });
  await providerApi.removeSlot(target, '1.4.0');
  await providerApi.removeSlot(target, '1.4.0');
});

test('the platform status becomes the environment status', () => {
  const status = toStatus({
    slots: [{ name: '1.0.0', release: '1.0.0', desired: 2, ready: 1 }],
    weights: [{ slot: '1.0.0', weight: 100 }],
  });
  assert.deepEqual(status.slots[0].endpoints, []);
  assert.throws(() => toStatus({ slots: null, weights: [] }), /unexpected answer/);
});
