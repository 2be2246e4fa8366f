// aai-live-machine.js — the session lifecycle as a pure state machine, the browser client's copy
// of src/session/machine.rs: `handle(now, input, draw) → effects`. No I/O, no clock and no random
// source of its own: the client (aai-live-client.js) feeds it inputs with `now` (ms) and a
// uniform `draw` for any jitter, and carries out the effects it returns.
//
// It is held to the Rust machine's scenario table: tests/fixtures/machine-rows.json is exported
// from src/session/machine/tests.rs and tests/web/machine.test.mjs plays every row here. The
// policy comes only from data the server generates: the timings from /config.json's `session`
// object, and what each close class means (its recovery) from /close-codes.json.
//
// Inputs, effects, views and notices are plain objects shaped like the fixtures':
//   inputs  {kind: "start"|"stop"|"reconnect"|"finish"|"token_minted"|"token_failed"|"begin"|
//            "turn"|"termination"|"quiet"|"closed"|"timer"|"fail", ...}
//   effects {mint:{generation}} {connect:{generation}} {route:{to, replay_from}}
//           {terminate:{generation}} {force_endpoint:{generation}} {drop:{generation}}
//           {schedule:{timer, at}} {prepare_token:{by}} {changed: view} {notice: notice}
//   timers  {kind: "begin_timeout"|"rotate"|"handover_deadline"|"handover_grace"|"drain"|
//            "healthy", generation} or {kind: "backoff_done", attempt}
// A failure is `{origin, class, code?, status?, network?, reason, explain, retry_after_ms?}`,
// as the Rust `Failure` serializes.

/** The reason of a connection that opened but never said `Begin` in time (as Rust's NO_BEGIN). */
export const NO_BEGIN = "no Begin within the timeout";

/** A session is never planned shorter than this (ms). */
const MIN_GRANTED_MS = 1000;

/** The failure of a connection that never said `Begin` in time. */
export function noBegin() {
  return { origin: "close", class: "transient", reason: NO_BEGIN, explain: "no-begin" };
}

/** Full-jitter exponential delay for `attempt` (1, 2, ...), in ms (src/session/backoff.rs). */
export function backoffDelay(attempt, { initialMs, maxMs, multiplier }, unit) {
  const exp = Math.max(1, multiplier) ** Math.min(64, Math.max(0, attempt - 1));
  const ceiling = Math.min(maxMs, initialMs * exp);
  return Math.floor(Math.min(1, Math.max(0, unit)) * ceiling);
}

/**
 * After a rate limit: the server's `Retry-After` (at least a second) or the minute-scale floor,
 * plus up to 25 % jitter, so many clients of one account do not come back in the same second.
 */
export function rateLimitedDelay(retryAfterMs, floorMs, unit) {
  const base = retryAfterMs ? Math.max(1000, retryAfterMs) : floorMs;
  return Math.floor(base * (1 + 0.25 * Math.min(1, Math.max(0, unit))));
}

/**
 * The machine's policy from /config.json's `session` object (the names of
 * `MachineConfig::to_json`). Every field is required: the server generates them all, and a
 * client that guessed a default would be a second copy of the policy.
 */
export function policy(session) {
  const need = (key) => {
    const v = session && session[key];
    if (typeof v !== "number" && typeof v !== "boolean") throw new Error(`config.json: session.${key} is missing`);
    return v;
  };
  const b = (session && session.backoff) || {};
  for (const key of ["initial_ms", "max_ms", "multiplier"]) {
    if (typeof b[key] !== "number") throw new Error(`config.json: session.backoff.${key} is missing`);
  }
  return {
    rotation: need("rotation"),
    rotationLeadMs: need("rotation_lead_ms"),
    handoverGraceMs: need("handover_grace_ms"),
    expirySafetyMs: need("expiry_safety_ms"),
    beginTimeoutMs: need("begin_timeout_ms"),
    drainTimeoutMs: need("terminate_timeout_ms"),
    healthyAfterMs: need("healthy_after_ms"),
    backoff: { initialMs: b.initial_ms, maxMs: b.max_ms, multiplier: b.multiplier },
    rateLimitedMs: need("rate_limit_backoff_ms"),
    mintBudget: need("mint_budget"),
    mintWindowMs: need("mint_window_ms"),
  };
}

