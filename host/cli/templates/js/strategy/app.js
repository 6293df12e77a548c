// __NAME__: a strategy. Strategies are pure functions of the run's recorded
// history: `decide` returns the next step of a plan known up front, so a
// run can be previewed, replayed and resumed. This one starts the new
// release beside the stable one, sends it `first_weight` percent of
// traffic, has it analysed, then moves all traffic and removes the old
// slot. Any failure makes the engine execute `rollback`.
//
// A strategy is granted nothing: no hosts, no secrets. Use only the state
// passed in (no fetch(), no Date.now(), no Math.random()).

import { ConfigError, parseConfig, PluginError, returnsErrors } from './rollcage.js';

// The strategy's parameters (the rest of the environment's `strategy`
// table): each key with its default.
export const PARAMS = {
  first_weight: 10, // percent of traffic for the first step
};

/** The parameters, checked; a ConfigError lists every problem. */
export function params(text) {
  const p = parseConfig(text, PARAMS, 'parameters');
  if (!Number.isInteger(p.first_weight) || p.first_weight < 1 || p.first_weight > 99) {
    throw new ConfigError('parameters', [`first_weight = ${p.first_weight}: expected 1 to 99`]);
  }
  return p;
}

// Plan helpers, as in the Rust SDK (`rollcage_sdk::strategy::plan`).
// Actions are WIT variants: { tag: 'apply-slot', val: ... }.

/** A release's slot is named after its version. */
export const versionSlot = (release) => release.version;

export const apply = (slot, release, replicas) => ({ tag: 'apply-slot', val: { name: slot, release, replicas } });

/** `route` with these [slot, weight] pairs; zero weights are left out. */
export const route = (weights) => ({
  tag: 'route',
  val: weights.filter(([, weight]) => weight > 0).map(([slot, weight]) => ({ slot, weight })),
});

export const done = () => ({ tag: 'done' });

/** Nothing running yet: everything at once. */
export const firstDeployment = (slot, release, replicas) => [apply(slot, release, replicas), route([[slot, 100]]), done()];

/** All traffic back to the stable slot (if there is one), then the new slot removed. */
export function backToStable(stableSlot, newSlot) {
  const actions = stableSlot === undefined ? [] : [route([[stableSlot, 100]])];
  actions.push({ tag: 'remove-slot', val: newSlot });
  return actions;
}

/** The slot of the release running before this run, unless it is the one being deployed. */
export function stableSlot(state) {
  if (state.stable == null || versionSlot(state.stable) === versionSlot(state.release)) return undefined;
  return versionSlot(state.stable);
}

/** The whole plan. */
export function steps(state, p) {
  const next = versionSlot(state.release);
  const stable = stableSlot(state);
  if (stable === undefined) return firstDeployment(next, state.release, state.replicas);
  const weight = p.first_weight;
  return [
    apply(next, state.release, state.replicas),
    route([
      [next, weight],
      [stable, 100 - weight],
    ]),
    { tag: 'analyze', val: { checks: [], slot: next } },
    route([[next, 100]]),
    { tag: 'remove-slot', val: stable },
    done(),
  ];
}

export const strategyApi = {
  validate(text) {
    try {
      params(text);
    } catch (e) {
      // validate's error is the list of every problem.
      throw new PluginError(e.message, e instanceof ConfigError ? e.problems : [e.message]);
    }
  },
  decide: returnsErrors((state) => {
    const plan = steps(state, params(state.params));
    return plan[state.history.length] ?? done();
  }),
  rollback: returnsErrors((state) => backToStable(stableSlot(state), versionSlot(state.release))),
};
