//! System audio (`monitor`, `monitor:SOURCE`): what the machine plays, recorded from a
//! PulseAudio or PipeWire monitor source by a recorder found on PATH at run time — `parec`
//! (PulseAudio's, and what PipeWire's pulse server answers too), else `pw-record` — asked for raw
//! s16le mono at the stream's rate, and read like stdin through [`command`](super::command).
//!
//! Nothing is linked: no PulseAudio or PipeWire library is needed to build or to run aai-live
//! without this input. Whatever cannot work is said when the input is opened — no recorder
//! installed, no server answering, an unknown source, a recorder that gives up at once — and
//! never falls back to the microphone, which would transcribe the wrong side of a meeting.

use std::path::PathBuf;
use std::time::Duration;

use super::command::{self, CommandSource};
use super::devices::{self, DeviceInfo, SystemSources};
use super::{AudioError, AudioInput, AudioOptions, pull};
use crate::config::{SampleFormat, StdinFormat};

/// Time given to `pactl` to answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// A recorder that cannot open its source exits within this (parec: "Stream error: No such
/// entity" after a few milliseconds); one still running then is taken as recording.
const STARTUP_GRACE: Duration = Duration::from_millis(300);
/// The recorder's buffering: small, so audio reaches the session promptly (it is the latency
/// of a live source), yet a few wake-ups per chunk at most.
const LATENCY_MS: u32 = 20;
/// What `parec` records for plain `monitor`.
pub const DEFAULT_MONITOR: &str = "@DEFAULT_MONITOR@";

/// What to install, for the error messages.
const INSTALL: &str = "install pulseaudio-utils (Debian/Ubuntu: apt install pulseaudio-utils; \
                       it provides parec and pactl, and works with PipeWire's pipewire-pulse \
                       too) or pipewire-bin (for pw-record)";

/// The program that records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorder {
    Parec(PathBuf),
    PwRecord(PathBuf),
}

impl Recorder {
    /// `parec` if it is on PATH, else `pw-record`.
    pub fn find() -> Option<Self> {
        command::find_program("parec")
            .map(Self::Parec)
            .or_else(|| command::find_program("pw-record").map(Self::PwRecord))
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Parec(_) => "parec",
            Self::PwRecord(_) => "pw-record",
        }
    }

    /// The command line recording `source` (`None`: the default output's monitor) as raw s16le
    /// mono at `rate`.
    pub fn argv(&self, source: Option<&str>, rate: u32) -> Vec<String> {
        match self {
            Self::Parec(path) => vec![
                path.display().to_string(),
                format!("--device={}", source.unwrap_or(DEFAULT_MONITOR)),
                "--format=s16le".into(),
                format!("--rate={rate}"),
                "--channels=1".into(),
                "--raw".into(),
                format!("--latency-msec={LATENCY_MS}"),
                "--client-name=aai-live".into(),
                "--stream-name=system audio".into(),
            ],
            Self::PwRecord(path) => {
                let mut argv = vec![
                    path.display().to_string(),
                    "--raw".into(),
                    "--format=s16".into(),
                    format!("--rate={rate}"),
                    "--channels=1".into(),
                    format!("--latency={LATENCY_MS}ms"),
                ];
                // PipeWire has no monitor sources of its own: a stream that captures a sink
                // records what it plays. pipewire-pulse names those monitors `SINK.monitor`.
                let target = match source {
                    None => None,
                    Some(name) => match name.strip_suffix(".monitor") {
                        Some(sink) => Some((sink, true)),
                        None => Some((name, false)),
                    },
                };
                if let Some((target, _)) = target {
                    argv.push(format!("--target={target}"));
                }
                if target.is_none_or(|(_, sink)| sink) {
                    argv.extend(["-P".into(), "{ stream.capture.sink = true }".into()]);
                }
                argv.push("-".into());
                argv
            }
        }
    }
}

/// Open system audio: check what can be checked, start the recorder, and hand its output to the
/// pull task as a live source.
pub(super) async fn open(
    source: Option<&str>,
    options: &AudioOptions,
) -> Result<AudioInput, AudioError> {
    let recorder = Recorder::find().ok_or_else(|| AudioError::SystemAudio {
        reason: format!("neither parec nor pw-record is on PATH; {INSTALL}"),
    })?;
    let source = match command::find_program("pactl") {
        Some(pactl) => checked_source(pactl, source).await?,
        // pw-record alone (PipeWire without pulseaudio-utils): nothing to ask; a wrong name
        // shows as the recorder failing at once.
        None => source.map(str::to_owned),
    };
    let name = match &source {
        None => "system audio: default output".to_owned(),
        Some(source) => format!("system audio: {source}"),
    };
    let format = StdinFormat {
        sample: SampleFormat::S16le,
        rate: options.sample_rate,
        channels: 1,
    };
    let argv = recorder.argv(source.as_deref(), options.sample_rate);
    tracing::info!(target: "aai_live::audio", recorder = recorder.name(), argv = ?argv, "starting the system-audio recorder");
    let mut input = CommandSource::spawn(&argv, recorder.name(), format, true)?;
    input
        .child
        .exited_within(STARTUP_GRACE)
        .await
        .map_err(|e| AudioError::SystemAudio {
            reason: e.to_string(),
        })?;
    pull::spawn(pull::Source::Command(Box::new(input)), name, options)
}

