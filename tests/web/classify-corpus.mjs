// Classify a corpus of closes with the browser client's `classify` and the table `serve`
// publishes, for tests/browser_js.rs, which compares the answers with Rust's `classify`:
//   node tests/web/classify-corpus.mjs TABLE.json CORPUS.json
// CORPUS.json: [[code or null, reason, error text or null], ...]; prints the classes as a JSON
// array in the same order.

import { readFileSync } from "node:fs";

import { classify } from "../../assets/web/aai-live-client.js";

const [tablePath, corpusPath] = process.argv.slice(2);
const table = JSON.parse(readFileSync(tablePath, "utf8"));
const corpus = JSON.parse(readFileSync(corpusPath, "utf8"));
const classes = corpus.map(([code, reason, error]) => classify(table, code, reason, error));
process.stdout.write(JSON.stringify(classes));