// A live session: when `Begin` arrived and the length granted, as Rust's `Live`.
function expiresAt(cfg, live) {
  return live.began + live.granted - Math.min(cfg.expirySafetyMs, live.granted / 4);
}
function lead(cfg, live) {
  return Math.min(cfg.rotationLeadMs, live.granted / 2);
}
function rotateAt(cfg, live) {
  return Math.max(live.began + live.granted / 2, expiresAt(cfg, live) - lead(cfg, live));
}
function margin(cfg, live) {
  return lead(cfg, live) / 3;
}
function handoverDeadline(cfg, live) {
  return Math.max(rotateAt(cfg, live), expiresAt(cfg, live) - margin(cfg, live));
}
function grace(cfg, live) {
  return Math.min(cfg.handoverGraceMs, margin(cfg, live) / 2);
}

const timer = {
  beginTimeout: (generation) => ({ kind: "begin_timeout", generation }),
  rotate: (generation) => ({ kind: "rotate", generation }),
  handoverDeadline: (generation) => ({ kind: "handover_deadline", generation }),
  handoverGrace: (generation) => ({ kind: "handover_grace", generation }),
  drain: (generation) => ({ kind: "drain", generation }),
  healthy: (generation) => ({ kind: "healthy", generation }),
  backoffDone: (attempt) => ({ kind: "backoff_done", attempt }),
};

/** The session lifecycle (src/session/machine.rs). */
export class Machine {
  /**
   * @param {object} session /config.json's `session` object
   * @param {object} table /close-codes.json
   */
  constructor(session, table) {
    this.cfg = policy(session);
    this.table = table;
    this.state = { s: "idle" };
    this.nextGen = 1;
    this.attempt = 0;
    this.healthy = false;
    this.tokenRetryUsed = false;
    this.replayFrom = null;
    this.draw = 0.5;
    this.quiet = true;
    this.failure = null;
    this.finishing = false;
    this.mints = [];
  }

  /** What a class's sessions need next (`done`, `remint`, ...), from the close table. */
  recovery(cls) {
    const c = this.table.classes[cls];
    if (!c || !c.recovery) throw new Error(`close-codes.json: no recovery for class ${cls}`);
    return c.recovery;
  }

  view() {
    const s = this.state;
    switch (s.s) {
      case "idle":
        return { state: "idle" };
      case "minting":
      case "connecting":
        return { state: s.s, generation: s.generation, cause: s.cause };
      case "streaming":
        return { state: "streaming", generation: s.live.generation, session_id: s.live.sessionId };
      case "rotating":
        return { state: "rotating", old: s.old.generation, new: s.new, new_ready: s.newReady !== null };
      case "draining":
        return { state: "draining", generation: s.generation };
      case "stopped":
        return { state: "stopped" };
      case "backoff":
        return { state: "backoff", attempt: s.attempt, retry_in_ms: Math.floor(s.delay), class: s.cls };
      case "failed":
        return { state: "failed", ...s.failure };
      default:
        throw new Error(`unknown state ${s.s}`);
    }
  }

  isDone() {
    return this.state.s === "stopped" || this.state.s === "failed";
  }

  failed() {
    return this.state.s === "failed" ? this.state.failure : null;
  }

  /** The live session's planned end (ms), for countdowns. */
  expiresAt() {
    const s = this.state;
    if (s.s === "streaming") return expiresAt(this.cfg, s.live);
    if (s.s === "rotating") return expiresAt(this.cfg, s.old);
    return null;
  }

  newGen() {
    return this.nextGen++;
  }

  set(state, out) {
    if (state.s === "stopped" && this.failure) {
      state = { s: "failed", failure: this.failure };
      this.failure = null;
    }
    this.state = state;
    out.push({ changed: this.view() });
  }

  lasted() {
    this.mints = [];
  }

  withinBudget(now) {
    while (this.mints.length && now - this.mints[0] >= this.cfg.mintWindowMs) this.mints.shift();
    return this.mints.length < this.cfg.mintBudget;
  }

  mint(now, cause, out) {
    if (!this.withinBudget(now)) {
      const wait = rateLimitedDelay(null, this.cfg.rateLimitedMs, this.draw);
      out.push({ notice: { kind: "mint_budget", mints: this.mints.length, window_ms: this.cfg.mintWindowMs, wait_ms: wait } });
      this.attempt++;
      this.backOff(now, wait, "rate_limited", out);
      return;
    }
    this.mints.push(now);
    const generation = this.newGen();
    this.set({ s: "minting", generation, cause }, out);
    out.push({ mint: { generation } });
  }

