// The browser client's I/O around its machine, on a virtual clock: a fake WebSocket and a fake
// token server scripted per connection, audio fed chunk by chunk (each chunk names its index in
// its first sample). The main ledger rows of tests/supervisor_ledger.rs run here too — start,
// slow mint, drop, 3008, rotation, stop during a mint, the input ending during a backoff — each
// checked to the sample: captured = sent + lost, and the fake sessions received a gap-free cover
// of the captured audio minus exactly the reported losses.
//   AAI_LIVE_CLOSE_CODES=close-codes.json AAI_LIVE_CONFIG_JSON=config.json \
//     node --test tests/web/client-session.test.mjs
// (tests/browser_js.rs runs it with the table and a /config.json that `serve` generates.)

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { AaiLiveClient } from "../../assets/web/aai-live-client.js";

const table = process.env.AAI_LIVE_CLOSE_CODES
  ? JSON.parse(readFileSync(process.env.AAI_LIVE_CLOSE_CODES, "utf8"))
  : null;
const config = process.env.AAI_LIVE_CONFIG_JSON
  ? JSON.parse(readFileSync(process.env.AAI_LIVE_CONFIG_JSON, "utf8"))
  : null;
const skip = !table || !config;

/** Samples per chunk (50 ms at 16 kHz). */
const CHUNK = 800;

/** Lets every pending promise continuation run. */
const flush = () => new Promise((resolve) => setImmediate(resolve));

/** A clock whose time moves only when the test says so; timers fire in order. */
class VirtualClock {
  constructor() {
    this.t = 0;
    this.seq = 0;
    this.queue = [];
  }

  now() {
    return this.t;
  }

  setTimeout(fn, ms) {
    const id = ++this.seq;
    this.queue.push({ at: this.t + Math.max(0, ms), id, fn });
    return id;
  }

  clearTimeout(id) {
    this.queue = this.queue.filter((e) => e.id !== id);
  }

  /** Run everything due up to `t`, in order, letting promises settle between timers. */
  async runTo(t) {
    for (;;) {
      await flush();
      let next = null;
      for (const e of this.queue) {
        if (e.at <= t && (!next || e.at < next.at || (e.at === next.at && e.id < next.id))) next = e;
      }
      if (!next) break;
      this.queue = this.queue.filter((e) => e !== next);
      this.t = next.at;
      next.fn();
    }
    this.t = Math.max(this.t, t);
    await flush();
  }
}

/**
 * One scripted connection: `begin` after this many ms (or `closeBeforeBegin: [ms, code, reason]`),
 * `granted` seconds; `dropAfter` chunks received, then a TCP drop; `closeAfter: [chunks, code,
 * reason]`. Terminate is answered with Termination and a 1000.
 */
function fakeService(clock, scripts) {
  const sockets = [];
  class FakeSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSED = 3;

    constructor(url) {
      this.url = new URL(url);
      this.readyState = FakeSocket.OPEN;
      this.bufferedAmount = 0;
      this.received = [];
      this.controls = [];
      this.script = scripts[sockets.length] || { begin: 100 };
      sockets.push(this);
      const s = this.script;
      if (s.closeBeforeBegin) {
        const [ms, code, reason] = s.closeBeforeBegin;
        clock.setTimeout(() => this.serverClose(code, reason), ms);
      } else {
        clock.setTimeout(() => this.message({ type: "Begin", id: `session-${sockets.length}`, expires_at: Math.floor(Date.now() / 1000) + (s.granted || 3600) }), s.begin);
      }
    }

    send(data) {
      if (this.readyState !== FakeSocket.OPEN) return;
      if (typeof data === "string") {
        const m = JSON.parse(data);
        this.controls.push(m);
        if (m.type === "Terminate") {
          clock.setTimeout(() => {
            this.message({ type: "Termination", audio_duration_seconds: 1, session_duration_seconds: 1 });
            this.serverClose(1000, "");
          }, 20);
        }
        return;
      }
      this.received.push(new Int16Array(data)[0]);
      const s = this.script;
      if (s.dropAfter && this.received.length >= s.dropAfter) this.serverClose(1006, "");
      if (s.closeAfter && this.received.length >= s.closeAfter[0]) this.serverClose(s.closeAfter[1], s.closeAfter[2]);
    }

    close() {
      this.readyState = FakeSocket.CLOSED;
    }

    message(m) {
      if (this.readyState === FakeSocket.OPEN && this.onmessage) this.onmessage({ data: JSON.stringify(m) });
    }

    serverClose(code, reason = "") {
      if (this.readyState !== FakeSocket.OPEN) return;
      this.readyState = FakeSocket.CLOSED;
      if (this.onclose) this.onclose({ code, reason });
    }
  }
  globalThis.WebSocket = FakeSocket;
  return sockets;
}

