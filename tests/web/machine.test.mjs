// The browser client's session machine (assets/web/aai-live-machine.js) held to the Rust
// machine's scenario table: every row of tests/fixtures/machine-rows.json (exported from
// src/session/machine/tests.rs) is played here, input by input with its draw, and every
// expectation checked as the Rust table checks it.
//   AAI_LIVE_CLOSE_CODES=close-codes.json node --test tests/web/machine.test.mjs
// (tests/browser_js.rs runs it with the table `serve` publishes).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { Machine } from "../../assets/web/aai-live-machine.js";

const fixtures = JSON.parse(readFileSync(new URL("../fixtures/machine-rows.json", import.meta.url), "utf8"));
const table = process.env.AAI_LIVE_CLOSE_CODES
  ? JSON.parse(readFileSync(process.env.AAI_LIVE_CLOSE_CODES, "utf8"))
  : null;

const key = (timer) => JSON.stringify(timer, Object.keys(timer).sort());

function deepEqual(a, b) {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

/** Does the view match the expectation (`is`, `backoff` by attempt and class, `failed`)? */
function viewMatches(want, got) {
  if (want.is) return deepEqual(got, want.is);
  if (want.backoff) return got.state === "backoff" && got.attempt === want.backoff.attempt && got.class === want.backoff.class;
  if (want.failed) return got.state === "failed" && got.class === want.failed.class && got.explain === want.failed.explain;
  throw new Error(`unknown view expectation ${JSON.stringify(want)}`);
}

/** Does the effect match the expectation? Instants are truncated ms after t0 (0 here). */
function effectMatches(want, got) {
  const [kind] = Object.keys(want);
  if (!(kind in got)) return false;
  const w = want[kind];
  const g = got[kind];
  switch (kind) {
    case "schedule": {
      const at = Math.floor(g.at);
      return deepEqual(g.timer, w.timer) && at >= w.from_ms && at <= w.to_ms;
    }
    case "prepare_token":
      return Math.floor(g.by) === w.by_ms;
    case "changed":
      return viewMatches(w, g);
    default:
      return deepEqual(g, w);
  }
}

function play(row) {
  const m = new Machine(row.config, table);
  let now = 0;
  let last = [];
  const scheduled = new Map();
  row.steps.forEach((step, i) => {
    const where = `row ${row.name}, step ${i} ${JSON.stringify(step)} at +${now} ms`;
    if (step.input) {
      let at;
      if (step.at_ms !== undefined) at = step.at_ms;
      else if (step.after_ms !== undefined) at = now + step.after_ms;
      else {
        at = scheduled.get(key(step.when_scheduled));
        assert.ok(at !== undefined, `${where}: ${JSON.stringify(step.when_scheduled)} was never scheduled`);
      }
      assert.ok(at >= now, `${where}: the row goes back in time`);
      now = at;
      last = m.handle(now, step.input, step.draw);
      for (const e of last) if (e.schedule) scheduled.set(key(e.schedule.timer), e.schedule.at);
      return;
    }
    const got = JSON.stringify(last);
    switch (step.expect) {
      case "effects":
        assert.ok(
          step.effects.length === last.length && step.effects.every((w, j) => effectMatches(w, last[j])),
          `${where}: the effects are not exactly these: ${got}`,
        );
        break;
      case "has":
        for (const w of step.effects) {
          assert.ok(last.some((e) => effectMatches(w, e)), `${where}: no effect matches ${JSON.stringify(w)} in ${got}`);
        }
        break;
      case "lacks":
        assert.ok(!last.some((e) => step.kind in e), `${where}: there is a ${step.kind} effect in ${got}`);
        break;
      case "changes": {
        const views = last.filter((e) => e.changed).map((e) => e.changed);
        assert.ok(
          views.length === step.views.length && step.views.every((w, j) => viewMatches(w, views[j])),
          `${where}: the state changes are ${JSON.stringify(views)}`,
        );
        break;
      }
      case "view":
        assert.ok(viewMatches(step.view, m.view()), `${where}: the view is ${JSON.stringify(m.view())}`);
        break;
      case "done":
        assert.ok(m.isDone(), `${where}: not done: ${JSON.stringify(m.view())}`);
        break;
      case "attempts":
        assert.equal(m.attempt, step.attempts, `${where}: attempts`);
        break;
      default:
        throw new Error(`${where}: unknown expectation ${step.expect}`);
    }
  });
}

test("the fixtures hold rows, and list what the browser cannot express with a reason", () => {
  assert.ok(fixtures.rows.length >= 40, `${fixtures.rows.length} rows`);
  for (const skipped of fixtures.not_for_the_browser) {
    assert.ok(skipped.name && skipped.reason, JSON.stringify(skipped));
  }
});

const skipped = new Set(fixtures.not_for_the_browser.map((s) => s.name));
for (const row of fixtures.rows) {
  test(`machine row ${row.name}`, { skip: !table || skipped.has(row.name) }, () => play(row));
}

test("a wrong expectation fails its row (the harness can fail)", { skip: !table }, () => {
  const row = structuredClone(fixtures.rows[0]);
  row.steps.push({ expect: "view", view: { is: { state: "stopped" } } });
  assert.throws(() => play(row), /the view is/);
});
