//! The doctor's report, shared by `aai-live doctor` and `doctor --server`: a step's line
//! ([`Step`]), how it is written (text or JSON), and the [`Recorder`] that writes each line as
//! soon as it is known and derives the skipped ones from the model ([`Check::dependents`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

use super::check::{Check, Suite};
use crate::diagnosis::Diagnosis;

/// What a step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

/// One step's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Serialized as the step's name (`token-endpoint`).
    pub step: Check,
    pub status: Status,
    /// What was found (never a secret).
    pub detail: String,
    /// The cause in plain words, for a warning or a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    /// What to do, for a warning or a failure.
    pub fix: Option<&'static str>,
    /// The section of docs/troubleshooting.md (`aai-live explain SECTION`).
    pub section: Option<&'static str>,
}

impl Step {
    pub fn pass(step: Check, detail: impl Into<String>) -> Self {
        Self {
            step,
            status: Status::Pass,
            detail: detail.into(),
            cause: None,
            fix: None,
            section: None,
        }
    }

    pub fn skip(step: Check, detail: impl Into<String>) -> Self {
        Self {
            status: Status::Skip,
            ..Self::pass(step, detail)
        }
    }

    pub fn warn(step: Check, detail: impl Into<String>, diagnosis: Diagnosis) -> Self {
        Self {
            status: Status::Warn,
            ..Self::fail(step, detail, diagnosis)
        }
    }

    pub fn fail(step: Check, detail: impl Into<String>, diagnosis: Diagnosis) -> Self {
        Self {
            step,
            status: Status::Fail,
            detail: crate::untrusted::for_terminal(&detail.into()).into_owned(),
            cause: Some(diagnosis.title()),
            fix: Some(diagnosis.fix()),
            section: Some(diagnosis.section()),
        }
    }
}

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per step with ✔/⚠/✘ (or ASCII), cause, fix and section beneath a problem.
    Text { ascii: bool },
    /// One JSON object per step and line: `step`, `status`, `detail`, `fix`, `section`.
    Json,
}

/// Whether to draw ASCII only: asked for, a dumb terminal, or a locale that is not UTF-8.
pub fn wants_ascii(asked: bool, env: &dyn Fn(&str) -> Option<String>) -> bool {
    asked || env("TERM").is_some_and(|t| t == "dumb") || !crate::app::state::locale_is_utf8(env)
}

/// One step as `format` writes it.
pub fn render(step: &Step, format: Format) -> String {
    match format {
        Format::Text { ascii } => render_text(step, ascii),
        Format::Json => render_json(step),
    }
}

/// One step as the text report shows it.
pub fn render_text(step: &Step, ascii: bool) -> String {
    let mark = match (step.status, ascii) {
        (Status::Pass, false) => "✔",
        (Status::Warn, false) => "⚠",
        (Status::Fail, false) => "✘",
        (Status::Skip, false) => "–",
        (Status::Pass, true) => "[ok]  ",
        (Status::Warn, true) => "[warn]",
        (Status::Fail, true) => "[FAIL]",
        (Status::Skip, true) => "[skip]",
    };
    let mut text = format!("{mark} {:<18} {}\n", step.step.name(), step.detail);
    if let Some(cause) = step.cause {
        let _ = writeln!(text, "    cause: {cause}");
    }
    if let Some(fix) = step.fix {
        let fix = fix.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(text, "    fix:   {fix}");
    }
    if let Some(section) = step.section {
        let _ = writeln!(text, "    more:  aai-live explain {section}");
    }
    if ascii {
        text = text
            .replace('→', "->")
            .replace('±', "+/-")
            .replace(['—', '–'], "-")
            .chars()
            .map(|c| if c.is_ascii() { c } else { '?' })
            .collect();
    }
    text
}

/// One step as a JSON line.
pub fn render_json(step: &Step) -> String {
    let mut value = serde_json::to_value(step).unwrap_or_default();
    if let Some(fix) = step.fix {
        value["fix"] = fix.split_whitespace().collect::<Vec<_>>().join(" ").into();
    }
    format!("{value}\n")
}

