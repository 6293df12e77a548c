// __NAME__: a health check. For every endpoint of the slot under analysis
// it GETs `path` and counts the answers with a 2xx status; the value is the
// healthy fraction, and the verdict passes when it is at least `min_ratio`.
//
// A check throws only when it could not measure at all (its metrics server
// is down): an error is "no measurement", not a failure.

import { config, log, returnsErrors } from './rollcage.js';

// The plugin's `config` table: each key with its default.
export const CONFIG = {
  path: '/healthz', // path on each endpoint
  min_ratio: 1.0, // healthy fraction needed to pass (1.0: every endpoint)
};

/** The measurement for `healthy` of `total` endpoints. */
export function measure(healthy, total, minRatio) {
  if (total === 0) {
    return { verdict: 'inconclusive', value: undefined, detail: 'no endpoint to check' };
  }
  const ratio = healthy / total;
  return {
    verdict: ratio >= minRatio ? 'pass' : 'fail',
    value: ratio,
    detail: `${healthy} of ${total} endpoints healthy`,
  };
}

export const healthCheckApi = {
  check: returnsErrors(async (target) => {
    const { path, min_ratio } = config(CONFIG);
    let healthy = 0;
    for (const endpoint of target.endpoints) {
      // A refused connection is an unhealthy endpoint, not an error; a
      // denied request is a grant to fix, not a measurement.
      try {
        const response = await fetch(`http://${endpoint}${path}`);
        if (response.ok) healthy += 1;
      } catch (e) {
        if (e && e.reason === 'denied') throw e;
        log('debug', `${endpoint}: ${e && e.message ? e.message : e}`);
      }
    }
    return measure(healthy, target.endpoints.length, min_ratio);
  }),
};