/** A token server answering from a list after each answer's delay (the last repeats). */
function tokenServer(clock, answers) {
  const calls = [];
  globalThis.fetch = (url, init) => {
    calls.push({ url: String(url), init });
    const a = answers[Math.min(calls.length - 1, answers.length - 1)] || {};
    const body = a.body ?? { token: `tok-${calls.length}`, expires_in_seconds: 60 };
    const status = a.status ?? 200;
    return new Promise((resolve) =>
      clock.setTimeout(
        () =>
          resolve({
            ok: status >= 200 && status < 300,
            status,
            headers: { get: (name) => (a.headers || {})[name.toLowerCase()] ?? null },
            json: async () => body,
          }),
        a.delay ?? 10,
      ),
    );
  };
  return calls;
}

/** The client without a microphone, on the virtual clock, with the generated settings. */
function client(clock, session = {}) {
  class TestClient extends AaiLiveClient {
    async openAudio() {}
  }
  const c = new TestClient({
    streamingUrl: "ws://127.0.0.1:9/v3/ws",
    tokenUrl: "http://tokens.test/token",
    closeCodes: table,
    session: { ...config.session, ...session },
    credential: "secret-credential",
    emulatorHints: true,
    clock,
    random: () => 0.5,
  });
  c.events = [];
  c.addEventListener("event", (e) => {
    if (e.detail.event !== "level") c.events.push(e.detail);
  });
  return c;
}

const ofKind = (c, kind) => c.events.filter((e) => e.event === kind);
const states = (c) => ofKind(c, "state").map((e) => e.state);

/** Chunk `k`: its index in the first sample, silence after it (no chunk counts as voice). */
function chunk(k) {
  const samples = new Int16Array(CHUNK);
  samples[0] = k;
  return samples;
}

/**
 * A ledger row: sessions scripted, tokens scripted, `chunks` fed every 50 ms from t = 50 ms;
 * the input then ends (`finish`), or the user stops at `stopAt` ms. Returns what happened.
 */
async function play({ sessions = [], tokens = [{}], chunks = 100, stopAt = null, session = {} }) {
  const clock = new VirtualClock();
  const sockets = fakeService(clock, sessions);
  const calls = tokenServer(clock, tokens);
  const c = client(clock, session);
  await c.start();
  let fed = 0;
  for (let k = 0; k < chunks; k++) {
    clock.setTimeout(() => {
      if (!c.capturing) return;
      c.onChunk(chunk(k));
      fed = k + 1;
    }, 50 * (k + 1));
  }
  if (stopAt !== null) clock.setTimeout(() => c.stop(), stopAt);
  else clock.setTimeout(() => c.finish(), 50 * chunks + 1);
  for (let t = 0; ofKind(c, "finished").length === 0; t += 1000) {
    assert.ok(t < 600000, `no finished event: ${JSON.stringify(states(c))}`);
    await clock.runTo(t);
  }
  return { c, sockets, calls, fed, finished: ofKind(c, "finished")[0] };
}