/// The steps as they were written, and the exit status they make.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: Vec<Step>,
}

impl Report {
    /// 0 when nothing failed (warnings allowed), 1 when a step failed.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.steps.iter().any(|s| s.status == Status::Fail))
    }

    pub fn step(&self, check: Check) -> Option<&Step> {
        self.steps.iter().find(|s| s.step == check)
    }
}

/// Writes each step of one suite as soon as it is known and remembers it. A run asks
/// [`Recorder::runs`] before each step and [`Recorder::record`]s what it found; the steps that
/// need one that failed or was skipped are written as skipped here, in their place.
pub(super) struct Recorder<'a> {
    out: &'a mut (dyn Write + Send),
    format: Format,
    keep_going: bool,
    suite: Suite,
    report: Report,
    /// Steps still to come that will not run, each with its line's detail: the dependents of a
    /// step that failed or was skipped, until their place in the order is reached.
    blocked: BTreeMap<Check, String>,
    /// The target is a local emulator: fixes speak of it where the section has words for it.
    local: bool,
}

impl<'a> Recorder<'a> {
    pub(super) fn new(
        suite: Suite,
        out: &'a mut (dyn Write + Send),
        format: Format,
        keep_going: bool,
    ) -> Self {
        Self {
            out,
            format,
            keep_going,
            suite,
            report: Report::default(),
            blocked: BTreeMap::new(),
            local: false,
        }
    }

    /// The doctor checks a local emulator (a loopback endpoint): its fixes say what to do there
    /// (its key, its address) rather than speak of the AssemblyAI dashboard or port 443.
    pub(super) fn against_emulator(mut self, local: bool) -> Self {
        self.local = local;
        self
    }

    /// Whether `check` is to run now: not once a failure stopped the doctor, and not when a step
    /// it needs did not pass (then its skipped line is written here).
    pub(super) fn runs(&mut self, check: Check) -> bool {
        if self.stopped() {
            return false;
        }
        self.write_blocked_before(check);
        match self.blocked.remove(&check) {
            Some(why) => {
                self.write(Step::skip(check, why));
                false
            }
            None => true,
        }
    }

    /// Write what a step found. A failure or a skip blocks the steps that need it.
    pub(super) fn record(&mut self, step: Step) {
        debug_assert!(
            !self.stopped(),
            "{:?} ran after the doctor stopped",
            step.step
        );
        self.write_blocked_before(step.step);
        debug_assert!(
            !self.blocked.contains_key(&step.step),
            "{:?} ran though a step it needs did not pass",
            step.step
        );
        let (check, status) = (step.step, step.status);
        self.write(step);
        if let Some(why) = skipped_because(check, status) {
            for dependent in check.dependents() {
                self.blocked.entry(dependent).or_insert_with(|| why.clone());
            }
        }
    }

    /// A step failed and the doctor stops there.
    pub(super) fn stopped(&self) -> bool {
        !self.keep_going && self.report.exit_code() != 0
    }

    /// The report, the steps still blocked written as skipped (unless the doctor stopped).
    pub(super) fn finish(mut self) -> Report {
        if !self.stopped() {
            for (check, why) in std::mem::take(&mut self.blocked) {
                self.write(Step::skip(check, why));
            }
            // A run that did not stop reports every step of the model, in order: a variant the
            // run never reaches (or reports twice) shows here, in every test that runs it.
            debug_assert_eq!(
                self.report.steps.iter().map(|s| s.step).collect::<Vec<_>>(),
                Check::all(self.suite).collect::<Vec<_>>(),
                "the run and the model of its steps differ"
            );
        }
        self.report
    }

    fn write_blocked_before(&mut self, check: Check) {
        while let Some(entry) = self.blocked.first_entry() {
            if *entry.key() >= check {
                break;
            }
            let (blocked, why) = entry.remove_entry();
            self.write(Step::skip(blocked, why));
        }
    }