  /** Handle one input at `now` (ms); `draw` is a uniform number in [0, 1) for any jitter. */
  handle(now, input, draw) {
    this.draw = Math.min(1, Math.max(0, draw));
    const out = [];
    switch (input.kind) {
      case "peer_minted":
        // Another stream of the same account minted: one budget for the account.
        this.mints.push(now);
        break;
      case "start":
        this.start(now, out);
        break;
      case "stop":
        this.finishing = false;
        this.stop(now, out);
        break;
      case "finish":
        this.finishing = true;
        this.stop(now, out);
        break;
      case "reconnect":
        this.reconnect(now, out);
        break;
      case "token_minted":
        this.tokenMinted(now, input.generation, out);
        break;
      case "token_failed":
        this.tokenFailed(now, input.generation, input.failure, out);
        break;
      case "begin":
        this.begin(now, input.generation, input.session_id, input.granted_ms, out);
        break;
      case "turn":
        this.turn(now, input.generation, input.end_of_turn, out);
        break;
      case "termination":
        if (this.state.s === "draining" && this.state.generation === input.generation) this.set({ s: "stopped" }, out);
        break;
      case "quiet":
        this.quiet = input.quiet;
        if (input.quiet && this.state.s === "rotating" && this.state.newReady && !this.state.old.turnOpen) {
          this.handOver(now, false, out);
        }
        break;
      case "closed":
        this.closed(now, input.generation, { failure: input.failure, afterBegin: input.after_begin }, out);
        break;
      case "timer":
        this.timer(now, input.timer, out);
        break;
      case "fail":
        if (!this.isDone()) {
          this.failure = input.failure;
          this.stop(now, out);
        }
        break;
      default:
        throw new Error(`unknown input ${input.kind}`);
    }
    return out;
  }

  start(now, out) {
    if (["idle", "stopped", "failed"].includes(this.state.s)) {
      this.attempt = 0;
      this.healthy = false;
      this.failure = null;
      this.finishing = false;
      this.tokenRetryUsed = false;
      this.replayFrom = null;
      this.mints = [];
      this.mint(now, "start", out);
    }
  }

  stop(now, out) {
    const s = this.state;
    this.state = { s: "stopped" };
    switch (s.s) {
      case "streaming":
        this.drain(now, s.live.generation, out);
        break;
      case "rotating":
        out.push({ drop: { generation: s.new } });
        this.drain(now, s.old.generation, out);
        break;
      case "connecting":
        out.push({ drop: { generation: s.generation } });
        this.set({ s: "stopped" }, out);
        break;
      case "draining":
        this.state = s;
        break;
      case "idle":
      case "minting":
      case "backoff":
        this.set({ s: "stopped" }, out);
        break;
      default:
        this.state = s;
    }
  }

  drain(now, generation, out) {
    this.retire(now, generation, null, out);
    this.set({ s: "draining", generation }, out);
  }

  retire(now, generation, routeTo, out) {
    out.push({ route: { to: routeTo, replay_from: null } });
    out.push({ terminate: { generation } });
    out.push({ schedule: { timer: timer.drain(generation), at: now + this.cfg.drainTimeoutMs } });
  }

  reconnect(now, out) {
    const s = this.state;
    let lost = null;
    if (s.s === "streaming") lost = s.live.generation;
    else if (s.s === "rotating") {
      out.push({ drop: { generation: s.new } });
      lost = s.old.generation;
    } else if (s.s === "connecting") out.push({ drop: { generation: s.generation } });
    else if (s.s !== "backoff" && s.s !== "minting") return;
    if (lost !== null) {
      this.retire(now, lost, null, out);
      this.replayFrom = lost;
    }
    if (this.state.s !== "minting") this.mint(now, "user", out);
  }

  tokenMinted(now, generation, out) {
    const s = this.state;
    if (s.s === "minting" && s.generation === generation) {
      this.set({ s: "connecting", generation, cause: s.cause }, out);
      this.connect(now, generation, out);
    } else if (s.s === "rotating" && s.new === generation) {
      s.newConnecting = true;
      this.connect(now, generation, out);
    }
  }

