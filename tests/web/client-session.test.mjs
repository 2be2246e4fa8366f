// The browser client's session rules (docs/session.md) with a fake WebSocket, a fake token
// server and audio fed chunk by chunk, in real time with short timings:
//   AAI_LIVE_CLOSE_CODES=close-codes.json node --test tests/web/client-session.test.mjs
// (tests/browser_js.rs runs it with the table `serve` publishes). The same paths run in Chromium
// against the emulator in tests/browser.rs; here each rule is pinned on its own, fast.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { AaiLiveClient } from "../../assets/web/aai-live-client.js";

const table = process.env.AAI_LIVE_CLOSE_CODES
  ? JSON.parse(readFileSync(process.env.AAI_LIVE_CLOSE_CODES, "utf8"))
  : null;
const skip = !table;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `condition` every 5 ms for at most `ms`. */
async function until(condition, ms = 3000, what = "condition") {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A WebSocket the test plays the server of. */
class FakeSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 3;
  static all = [];

  constructor(url) {
    this.url = new URL(url);
    this.readyState = FakeSocket.OPEN;
    this.bufferedAmount = 0;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.all.push(this);
  }

  send(data) {
    this.sent.push(data);
  }

  close(code) {
    this.closedWith = code;
    this.readyState = FakeSocket.CLOSED;
  }

  /** The first sample of each audio message, in order. */
  audio() {
    return this.sent.filter((d) => typeof d !== "string").map((d) => new Int16Array(d)[0]);
  }

  controls() {
    return this.sent.filter((d) => typeof d === "string").map((d) => JSON.parse(d));
  }

  begin(expiresInS = 3600) {
    this.message({ type: "Begin", id: `session-${FakeSocket.all.indexOf(this) + 1}`, expires_at: Math.floor(Date.now() / 1000) + expiresInS });
  }

  message(m) {
    this.onmessage({ data: JSON.stringify(m) });
  }

  serverClose(code, reason = "") {
    this.readyState = FakeSocket.CLOSED;
    this.onclose({ code, reason });
  }
}
globalThis.WebSocket = FakeSocket;

/** A token server answering from a list (the last answer repeats). */
function tokenServer(answers) {
  const calls = [];
  globalThis.fetch = async (url, init) => {
    const u = String(url);
    if (!u.includes("token")) return new Response("{}", { status: 404 });
    calls.push({ url: u, init });
    const a = answers[Math.min(calls.length - 1, answers.length - 1)];
    return new Response(JSON.stringify(a.body ?? { token: `tok-${calls.length}`, expires_in_seconds: 60 }), {
      status: a.status ?? 200,
      headers: a.headers ?? {},
    });
  };
  return calls;
}

/** The client without a microphone: the test feeds its chunks. */
class TestClient extends AaiLiveClient {
  async openAudio() {}
}

function client(options = {}) {
  FakeSocket.all = [];
  const c = new TestClient({
    streamingUrl: "ws://127.0.0.1:9/v3/ws",
    tokenUrl: "http://tokens.test/token",
    closeCodes: table,
    credential: "secret-credential",
    beginTimeoutMs: 1000,
    terminateTimeoutMs: 300,
    backoff: { initialMs: 40, maxMs: 200, multiplier: 2 },
    rateLimitBackoffMs: 400,
    healthyAfterMs: 60000,
    ...options,
  });
  c.events = [];
  c.addEventListener("event", (e) => {
    if (e.detail.event !== "level") c.events.push(e.detail);
  });
  return c;
}

const states = (c) => c.events.filter((e) => e.event === "state").map((e) => e.state);
const ofKind = (c, kind) => c.events.filter((e) => e.event === kind);

/** Chunk `k` of the stream: 50 ms whose samples say which chunk it is; voiced or quiet. */
function chunk(k, voiced = true) {
  return new Int16Array(800).fill(voiced ? 1000 + k : 1 + (k % 200));
}

async function stopAndFinish(c, socket) {
  const stopping = c.stop();
  if (socket && socket.readyState === FakeSocket.OPEN) {
    await until(() => socket.controls().some((m) => m.type === "Terminate"), 1000, "Terminate");
    socket.message({ type: "Termination", audio_duration_seconds: 1, session_duration_seconds: 1 });
  }
  await stopping;
  const [finished] = ofKind(c, "finished");
  assert.equal(finished.audio_captured_samples, finished.audio_sent_samples + finished.audio_lost_samples);
  return finished;
}

