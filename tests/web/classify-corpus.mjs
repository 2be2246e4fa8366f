// Judge a corpus of closes with the browser client's `verdict` and the table `serve` publishes,
// for tests/browser_js.rs, which compares the answers with Rust's `verdict`:
//   node tests/web/classify-corpus.mjs TABLE.json CORPUS.json
// CORPUS.json: [[code or null, reason, error text or null], ...]; prints the verdicts
// ({class, explain}) as a JSON array in the same order.

import { readFileSync } from "node:fs";

import { verdict } from "../../assets/web/aai-live-client.js";

const [tablePath, corpusPath] = process.argv.slice(2);
const table = JSON.parse(readFileSync(tablePath, "utf8"));
const corpus = JSON.parse(readFileSync(corpusPath, "utf8"));
const verdicts = corpus.map(([code, reason, error]) => {
  const v = verdict(table, code, reason, error, true);
  return { class: v.class, explain: v.explain };
});
process.stdout.write(JSON.stringify(verdicts));