  connect(now, generation, out) {
    out.push({ connect: { generation } });
    out.push({ schedule: { timer: timer.beginTimeout(generation), at: now + this.cfg.beginTimeoutMs } });
  }

  tokenFailed(now, generation, failure, out) {
    const s = this.state;
    if (s.s === "minting" && s.generation === generation) {
      this.failOrBackOff(now, failure.class, failure, out);
    } else if (s.s === "rotating" && s.new === generation) {
      this.set({ s: "streaming", live: s.old }, out);
    }
  }

  failOrBackOff(now, cls, failure, out) {
    const recovery = this.recovery(cls);
    let delay;
    if (recovery === "stop") {
      this.set({ s: "failed", failure }, out);
      return;
    } else if (recovery === "back_off" && this.healthy) {
      this.healthy = false;
      this.mint(now, "dropped", out);
      return;
    } else if (recovery === "back_off_long") {
      this.attempt++;
      delay = rateLimitedDelay(failure.retry_after_ms || null, this.cfg.rateLimitedMs, this.draw);
    } else {
      this.attempt++;
      delay = backoffDelay(this.attempt, this.cfg.backoff, this.draw);
    }
    this.backOff(now, delay, cls, out);
  }

  backOff(now, delay, cls, out) {
    const attempt = this.attempt;
    this.set({ s: "backoff", attempt, delay, cls }, out);
    out.push({ schedule: { timer: timer.backoffDone(attempt), at: now + delay } });
  }

  begin(now, generation, sessionId, grantedMs, out) {
    const live = { generation, sessionId, began: now, granted: Math.max(MIN_GRANTED_MS, grantedMs), turnOpen: false };
    const s = this.state;
    if (s.s === "connecting" && s.generation === generation) {
      this.tokenRetryUsed = false;
      const replayFrom = this.replayFrom;
      this.replayFrom = null;
      out.push({ route: { to: generation, replay_from: replayFrom } });
      this.scheduleSessionTimers(now, live, out);
      this.set({ s: "streaming", live }, out);
    } else if (s.s === "rotating" && s.new === generation) {
      s.newReady = live;
      if (s.forced) {
        out.push({ changed: this.view() });
        this.forceHandOver(now, s.old, out);
      } else if (s.old.turnOpen || !this.quiet) {
        out.push({ changed: this.view() });
      } else {
        this.handOver(now, false, out);
      }
    }
  }

  forceHandOver(now, old, out) {
    out.push({ force_endpoint: { generation: old.generation } });
    out.push({ schedule: { timer: timer.handoverGrace(old.generation), at: now + grace(this.cfg, old) } });
  }

  scheduleSessionTimers(now, live, out) {
    out.push({ schedule: { timer: timer.healthy(live.generation), at: now + this.cfg.healthyAfterMs } });
    if (this.cfg.rotation) {
      const at = Math.max(now, rotateAt(this.cfg, live));
      out.push({ prepare_token: { by: at } });
      out.push({ schedule: { timer: timer.rotate(live.generation), at } });
    }
  }

  turn(now, generation, endOfTurn, out) {
    const s = this.state;
    if (s.s === "streaming" && s.live.generation === generation) {
      s.live.turnOpen = !endOfTurn;
    } else if (s.s === "rotating" && s.old.generation === generation) {
      s.old.turnOpen = !endOfTurn;
      if (endOfTurn && s.newReady && this.quiet) this.handOver(now, false, out);
    }
  }

  handOver(now, forced, out) {
    const s = this.state;
    if (s.s !== "rotating" || !s.newReady) return;
    const next = s.newReady;
    this.state = { s: "idle" };
    this.retire(now, s.old.generation, next.generation, out);
    out.push({ notice: { kind: "rotated", from: s.old.generation, to: next.generation, forced: forced || s.forced } });
    this.scheduleSessionTimers(now, next, out);
    this.set({ s: "streaming", live: next }, out);
  }

  lost(generation, closed, out) {
    out.push({ notice: { kind: "lost", generation, failure: closed.failure } });
  }