test("the first session gets the audio captured while minting, from sample 0, paced", { skip }, async () => {
  const calls = tokenServer([{}]);
  const c = client();
  await c.start();
  for (let k = 0; k < 10; k++) c.onChunk(chunk(k));
  await until(() => FakeSocket.all.length === 1, 1000, "a connection");
  const ws = FakeSocket.all[0];
  assert.equal(ws.url.searchParams.get("token"), "tok-1");
  assert.equal(ws.url.searchParams.get("sample_rate"), "16000");
  assert.equal(ws.url.searchParams.get("encoding"), "pcm_s16le");
  assert.equal(calls[0].init.headers.Authorization, "Bearer secret-credential");
  assert.ok(!calls[0].url.includes("secret-credential"), "never in a URL");
  ws.begin();
  const [begin] = ofKind(c, "begin");
  assert.equal(begin.stream_offset_ms, 0);
  assert.equal(begin.backlog_ms, 500);
  assert.equal(begin.cause, "start");
  // The backlog goes at most 1.25x real time: 10 chunks take about 400 ms, not a burst.
  await sleep(100);
  assert.ok(ws.audio().length < 6, `paced: ${ws.audio().length} chunks after 100 ms`);
  await until(() => ws.audio().length === 10, 1000, "the backlog");
  assert.deepEqual(ws.audio(), [...Array(10).keys()].map((k) => 1000 + k));
  assert.equal(ofKind(c, "reconnected").length, 0, "the start is not a reconnect");
  const finished = await stopAndFinish(c, ws);
  assert.equal(finished.audio_sent_samples, 8000);
  assert.equal(finished.reconnects, 0);
  assert.deepEqual(states(c), ["minting", "connecting", "streaming", "draining", "stopped"]);
});

test("a token server answering 401 stops at once, with no retry", { skip }, async () => {
  const calls = tokenServer([{ status: 401, body: { error: "unauthenticated", message: "the credential is not valid" } }]);
  const c = client();
  await c.start();
  await until(() => ofKind(c, "finished").length === 1, 1000, "finished");
  await sleep(200);
  assert.equal(calls.length, 1);
  assert.deepEqual(states(c), ["minting", "failed"]);
  const [failed] = c.events.filter((e) => e.event === "state" && e.state === "failed");
  assert.equal(failed.class, "fatal");
  assert.match(failed.reason, /HTTP 401.*credential/);
});

test("a fresh token refused twice in a row stops", { skip }, async () => {
  const calls = tokenServer([{}]);
  const c = client();
  await c.start();
  await until(() => FakeSocket.all.length === 1);
  FakeSocket.all[0].serverClose(1008, "Unauthorized Connection: Temporary token expired");
  await until(() => FakeSocket.all.length === 2, 1000, "one retry with a fresh token");
  FakeSocket.all[1].serverClose(1008, "Unauthorized Connection: Temporary token expired");
  await until(() => ofKind(c, "finished").length === 1, 1000, "finished");
  assert.equal(calls.length, 2);
  assert.deepEqual(ofKind(c, "lost").map((l) => l.class), ["token_rejected", "token_rejected"]);
  const [failed] = c.events.filter((e) => e.event === "state" && e.state === "failed");
  assert.match(failed.reason, /fresh token was rejected too/);
  assert.ok(ofKind(c, "finished")[0].failure);
});

test("a close before Begin backs off from the first failure, then reconnects", { skip }, async () => {
  tokenServer([{}]);
  const c = client();
  await c.start();
  await until(() => FakeSocket.all.length === 1);
  FakeSocket.all[0].serverClose(1006);
  const [backoff] = c.events.filter((e) => e.event === "state" && e.state === "backoff");
  assert.equal(backoff.attempt, 1);
  assert.equal(backoff.class, "transient");
  assert.ok(backoff.retry_in_ms <= 40);
  await until(() => FakeSocket.all.length === 2, 1000, "the retry");
  FakeSocket.all[1].begin();
  assert.equal(c.state.state, "streaming");
  await stopAndFinish(c, FakeSocket.all[1]);
});

test("the session limit (3009) waits the rate-limit backoff", { skip }, async () => {
  tokenServer([{}]);
  const c = client();
  await c.start();
  await until(() => FakeSocket.all.length === 1);
  FakeSocket.all[0].serverClose(3009, "Too many concurrent sessions");
  const [backoff] = c.events.filter((e) => e.event === "state" && e.state === "backoff");
  assert.equal(backoff.class, "rate_limited");
  assert.ok(backoff.retry_in_ms >= 400 && backoff.retry_in_ms <= 500, `${backoff.retry_in_ms}`);
  await c.stop();
});

