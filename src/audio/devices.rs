//! Input devices as `aai-live devices` shows them, and matching `--device` against them; the
//! PulseAudio / PipeWire sources `--input monitor:NAME` records, read from `pactl`'s output.
//! Pure data and text: the enumeration itself lives with the capture code (feature `mic`) and
//! the system-audio code (`monitor.rs`).

use std::fmt::Write as _;

use super::{AudioError, SourceFormat};

/// One input device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// What `--device` takes: `host:device`, e.g. `alsa:default`, `alsa:hw:CARD=0,DEV=0`.
    pub id: String,
    /// Human-readable name (the first line of the host's description).
    pub name: String,
    /// Further description lines, if any.
    pub details: Vec<String>,
    pub is_default: bool,
    /// The format capture would use (the device's preferred one).
    pub default_format: Option<SourceFormat>,
    /// Supported sample rates as inclusive ranges, merged and sorted.
    pub sample_rates: Vec<(u32, u32)>,
    /// Supported channel counts as inclusive ranges, merged and sorted.
    pub channels: Vec<(u16, u16)>,
    /// Supported sample formats (`i16`, `f32`…), in the host's order.
    pub sample_formats: Vec<String>,
}

/// What `aai-live devices` prints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceReport {
    /// Audio system, e.g. `ALSA`.
    pub host: String,
    pub devices: Vec<DeviceInfo>,
    /// Sound cards the system sees, where it can tell (ALSA). `Some(0)` means no sound hardware.
    pub sound_cards: Option<usize>,
}

impl DeviceReport {
    /// The report as text for the terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let no_hardware = self.sound_cards == Some(0);
        if no_hardware {
            out.push_str(
                "No sound hardware found: the system has no sound card, so there is no microphone \
                 to record from.\nUse input \"file:PATH\", \"stdin\" or \"test:tone\" instead.\n",
            );
            if self.devices.is_empty() {
                return out;
            }
            let _ = writeln!(
                out,
                "\nVirtual {} input devices (plugins, no hardware), usable with --device:",
                self.host
            );
        } else if self.devices.is_empty() {
            let _ = writeln!(out, "No {} input devices found.", self.host);
            if let Some(cards) = self.sound_cards {
                let _ = writeln!(
                    out,
                    "The system has {cards} sound card{}, but none can record.",
                    if cards == 1 { "" } else { "s" }
                );
            }
            return out;
        } else {
            let _ = writeln!(
                out,
                "{} input devices (* = default). Pass the ID to --device or set [audio] device.",
                self.host
            );
        }
        let width = self
            .devices
            .iter()
            .map(|d| d.id.chars().count())
            .max()
            .unwrap_or(0);
        for device in &self.devices {
            let mark = if device.is_default { '*' } else { ' ' };
            let _ = writeln!(out, "\n{mark} {:width$}  {}", device.id, device.name);
            let indent = " ".repeat(width + 4);
            for line in &device.details {
                let _ = writeln!(out, "{indent}{line}");
            }
            let mut facts = Vec::new();
            if let Some(format) = &device.default_format {
                facts.push(format!("captures {format}"));
            }
            if !device.sample_rates.is_empty() {
                facts.push(format!(
                    "rates {}",
                    describe_ranges(&device.sample_rates, " Hz")
                ));
            }
            if !device.channels.is_empty() {
                facts.push(format!(
                    "channels {}",
                    describe_ranges(&device.channels, "")
                ));
            }
            if !device.sample_formats.is_empty() {
                facts.push(format!("formats {}", device.sample_formats.join(" ")));
            }
            if !facts.is_empty() {
                let _ = writeln!(out, "{indent}{}", facts.join(" · "));
            }
        }
        out
    }
}

/// `1–64`, `44100, 48000 Hz`, `any`.
fn describe_ranges<T>(ranges: &[(T, T)], unit: &str) -> String
where
    T: Copy + PartialEq + std::fmt::Display + Into<u64>,
{
    if let [(lo, hi)] = ranges
        && (*lo).into() <= 1
        && (*hi).into() >= u64::from(u32::MAX)
    {
        return "any".into();
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}–{hi}")
            }
        })
        .collect();
    format!("{}{unit}", parts.join(", "))
}

