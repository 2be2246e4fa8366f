// Unit tests of the browser client's pure logic, with Node's built-in runner:
//   node --test tests/web/client.test.mjs   (and client-session.test.mjs, with AAI_LIVE_CLOSE_CODES)
// (tests/browser_js.rs runs them as part of the suite). The table of close classes comes from
// the Rust side when the suite runs them (AAI_LIVE_CLOSE_CODES, the file `serve` would publish
// as /close-codes.json); without it the classification test is skipped.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import {
  Chunker,
  Ledger,
  RATE,
  ReplayBuffer,
  Resampler,
  Transcript,
  asciiLower,
  backoffDelay,
  classify,
  fingerprint,
  percentiles,
  rateLimitedDelay,
  retryable,
  rms,
  toInt16,
} from "../../assets/web/aai-live-client.js";

const table = process.env.AAI_LIVE_CLOSE_CODES
  ? JSON.parse(readFileSync(process.env.AAI_LIVE_CLOSE_CODES, "utf8"))
  : null;

test("classification follows the table's first matching rule", { skip: !table }, () => {
  assert.equal(classify(table, 1000, ""), "normal");
  assert.equal(classify(table, null, ""), "transient");
  assert.equal(classify(table, 3008, "Session Expired: Maximum session duration exceeded"), "session_expired");
  assert.equal(classify(table, 1008, "Unauthorized Connection: Temporary token already used"), "token_rejected");
  assert.equal(classify(table, 1008, "Unauthorized Connection: Too many concurrent sessions"), "rate_limited");
  assert.equal(classify(table, 1008, "See Error message", "temporary TOKEN Expired"), "token_rejected");
  assert.equal(classify(table, 1008, "Invalid API key"), "fatal");
  assert.equal(classify(table, 4999, ""), "transient");
  assert.equal(classify(table, 2999, ""), "transient");
  assert.ok(retryable(table, "session_expired"));
  assert.ok(!retryable(table, "fatal"));
  for (const words of Object.values(table.classes)) assert.ok(words.advice.length > 0);
});

test("the resampler keeps a tone's frequency and produces exact lengths", () => {
  const inRate = 48000;
  const r = new Resampler(inRate, RATE);
  const freq = 1000;
  const input = new Float32Array(inRate); // one second
  for (let i = 0; i < input.length; i++) input[i] = 0.5 * Math.sin((2 * Math.PI * freq * i) / inRate);
  // In odd block sizes, as the audio thread delivers them.
  let out = [];
  for (let i = 0; i < input.length; i += 1000) out.push(...r.push(input.subarray(i, i + 1000)));
  // All but the filter's look-ahead came out.
  assert.ok(out.length >= RATE - 20 && out.length <= RATE, `${out.length}`);
  // Count zero crossings over the steady part: 2 per period.
  const steady = out.slice(100, out.length - 100);
  let crossings = 0;
  for (let i = 1; i < steady.length; i++) if (steady[i - 1] < 0 !== steady[i] < 0) crossings++;
  const measured = (crossings / 2) * (RATE / steady.length);
  assert.ok(Math.abs(measured - freq) < 2, `${measured} Hz`);
  // Amplitude kept (the pass band is flat).
  const peak = Math.max(...steady.map(Math.abs));
  assert.ok(Math.abs(peak - 0.5) < 0.02, `${peak}`);
});

test("the resampler removes what the lower rate cannot carry", () => {
  const inRate = 48000;
  const r = new Resampler(inRate, RATE);
  const input = new Float32Array(inRate / 2);
  for (let i = 0; i < input.length; i++) input[i] = 0.5 * Math.sin((2 * Math.PI * 15000 * i) / inRate);
  const out = r.push(input).slice(200);
  const peak = Math.max(...Array.from(out, Math.abs));
  assert.ok(peak < 0.05, `15 kHz leaks through at ${peak}`);
});

test("the resampler gives the same samples whatever the block sizes, and exact counts", () => {
  for (const inRate of [48000, 44100, 22050, 96000]) {
    const input = Float32Array.from({ length: inRate / 2 }, (_, i) => Math.sin(i / 7) * 0.3 + Math.sin(i / 3.1) * 0.2);
    const once = new Resampler(inRate).push(input);
    const r = new Resampler(inRate);
    const pieces = [];
    let fed = 0;
    for (const size of [1, 127, 128, 1000, 3, 4096]) {
      for (let k = 0; k < 3 && fed < input.length; k++) {
        const block = input.subarray(fed, Math.min(input.length, fed + size));
        fed += block.length;
        pieces.push(...r.push(block));
        // After n inputs, every output whose filter window is complete has come out.
        const expected = Math.max(0, Math.ceil(((fed - 17) * RATE) / inRate));
        assert.equal(r.produced, expected, `${inRate} Hz after ${fed} samples`);
      }
    }
    pieces.push(...r.push(input.subarray(fed)));
    assert.equal(pieces.length, once.length, `${inRate} Hz`);
    for (let i = 0; i < once.length; i++) assert.ok(Math.abs(pieces[i] - once[i]) < 1e-6, `${inRate} Hz sample ${i}`);
  }
});

test("a 44.1 kHz tone keeps its frequency", () => {
  const inRate = 44100;
  const r = new Resampler(inRate, RATE);
  const input = Float32Array.from({ length: inRate }, (_, i) => 0.5 * Math.sin((2 * Math.PI * 440 * i) / inRate));
  const out = r.push(input).slice(100);
  let crossings = 0;
  for (let i = 1; i < out.length; i++) if (out[i - 1] < 0 !== out[i] < 0) crossings++;
  const measured = (crossings / 2) * (RATE / out.length);
  assert.ok(Math.abs(measured - 440) < 2, `${measured} Hz`);
});