/// Ask the server (through `pactl`) whether it answers and, for a named source, which one is
/// meant: the exact name, or a part of one that matches only it, as `--device` matches.
async fn checked_source(
    pactl: PathBuf,
    wanted: Option<&str>,
) -> Result<Option<String>, AudioError> {
    let wanted = wanted.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        command::query(&pactl, &["info"], QUERY_TIMEOUT).map_err(|e| AudioError::SystemAudio {
            reason: format!(
                "no PulseAudio or PipeWire server answers ({e}); system audio needs one running \
                 (a desktop session has it; check PULSE_SERVER and XDG_RUNTIME_DIR when running \
                 as another user or in a container)"
            ),
        })?;
        let Some(wanted) = wanted else {
            return Ok(None);
        };
        let listed =
            command::query(&pactl, &["list", "short", "sources"], QUERY_TIMEOUT).map_err(|e| {
                AudioError::SystemAudio {
                    reason: format!("cannot list the sources: {e}"),
                }
            })?;
        resolve(&wanted, &devices::parse_pactl_sources(&listed.stdout)).map(Some)
    })
    .await
    .map_err(|e| AudioError::SystemAudio {
        reason: format!("the check of the sound server failed: {e}"),
    })?
}

/// The source `wanted` names among `sources`.
fn resolve(wanted: &str, sources: &[devices::SourceInfo]) -> Result<String, AudioError> {
    let as_devices: Vec<DeviceInfo> = sources
        .iter()
        .map(|s| DeviceInfo {
            id: s.name.clone(),
            name: s.name.clone(),
            ..DeviceInfo::default()
        })
        .collect();
    match devices::select(wanted, &as_devices) {
        Ok(i) => Ok(sources[i].name.clone()),
        Err(AudioError::DeviceNotFound {
            wanted,
            suggestion,
            available,
        }) => Err(AudioError::SourceNotFound {
            wanted,
            suggestion,
            available: crate::untrusted::for_terminal(&available).into_owned(),
        }),
        Err(AudioError::DeviceAmbiguous { wanted, matches }) => Err(AudioError::SourceAmbiguous {
            wanted,
            matches: crate::untrusted::for_terminal(&matches).into_owned(),
        }),
        Err(other) => Err(other),
    }
}

/// The sources `aai-live devices` lists, from `pactl` when it is installed.
pub fn system_sources() -> SystemSources {
    let Some(pactl) = command::find_program("pactl") else {
        return SystemSources::NoPactl;
    };
    let info = match command::query(&pactl, &["info"], QUERY_TIMEOUT) {
        Ok(info) => info,
        Err(reason) => return SystemSources::Unreachable(reason),
    };
    let (default_sink, default_source) = devices::parse_pactl_info(&info.stdout);
    match command::query(&pactl, &["list", "short", "sources"], QUERY_TIMEOUT) {
        Ok(listed) => SystemSources::Listed {
            default_sink,
            default_source,
            sources: devices::parse_pactl_sources(&listed.stdout),
        },
        Err(reason) => SystemSources::Unreachable(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::SourceInfo;

    #[test]
    fn recorders_are_asked_for_raw_mono_s16le_at_the_rate() {
        let parec = Recorder::Parec("/usr/bin/parec".into());
        let argv = parec.argv(None, 16_000);
        assert_eq!(argv[0], "/usr/bin/parec");
        for wanted in [
            "--device=@DEFAULT_MONITOR@",
            "--format=s16le",
            "--rate=16000",
            "--channels=1",
            "--raw",
        ] {
            assert!(argv.iter().any(|a| a == wanted), "{wanted} in {argv:?}");
        }
        assert!(
            parec
                .argv(Some("x.monitor"), 8000)
                .contains(&"--device=x.monitor".to_owned())
        );

        let pw = Recorder::PwRecord("/usr/bin/pw-record".into());
        let argv = pw.argv(None, 16_000);
        assert!(argv.contains(&"--raw".to_owned()) && argv.contains(&"--rate=16000".to_owned()));
        assert!(argv.contains(&"{ stream.capture.sink = true }".to_owned()));
        assert!(!argv.iter().any(|a| a.starts_with("--target")));
        assert_eq!(argv.last().map(String::as_str), Some("-"));
        let argv = pw.argv(Some("speakers.monitor"), 16_000);
        assert!(argv.contains(&"--target=speakers".to_owned()), "{argv:?}");
        assert!(argv.contains(&"{ stream.capture.sink = true }".to_owned()));
        let argv = pw.argv(Some("usb-mic"), 16_000);
        assert!(argv.contains(&"--target=usb-mic".to_owned()), "{argv:?}");
        assert!(!argv.contains(&"{ stream.capture.sink = true }".to_owned()));
    }

    #[test]
    fn source_names_resolve_like_devices() {
        let sources: Vec<SourceInfo> = ["alsa_output.usb-Headset.monitor", "nullsink.monitor"]
            .into_iter()
            .map(|name| SourceInfo {
                name: name.into(),
                ..SourceInfo::default()
            })
            .collect();
        assert_eq!(
            resolve("nullsink.monitor", &sources).expect("exact"),
            "nullsink.monitor"
        );
        assert_eq!(
            resolve("headset", &sources).expect("a unique part"),
            "alsa_output.usb-Headset.monitor"
        );
        let e = resolve("nullsnk.monitor", &sources)
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("no PulseAudio/PipeWire source matches \"nullsnk.monitor\"")
                && e.contains("did you mean \"nullsink.monitor\"?"),
            "{e}"
        );
        let e = resolve("monitor", &sources)
            .expect_err("ambiguous")
            .to_string();
        assert!(e.contains("several"), "{e}");
    }
}
