// aai-live-client.js — stream a browser microphone to AssemblyAI Universal Streaming v3 with
// one-time tokens, and keep streaming: re-mint and reconnect when a session ends, rotate to a
// successor before expiry, replay after a drop, and account for every captured sample.
//
// A dependency-free ES module (no bundler, no npm at run time), served by `aai-live serve` at
// /aai-live-client.js, with its AudioWorklet at /aai-live-worklet.js. It follows the rules of
// the aai-live terminal client (docs/session.md) and emits the events of docs/events.md with
// the same fields, so one vocabulary serves both clients:
//
//   import { AaiLiveClient } from "https://tokens.example.com/aai-live-client.js";
//   const client = new AaiLiveClient({ credential: "..." });   // token URL: /token beside it
//   client.addEventListener("final", (e) => console.log(e.detail.text));
//   await client.start();   // asks for the microphone
//   ...
//   await client.stop();    // Terminate, the last turns, `finished`
//
// Like the terminal client, it is a pure machine and its I/O: every decision about a session
// (when to rotate, back off, re-mint, stop) is made by aai-live-machine.js, the Rust machine's
// twin held to its scenario table; this module carries out its effects (tokens, sockets, timers,
// the audio, the replay buffer, the ledger). The policy comes only from the server's generated
// data — `/config.json`'s `session` object and `/close-codes.json` — never from defaults here.
//
// The pure parts (close verdicts, resampler, chunker, replay buffer, ledger, transcript) are
// exported and unit-tested on their own (tests/web/*.test.mjs, node --test).

import { Machine } from "./aai-live-machine.js";

/** Samples per second on the wire. */
export const RATE = 16000;

// --- Close classification: the table `serve` publishes at /close-codes.json -----------------

/**
 * The verdict on a close with the table of `src/protocol/close.rs` (`table_json`): the first
 * rule whose code range holds `code` and for which every word group has a word in the
 * lower-cased `reason + " " + errorText` decides. No code (a TCP drop) and unmatched codes:
 * `no_rule`. Returns `{class, explain}`; before `Begin` the section is the rule's
 * `explain_before_begin`.
 */
export function verdict(table, code, reason = "", errorText = "", afterBegin = true) {
  let found = table.no_rule;
  if (code === null || code === undefined) {
    found = table.no_code;
  } else {
    const text = asciiLower(`${reason} ${errorText || ""}`);
    for (const rule of table.rules) {
      const [from, to] = rule.codes;
      if (code < from || code > to) continue;
      if (rule.all.every((group) => group.some((word) => text.includes(word)))) {
        found = rule;
        break;
      }
    }
  }
  return { class: found.class, explain: afterBegin ? found.explain : found.explain_before_begin };
}

/** The class of a close (see `verdict`). */
export function classify(table, code, reason = "", errorText = "") {
  return verdict(table, code, reason, errorText).class;
}

/** The verdict on an HTTP status of the token server (the table's `token_status`). */
export function tokenStatusVerdict(table, status) {
  const row = table.token_status.find(({ statuses: [from, to] }) => status >= from && status <= to);
  return row ? { class: row.class, explain: row.explain } : table.token_unreachable;
}

/**
 * Lower-case A-Z only, as Rust's `to_ascii_lowercase`: `toLowerCase` would also fold non-ASCII
 * letters (the Kelvin sign becomes "k"), and a reason could then match a rule here and not there.
 */
export function asciiLower(text) {
  return text.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

/** Whether a class is retried automatically. */
export function retryable(table, cls) {
  return Boolean(table.classes[cls] && table.classes[cls].retryable);
}

// --- Audio: resample to 16 kHz, cut into chunks -------------------------------------------

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Streaming resampler from `inRate` to `outRate` (mono Float32 in, Float32 out): a windowed-sinc
 * (Blackman, `taps` per side) low-pass at the lower Nyquist, evaluated at each output instant.
 * Output sample `n` sits exactly at input position `n × inRate / outRate` (integer arithmetic,
 * so no drift over hours); its coefficients depend only on that position's fraction, of which
 * there are `outRate / gcd` kinds, each computed once. After `n` input samples every output
 * sample up to `n × outRate / inRate`, less the filter's look-ahead (`taps + 1` input samples),
 * has been produced.
 */
export class Resampler {
  constructor(inRate, outRate = RATE, taps = 16) {
    inRate = Math.round(inRate);
    if (!(inRate >= 8000 && inRate <= 384000)) throw new RangeError(`input rate ${inRate} Hz`);
    this.inRate = inRate;
    this.outRate = outRate;
    const g = gcd(inRate, outRate);
    this.up = outRate / g; // fractions of an input sample an output sample can sit at
    this.down = inRate / g;
    this.taps = inRate === outRate ? 0 : taps;
    this.cutoff = Math.min(1, outRate / inRate);
    this.kernels = new Map(); // phase -> coefficients for inputs center - taps ..= center + taps + 1
    this.history = new Float32Array(0); // input samples the next outputs still need
    this.base = 0; // input index of history[0]
    this.produced = 0; // output samples produced
  }

  kernel(x) {
    if (x === 0) return this.cutoff;
    const w = x / (this.taps + 1);
    if (Math.abs(w) >= 1) return 0;
    const sinc = Math.sin(Math.PI * x * this.cutoff) / (Math.PI * x);
    const blackman = 0.42 + 0.5 * Math.cos(Math.PI * w) + 0.08 * Math.cos(2 * Math.PI * w);
    return sinc * blackman;
  }

  coefficients(phase) {
    let k = this.kernels.get(phase);
    if (!k) {
      const frac = phase / this.up;
      k = new Float32Array(2 * this.taps + 2);
      for (let j = -this.taps; j <= this.taps + 1; j++) k[j + this.taps] = this.kernel(frac - j);
      this.kernels.set(phase, k);
    }
    return k;
  }

  /** Feed input samples; returns the output samples now computable. */
  push(input) {
    const joined = new Float32Array(this.history.length + input.length);
    joined.set(this.history);
    joined.set(input, this.history.length);
    const end = this.base + joined.length; // one past the last input index held
    // Outputs whose window (center - taps ..= center + taps + 1) is all here: those with
    // center < end - lookAhead, i.e. n < (end - lookAhead) × up / down.
    const lookAhead = this.taps === 0 ? 0 : this.taps + 1;
    const count = Math.max(0, Math.ceil(((end - lookAhead) * this.up) / this.down) - this.produced);
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) {
      const n = this.produced + i;
      const center = Math.floor((n * this.down) / this.up);
      if (this.taps === 0) {
        out[i] = joined[center - this.base];
        continue;
      }
      const k = this.coefficients((n * this.down) % this.up);
      let acc = 0;
      const from = center - this.taps - this.base;
      for (let j = 0; j < k.length; j++) {
        const idx = from + j;
        if (idx >= 0) acc += joined[idx] * k[j]; // before the first sample: silence
      }
      out[i] = acc;
    }
    this.produced += count;
    // Keep what the next outputs still need.
    const nextCenter = Math.floor((this.produced * this.down) / this.up);
    const keepFrom = Math.max(this.base, nextCenter - this.taps);
    this.history = joined.slice(keepFrom - this.base);
    this.base = keepFrom;
    return out;
  }
}

