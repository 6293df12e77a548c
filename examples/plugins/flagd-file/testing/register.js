// For the unit tests under Node (`npm test`): Node cannot import
// `rollcage:plugin/host@0.2.0`, so this resolves it to testing/host.js, a
// stand-in for the host that the tests set up and read.
import { register } from 'node:module';

register('./hooks.js', import.meta.url);
