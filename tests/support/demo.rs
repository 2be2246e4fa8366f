//! The bundled demo recording, as the tests that check its transcript word for word see it.
//! Include it with `#[path = "support/demo.rs"] mod demo;`.
#![allow(dead_code)]

/// The demo recording's sentences, as its script says them (lower case, no punctuation).
pub fn recording_sentences() -> Vec<String> {
    aai_live::demo::script()
        .expect("the bundled script")
        .turns
        .iter()
        .map(|t| {
            let words: Vec<&str> = t.words.iter().map(|w| w.text.as_str()).collect();
            words.join(" ")
        })
        .collect()
}
