// ES module form of pushgate.js: `import Pushgate from '/static/pushgate.mjs'`.
// pushgate.js is a classic script that defines globalThis.Pushgate; importing it runs it once.
import './pushgate.js';

export const Pushgate = globalThis.Pushgate;
export default Pushgate;