/** Float samples (-1..1, non-finite as silence) to signed 16-bit. */
export function toInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const v = Number.isFinite(samples[i]) ? samples[i] : 0;
    out[i] = Math.max(-32768, Math.min(32767, Math.round(v * 32768)));
  }
  return out;
}

/** Cuts a sample stream into chunks of exactly `size` samples, each with its stream offset. */
export class Chunker {
  constructor(size = RATE / 20) {
    this.size = size;
    this.pending = new Int16Array(size);
    this.fill = 0;
    this.offset = 0;
  }

  /** Feed samples; returns the completed chunks `{offset, samples}`. */
  push(samples) {
    const done = [];
    let i = 0;
    while (i < samples.length) {
      const take = Math.min(this.size - this.fill, samples.length - i);
      this.pending.set(samples.subarray(i, i + take), this.fill);
      this.fill += take;
      i += take;
      if (this.fill === this.size) {
        done.push({ offset: this.offset, samples: this.pending });
        this.offset += this.size;
        this.pending = new Int16Array(this.size);
        this.fill = 0;
      }
    }
    return done;
  }
}

/** RMS of a chunk relative to full scale. */
export function rms(samples) {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (const s of samples) sum += s * s;
  return Math.sqrt(sum / samples.length) / 32768;
}

// --- The replay buffer and the ledger ----------------------------------------------------------

/** The most recent audio, chunk by chunk, with stream offsets and first-send times. */
export class ReplayBuffer {
  constructor(capacitySamples) {
    this.capacity = Math.max(1, capacitySamples);
    this.chunks = [];
    this.held = 0;
  }

  /** Add a chunk; returns the end of what left the buffer (everything before it is gone). */
  push(offset, samples) {
    this.chunks.push({ offset, samples, sentAt: null });
    this.held += samples.length;
    let evictedTo = null;
    while (this.held > this.capacity && this.chunks.length > 0) {
      const old = this.chunks.shift();
      this.held -= old.samples.length;
      evictedTo = old.offset + old.samples.length;
    }
    return evictedTo;
  }

  oldest() {
    return this.chunks.length ? this.chunks[0].offset : null;
  }

  head() {
    if (!this.chunks.length) return null;
    const last = this.chunks[this.chunks.length - 1];
    return last.offset + last.samples.length;
  }

  /** The chunk holding `offset`, or the first after it. */
  atOrAfter(offset) {
    let lo = 0;
    let hi = this.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const c = this.chunks[mid];
      if (c.offset + c.samples.length <= offset) lo = mid + 1;
      else hi = mid;
    }
    return this.chunks[lo] || null;
  }

  /** The start of the chunk holding `offset` (replays start on chunk boundaries). */
  chunkStart(offset) {
    const c = this.atOrAfter(offset);
    return c ? c.offset : null;
  }
}

/**
 * The audio ledger (as src/session/ledger.rs): every captured sample is sent (counted once) or
 * reported lost with a cause; `captured = sent + lost`.
 */
export class Ledger {
  constructor() {
    this.head = 0;
    this.settled = 0;
    this.captured = 0;
    this.sent = 0;
    this.lost = 0;
  }

  capture(samples) {
    this.head += samples;
    this.captured += samples;
  }

  /** The capture dropped `samples` (never on the timeline): captured and lost at once. */
  overrun(samples) {
    if (samples <= 0) return null;
    this.captured += samples;
    this.lost += samples;
    return { from: this.head, to: this.head, samples, cause: "capture_overrun" };
  }

  markSent(from, to) {
    const skipped = from > this.settled ? this.loseTo(from, "replay_buffer_full") : null;
    if (to > this.settled) {
      this.sent += to - Math.max(this.settled, from);
      this.settled = to;
    }
    return skipped;
  }

  evicted(to) {
    return this.loseTo(to, "replay_buffer_full");
  }

  abandon(cause) {
    return this.loseTo(this.head, cause);
  }

  loseTo(to, cause) {
    const end = Math.min(to, this.head);
    if (end <= this.settled) return null;
    const loss = { from: this.settled, to: end, samples: end - this.settled, cause };
    this.lost += loss.samples;
    this.settled = end;
    return loss;
  }

  balanced() {
    return this.captured === this.sent + this.lost;
  }
}

// --- The transcript: one final per turn --------------------------------------------------------

/** As src/transcript.rs: `PENDING`/`UNKNOWN` (too short to tell) is "speaker pending", never a
 * speaker. */
const isPending = (speaker) => /^(pending|unknown)$/i.test(String(speaker));
const who = (speaker) => (speaker ? `${isPending(speaker) ? "speaker pending" : speaker}: ` : "");

/**
 * Turns keyed by (generation, turn_order). A later final for the same turn (older servers send a
 * formatted copy) replaces the earlier one: `apply` says whether it replaced.
 */
