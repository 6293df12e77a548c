// The component's entry: `rollcage:plugin/health-check-api` over check.js.

import { config as hostConfig, log } from 'rollcage:plugin/host@0.2.0';
import { check, PluginError } from './check.js';

export const healthCheckApi = {
  async check(target) {
    try {
      const m = await check(target, hostConfig());
      log('debug', `${target.slot}: ${m.verdict}`, [['detail', m.detail]]);
      return m;
    } catch (e) {
      if (e instanceof PluginError) throw e;
      throw new PluginError(`json-status-check: ${e && e.message ? e.message : String(e)}`);
    }
  },
};
