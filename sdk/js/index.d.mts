// Types of the ES module entry (index.mjs): the same as the CommonJS one's, and a default export
// holding them all.
import * as sdk from './index.js';

export * from './index.js';
export default sdk;
