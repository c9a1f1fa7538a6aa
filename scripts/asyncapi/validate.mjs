// The gate's independent reader of `kfp-event-bridge asyncapi`: each file must parse with the
// AsyncAPI Initiative's parser (@asyncapi/parser, pinned in package.json / package-lock.json)
// without an error-level diagnostic. Prints each diagnostic and `N passed, N failed`.
// Usage: node validate.mjs FILE...
import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';

const parser = new Parser();
let ok = 0;
let bad = 0;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(await readFile(file, 'utf8'));
  const errors = diagnostics.filter((d) => d.severity === 0);
  for (const d of diagnostics) {
    console.log(`${file}: ${['error', 'warning', 'info', 'hint'][d.severity]} ${d.code} at /${d.path.join('/')}: ${d.message}`);
  }
  if (document === undefined || errors.length > 0) {
    bad += 1;
  } else {
    ok += 1;
  }
}
console.log(`${ok} passed, ${bad} failed`);
process.exit(bad > 0 || ok === 0 ? 1 : 0);