    fn write(&mut self, mut step: Step) {
        debug_assert_eq!(step.step.suite(), self.suite, "{:?}", step.step);
        if self.local
            && let Some(fix) = step
                .section
                .and_then(crate::diagnosis::section)
                .and_then(|s| s.emulator_fix)
        {
            step.fix = Some(fix);
        }
        debug_assert!(
            self.report
                .steps
                .last()
                .is_none_or(|last| last.step < step.step),
            "{:?} out of order",
            step.step
        );
        let _ = self.out.write_all(render(&step, self.format).as_bytes());
        let _ = self.out.flush();
        self.report.steps.push(step);
    }
}

/// The detail of the steps that cannot run because `check` ended with `status`, or `None` when
/// they can.
fn skipped_because(check: Check, status: Status) -> Option<String> {
    let how = match status {
        Status::Pass | Status::Warn => return None,
        Status::Fail => "failed",
        Status::Skip => "skipped",
    };
    let name = check.name();
    Some(match check.lack() {
        Some(lack) => format!("skipped: {lack} ({name} {how})"),
        None => format!("skipped: {name} {how}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn lines_show_marks_cause_fix_and_section() {
        let step = Step::fail(Check::Token, "HTTP 401", Diagnosis::TokenUnauthorized);
        let text = render_text(&step, false);
        assert!(text.starts_with("✘ token "), "{text}");
        assert!(text.contains("more:  aai-live explain token-401"), "{text}");
        assert!(
            text.contains("cause: The token endpoint refuses the API key"),
            "{text}"
        );
        let ascii = render_text(&step, true);
        assert!(ascii.starts_with("[FAIL] token"), "{ascii}");
        let layers = render_text(&Step::pass(Check::Config, "defaults → file; ±5 s"), true);
        assert_eq!(
            layers,
            "[ok]   config             defaults -> file; +/-5 s\n"
        );
        assert!(ascii.is_ascii());
        let json: serde_json::Value =
            serde_json::from_str(render_json(&step).trim()).expect("json");
        assert_eq!(json["status"], "fail");
        assert_eq!(json["section"], "token-401");
        assert_eq!(json["step"], "token");
        assert!(json["fix"].as_str().expect("fix").contains("the key again"));
        let pass: serde_json::Value =
            serde_json::from_str(render_json(&Step::pass(Check::Files, "ok")).trim())
                .expect("json");
        assert_eq!(pass["status"], "pass");
        assert!(pass["fix"].is_null() && pass["section"].is_null());
        assert_eq!(render(&step, Format::Json), render_json(&step));
    }

    #[test]
    fn ascii_where_the_terminal_cannot_show_marks() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(!wants_ascii(false, &env(&[("LANG", "en_US.UTF-8")])));
        assert!(wants_ascii(true, &env(&[("LANG", "en_US.UTF-8")])));
        assert!(wants_ascii(false, &env(&[("LANG", "C")])));
        assert!(wants_ascii(false, &env(&[])));
        assert!(wants_ascii(
            false,
            &env(&[("LANG", "en_US.UTF-8"), ("TERM", "dumb")])
        ));
    }

    /// A run of `suite` as the real ones go: each step behind `runs`, `outcome` saying how each
    /// ends. Returns the report and what was written.
    fn scripted(
        suite: Suite,
        keep_going: bool,
        outcome: impl Fn(Check) -> Status,
    ) -> (Report, String) {
        let mut out = Vec::new();
        let report = {
            let mut r = Recorder::new(suite, &mut out, Format::Json, keep_going);
            for check in Check::all(suite) {
                if r.runs(check) {
                    r.record(match outcome(check) {
                        Status::Pass => Step::pass(check, "ok"),
                        Status::Skip => Step::skip(check, "not asked for"),
                        Status::Warn => Step::warn(check, "odd", Diagnosis::SilentInput),
                        Status::Fail => Step::fail(check, "broken", Diagnosis::ConfigInvalid),
                    });
                }
            }
            r.finish()
        };
        (report, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn with_keep_going_a_failure_skips_exactly_its_dependents_and_the_rest_runs() {
        for failed in Check::iter() {
            let suite = failed.suite();
            let (report, written) = scripted(suite, true, |c| {
                if c == failed {
                    Status::Fail
                } else {
                    Status::Pass
                }
            });
            let dependents = failed.dependents();
            let names: Vec<Check> = report.steps.iter().map(|s| s.step).collect();
            assert_eq!(names, Check::all(suite).collect::<Vec<_>>(), "{failed:?}");
            for step in &report.steps {
                let expected = if step.step == failed {
                    Status::Fail
                } else if dependents.contains(&step.step) {
                    Status::Skip
                } else {
                    Status::Pass
                };
                assert_eq!(step.status, expected, "{failed:?} failed: {step:?}");
                if expected == Status::Skip {
                    assert!(
                        step.detail.contains(&format!("({} failed)", failed.name()))
                            || step.detail == format!("skipped: {} failed", failed.name()),
                        "{step:?}"
                    );
                }
            }
            assert_eq!(report.exit_code(), 1);
            assert_eq!(written.lines().count(), report.steps.len(), "{written}");
        }
    }

    #[test]
    fn without_keep_going_the_report_ends_at_the_failure() {
        for failed in Check::iter() {
            let (report, _) = scripted(failed.suite(), false, |c| {
                if c == failed {
                    Status::Fail
                } else {
                    Status::Pass
                }
            });
            assert_eq!(report.steps.last().map(|s| s.step), Some(failed));
            assert!(
                report.steps[..report.steps.len() - 1]
                    .iter()
                    .all(|s| s.status == Status::Pass)
            );
        }
    }

    #[test]
    fn skipped_lines_name_the_step_and_what_is_missing() {
        let (report, _) = scripted(Suite::Run, true, |c| match c {
            Check::Token => Status::Fail,
            _ => Status::Pass,
        });
        let begin = report.step(Check::Begin).expect("begin");
        assert_eq!(begin.detail, "skipped: no token (token failed)");
        let (report, _) = scripted(Suite::Run, true, |c| match c {
            Check::Begin => Status::Fail,
            _ => Status::Pass,
        });
        let clock = report.step(Check::Clock).expect("clock");
        assert_eq!(clock.detail, "skipped: begin failed");
        assert_eq!(
            report.step(Check::Terminate).map(|s| s.status),
            Some(Status::Skip)
        );
        // A step that is skipped (not asked for) takes its dependents along, without failing.
        let (report, _) = scripted(Suite::Server, false, |c| match c {
            Check::ServerCredential => Status::Skip,
            _ => Status::Pass,
        });
        assert_eq!(report.exit_code(), 0);
        let redeem = report.step(Check::ServerRedeem).expect("redeem");
        assert_eq!(redeem.status, Status::Skip);
        assert_eq!(
            redeem.detail,
            "skipped: no token answer (server-credential skipped)"
        );
        assert_eq!(
            report.step(Check::ServerCors).map(|s| s.status),
            Some(Status::Pass)
        );
    }

    #[test]
    fn a_run_that_returns_early_still_reports_the_blocked_steps_in_order() {
        // The local run returns from its network steps at the failure; the blocked steps come
        // before the input's line, and the report ends complete.
        let mut out = Vec::new();
        let mut r = Recorder::new(Suite::Run, &mut out, Format::Json, true);
        r.record(Step::pass(Check::Config, "ok"));
        r.record(Step::pass(Check::Secret, "ok"));
        r.record(Step::fail(
            Check::TokenEndpoint,
            "refused",
            Diagnosis::TcpFailure,
        ));
        assert!(r.runs(Check::Input));
        r.record(Step::pass(Check::Input, "ok"));
        assert!(r.runs(Check::Files));
        r.record(Step::pass(Check::Files, "ok"));
        let report = r.finish();
        let names: Vec<&str> = report.steps.iter().map(|s| s.step.name()).collect();
        assert_eq!(
            names,
            Check::all(Suite::Run).map(Check::name).collect::<Vec<_>>()
        );
        let text = String::from_utf8(out).expect("utf-8");
        let token = text
            .lines()
            .find(|l| l.contains("\"step\":\"token\""))
            .expect("token line");
        assert!(
            token.contains("skipped: token-endpoint failed") && token.contains("\"skip\""),
            "{token}"
        );
    }
}
