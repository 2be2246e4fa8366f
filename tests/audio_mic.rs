//! The microphone path end to end, without sound hardware: ALSA's `file` plugin turns a raw file
//! into a capture device (a "fake microphone", see docs/audio.md), declared in an `.asoundrc` in
//! a temporary HOME. alsa-lib reads `~/.asoundrc` once per process, and changing HOME in-process
//! is not allowed here, so the capture checks run in a child process: this test binary again,
//! filtered to one ignored test, with HOME pointing at the fixture. `aai-live devices` is checked
//! the same way, as a child process with its own HOME.
#![cfg(feature = "mic")]

use std::path::Path;
use std::process::{Command, Output};

use aai_live::audio::{self, AudioError, AudioOptions, Converter};
use aai_live::config::InputSpec;

/// Seconds of signal in the fake microphone's file, followed by `PAD_SECONDS` of a quiet tone:
/// past its end the plugin repeats stale data, so the tests only look at the start.
const SIGNAL_SECONDS: usize = 1;
const PAD_SECONDS: usize = 4;
const CHILD_ENV: &str = "AAI_LIVE_FAKE_MIC_DIR";

/// The fake microphone's audio: 48 kHz stereo f32 (cpal's default for the plugin), different
/// in each channel.
fn signal() -> Vec<f32> {
    let rate = 48_000.0;
    (0..48_000 * (SIGNAL_SECONDS + PAD_SECONDS))
        .flat_map(|n| {
            let t = n as f64 / rate;
            if n >= 48_000 * SIGNAL_SECONDS {
                let quiet = (0.01 * (std::f64::consts::TAU * 500.0 * t).sin()) as f32;
                return [quiet, quiet];
            }
            let left = 0.3 * (std::f64::consts::TAU * 440.0 * t).sin()
                + 0.1 * (std::f64::consts::TAU * 3000.0 * t).sin();
            let right = 0.25 * (std::f64::consts::TAU * 1000.0 * t).sin() * (t * 3.0).cos();
            [left as f32, right as f32]
        })
        .collect()
}

/// A HOME whose `.asoundrc` declares `fakemic` (and makes it the default).
fn fake_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let raw = home.path().join("fakemic.raw");
    let bytes: Vec<u8> = signal().iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&raw, bytes).expect("write raw audio");
    let asoundrc = format!(
        r#"pcm.fakemic {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{}"
    format "raw"
    hint {{ show on description "Fake microphone (F32 48k stereo file)" }}
}}
pcm.!default fakemic
"#,
        raw.display()
    );
    std::fs::write(home.path().join(".asoundrc"), asoundrc).expect("write .asoundrc");
    home
}

/// Run one ignored test of this binary in a child process with HOME set.
fn run_child(test: &str, home: &Path) -> Output {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOME", home)
        .env(CHILD_ENV, home)
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child {test} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "child {test} did not run:\n{stdout}"
    );
    assert!(
        !stderr.contains("ALSA lib"),
        "alsa-lib wrote to stderr:\n{stderr}"
    );
    out
}

fn aai_live_devices(home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aai-live"))
        .arg("devices")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env_remove("AAI_LIVE_CONFIG")
        .output()
        .expect("run aai-live devices")
}

/// Whether ALSA sees any sound card on this machine.
fn machine_has_sound_cards() -> bool {
    std::fs::read_to_string("/proc/asound/cards")
        .is_ok_and(|cards| !cards.trim().is_empty() && !cards.contains("no soundcards"))
}

#[test]
fn capture_through_a_fake_alsa_microphone() {
    let home = fake_home();
    run_child("fake_mic_child", home.path());
}