/// Merge inclusive ranges (overlapping or adjacent) into a sorted list.
pub fn merge_ranges<T: Copy + Ord + Into<u64>>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo.into() <= last.1.into() + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// Which of `devices` `wanted` names: the exact ID, the ID without its host prefix
/// (`fakemic` for `alsa:fakemic`), the name (any case), or else a unique part of the ID or name.
pub fn select(wanted: &str, devices: &[DeviceInfo]) -> Result<usize, AudioError> {
    let wanted_trim = wanted.trim();
    let lower = wanted_trim.to_lowercase();
    let rules: [&dyn Fn(&DeviceInfo) -> bool; 4] = [
        &|d| d.id == wanted_trim,
        &|d| {
            d.id.split_once(':')
                .is_some_and(|(_, rest)| rest == wanted_trim)
        },
        &|d| d.name.to_lowercase() == lower,
        &|d| d.id.to_lowercase().contains(&lower) || d.name.to_lowercase().contains(&lower),
    ];
    for rule in rules {
        let matches: Vec<usize> = (0..devices.len()).filter(|&i| rule(&devices[i])).collect();
        match matches[..] {
            [] => {}
            [one] => return Ok(one),
            _ => {
                return Err(AudioError::DeviceAmbiguous {
                    wanted: wanted.to_owned(),
                    matches: matches
                        .iter()
                        .map(|&i| devices[i].id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    let closest = devices
        .iter()
        .map(|d| {
            let score = strsim::normalized_levenshtein(&lower, &d.id.to_lowercase()).max(
                strsim::normalized_levenshtein(&lower, &d.name.to_lowercase()),
            );
            (score, d)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let suggestion = match closest {
        Some((score, d)) if score >= 0.5 => format!("; did you mean {:?}?", d.id),
        _ => String::new(),
    };
    let available = if devices.is_empty() {
        "none".to_owned()
    } else {
        devices
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(AudioError::DeviceNotFound {
        wanted: wanted.to_owned(),
        suggestion,
        available,
    })
}

/// One PulseAudio / PipeWire source, as `pactl list short sources` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceInfo {
    /// What `--input monitor:NAME` takes.
    pub name: String,
    /// The server's module or driver (`module-null-sink.c`, `alsa_input…`), when given.
    pub driver: String,
    /// Sample spec as the server words it (`s16le 2ch 48000Hz`), when given.
    pub spec: String,
    /// `RUNNING`, `IDLE`, `SUSPENDED`…, when given.
    pub state: String,
}

impl SourceInfo {
    /// A sink's monitor: what that output plays.
    pub fn is_monitor(&self) -> bool {
        self.name.ends_with(".monitor")
    }
}

/// At most this many sources are listed (the server's output is untrusted: it could list a
/// million).
pub const MAX_SOURCES: usize = 256;
/// Longest source name taken from the server, in bytes.
pub const MAX_SOURCE_NAME: usize = 512;

/// The system-audio part of `aai-live devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemSources {
    /// The server's sources; `default_sink` and `default_source` as `pactl info` names them.
    Listed {
        default_sink: Option<String>,
        default_source: Option<String>,
        sources: Vec<SourceInfo>,
    },
    /// `pactl` is not installed, so nothing can be listed.
    NoPactl,
    /// `pactl` is there but no server answered; why.
    Unreachable(String),
    /// Not on this platform.
    Unsupported,
}

/// Heading of the system-audio section.
pub const SOURCES_HEADING: &str = "PulseAudio/PipeWire sources, for --input monitor:NAME";

impl SystemSources {
    /// The section as text for the terminal. Names come from the server and are shown through
    /// [`untrusted::for_terminal`](crate::untrusted::for_terminal).
    pub fn render(&self) -> String {
        use crate::untrusted::for_terminal;
        let mut out = String::new();
        match self {
            Self::Unsupported => {
                let _ = writeln!(
                    out,
                    "{SOURCES_HEADING}: system audio is captured on Linux only."
                );
            }
            Self::NoPactl => {
                let _ = writeln!(
                    out,
                    "{SOURCES_HEADING}: cannot be listed without pactl. Install pulseaudio-utils \
                     (Debian/Ubuntu; it also provides parec, which --input monitor uses), or \
                     pipewire-bin for pw-record."
                );
            }
            Self::Unreachable(reason) => {
                let _ = writeln!(
                    out,
                    "{SOURCES_HEADING}: no PulseAudio or PipeWire server answers ({}). \
                     --input monitor needs one running (a desktop session has it; PipeWire's \
                     pipewire-pulse answers for PulseAudio).",
                    for_terminal(reason)
                );
            }
            Self::Listed {
                default_sink,
                default_source,
                sources,
            } => {
                let default_monitor = default_sink.as_ref().map(|s| format!("{s}.monitor"));
                let _ = writeln!(
                    out,
                    "{SOURCES_HEADING} (* = the default output's monitor, what --input monitor \
                     records):"
                );
                if sources.is_empty() {
                    out.push_str("\n  (the server lists no sources)\n");
                }
                let names: Vec<String> = sources
                    .iter()
                    .map(|s| for_terminal(&s.name).into_owned())
                    .collect();
                let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
                for (source, name) in sources.iter().zip(&names) {
                    let is_default_monitor = default_monitor.as_deref() == Some(&source.name);
                    let mark = if is_default_monitor { '*' } else { ' ' };
                    let mut facts: Vec<String> = [&source.spec, &source.state]
                        .into_iter()
                        .filter(|f| !f.is_empty())
                        .map(|f| for_terminal(f).into_owned())
                        .collect();
                    if is_default_monitor {
                        facts.push("monitor of the default output".into());
                    } else if source.is_monitor() {
                        facts.push("monitor of an output".into());
                    }
                    if default_source.as_deref() == Some(&source.name) {
                        facts.push("default input".into());
                    }
                    let _ = writeln!(out, "\n{mark} {name:width$}  {}", facts.join(" · "));
                }
            }
        }
        out
    }
}

/// `Default Sink` and `Default Source` from `pactl info` (run in the C locale). Untrusted text:
/// anything unexpected is skipped, never a panic.
pub fn parse_pactl_info(text: &str) -> (Option<String>, Option<String>) {
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?.trim();
            (!value.is_empty() && value.len() <= MAX_SOURCE_NAME).then(|| value.to_owned())
        })
    };
    (field("Default Sink"), field("Default Source"))
}

/// The sources of `pactl list short sources`: one per line, tab-separated index, name, driver,
/// sample spec, state. Untrusted text: lines without a name are skipped, names longer than
/// [`MAX_SOURCE_NAME`] too, and at most [`MAX_SOURCES`] are kept.
pub fn parse_pactl_sources(text: &str) -> Vec<SourceInfo> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let _index = fields.next()?;
            let name = fields.next()?.trim();
            if name.is_empty() || name.len() > MAX_SOURCE_NAME {
                return None;
            }
            let mut next = || fields.next().map(str::trim).unwrap_or_default().to_owned();
            Some(SourceInfo {
                name: name.to_owned(),
                driver: next(),
                spec: next(),
                state: next(),
            })
        })
        .take(MAX_SOURCES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, name: &str) -> DeviceInfo {
        DeviceInfo {
            id: id.into(),
            name: name.into(),
            ..DeviceInfo::default()
        }
    }

    fn devices() -> Vec<DeviceInfo> {
        vec![
            device("alsa:default", "Default Audio Device"),
            device("alsa:hw:CARD=0,DEV=0", "HDA Intel PCH, ALC257 Analog"),
            device("alsa:hw:CARD=1,DEV=0", "USB Audio, USB Microphone"),
            device("alsa:fakemic", "Fake microphone"),
        ]
    }

    #[test]
    fn select_by_id_short_id_name_or_part() {
        let d = devices();
        assert_eq!(select("alsa:fakemic", &d).expect("must succeed"), 3);
        assert_eq!(select("fakemic", &d).expect("must succeed"), 3);
        assert_eq!(select("default", &d).expect("must succeed"), 0);
        assert_eq!(select("fake microphone", &d).expect("must succeed"), 3);
        assert_eq!(select("USB", &d).expect("must succeed"), 2);
        assert_eq!(select("hw:CARD=1,DEV=0", &d).expect("must succeed"), 2);
    }

    #[test]
    fn ambiguous_and_unknown_names_are_explained() {
        let d = devices();
        let e = select("hw:CARD", &d).expect_err("must fail").to_string();
        assert!(
            e.contains("several") && e.contains("alsa:hw:CARD=0,DEV=0"),
            "{e}"
        );
        let e = select("fakemik", &d).expect_err("must fail").to_string();
        assert!(e.contains("did you mean \"alsa:fakemic\"?"), "{e}");
        assert!(e.contains("available: alsa:default, "), "{e}");
        let e = select("x", &[]).expect_err("must fail").to_string();
        assert!(e.contains("available: none"), "{e}");
    }

    #[test]
    fn ranges_merge_and_read_well() {
        assert_eq!(
            merge_ranges(vec![(3_u16, 4), (1, 2), (8, 9), (2, 3)]),
            vec![(1, 4), (8, 9)]
        );
        assert_eq!(describe_ranges(&[(1_u32, u32::MAX)], " Hz"), "any");
        assert_eq!(
            describe_ranges(&[(44_100_u32, 44_100), (48_000, 48_000)], " Hz"),
            "44100, 48000 Hz"
        );
        assert_eq!(describe_ranges(&[(1_u16, 2)], ""), "1–2");
    }

    #[test]
    fn no_hardware_is_said_plainly() {
        let report = DeviceReport {
            host: "ALSA".into(),
            devices: vec![],
            sound_cards: Some(0),
        };
        let text = report.render();
        assert!(text.starts_with("No sound hardware found"), "{text}");
        let report = DeviceReport {
            devices: vec![device("alsa:null", "Discard all samples")],
            ..report
        };
        let text = report.render();
        assert!(text.contains("Virtual ALSA input devices"), "{text}");
        assert!(text.contains("alsa:null  Discard all samples"), "{text}");
    }

    #[test]
    fn devices_render_with_their_formats() {
        let mut mic = device("alsa:default", "Default Audio Device");
        mic.is_default = true;
        mic.default_format = Some(SourceFormat {
            sample_rate: 48_000,
            channels: 2,
            sample: "f32".into(),
        });
        mic.sample_rates = vec![(8000, 192_000)];
        mic.channels = vec![(1, 2)];
        mic.sample_formats = vec!["i16".into(), "f32".into()];
        let report = DeviceReport {
            host: "ALSA".into(),
            devices: vec![mic, device("alsa:fakemic", "Fake microphone")],
            sound_cards: Some(1),
        };
        insta::assert_snapshot!(report.render(), @r"
        ALSA input devices (* = default). Pass the ID to --device or set [audio] device.

        * alsa:default  Default Audio Device
                        captures f32 48000 Hz 2 ch · rates 8000–192000 Hz · channels 1–2 · formats i16 f32

          alsa:fakemic  Fake microphone
        ");
    }

    const PACTL_INFO: &str = "Server String: /run/user/1000/pulse/native\nLibrary Protocol Version: 35\n\
        Server Name: pulseaudio\nDefault Sample Specification: s16le 2ch 44100Hz\n\
        Default Sink: alsa_output.pci.analog-stereo\nDefault Source: alsa_input.pci.analog-stereo\n";
    const PACTL_SOURCES: &str = "0\talsa_output.pci.analog-stereo.monitor\tmodule-alsa-card.c\ts16le 2ch 44100Hz\tSUSPENDED\n\
        1\talsa_input.pci.analog-stereo\tmodule-alsa-card.c\ts16le 2ch 44100Hz\tRUNNING\n\
        2\tnullsink.monitor\tmodule-null-sink.c\ts16le 2ch 48000Hz\tIDLE\n";

    #[test]
    fn pactl_output_is_read() {
        let (sink, source) = parse_pactl_info(PACTL_INFO);
        assert_eq!(sink.as_deref(), Some("alsa_output.pci.analog-stereo"));
        assert_eq!(source.as_deref(), Some("alsa_input.pci.analog-stereo"));
        assert_eq!(
            parse_pactl_info("Default Sink:\nDefault Sinks: x\n"),
            (None, None)
        );
        let sources = parse_pactl_sources(PACTL_SOURCES);
        assert_eq!(sources.len(), 3);
        assert_eq!(
            sources[2],
            SourceInfo {
                name: "nullsink.monitor".into(),
                driver: "module-null-sink.c".into(),
                spec: "s16le 2ch 48000Hz".into(),
                state: "IDLE".into(),
            }
        );
        assert!(sources[0].is_monitor() && !sources[1].is_monitor());
        assert_eq!(
            parse_pactl_sources("garbage\n\t\n0\t\tx\n3\tonly-a-name"),
            [SourceInfo {
                name: "only-a-name".into(),
                ..SourceInfo::default()
            }]
        );
    }

    #[test]
    fn sources_render_with_the_default_monitor_marked() {
        let (default_sink, default_source) = parse_pactl_info(PACTL_INFO);
        let report = SystemSources::Listed {
            default_sink,
            default_source,
            sources: parse_pactl_sources(PACTL_SOURCES),
        };
        insta::assert_snapshot!(report.render(), @r"
        PulseAudio/PipeWire sources, for --input monitor:NAME (* = the default output's monitor, what --input monitor records):

        * alsa_output.pci.analog-stereo.monitor  s16le 2ch 44100Hz · SUSPENDED · monitor of the default output

          alsa_input.pci.analog-stereo           s16le 2ch 44100Hz · RUNNING · default input

          nullsink.monitor                       s16le 2ch 48000Hz · IDLE · monitor of an output
        ");
        let text = SystemSources::NoPactl.render();
        assert!(text.contains("pulseaudio-utils"), "{text}");
        let text = SystemSources::Unreachable(
            "pactl exited with status 1: \x1b[2JConnection refused".into(),
        )
        .render();
        assert!(
            text.contains("(pactl exited with status 1: [2JConnection refused)"),
            "{text}"
        );
    }

    proptest::proptest! {
        /// pactl's output is the server's text: whatever it holds, parsing never panics, keeps
        /// its bounds, and rendering never lets a control character through.
        #[test]
        fn pactl_parsing_never_panics(text in "(?s).{0,400}", bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            for input in [text, String::from_utf8_lossy(&bytes).into_owned()] {
                let (default_sink, default_source) = parse_pactl_info(&input);
                let sources = parse_pactl_sources(&input);
                proptest::prop_assert!(sources.len() <= MAX_SOURCES);
                proptest::prop_assert!(sources.iter().all(|s| !s.name.is_empty() && s.name.len() <= MAX_SOURCE_NAME));
                let text = SystemSources::Listed { default_sink, default_source, sources }.render();
                proptest::prop_assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
            }
        }
    }
}
