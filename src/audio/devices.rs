//! Input devices as `aai-live devices` shows them, and matching `--device` against them. Pure
//! data and text: the enumeration itself lives with the capture code (feature `mic`).

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
}