#[test]
#[ignore = "run by capture_through_a_fake_alsa_microphone in a child process with HOME set"]
fn fake_mic_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        // What the pipeline must produce from the file's frames, however the callback splits them.
        let mut expected = Vec::new();
        Converter::new(48_000, 2, 16_000)
            .expect("converter")
            .push(&signal(), &mut expected)
            .expect("convert");
        let half_second = 8000;
        for device in [Some("alsa:fakemic"), Some("Fake microphone"), None] {
            let options = AudioOptions {
                device: device.map(str::to_owned),
                ..AudioOptions::default()
            };
            let mut input = audio::open(&InputSpec::Mic(None), &options)
                .await
                .unwrap_or_else(|e| panic!("open {device:?}: {e}"));
            assert!(input.name.starts_with("microphone: "), "{}", input.name);
            if device.is_some() {
                assert_eq!(
                    input.name,
                    "microphone: Fake microphone (F32 48k stereo file)"
                );
            }
            assert_eq!(input.native_format().to_string(), "f32 48000 Hz 2 ch");
            let mut got = Vec::new();
            let mut next_offset = 0;
            while got.len() < half_second {
                let chunk = input
                    .chunks
                    .recv()
                    .await
                    .expect("the microphone keeps going");
                assert_eq!(chunk.offset, next_offset);
                assert_eq!(chunk.samples.len(), 800);
                next_offset = chunk.end();
                got.extend(chunk.samples);
            }
            assert_eq!(
                &got[..],
                &expected[..half_second],
                "{device:?}: captured audio differs"
            );
            // The conversion may be ahead of what was read, in the quiet padding by now.
            let level = *input.level.borrow();
            assert!(level.rms_dbfs > -50.0 && !level.clipping, "{level:?}");
        }

        // The fake microphone runs far faster than real time: with nobody reading, the chunk
        // channel fills, then the queue behind it, and the dropped frames must show.
        let options = AudioOptions {
            device: Some("fakemic".into()),
            ..AudioOptions::default()
        };
        let input = audio::open(&InputSpec::Mic(None), &options)
            .await
            .expect("open");
        let mut stats = input.stats.clone();
        let overflowed = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            stats.wait_for(|s| s.dropped_frames > 0),
        )
        .await
        .is_ok_and(|seen| seen.is_ok());
        assert!(overflowed, "no overflow reported: {:?}", *stats.borrow());
        assert!(stats.borrow().overflows >= 1);
        drop(input);

        let unknown = AudioOptions {
            device: Some("fakemik".into()),
            ..AudioOptions::default()
        };
        let e = audio::open(&InputSpec::Mic(None), &unknown)
            .await
            .expect_err("no such device");
        assert!(matches!(e, AudioError::DeviceNotFound { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("did you mean \"alsa:fakemic\"?"), "{text}");

        let devices = audio::list_devices().expect("devices");
        let fake = devices
            .iter()
            .find(|d| d.id == "alsa:fakemic")
            .expect("the fake microphone is listed");
        assert_eq!(fake.name, "Fake microphone (F32 48k stereo file)");
        assert!(devices[0].is_default && devices[0].id == "alsa:default");
    });
}

#[test]
fn without_hardware_the_default_microphone_fails_clearly() {
    if machine_has_sound_cards() {
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    run_child("no_hardware_child", home.path());
}

#[test]
#[ignore = "run by without_hardware_the_default_microphone_fails_clearly in a child process"]
fn no_hardware_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let e = runtime
        .block_on(audio::open(&InputSpec::Mic(None), &AudioOptions::default()))
        .expect_err("no microphone without sound hardware");
    let text = e.to_string();
    assert!(
        text.contains("cannot be used") && text.contains("not available"),
        "{text}"
    );
    let report = audio::device_report().expect("device report");
    assert_eq!(report.sound_cards, Some(0));
}

#[test]
fn devices_without_sound_hardware_says_so_and_exits_0() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = aai_live_devices(home.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.is_empty(),
        "nothing on stderr, ALSA noise included:\n{stderr}"
    );
    if machine_has_sound_cards() {
        assert!(stdout.contains("input devices"), "{stdout}");
    } else {
        assert!(stdout.starts_with("No sound hardware found"), "{stdout}");
    }
}

#[test]
fn devices_lists_the_fake_microphone_and_marks_the_default() {
    let home = fake_home();
    let out = aai_live_devices(home.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(stdout.contains("\n* alsa:default "), "{stdout}");
    let line = stdout
        .lines()
        .position(|l| l.contains("alsa:fakemic"))
        .expect("fakemic listed");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[line].contains("Fake microphone (F32 48k stereo file)"),
        "{stdout}"
    );
    assert!(
        lines[line + 1].contains("captures f32 48000 Hz 2 ch"),
        "{stdout}"
    );
    assert!(lines[line + 1].contains("channels "), "{stdout}");
}