/** The ledger to the sample, against what the fake sessions received. */
function checkLedger({ c, sockets, fed, finished }, { lost = [] } = {}) {
  assert.equal(finished.audio_captured_samples, finished.audio_sent_samples + finished.audio_lost_samples, "captured = sent + lost");
  assert.equal(finished.audio_captured_samples, fed * CHUNK, "every chunk fed is captured");
  const lostChunks = new Array(fed).fill(false);
  let reported = 0;
  for (const l of ofKind(c, "audio_lost")) {
    reported += l.samples;
    assert.ok(lost.includes(l.cause), `unexpected loss cause ${l.cause}`);
    for (let k = l.from_ms / 50; k < l.to_ms / 50; k++) {
      assert.ok(!lostChunks[k], `chunk ${k} reported lost twice`);
      lostChunks[k] = true;
    }
  }
  assert.equal(reported, finished.audio_lost_samples, "audio_lost events add up");
  for (const cause of lost) assert.ok(ofKind(c, "audio_lost").some((l) => l.cause === cause), `a ${cause} loss`);
  const got = new Array(fed).fill(false);
  sockets.forEach((s, g) => {
    for (let i = 1; i < s.received.length; i++) {
      assert.equal(s.received[i], s.received[i - 1] + 1, `connection ${g + 1} got a gap or a repeat`);
    }
    for (const k of s.received) got[k] = true;
  });
  for (let k = 0; k < fed; k++) {
    assert.ok(got[k] !== lostChunks[k], `chunk ${k} ${got[k] ? "was reported lost but reached a session" : "reached no session and was not reported lost"}`);
  }
  assert.equal(got.filter(Boolean).length * CHUNK, finished.audio_sent_samples, "sent = what reached the service");
}

test("start: a quick mint and connect, the first chunks come as a backlog", { skip }, async () => {
  const run = await play({ tokens: [{ delay: 40 }], sessions: [{ begin: 260 }] });
  checkLedger(run);
  const [begin] = ofKind(run.c, "begin");
  assert.equal(begin.stream_offset_ms, 0);
  assert.equal(begin.cause, "start");
  assert.equal(run.calls[0].init.headers.Authorization, "Bearer secret-credential");
  assert.ok(!run.calls[0].url.includes("secret-credential"), "never in a URL");
  assert.equal(run.sockets[0].url.searchParams.get("token"), "tok-1");
  assert.equal(run.sockets[0].url.searchParams.get("sample_rate"), "16000");
  assert.deepEqual(states(run.c), ["minting", "connecting", "streaming", "draining", "stopped"]);
  assert.equal(run.finished.failure, undefined);
});

test("slow mint: 1.5 s of audio before the first session, all of it sent, paced", { skip }, async () => {
  const run = await play({ tokens: [{ delay: 1500 }], sessions: [{ begin: 100 }] });
  checkLedger(run);
  const [begin] = ofKind(run.c, "begin");
  assert.ok(begin.backlog_ms >= 1550 && begin.backlog_ms <= 1650, `backlog ${begin.backlog_ms} ms`);
  assert.equal(run.sockets[0].received[0], 0, "the first session starts at sample 0");
  assert.equal(ofKind(run.c, "reconnected").length, 0, "the start is not a reconnect");
});

test("a drop: replayed into a new session, nothing lost", { skip }, async () => {
  const run = await play({ sessions: [{ begin: 100, dropAfter: 30 }, { begin: 100 }], chunks: 120 });
  checkLedger(run);
  assert.equal(run.sockets.length, 2);
  assert.equal(ofKind(run.c, "lost")[0].explain, "1006");
  assert.equal(ofKind(run.c, "reconnected").length, 1);
  assert.equal(run.finished.reconnects, 1);
});

test("3008: a new token and a new session at once, replayed, nothing lost", { skip }, async () => {
  const run = await play({
    sessions: [{ begin: 100, closeAfter: [40, 3008, "Session Expired: Maximum session duration exceeded"] }, { begin: 100 }],
    chunks: 120,
  });
  checkLedger(run);
  const [lost] = ofKind(run.c, "lost");
  assert.equal(lost.class, "session_expired");
  assert.equal(lost.explain, "3008");
  assert.equal(run.calls.length, 2, "one fresh token");
});