test("after a drop the new session is fed from the end of the last final word", { skip }, async () => {
  tokenServer([{}]);
  const c = client();
  await c.start();
  await until(() => FakeSocket.all.length === 1);
  const first = FakeSocket.all[0];
  first.begin();
  for (let k = 0; k < 40; k++) c.onChunk(chunk(k));
  assert.equal(first.audio().length, 40);
  // A final whose last word ends 1 s into the session (chunk 20).
  first.message({
    type: "Turn",
    turn_order: 0,
    end_of_turn: true,
    transcript: "hello world",
    words: [
      { text: "hello", start: 100, end: 500, confidence: 0.9 },
      { text: "world", start: 600, end: 1000, confidence: 0.9 },
    ],
  });
  first.serverClose(1006);
  await until(() => FakeSocket.all.length === 2, 1000, "a new connection");
  for (let k = 40; k < 44; k++) c.onChunk(chunk(k));
  const second = FakeSocket.all[1];
  second.begin();
  const [reconnected] = ofKind(c, "reconnected");
  assert.equal(reconnected.replay_from_ms, 1000);
  assert.equal(reconnected.replay_ms, 1200);
  await until(() => second.audio().length === 24, 2000, "the replay");
  assert.deepEqual(second.audio(), [...Array(24).keys()].map((k) => 1020 + k), "from chunk 20 on, once each");
  // Turns of the new session are placed on the stream's timeline.
  second.message({ type: "Turn", turn_order: 0, end_of_turn: true, transcript: "again", words: [{ text: "again", start: 0, end: 400, confidence: 1 }] });
  assert.deepEqual(c.transcript.list().map((t) => [t.text, t.start_ms]), [["hello world", 100], ["again", 1000]]);
  const finished = await stopAndFinish(c, second);
  assert.equal(finished.audio_lost_samples, 0);
  assert.equal(finished.reconnects, 1);
});

test("a rotation hands over at a quiet turn boundary, make-before-break, nothing twice", { skip }, async () => {
  tokenServer([{}]);
  // Sessions of 5-6 s (the emulator's may be that short: hints on), rotation 3 s before the end,
  // the hand-over forced only 1 s before it.
  const c = client({ emulatorHints: true, rotationLeadMs: 3000 });
  await c.start();
  await until(() => FakeSocket.all.length === 1);
  const first = FakeSocket.all[0];
  first.begin(6);
  const fed = [];
  let quietFrom = null; // the chunk from which 10 chunks (500 ms) are quiet
  const feeder = setInterval(() => {
    const k = fed.length;
    const c1 = chunk(k, quietFrom === null || k < quietFrom || k >= quietFrom + 10);
    fed.push(c1[0]);
    c.onChunk(c1);
  }, 50);
  try {
    await until(() => FakeSocket.all.length === 2, 4000, "the successor");
    const second = FakeSocket.all[1];
    // Speaking: a turn is open, so the successor waits after its Begin.
    first.message({ type: "Turn", turn_order: 0, end_of_turn: false, transcript: "", words: [{ text: "one", start: 0, end: 300 }] });
    second.begin(6);
    assert.equal(c.state.state, "rotating");
    assert.equal(c.state.new_ready, true);
    // The turn ends; the audio moves once 300 ms have been quiet.
    first.message({ type: "Turn", turn_order: 0, end_of_turn: true, transcript: "one", words: [{ text: "one", start: 0, end: 300 }] });
    quietFrom = fed.length;
    await sleep(150);
    assert.equal(ofKind(c, "rotation").length, 0, "not before 300 ms of quiet");
    await until(() => ofKind(c, "rotation").length === 1, 2000, "the hand-over");
    first.message({ type: "Termination", audio_duration_seconds: 2, session_duration_seconds: 2 });
    const [rotation] = ofKind(c, "rotation");
    assert.equal(rotation.forced, false);
    assert.ok(first.controls().some((m) => m.type === "Terminate"), "the old session is asked to end");
    const from = fed.length;
    await until(() => fed.length >= from + 4, 2000);
    clearInterval(feeder);
    const sent = [...first.audio(), ...second.audio()];
    assert.deepEqual(sent, fed.slice(0, sent.length), "every chunk once, in order, across the hand-over");
    assert.ok(sent.length >= fed.length - 1, "live audio goes out at once");
    // The emulator is told where the successor's audio starts, before any of it.
    const hint = second.controls().find((m) => m.type === "UpdateConfiguration");
    assert.equal(hint.emulator_stream_offset_ms, rotation.stream_offset_ms);
    assert.equal(rotation.stream_offset_ms, first.audio().length * 50);
    const finished = await stopAndFinish(c, second);
    assert.equal(finished.rotations, 1);
    assert.equal(finished.audio_lost_samples, 0);
  } finally {
    clearInterval(feeder);
  }
});