test("16 kHz input passes through unchanged", () => {
  const r = new Resampler(16000, RATE);
  const input = Float32Array.from({ length: 1000 }, (_, i) => (i % 7) / 10);
  const out = r.push(input);
  assert.equal(out.length, 1000);
  assert.deepEqual(Array.from(out), Array.from(input));
});

test("samples convert to 16 bits, non-finite as silence", () => {
  assert.deepEqual(Array.from(toInt16(Float32Array.from([0, 1, -1, 0.5, NaN, Infinity, 2]))), [
    0, 32767, -32768, 16384, 0, 0, 32767,
  ]);
});

test("the chunker cuts exact chunks with offsets, whatever the block sizes", () => {
  const c = new Chunker(800);
  const chunks = [];
  let n = 0;
  for (const size of [1, 799, 1600, 3, 797, 1000]) {
    const block = Int16Array.from({ length: size }, () => n++);
    chunks.push(...c.push(block));
  }
  assert.deepEqual(chunks.map((ch) => ch.offset), [0, 800, 1600, 2400, 3200]);
  for (const ch of chunks) {
    assert.equal(ch.samples.length, 800);
    assert.equal(ch.samples[0], ch.offset);
    assert.equal(ch.samples[799], ch.offset + 799);
  }
});

test("the replay buffer keeps its capacity and reports what left", () => {
  const b = new ReplayBuffer(2000);
  assert.equal(b.push(0, new Int16Array(800)), null);
  assert.equal(b.push(800, new Int16Array(800)), null);
  assert.equal(b.push(1600, new Int16Array(800)), 800);
  assert.equal(b.oldest(), 800);
  assert.equal(b.head(), 2400);
  assert.equal(b.chunkStart(1000), 800);
  assert.equal(b.chunkStart(0), 800, "never before the oldest held");
  assert.equal(b.atOrAfter(2400), null);
});

test("the ledger balances on every path, to the sample", () => {
  const l = new Ledger();
  l.capture(4000);
  assert.equal(l.markSent(0, 800), null);
  assert.equal(l.markSent(0, 800), null, "a replay does not count twice");
  const evicted = l.evicted(2400);
  assert.deepEqual(evicted, { from: 800, to: 2400, samples: 1600, cause: "replay_buffer_full" });
  l.markSent(2400, 3200);
  const overrun = l.overrun(160);
  assert.equal(overrun.cause, "capture_overrun");
  assert.equal(overrun.from, overrun.to);
  const rest = l.abandon("stopped");
  assert.deepEqual([rest.from, rest.to, rest.samples], [3200, 4000, 800]);
  assert.equal(l.captured, 4160);
  assert.equal(l.sent, 1600);
  assert.equal(l.lost, 2560);
  assert.ok(l.balanced());
});

test("one final per turn: a later final for the same turn replaces the earlier", () => {
  const t = new Transcript();
  const f = (generation, order, text, start) => ({ generation, turn_order: order, text, start_ms: start });
  assert.equal(t.applyFinal(f(1, 0, "hello world", 0)).replaced, false);
  assert.equal(t.applyFinal(f(1, 1, "again", 2000)).replaced, false);
  assert.equal(t.applyFinal(f(1, 0, "Hello world.", 0)).replaced, true);
  assert.equal(t.applyFinal(f(2, 0, "next session", 4000)).replaced, false);
  assert.deepEqual(t.list().map((x) => x.text), ["Hello world.", "again", "next session"]);
  assert.equal(t.text(), "[00:00:00] Hello world.\n[00:00:02] again\n[00:00:04] next session\n");
});

test("classification lower-cases ASCII only, as Rust does", () => {
  assert.equal(asciiLower("Token EXPIRED \u212A \u0130"), "token expired \u212A \u0130");
});

test("a rate limit waits for Retry-After or the floor, plus up to a quarter", () => {
  assert.equal(rateLimitedDelay(null, 60000, 0), 60000);
  assert.equal(rateLimitedDelay(null, 60000, 1), 75000);
  assert.equal(rateLimitedDelay(8000, 60000, 0), 8000, "the server's word wins");
  assert.equal(rateLimitedDelay(10, 60000, 0), 1000, "at least a second");
});

test("latency percentiles as the terminal client reports them", () => {
  assert.deepEqual(percentiles([]), {});
  assert.deepEqual(percentiles([300, 100, 200]), { latency_p50_ms: 200, latency_p95_ms: 300 });
});

test("backoff is full jitter under a growing ceiling", () => {
  const p = { initialMs: 500, maxMs: 30000, multiplier: 2 };
  assert.equal(backoffDelay(1, p, 0.999), 499);
  assert.equal(backoffDelay(2, p, 0.999), 999);
  assert.equal(backoffDelay(20, p, 0.999), 29970);
  assert.equal(backoffDelay(3, p, 0), 0);
});

test("levels and fingerprints", () => {
  assert.equal(rms(new Int16Array(10)), 0);
  assert.ok(Math.abs(rms(new Int16Array(10).fill(-32768)) - 1) < 1e-9);
  const a = fingerprint("AQICAHg+token/one==");
  assert.match(a, /^[0-9a-f]{12}$/);
  assert.notEqual(a, fingerprint("AQICAHg+token/two=="));
  assert.ok(!a.includes("AQICAHg"));
});