test("rotation: short sessions hand over at half their length, no gap, nothing twice", { skip }, async () => {
  // 4 s granted: the lead is 2 s (half), so a rotation every 2 s, never a storm.
  const sessions = Array.from({ length: 20 }, () => ({ begin: 100, granted: 4 }));
  const run = await play({ sessions, chunks: 240 });
  checkLedger(run);
  const rotations = run.finished.rotations;
  assert.ok(rotations >= 4 && rotations <= 7, `${rotations} rotations in 12 s`);
  assert.ok(run.sockets.length <= rotations + 1, `${run.sockets.length} sessions`);
  assert.ok(run.calls.length <= run.sockets.length + 1, `${run.calls.length} tokens`);
  const [rotation] = ofKind(run.c, "rotation");
  const hint = run.sockets[1].controls.find((m) => m.type === "UpdateConfiguration");
  assert.equal(hint.emulator_stream_offset_ms, rotation.stream_offset_ms, "the emulator learns where the successor starts");
});

test("stop during a mint: all captured audio reported lost (stopped)", { skip }, async () => {
  const run = await play({ tokens: [{ delay: 10000 }], chunks: 200, stopAt: 2025 });
  checkLedger(run, { lost: ["stopped"] });
  assert.equal(run.sockets.length, 0);
  assert.deepEqual(states(run.c), ["minting", "stopped"]);
});

test("the input ends during a backoff: the backlog is sent afterwards", { skip }, async () => {
  const run = await play({
    sessions: [{ closeBeforeBegin: [100, 1011, ""] }, { closeBeforeBegin: [100, 1011, ""] }, { begin: 100 }],
    chunks: 10,
  });
  checkLedger(run);
  assert.deepEqual(ofKind(run.c, "lost").map((l) => l.explain), ["close-before-begin", "close-before-begin"]);
  assert.ok(states(run.c).includes("backoff"));
});

test("a token server answering 401 stops at once, with no retry, and says where it is explained", { skip }, async () => {
  const run = await play({ tokens: [{ delay: 300, status: 401, body: { error: "unauthenticated", message: "the credential is not valid" } }], chunks: 20 });
  checkLedger(run, { lost: ["failed"] });
  assert.equal(run.calls.length, 1);
  const [failed] = ofKind(run.c, "state").filter((e) => e.state === "failed");
  assert.equal(failed.class, "fatal");
  assert.equal(failed.explain, "serve-401");
  assert.match(failed.reason, /HTTP 401.*credential/);
  const [tokenFailed] = ofKind(run.c, "token_failed");
  assert.equal(tokenFailed.explain, "serve-401");
  assert.equal(run.finished.explain, "serve-401");
  assert.ok(run.finished.failure.includes("not retrying"), run.finished.failure);
});

test("a fresh token refused twice in a row stops", { skip }, async () => {
  const expired = "Unauthorized Connection: Temporary token expired";
  const run = await play({ sessions: [{ closeBeforeBegin: [50, 1008, expired] }, { closeBeforeBegin: [50, 1008, expired] }], chunks: 20 });
  assert.equal(run.calls.length, 2);
  assert.deepEqual(ofKind(run.c, "lost").map((l) => l.class), ["token_rejected", "token_rejected"]);
  assert.equal(run.finished.explain, "1008-token-expired");
  assert.match(run.finished.failure, /fresh token was rejected too/);
});

test("the session limit (3009) waits the rate-limit backoff", { skip }, async () => {
  const run = await play({ sessions: [{ closeBeforeBegin: [50, 3009, "Too many concurrent sessions"] }, { begin: 100 }], chunks: 100 });
  checkLedger(run);
  const [backoff] = ofKind(run.c, "state").filter((e) => e.state === "backoff");
  assert.equal(backoff.class, "rate_limited");
  assert.equal(backoff.retry_in_ms, Math.floor(config.session.rate_limit_backoff_ms * 1.125));
});

