// Unit tests of flagd.js under Node: `node --test flagd.test.mjs`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { canonical, exposureOf, revision, withExposure } from './flagd.js';

// As a developer declares the flag: off for everyone.
const declared = {
  state: 'ENABLED',
  variants: { on: true, off: false },
  defaultVariant: 'off',
};

test('a declared flag exposes nobody; each percent is written as flagd reads it', () => {
  assert.deepEqual(exposureOf('checkout-v2', declared), { percent: 0, enabled: true });
  const ten = withExposure('checkout-v2', declared, 10);
  assert.deepEqual(ten, {
    state: 'ENABLED',
    variants: { on: true, off: false },
    defaultVariant: 'off',
    targeting: { fractional: [['on', 10], ['off', 90]] },
  });
  assert.deepEqual(exposureOf('checkout-v2', ten), { percent: 10, enabled: true });
  const all = withExposure('checkout-v2', ten, 100);
  assert.equal(all.defaultVariant, 'on');
  assert.equal(all.targeting, undefined);
  assert.deepEqual(exposureOf('checkout-v2', all), { percent: 100, enabled: true });
  const none = withExposure('checkout-v2', all, 0);
  assert.deepEqual(none, declared);
});

test('variants are found by value, whatever their names', () => {
  const flag = { state: 'DISABLED', variants: { yes: true, no: false }, defaultVariant: 'no' };
  assert.deepEqual(exposureOf('f', flag), { percent: 0, enabled: false });
  assert.deepEqual(withExposure('f', flag, 50).targeting, { fractional: [['yes', 50], ['no', 50]] });
  assert.throws(() => withExposure('f', { ...flag, variants: { a: 'x', b: 'y' } }, 5), /not a boolean flag/);
});

test('a split with a bucketing expression and other weights is read as a share', () => {
  const flag = {
    ...declared,
    targeting: { fractional: [{ cat: [{ var: '$flagd.flagKey' }, { var: 'email' }] }, ['on', 1], ['off', 3]] },
  };
  assert.deepEqual(exposureOf('f', flag), { percent: 25, enabled: true });
  assert.throws(() => exposureOf('f', { ...declared, targeting: { if: [true, 'on', 'off'] } }), /other than a fractional/);
});

test('a percent out of range is refused', () => {
  assert.throws(() => withExposure('f', declared, 150), /150% is not a percent/);
  assert.throws(() => withExposure('f', declared, -1), /not a percent/);
});

test('the revision follows the flag, not the order of its keys', () => {
  const reordered = { defaultVariant: 'off', variants: { off: false, on: true }, state: 'ENABLED' };
  assert.equal(canonical(reordered), canonical(declared));
  assert.equal(revision(reordered), revision(declared));
  assert.notEqual(revision(withExposure('f', declared, 10)), revision(declared));
  assert.match(revision(declared), /^[0-9a-f]{8}$/);
});
