// Unit tests of app.js under Node: `npm test` (testing/ stands in for the host).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { params, steps, strategyApi } from './app.js';

const release = (version) => ({ version, notes: undefined, params: [] });
const state = (stable, next, history = []) => ({
  environment: 'production',
  release: release(next),
  stable: stable ? release(stable) : undefined,
  replicas: 3,
  params: '{}',
  history: history.map((action) => ({ action, outcome: { tag: 'ok' } })),
  status: { slots: [], weights: [] },
});

test('parameters are checked', () => {
  assert.deepEqual(params('{}'), { first_weight: 10 });
  assert.throws(() => params('{"first_weight": 100}'), /expected 1 to 99/);
  assert.throws(() => strategyApi.validate('{"first_wieght": 5}'), (e) => e.payload[0].includes('first_wieght'));
});

test('the plan ends promoted and decide follows it', () => {
  const plan = steps(state('1.0.0', '1.1.0'), { first_weight: 10 });
  assert.deepEqual(plan.slice(-2), [{ tag: 'remove-slot', val: '1.0.0' }, { tag: 'done' }]);
  for (let n = 0; n <= plan.length; n++) {
    assert.deepEqual(strategyApi.decide(state('1.0.0', '1.1.0', plan.slice(0, n))), plan[n] ?? { tag: 'done' });
  }
});

test('rollback puts traffic back on stable', () => {
  assert.deepEqual(strategyApi.rollback(state('1.0.0', '1.1.0')), [
    { tag: 'route', val: [{ slot: '1.0.0', weight: 100 }] },
    { tag: 'remove-slot', val: '1.1.0' },
  ]);
});