test("after a drop the new session is fed from the end of the last final word", { skip }, async () => {
  const clock = new VirtualClock();
  const sockets = fakeService(clock, [{ begin: 0 }, { begin: 0 }]);
  tokenServer(clock, [{ delay: 0 }]);
  const c = client(clock);
  await c.start();
  await clock.runTo(10);
  const first = sockets[0];
  for (let k = 0; k < 40; k++) c.onChunk(chunk(k));
  assert.equal(first.received.length, 40);
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
  for (let k = 40; k < 44; k++) c.onChunk(chunk(k));
  await clock.runTo(5000);
  const second = sockets[1];
  const [reconnected] = ofKind(c, "reconnected");
  assert.equal(reconnected.replay_from_ms, 1000);
  assert.deepEqual(second.received.slice(0, 24), [...Array(24).keys()].map((k) => 20 + k), "from chunk 20 on, once each");
  second.message({ type: "Turn", turn_order: 0, end_of_turn: true, transcript: "again", words: [{ text: "again", start: 0, end: 400, confidence: 1 }] });
  assert.deepEqual(c.transcript.list().map((t) => [t.text, t.start_ms]), [["hello world", 100], ["again", 1000]]);
});

test("no defaults of its own: a session policy missing a setting is refused", { skip }, async () => {
  // The machine's policy and the stream's rules alike (src/session/supervisor.rs `browser_rules`).
  for (const key of ["rotation_lead_ms", "quiet_after_ms", "voice_rms", "queue_ms", "stall_min_voice_ms", "finish_limit_ms"]) {
    const clock = new VirtualClock();
    tokenServer(clock, [{}]);
    const session = { ...config.session };
    assert.equal(typeof session[key], "number", `the generated config.json has session.${key}`);
    delete session[key];
    class TestClient extends AaiLiveClient {
      async openAudio() {}
    }
    const c = new TestClient({ streamingUrl: "ws://127.0.0.1:9/v3/ws", closeCodes: table, session, clock });
    await assert.rejects(() => c.start(), new RegExp(`session\\.${key} is missing`));
  }
});

test("speakers and languages: a revision changes who said a final, pending is never a speaker", { skip }, async () => {
  const clock = new VirtualClock();
  const sockets = fakeService(clock, [{ begin: 0 }]);
  tokenServer(clock, [{ delay: 0 }]);
  const c = client(clock);
  await c.start();
  await clock.runTo(10);
  for (let k = 0; k < 20; k++) c.onChunk(chunk(k));
  const s = sockets[0];
  const word = (text, start, speaker) => ({ text, start, end: start + 300, confidence: 1, speaker });
  s.message({ type: "Turn", turn_order: 0, end_of_turn: true, transcript: "Hola.", speaker_label: "A", language_code: "es", language_confidence: 0.9, words: [word("Hola.", 100, "A")] });
  s.message({ type: "Turn", turn_order: 1, end_of_turn: true, transcript: "Hm.", speaker_label: "PENDING", words: [word("Hm.", 600, "PENDING")] });
  const [first] = ofKind(c, "final");
  assert.equal(first.language_code, "es");
  assert.equal(first.language_confidence, 0.9);
  assert.match(c.transcript.text(), /\[es\] A: Hola\.\n.*speaker pending: Hm\./s);
  s.message({ type: "SpeakerRevision", revisions: [{ turn_order: 1, speaker_label: "B", words: [word("Hm.", 600, "B")] }, { turn_order: 9, speaker_label: "C", words: [] }] });
  const revisions = ofKind(c, "speaker_revision");
  assert.equal(revisions.length, 1, "unknown turns are not revised");
  assert.deepEqual([revisions[0].turn_order, revisions[0].speaker, revisions[0].words[0].speaker], [1, "B", "B"]);
  assert.equal(ofKind(c, "final").length, 2, "the final is not sent again");
  assert.match(c.transcript.text(), /B: Hm\./);
});