  closed(now, generation, closed, out) {
    const s = this.state;
    if (s.s === "draining" && s.generation === generation && this.finishing && !this.failure) {
      out.push({ drop: { generation } });
      this.lost(generation, closed, out);
      this.replayFrom = generation;
      this.afterLoss(now, closed, out);
    } else if (s.s === "draining" && s.generation === generation) {
      this.set({ s: "stopped" }, out);
    } else if (s.s === "connecting" && s.generation === generation) {
      this.lost(generation, closed, out);
      this.afterLoss(now, closed, out);
    } else if (s.s === "streaming" && s.live.generation === generation) {
      out.push({ route: { to: null, replay_from: null } });
      this.lost(generation, closed, out);
      this.replayFrom = generation;
      this.afterLoss(now, closed, out);
    } else if (s.s === "rotating") {
      if (s.old.generation === generation) {
        this.lost(generation, closed, out);
        if (s.newReady) {
          const next = s.newReady;
          out.push({ route: { to: next.generation, replay_from: generation } });
          this.scheduleSessionTimers(now, next, out);
          this.set({ s: "streaming", live: next }, out);
        } else {
          out.push({ route: { to: null, replay_from: null } });
          this.replayFrom = generation;
          this.set({ s: s.newConnecting ? "connecting" : "minting", generation: s.new, cause: "expired" }, out);
        }
      } else if (s.new === generation) {
        this.set({ s: "streaming", live: s.old }, out);
      }
    }
  }

  afterLoss(now, closed, out) {
    const failure = closed.failure;
    switch (this.recovery(failure.class)) {
      case "remint":
        this.mint(now, "expired", out);
        break;
      case "remint_once":
        if (!this.tokenRetryUsed) {
          this.tokenRetryUsed = true;
          out.push({ notice: { kind: "retrying_token", generation: this.nextGen } });
          this.mint(now, "token_rejected", out);
        } else {
          this.set({ s: "failed", failure }, out);
        }
        break;
      case "done":
        this.failOrBackOff(now, "transient", failure, out);
        break;
      default:
        this.failOrBackOff(now, failure.class, failure, out);
    }
  }

  timer(now, t, out) {
    const s = this.state;
    switch (t.kind) {
      case "begin_timeout": {
        const waiting =
          (s.s === "connecting" && s.generation === t.generation) ||
          (s.s === "rotating" && s.new === t.generation && !s.newReady);
        if (waiting) {
          out.push({ drop: { generation: t.generation } });
          this.closed(now, t.generation, { failure: noBegin(), afterBegin: false }, out);
        }
        break;
      }
      case "rotate":
        this.rotate(now, t.generation, out);
        break;
      case "handover_deadline":
        if (s.s === "rotating" && s.old.generation === t.generation) {
          s.forced = true;
          if (s.newReady) this.forceHandOver(now, s.old, out);
        }
        break;
      case "handover_grace":
        if (s.s === "rotating" && s.old.generation === t.generation && s.newReady) this.handOver(now, true, out);
        break;
      case "drain":
        if (s.s === "draining" && s.generation === t.generation) {
          out.push({ drop: { generation: t.generation } });
          out.push({ notice: { kind: "drain_timed_out", generation: t.generation } });
          if (this.finishing && !this.failure) {
            this.replayFrom = t.generation;
            this.mint(now, "dropped", out);
          } else {
            this.set({ s: "stopped" }, out);
          }
        } else {
          out.push({ drop: { generation: t.generation } });
        }
        break;
      case "healthy":
        if (s.s === "streaming" && s.live.generation === t.generation) {
          this.attempt = 0;
          this.healthy = true;
          this.lasted();
        }
        break;
      case "backoff_done":
        if (s.s === "backoff" && s.attempt === t.attempt) this.mint(now, "dropped", out);
        break;
      default:
        throw new Error(`unknown timer ${t.kind}`);
    }
  }

  rotate(now, generation, out) {
    const s = this.state;
    if (s.s !== "streaming" || s.live.generation !== generation || !this.cfg.rotation) return;
    const old = s.live;
    this.lasted();
    const deadline = Math.max(now, handoverDeadline(this.cfg, old));
    this.mints.push(now);
    const next = this.newGen();
    this.set({ s: "rotating", old, new: next, newReady: null, newConnecting: false, forced: false }, out);
    out.push({ mint: { generation: next } });
    out.push({ schedule: { timer: timer.handoverDeadline(generation), at: deadline } });
  }
}