export class Transcript {
  constructor() {
    this.finals = new Map(); // key -> final
  }

  /**
   * The service revised who said a turn (`SpeakerRevision`): its speaker (`null` when it no
   * longer says) and, when given, its words. Returns the revised final, or null for an unknown
   * turn.
   */
  revise(generation, turnOrder, speaker, words) {
    const final = this.finals.get(`${generation}/${turnOrder}`);
    if (!final) return null;
    final.speaker = speaker;
    if (words) final.words = words;
    return final;
  }

  /** Record a final; returns `{final, replaced}`. */
  applyFinal(final) {
    const key = `${final.generation}/${final.turn_order}`;
    const replaced = this.finals.has(key);
    this.finals.set(key, final);
    return { final, replaced };
  }

  /** The finals in stream order. */
  list() {
    return [...this.finals.values()].sort((a, b) => a.start_ms - b.start_ms);
  }

  /** Plain text, one turn per line with its start time. */
  text() {
    const clock = (ms) => {
      const s = Math.floor(ms / 1000);
      const pad = (n) => String(n).padStart(2, "0");
      return `${pad(Math.floor(s / 3600))}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
    };
    return this.list()
      .map((t) => `[${clock(t.start_ms)}] ${t.language_code ? `[${t.language_code}] ` : ""}${who(t.speaker)}${t.text}\n`)
      .join("");
  }
}

// --- The client --------------------------------------------------------------------------------

export { backoffDelay, rateLimitedDelay } from "./aai-live-machine.js";

/** The browser's clock and timers; tests give a virtual one. */
const REAL_CLOCK = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
};

/** What the client needs of /config.json's `session` besides the machine's policy. */
function streamSettings(session) {
  const need = (key) => {
    if (!session || typeof session[key] !== "number") throw new Error(`config.json: session.${key} is missing`);
    return session[key];
  };
  const expiry = (session && session.expiry) || {};
  for (const key of ["min_ms", "max_ms", "fallback_ms"]) {
    if (typeof expiry[key] !== "number") throw new Error(`config.json: session.expiry.${key} is missing`);
  }
  return {
    chunkMs: Math.min(1000, Math.max(50, Math.round(need("chunk_ms")))),
    replayBufferMs: need("replay_buffer_ms"),
    replaySpeed: Math.min(1.25, Math.max(1, need("replay_speed"))),
    stallTimeoutMs: need("stall_timeout_ms"),
    // The stream's fixed rules, as src/session/supervisor.rs keeps them (`browser_rules`).
    quietAfterMs: need("quiet_after_ms"),
    voiceRms: need("voice_rms"),
    queueMs: need("queue_ms"),
    stallMinVoiceMs: need("stall_min_voice_ms"),
    finishLimitMs: need("finish_limit_ms"),
    expiry: { minMs: expiry.min_ms, maxMs: expiry.max_ms, fallbackMs: expiry.fallback_ms },
  };
}

/**
 * The browser client. Events are dispatched as `CustomEvent`s named like docs/events.md
 * (`state`, `token`, `begin`, `final`, ...) with the event object as `detail`, and also as one
 * `"event"` event for a single listener.
 */
export class AaiLiveClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.tokenUrl] the token server; default `/token` beside this module
   * @param {string} [options.credential] bearer credential for the token server (sent in the
   *   Authorization header, never in a URL)
   * @param {string} [options.streamingUrl] the v3 WebSocket URL; default from /config.json
   * @param {object} [options.params] streaming parameters (`sample_rate`, `format_turns`, ...)
   * @param {object} [options.session] the session policy, in /config.json's `session` terms;
   *   default: the server's /config.json
   * @param {object} [options.closeCodes] the close table; default: the server's
   *   /close-codes.json
   * @param {MediaStream} [options.stream] a stream to use instead of asking for the microphone
   */
  constructor(options = {}) {
    super();
    const base = new URL(".", import.meta.url);
    this.options = options;
    this.clock = options.clock || REAL_CLOCK;
    this.random = options.random || Math.random;
    this.audioOptions = { echoCancellation: false, noiseSuppression: false, autoGainControl: false, ...(options.audio || {}) };
    this.tokenUrl = new URL(options.tokenUrl || "token", base).href;
    this.configUrl = new URL(options.configUrl || "config.json", base).href;
    this.tableUrl = new URL(options.closeCodesUrl || "close-codes.json", base).href;
    this.workletUrl = new URL(options.workletUrl || "aai-live-worklet.js", base).href;
    this.state = { state: "idle" };
    this.finished = true;
    this.timers = new Set();
  }

  emit(name, fields = {}) {
    const detail = { event: name, ts_ms: Date.now(), ...fields };
    this.dispatchEvent(new CustomEvent(name, { detail }));
    this.dispatchEvent(new CustomEvent("event", { detail }));
    return detail;
  }

  later(ms, fn) {
    const id = this.clock.setTimeout(() => {
      this.timers.delete(id);
      fn();
    }, Math.max(0, ms));
    this.timers.add(id);
    return id;
  }

  ms(samples) {
    return Math.floor((samples * 1000) / RATE);
  }

  samples(ms) {
    return Math.floor((ms * RATE) / 1000);
  }

  /** Load the configuration and the close table, open the microphone, start streaming. */
  async start() {
    if (!this.finished || this.starting) return;
    this.starting = true;
    try {
      await this.begin();
    } finally {
      this.starting = false;
    }
  }

  async begin() {
    const needConfig = !this.options.session || !this.options.streamingUrl;
    const [table, config] = await Promise.all([
      this.options.closeCodes || fetchJson(this.tableUrl),
      needConfig ? fetchJson(this.configUrl) : null,
    ]);
    this.table = table;
    const session = this.options.session || (config && config.session);
    this.machine = new Machine(session, table);
    this.settings = streamSettings(session);
    this.streamingUrl = this.options.streamingUrl || (config && config.streaming_url);
    if (!this.streamingUrl) throw new Error("no streaming URL (options.streamingUrl or config.json)");
    this.params = { ...((config && config.params) || {}), ...(this.options.params || {}) };
    // The emulator's stream-offset hints: as the server says (only for a ws:// endpoint on
    // loopback), unless the caller decided.
    this.emulatorHints =
      this.options.emulatorHints === undefined ? Boolean(config && config.emulator_hints) : Boolean(this.options.emulatorHints);
    this.reset();
    try {
      await this.openAudio();
    } catch (e) {
      this.closeAudio();
      throw e;
    }
    this.capturing = true;
    this.finished = false;
    this.input({ kind: "start" });
  }

  reset() {
    this.conns = new Map(); // generation -> connection
    this.retired = new Map(); // generation -> {base, lastFinalEnd}
    this.tokens = new Map(); // generation -> the token server's answer
    this.state = { state: "idle" };
    this.route = null;
    this.cursor = 0;
    this.ledger = new Ledger();
    this.buffer = new ReplayBuffer(Math.round((RATE * this.settings.replayBufferMs) / 1000));
    this.transcript = new Transcript();
    this.rotations = 0;
    this.reconnects = 0;
    this.capturing = false;
    this.silentMs = 0;
    this.quiet = true;
    this.pumpTimer = null;
    this.nextReplaySend = 0;
    this.unroutedSince = null;
    this.pendingCause = "start";
    this.latencies = [];
    this.inputDone = false;
    this.finishBy = null;
    this.warnedExpiry = false;
    this.onEnd = null;
  }

  /** Feed the machine one input and carry out its effects (src/session/supervisor.rs). */
  input(input) {
    if (this.finished) return;
    const effects = this.machine.handle(this.clock.now(), input, this.random());
    for (const effect of effects) this.apply(effect);
    if (this.capturing && this.machine.isDone()) {
      this.capturing = false;
      this.abandon(this.machine.failed() ? "failed" : "stopped");
    }
    if (this.machine.isDone()) this.endRun();
    else this.maybeFinish();
  }

  apply(effect) {
    if (effect.mint) {
      const { generation } = effect.mint;
      this.fetchToken().then(
        (token) => this.onToken(generation, token),
        (failure) => this.onTokenFailed(generation, failure),
      );
    } else if (effect.connect) {
      this.connect(effect.connect.generation);
    } else if (effect.route) {
      this.routeTo(effect.route.to, effect.route.replay_from);
    } else if (effect.terminate) {
      const conn = this.conns.get(effect.terminate.generation);
      if (conn) this.control(conn, { type: "Terminate" });
    } else if (effect.force_endpoint) {
      const conn = this.conns.get(effect.force_endpoint.generation);
      if (conn) this.control(conn, { type: "ForceEndpoint" });
    } else if (effect.drop) {
      const conn = this.conns.get(effect.drop.generation);
      if (conn) this.dropConn(conn);
    } else if (effect.schedule) {
      const { timer, at } = effect.schedule;
      this.later(at - this.clock.now(), () => this.input({ kind: "timer", timer }));
    } else if (effect.prepare_token) {
      // No pre-minting in the browser: a token is fetched when a connection needs one (the
      // token server is usually close by). Documented in docs/browser.md.
    } else if (effect.changed) {
      const view = effect.changed;
      if (view.state === "minting" || view.state === "connecting") this.pendingCause = view.cause;
      if (view.state === "rotating") this.pendingCause = "rotation";
      this.state = view;
      this.emit("state", view);
    } else if (effect.notice) {
      this.onNotice(effect.notice);
    }
  }

  onNotice(notice) {
    switch (notice.kind) {
      case "rotated": {
        this.rotations++;
        const conn = this.conns.get(notice.to);
        this.emit("rotation", {
          from: notice.from,
          to: notice.to,
          forced: notice.forced,
          gap_ms: 0,
          stream_offset_ms: this.ms((conn && conn.base) || 0),
        });
        break;
      }
      case "lost": {
        this.reconnects++;
        const f = notice.failure;
        this.emit("lost", {
          generation: notice.generation,
          class: f.class,
          ...(f.code !== undefined && f.code !== null ? { code: f.code } : {}),
          reason: f.reason,
          what_now: this.words(f.class).advice,
          explain: f.explain,
        });
        break;
      }
      case "drain_timed_out":
        this.emit("drain_timed_out", { generation: notice.generation });
        break;
      case "mint_budget":
        this.emit("warning", {
          message: `${notice.mints} tokens in ${notice.window_ms / 1000} s and no session lasted: pausing new sessions for ${Math.round(notice.wait_ms / 1000)} s so the token server is not flooded`,
          explain: "mint-budget",
        });
        break;
      default:
        break;
    }
  }

  /** A class's words, from the table. */
  words(cls) {
    return this.table.classes[cls] || { describe: cls, advice: "" };
  }

  /** A failure in one sentence: its reason, then what its class means and what is done. */
  sentence(failure) {
    const w = this.words(failure.class);
    if (failure.origin === "close" && failure.class === "token_rejected") {
      // Its advice ("retrying once") is spent: this was the retry.
      return `a fresh token was rejected too (${failure.reason}); check the token source and the clock (${w.describe})`;
    }
    return `${failure.reason} (${w.describe}; ${w.advice})`;
  }

  async openAudio() {
    const stream =
      this.options.stream ||
      (await navigator.mediaDevices.getUserMedia({
        audio: {
          echoCancellation: this.audioOptions.echoCancellation,
          noiseSuppression: this.audioOptions.noiseSuppression,
          autoGainControl: this.audioOptions.autoGainControl,
          ...(this.audioOptions.deviceId ? { deviceId: this.audioOptions.deviceId } : {}),
        },
      }));
    this.stream = stream;
    // A microphone unplugged, or a stream that ends: the input ended (its audio is still sent).
    for (const track of stream.getAudioTracks()) track.addEventListener("ended", () => this.finish());
    this.audioContext = new AudioContext();
    // Started from a click this runs at once; a page that starts on load may need a gesture
    // first (the capture begins when the context runs).
    if (this.audioContext.state === "suspended") this.audioContext.resume().catch(() => {});
    await this.audioContext.audioWorklet.addModule(this.workletUrl);
    const source = this.audioContext.createMediaStreamSource(stream);
    this.node = new AudioWorkletNode(this.audioContext, "aai-live-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
    });
    this.resampler = new Resampler(this.audioContext.sampleRate, RATE);
    this.chunker = new Chunker(this.samples(this.settings.chunkMs));
    this.nextFrame = null;
    this.node.port.onmessage = (e) => this.onFrames(e.data);
    source.connect(this.node);
    this.source = source;
  }

  closeAudio() {
    if (this.node) this.node.port.onmessage = null;
    if (this.source) this.source.disconnect();
    if (this.stream && !this.options.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.audioContext) this.audioContext.close().catch(() => {});
    this.node = null;
    this.source = null;
    this.audioContext = null;
  }

  /** A block of mono frames from the worklet: `{frame, samples}` (`frame`: its first index). */
  onFrames({ frame, samples }) {
    if (!this.capturing) return;
    if (this.nextFrame !== null && frame > this.nextFrame) {
      // Frames the audio thread could not hand over: lost before they reached the stream.
      const dropped = Math.round(((frame - this.nextFrame) * RATE) / this.resampler.inRate);
      const loss = this.ledger.overrun(dropped);
      if (loss) this.reportLoss(loss);
    }
    this.nextFrame = frame + samples.length;
    const chunks = this.chunker.push(toInt16(this.resampler.push(samples)));
    for (const chunk of chunks) this.onChunk(chunk.samples);
  }

  /** A chunk of the stream: into the buffer and the ledger, then sent if a session takes it. */
  onChunk(samples) {
    if (!this.capturing) return;
    const offset = this.ledger.head;
    this.ledger.capture(samples.length);
    const evictedTo = this.buffer.push(offset, samples);
    if (evictedTo !== null) {
      const loss = this.ledger.evicted(evictedTo);
      if (loss) this.reportLoss(loss);
    }
    this.emit("level", { rms: rms(samples) });
    this.pump();
  }

  reportLoss(loss) {
    this.emit("audio_lost", {
      from_ms: this.ms(loss.from),
      to_ms: this.ms(loss.to),
      ms: this.ms(loss.samples),
      samples: loss.samples,
      cause: loss.cause,
    });
  }

  abandon(cause) {
    const loss = this.ledger.abandon(cause);
    if (loss) this.reportLoss(loss);
  }

  // --- tokens ---

  /** One token from the token server, or a failure `{origin, class, status?, reason, explain}`. */
  async fetchToken() {
    const url = new URL(this.tokenUrl);
    const p = this.options.tokenParams || {};
    for (const [k, v] of Object.entries(p)) url.searchParams.set(k, String(v));
    const headers = {};
    if (this.options.credential) headers.Authorization = `Bearer ${this.options.credential}`;
    let response;
    try {
      // Cookies only to the page's own origin: an authenticating proxy in front of `serve`
      // works; a token server elsewhere gets the bearer credential only.
      response = await fetch(url, { headers, cache: "no-store", credentials: "same-origin" });
    } catch (e) {
      throw {
        origin: "token",
        ...this.table.token_unreachable,
        reason: `the token server at ${this.tokenUrl} cannot be reached: ${e.message}`,
      };
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    const status = response.status;
    if (!response.ok || !body || typeof body.token !== "string" || !body.token) {
      const said = body && (body.message || body.error) ? `: ${String(body.message || body.error).slice(0, 512)}` : "";
      const retryAfter = Number(response.headers.get("retry-after")) || null;
      throw {
        origin: "token",
        ...tokenStatusVerdict(this.table, status),
        status,
        reason: response.ok ? `the token server answered HTTP ${status} without a token` : `the token server answered HTTP ${status}${said}`,
        ...(retryAfter ? { retry_after_ms: retryAfter * 1000 } : {}),
      };
    }
    return body;
  }

  onToken(generation, token) {
    if (this.finished) return; // nobody waits for it: never reused
    const redeemBy = Date.parse(token.expires_at);
    const redeemInMs = Number.isFinite(redeemBy)
      ? Math.max(0, redeemBy - Date.now())
      : Number(token.expires_in_seconds) * 1000 || null;
    this.emit("token", {
      generation,
      fingerprint: fingerprint(token.token),
      ...(redeemInMs !== null ? { redeem_in_ms: redeemInMs } : {}),
    });
    this.tokens.set(generation, token);
    this.input({ kind: "token_minted", generation });
    // Connecting consumed it; one still here was minted for a connection no longer wanted.
    this.tokens.delete(generation);
  }

  onTokenFailed(generation, failure) {
    if (this.finished) return;
    if (!failure || !failure.class) {
      failure = { origin: "internal", class: "local", reason: String(failure), explain: "local" };
    }
    this.emit("token_failed", { generation, class: failure.class, message: failure.reason, explain: failure.explain });
    this.input({ kind: "token_failed", generation, failure });
  }

  // --- connections ---

  connect(generation) {
    const token = this.tokens.get(generation);
    if (!token) return;
    this.tokens.delete(generation);
    const url = new URL(this.streamingUrl);
    // What this client sends, whatever the parameters say: 16 kHz 16-bit PCM.
    const params = { ...this.params, sample_rate: RATE, encoding: "pcm_s16le" };
    for (const [k, v] of Object.entries(params)) {
      url.searchParams.set(k, Array.isArray(v) ? JSON.stringify(v) : String(v));
    }
    if (this.emulatorHints) {
      url.searchParams.set("emulator_stream_offset_ms", String(this.ms(this.ledger.settled)));
    }
    url.searchParams.set("token", token.token); // browsers cannot set headers on a WebSocket
    const ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    const conn = {
      generation,
      ws,
      cause: this.pendingCause,
      maxSessionS: Number(token.max_session_duration_seconds) || null,
      sessionId: "",
      base: null,
      lastFinalEnd: null,
      began: false,
      errorText: null,
      unansweredVoiceMs: 0,
      unansweredSince: null,
      stuckSince: null,
    };
    this.conns.set(generation, conn);
    ws.onmessage = (e) => this.onMessage(conn, e.data);
    // A browser reports a failed upgrade and a TCP drop alike as 1006: no close frame.
    ws.onclose = (e) => this.onClose(conn, e.code === 1006 ? null : e.code, String(e.reason || "").slice(0, 4096));
    ws.onerror = () => {};
  }

  send(conn, data) {
    if (conn.ws.readyState !== WebSocket.OPEN) return false;
    conn.ws.send(data);
    return true;
  }

  control(conn, message) {
    return this.send(conn, JSON.stringify(message));
  }

  /** Let a connection go, politely (1000), remembering what a replay needs. */
  dropConn(conn) {
    this.conns.delete(conn.generation);
    this.retired.set(conn.generation, { base: conn.base, lastFinalEnd: conn.lastFinalEnd });
    conn.ws.onmessage = null;
    conn.ws.onclose = null;
    try {
      conn.ws.close(1000);
    } catch {
      // already closing
    }
  }

  onClose(conn, code, reason) {
    if (this.conns.get(conn.generation) !== conn) return;
    this.conns.delete(conn.generation);
    this.retired.set(conn.generation, { base: conn.base, lastFinalEnd: conn.lastFinalEnd });
    const v = verdict(this.table, code, reason, conn.errorText, conn.began);
    // The reason shown: the close reason, or the Error frame's when it says more.
    const long = reason === "" || reason === "See Error message for details";
    const shown = (long && conn.errorText) || reason;
    const failure = {
      origin: "close",
      class: v.class,
      ...(code !== null ? { code } : {}),
      reason: shown,
      explain: v.explain,
    };
    this.input({ kind: "closed", generation: conn.generation, after_begin: conn.began, failure });
  }

  onMessage(conn, data) {
    if (typeof data !== "string") return;
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (!m || typeof m !== "object") return;
    conn.unansweredVoiceMs = 0;
    conn.unansweredSince = null;
    switch (m.type) {
      case "Begin":
        this.onBegin(conn, m);
        break;
      case "Turn":
        this.onTurn(conn, m);
        break;
      case "Termination":
        this.emit("termination", {
          generation: conn.generation,
          audio_duration_seconds: m.audio_duration_seconds || 0,
          session_duration_seconds: m.session_duration_seconds || 0,
        });
        this.input({ kind: "termination", generation: conn.generation });
        break;
      case "Error":
        conn.errorText = String(m.error || "").slice(0, 4096);
        break;
      case "Warning":
        this.emit("warning", { message: String(m.warning || "").slice(0, 4096) });
        break;
      case "SpeakerRevision":
        this.onRevision(conn, m);
        break;
      default:
        break;
    }
  }

  /**
   * How long the session that just began will last: `expires_at` when it is believable (the
   * bounds /config.json's `session.expiry` gives, from src/protocol/expiry.rs), else the length
   * the token says it opens, else the fallback.
   */
  granted(conn, expiresAt) {
    const leftMs = expiresAt * 1000 - Date.now();
    const { minMs, maxMs, fallbackMs } = this.settings.expiry;
    if (Number.isFinite(leftMs) && leftMs >= minMs && leftMs <= maxMs) return leftMs;
    const planned = conn.maxSessionS ? conn.maxSessionS * 1000 : fallbackMs;
    if (!this.warnedExpiry) {
      this.warnedExpiry = true;
      this.emit("warning", {
        message: `the service's session end (expires_at ${expiresAt}) is not believable; planning the session for ${Math.round(planned / 1000)} s instead`,
        explain: "clock-skew",
      });
    }
    return planned;
  }

  onBegin(conn, m) {
    conn.began = true;
    conn.sessionId = String(m.id || "");
    const expiresAt = Number(m.expires_at);
    this.input({ kind: "begin", generation: conn.generation, session_id: conn.sessionId, granted_ms: this.granted(conn, expiresAt) });
    if (this.conns.get(conn.generation) !== conn) return;
    this.emit("begin", {
      generation: conn.generation,
      session_id: conn.sessionId,
      expires_at: expiresAt,
      stream_offset_ms: conn.base === null ? 0 : this.ms(conn.base),
      // Audio captured before this session could take it, sent to it first (paced).
      backlog_ms: conn.base === null ? 0 : this.ms(this.ledger.head - conn.base),
      cause: conn.cause,
    });
  }

  onTurn(conn, turn) {
    if (conn.base === null) return;
    const baseMs = this.ms(conn.base);
    const words = Array.isArray(turn.words) ? turn.words : [];
    const rel = (v) => (Number.isFinite(Number(v)) ? Math.max(0, Number(v)) : 0);
    const start = words.length ? baseMs + rel(words[0].start) : baseMs;
    const end = words.length ? baseMs + rel(words[words.length - 1].end) : baseMs;
    const order = Number(turn.turn_order) || 0;
    if (turn.end_of_turn) {
      // As src/transcript.rs: the transcript, else the utterance.
      const text = String(turn.transcript || turn.utterance || "");
      const latency = this.latency(conn, words);
      const final = {
        generation: conn.generation,
        session_id: conn.sessionId,
        turn_order: order,
        text,
        formatted: Boolean(turn.turn_is_formatted),
        start_ms: start,
        end_ms: end,
        ...(turn.speaker_label ? { speaker: String(turn.speaker_label) } : {}),
        ...(turn.language_code ? { language_code: String(turn.language_code).slice(0, 16) } : {}),
        ...(Number.isFinite(Number(turn.language_confidence)) && turn.language_code
          ? { language_confidence: Number(turn.language_confidence) }
          : {}),
        words: words.map((w) => ({
          text: String(w.text || ""),
          start_ms: baseMs + rel(w.start),
          end_ms: baseMs + rel(w.end),
          confidence: Number(w.confidence) || 0,
          ...(w.speaker ? { speaker: String(w.speaker) } : {}),
        })),
        ...(latency !== null ? { latency_ms: latency } : {}),
      };
      if (!this.transcript.applyFinal(final).replaced) {
        conn.lastFinalEnd = this.samples(end);
        if (latency !== null) this.latencies.push(latency);
      }
      this.emit("final", final);
    } else {
      // Universal-Streaming partials hold the final words in `transcript` and the newest word
      // only in `words`: show all of them.
      const text = words.length ? words.map((w) => String(w.text || "")).join(" ") : String(turn.transcript || "");
      this.emit("partial", { generation: conn.generation, turn_order: order, text, start_ms: start, end_ms: end });
    }
    this.input({ kind: "turn", generation: conn.generation, end_of_turn: Boolean(turn.end_of_turn) });
  }

  /** `SpeakerRevision`: one `speaker_revision` event per revised turn; the final is not sent
   * again (the transcript takes the revision). */
  onRevision(conn, m) {
    const baseMs = conn.base === null ? 0 : this.ms(conn.base);
    const rel = (v) => (Number.isFinite(Number(v)) ? Math.max(0, Number(v)) : 0);
    for (const r of Array.isArray(m.revisions) ? m.revisions : []) {
      const order = Number(r.turn_order) || 0;
      const speaker = r.speaker_label === null || r.speaker_label === undefined ? null : String(r.speaker_label).slice(0, 64);
      const words = Array.isArray(r.words) && r.words.length
        ? r.words.map((w) => ({
            text: String(w.text || ""),
            start_ms: baseMs + rel(w.start),
            end_ms: baseMs + rel(w.end),
            confidence: Number(w.confidence) || 0,
            ...(w.speaker ? { speaker: String(w.speaker) } : {}),
          }))
        : null;
      const revised = this.transcript.revise(conn.generation, order, speaker, words);
      if (revised) {
        this.emit("speaker_revision", { generation: conn.generation, turn_order: order, speaker, words: revised.words });
      }
    }
  }

  /** From sending the audio that holds a turn's last word to now (its final), if known. */
  latency(conn, words) {
    if (!words.length) return null;
    const lastEnd = Number(words[words.length - 1].end);
    if (!Number.isFinite(lastEnd)) return null;
    const at = conn.base + this.samples(Math.max(0, lastEnd - 1));
    const chunk = this.buffer.atOrAfter(at);
    if (!chunk || chunk.offset > at || chunk.sentAt === null) return null;
    return Math.round(this.clock.now() - chunk.sentAt);
  }

  // --- audio routing ---

  replayStart(generation) {
    const c = this.conns.get(generation) || this.retired.get(generation);
    if (!c) return null;
    return c.lastFinalEnd !== null ? c.lastFinalEnd : c.base;
  }

  routeTo(to, replayFrom) {
    const now = this.clock.now();
    if (to === null) {
      if (this.route !== null) this.unroutedSince = now;
      this.route = null;
      return;
    }
    const head = this.ledger.head;
    const settled = this.ledger.settled;
    // A hand-over continues exactly where the previous session stopped; any other session
    // starts at the first unsent sample.
    const handingOver = this.route !== null;
    let start = handingOver ? this.cursor : settled;
    if (replayFrom !== null && replayFrom !== undefined) {
      const found = this.replayStart(replayFrom);
      const wanted = Math.min(found === null ? settled : found, settled);
      const oldest = this.buffer.oldest() === null ? head : this.buffer.oldest();
      if (wanted < oldest) {
        this.emit("warning", {
          message: `${((this.ms(oldest) - this.ms(wanted)) / 1000).toFixed(1)} s of audio sent to the lost session could not be replayed (it outgrew the replay buffer); words in it may be missing`,
        });
      }
      const chunk = this.buffer.chunkStart(Math.max(wanted, oldest));
      start = chunk === null ? head : chunk;
      const gap = this.unroutedSince !== null ? Math.round(now - this.unroutedSince) : 0;
      this.emit("reconnected", {
        generation: to,
        replay_from_ms: this.ms(start),
        replay_ms: this.ms(Math.max(0, head - start)),
        gap_ms: gap,
      });
    }
    this.unroutedSince = null;
    this.route = to;
    this.cursor = start;
    this.nextReplaySend = now;
    const conn = this.conns.get(to);
    if (conn) {
      conn.base = start;
      if (this.emulatorHints) {
        // The emulator's script alignment; only ever sent to the emulator.
        this.control(conn, { type: "UpdateConfiguration", emulator_stream_offset_ms: this.ms(start) });
      }
    }
    this.pump();
  }

  /** Send what is due: the live chunk at once, a backlog at `replaySpeed` × real time. */
  pump() {
    if (this.route === null) return;
    const conn = this.conns.get(this.route);
    if (!conn || conn.ws.readyState !== WebSocket.OPEN) return;
    const chunkMs = this.settings.chunkMs;
    const now = this.clock.now();
    for (;;) {
      const chunk = this.buffer.atOrAfter(this.cursor);
      if (!chunk) break;
      const end = chunk.offset + chunk.samples.length;
      const live = end === this.buffer.head();
      if (!live) {
        if (this.quiet) {
          // While a backlog is replayed the audio sent is not "now": never hand over in the
          // middle of it on the strength of an old silence.
          this.quiet = false;
          this.silentMs = 0;
          this.input({ kind: "quiet", quiet: false });
          if (this.route !== conn.generation) return;
        }
        if (now < this.nextReplaySend) {
          this.schedulePump(this.nextReplaySend - now);
          return;
        }
        this.nextReplaySend = Math.max(this.nextReplaySend, now - chunkMs) + chunkMs / this.settings.replaySpeed;
      }
      if (conn.ws.bufferedAmount > (this.settings.queueMs / 1000) * RATE * 2) {
        // The server is not reading: keep the audio here (in the replay buffer, not in the
        // socket's queue) and give up on it after `stallTimeoutMs`.
        conn.stuckSince = conn.stuckSince === null ? now : conn.stuckSince;
        if (!this.checkStall(conn, now)) this.schedulePump(chunkMs);
        return;
      }
      conn.stuckSince = null;
      const voiced = rms(chunk.samples) > this.settings.voiceRms;
      conn.ws.send(chunk.samples.buffer.slice(chunk.samples.byteOffset, chunk.samples.byteOffset + chunk.samples.byteLength));
      if (chunk.sentAt === null) chunk.sentAt = now;
      if (voiced) {
        conn.unansweredSince = conn.unansweredSince === null ? now : conn.unansweredSince;
        conn.unansweredVoiceMs += chunkMs;
      }
      const loss = this.ledger.markSent(chunk.offset, end);
      if (loss) this.reportLoss(loss);
      this.cursor = end;
      if (live) {
        this.trackQuiet(voiced, chunkMs);
        if (this.route === conn.generation) this.checkStall(conn, now);
        break;
      }
    }
    this.maybeFinish();
  }

  /** Tell the machine when the live audio turns quiet (300 ms of silence) or voiced again. */
  trackQuiet(voiced, chunkMs) {
    this.silentMs = voiced ? 0 : this.silentMs + chunkMs;
    const quiet = this.silentMs >= this.settings.quietAfterMs;
    if (quiet !== this.quiet) {
      this.quiet = quiet;
      this.input({ kind: "quiet", quiet });
    }
  }

  schedulePump(ms) {
    if (this.pumpTimer !== null) return;
    this.pumpTimer = this.later(ms, () => {
      this.pumpTimer = null;
      this.pump();
    });
  }

  /**
   * Voice unanswered, or the socket not draining, for `stallTimeoutMs`: the session is treated
   * as dropped (a transient loss, as a close without a code). Returns whether it was.
   */
  checkStall(conn, now) {
    const timeout = this.settings.stallTimeoutMs;
    const voiceStalled =
      conn.unansweredVoiceMs >= this.settings.stallMinVoiceMs && conn.unansweredSince !== null && now - conn.unansweredSince > timeout;
    const stuck = conn.stuckSince !== null && now - conn.stuckSince > timeout;
    if (!voiceStalled && !stuck) return false;
    this.dropConn(conn);
    const v = verdict(this.table, null, "", "", true);
    const reason = voiceStalled
      ? `stalled: no reply for ${Math.round(timeout / 1000)} s while audio was sent`
      : `stalled: the server stopped reading for ${Math.round(timeout / 1000)} s`;
    this.input({
      kind: "closed",
      generation: conn.generation,
      after_begin: true,
      failure: { origin: "close", class: v.class, reason, explain: v.explain },
    });
    return true;
  }

  // --- the end ---

  /**
   * The input ended (the microphone went away, a stream that ended): what was captured is
   * still sent, then the last session is asked to confirm its end (`finish`), as the terminal
   * client does with the end of a file.
   */
  finish() {
    if (this.finished || this.inputDone) return;
    this.inputDone = true;
    this.closeAudio();
    this.finishBy = this.clock.now() + this.settings.finishLimitMs;
    this.later(this.settings.finishLimitMs, () => this.maybeFinish());
    this.maybeFinish();
  }

  maybeFinish() {
    if (this.finishBy === null || this.finished || !this.capturing) return;
    if (this.clock.now() >= this.finishBy) {
      this.finishBy = null;
      this.capturing = false;
      this.abandon("finish_timeout");
      this.input({ kind: "stop" });
      return;
    }
    const head = this.ledger.head;
    const allSent = this.ledger.settled >= head && (this.route === null || this.cursor >= head);
    const s = this.machine.view();
    if (s.state === "idle") {
      this.finishBy = null;
      this.stop();
    } else if (s.state === "streaming" && allSent) {
      this.capturing = false;
      this.input({ kind: "finish" });
    }
  }

  /** Stop streaming: Terminate, the last turns (bounded), then `finished`. */
  async stop() {
    if (this.finished) return;
    const ended = new Promise((resolve) => {
      const previous = this.onEnd;
      this.onEnd = () => {
        if (previous) previous();
        resolve();
      };
    });
    this.finishBy = null;
    this.capturing = false;
    this.closeAudio();
    this.abandon("stopped");
    this.input({ kind: "stop" });
    await ended;
  }

  endRun() {
    if (this.finished) return;
    this.finished = true;
    this.capturing = false;
    this.closeAudio();
    for (const id of this.timers) this.clock.clearTimeout(id);
    this.timers.clear();
    this.pumpTimer = null;
    for (const c of [...this.conns.values()]) this.dropConn(c);
    const failure = this.machine.failed();
    this.abandon(failure ? "failed" : "stopped");
    this.emit("finished", {
      finals: this.transcript.list().length,
      rotations: this.rotations,
      reconnects: this.reconnects,
      audio_captured_samples: this.ledger.captured,
      audio_sent_samples: this.ledger.sent,
      audio_lost_samples: this.ledger.lost,
      audio_lost_ms: this.ms(this.ledger.lost),
      ...percentiles(this.latencies),
      ...(failure ? { failure: this.sentence(failure), explain: failure.explain } : {}),
    });
    if (this.onEnd) this.onEnd();
  }
}

/** p50 and p95 of the latencies seen (as src/session/supervisor.rs), when there are any. */
export function percentiles(values) {
  if (!values.length) return {};
  const v = [...values].sort((a, b) => a - b);
  const at = (q) => v[Math.round((v.length - 1) * q)];
  return { latency_p50_ms: at(0.5), latency_p95_ms: at(0.95) };
}

/**
 * A token's fingerprint for display: 12 hex digits of a hash, never the token. The same as
 * src/secret.rs's (FNV-1a 64, the top 48 bits), so the page's `token` event and `serve`'s access
 * log name a token alike.
 */
export function fingerprint(token) {
  let h = 0xcbf29ce484222325n;
  for (const c of new TextEncoder().encode(token)) {
    h ^= BigInt(c);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return (h >> 16n).toString(16).padStart(12, "0").slice(0, 12);
}

async function fetchJson(url) {
  // Cookies to the page's own origin only: behind an authenticating proxy they are what lets
  // the request through; a server elsewhere gets none.
  const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}
