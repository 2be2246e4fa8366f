//! A running `aai-live` whose NDJSON lines arrive on a channel while it runs (the tests that
//! act on a run as it goes add their own methods).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
use std::sync::mpsc;

pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<serde_json::Value>,
    /// The lines taken off the channel so far.
    pub seen: Vec<serde_json::Value>,
}

impl Running {
    /// Spawn `command` (its stdout piped) and read its lines on a thread of their own.
    pub fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("start aai-live");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }
}
