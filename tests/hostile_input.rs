//! Property tests for every parser of untrusted bytes: the service's v3 messages, close codes and
//! reasons, WAV headers, raw PCM on stdin (NaN and ±Inf included), token documents as the three
//! providers read them, and configuration values. Properties: nothing panics; a valid document
//! round-trips; errors name the file, the field or the key.
//!
//! Case counts are modest (256 for pure functions, fewer where each case touches the disk) so the
//! suite stays fast, and inputs are small, so no case allocates more than a few MiB.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aai_live::audio::convert::Converter;
use aai_live::audio::stdin::decode;
use aai_live::audio::wav::WavSource;
use aai_live::config::{self, EnvSource, LoadOptions, SampleFormat};
use aai_live::protocol::messages::{
    Begin, BeginConfiguration, ErrorMessage, Heartbeat, Revision, SpeakerRevision, SpeechStarted,
    Termination, Turn, Warning, Word,
};
use aai_live::protocol::{ServerMessage, close};
use aai_live::provider::contract::{self, DocumentError};
use aai_live::provider::file::{FileProvider, FileSettings};
use aai_live::provider::{TokenProvider, TokenRequest, remote};
use aai_live::secret::Token;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON numbers are finite", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        prop_oneof![
            Just(-1e300),
            Just(1e300),
            Just(9.3e18),
            Just(-0.0),
            Just(0.5)
        ]
        .prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,10}", inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A JSON object with fields from `names` (and a few others) holding any values.
fn object_with(names: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    let name = prop_oneof![
        4 => prop::sample::select(names).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
    ];
    prop::collection::vec((name, json_value()), 0..8).prop_map(|pairs| pairs.into_iter().collect())
}

// ---------------------------------------------------------------------------------------------
// v3 server messages

const MESSAGE_TYPES: &[&str] = &[
    "Begin",
    "Turn",
    "SpeechStarted",
    "Termination",
    "Error",
    "Warning",
    "Heartbeat",
    "SpeakerRevision",
    "LLMGatewayResponse",
];

const MESSAGE_FIELDS: &[&str] = &[
    "id",
    "expires_at",
    "configuration",
    "turn_order",
    "turn_is_formatted",
    "end_of_turn",
    "transcript",
    "utterance",
    "end_of_turn_confidence",
    "words",
    "speaker_label",
    "timestamp",
    "confidence",
    "audio_duration_seconds",
    "session_duration_seconds",
    "error_code",
    "error",
    "warning_code",
    "warning",
    "total_audio_received_ms",
    "realtime_factor",
    "revisions",
];

/// A finite f64 that survives JSON exactly (a short dyadic fraction).
fn exact_f64() -> impl Strategy<Value = f64> {
    (0_u32..=4096).prop_map(|n| f64::from(n) / 1024.0)
}

fn word() -> impl Strategy<Value = Word> {
    (
        any::<u64>(),
        any::<u64>(),
        ".{0,12}",
        exact_f64(),
        any::<bool>(),
        proptest::option::of("[A-Z]"),
    )
        .prop_map(
            |(start, end, text, confidence, word_is_final, speaker)| Word {
                start,
                end,
                text,
                confidence,
                word_is_final,
                speaker,
                speaker_confidence: None,
            },
        )
}

/// Every kind of valid server message.
fn server_message() -> impl Strategy<Value = ServerMessage> {
    let turn = (
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        ".{0,40}",
        proptest::option::of(".{0,20}"),
        exact_f64(),
        prop::collection::vec(word(), 0..5),
        proptest::option::of("[A-Z]"),
    )
        .prop_map(
            |(turn_order, formatted, end, transcript, utterance, confidence, words, speaker)| {
                ServerMessage::Turn(Turn {
                    turn_order,
                    turn_is_formatted: formatted,
                    end_of_turn: end,
                    transcript,
                    utterance,
                    end_of_turn_confidence: confidence,
                    words,
                    speaker_label: speaker,
                    ..Turn::default()
                })
            },
        );
    prop_oneof![
        (
            ".{0,36}",
            any::<i64>(),
            proptest::option::of(proptest::option::of("[a-z-]{0,20}"))
        )
            .prop_map(|(id, expires_at, model)| {
                ServerMessage::Begin(Begin {
                    id,
                    expires_at,
                    configuration: model.map(|model| BeginConfiguration {
                        model,
                        ..BeginConfiguration::default()
                    }),
                })
            }),
        turn,
        (any::<u64>(), exact_f64()).prop_map(|(timestamp, confidence)| {
            ServerMessage::SpeechStarted(SpeechStarted {
                timestamp,
                confidence,
            })
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(a, s)| {
            ServerMessage::Termination(Termination {
                audio_duration_seconds: a,
                session_duration_seconds: s,
            })
        }),
        (proptest::option::of(any::<u16>()), ".{0,60}").prop_map(|(error_code, error)| {
            ServerMessage::Error(ErrorMessage { error_code, error })
        }),
        (proptest::option::of(any::<i64>()), ".{0,60}").prop_map(|(warning_code, warning)| {
            ServerMessage::Warning(Warning {
                warning_code,
                warning,
            })
        }),
        (any::<u64>(), any::<u64>(), exact_f64(), exact_f64()).prop_map(|(a, d, r, p)| {
            ServerMessage::Heartbeat(Heartbeat {
                total_audio_received_ms: a,
                total_duration_ms: d,
                realtime_factor: r,
                max_speech_probability: p,
            })
        }),
        prop::collection::vec(
            (
                any::<u64>(),
                proptest::option::of("[A-Z]"),
                prop::collection::vec(word(), 0..3)
            ),
            0..3
        )
        .prop_map(|revisions| {
            ServerMessage::SpeakerRevision(SpeakerRevision {
                revisions: revisions
                    .into_iter()
                    .map(|(turn_order, speaker_label, words)| Revision {
                        turn_order,
                        speaker_label,
                        words,
                    })
                    .collect(),
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn server_message_parse_never_panics_on_any_text(text in ".{0,200}") {
        let _ = ServerMessage::parse(&text);
    }

    #[test]
    fn server_message_parse_never_panics_on_damaged_json(
        value in json_value(),
        cut in any::<prop::sample::Index>(),
    ) {
        let text = value.to_string();
        let _ = ServerMessage::parse(&text);
        let mut end = cut.index(text.len() + 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let _ = ServerMessage::parse(&text[..end]);
    }

    #[test]
    fn typed_messages_with_any_fields_never_panic(
        kind in prop::sample::select(MESSAGE_TYPES),
        mut fields in object_with(MESSAGE_FIELDS),
    ) {
        fields.insert("type".into(), Value::String(kind.to_owned()));
        let value = Value::Object(fields);
        if let Ok(message) = ServerMessage::from_value(value.clone()) {
            // Whatever parses can be written back (the emulator's side) and read again.
            let _ = ServerMessage::parse(&message.to_json());
            let _ = message.kind();
        }
    }

    #[test]
    fn valid_server_messages_round_trip(message in server_message()) {
        let parsed = ServerMessage::parse(&message.to_json()).map_err(|e| e.to_string());
        prop_assert_eq!(parsed, Ok(message));
    }

    // -----------------------------------------------------------------------------------------
    // close frames and reasons

    #[test]
    fn close_classification_never_panics(
        code in proptest::option::of(any::<u16>()),
        reason in ".{0,160}",
        error in proptest::option::of(".{0,160}"),
    ) {
        let class = close::classify(code, &reason, error.as_deref());
        prop_assert!(!class.describe().is_empty() && !class.advice().is_empty());
        let _ = class.remedy();
        let _ = class.retryable();
        let upgrade = close::classify_upgrade_status(code.unwrap_or(0));
        prop_assert!(!upgrade.describe().is_empty());
        prop_assert!(close::close_reason(&reason).len() <= close::MAX_REASON_BYTES);
    }

    #[test]
    fn close_classification_of_documented_reasons_in_any_case(
        code in prop::sample::select(&[1008_u16, 3005, 3006, 3008, 4008, 4102][..]),
        reason in prop::sample::select(&[
            "Token expired", "token already used", "Too many concurrent sessions",
            "Session Expired: Maximum session duration exceeded", "Input duration violation",
            "incorrect padding", "idle", "Invalid JSON",
        ][..]),
        upper in any::<bool>(),
    ) {
        let reason = if upper { reason.to_uppercase() } else { reason.to_owned() };
        // Case does not change the class.
        prop_assert_eq!(
            close::classify(Some(code), &reason, None),
            close::classify(Some(code), &reason.to_lowercase(), None)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// WAV headers

/// A small valid WAV: `frames` frames of 16-bit stereo at 48 kHz, or 32-bit float mono.
fn valid_wav(float: bool, frames: usize) -> Vec<u8> {
    let spec = if float {
        hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        }
    } else {
        hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        }
    };
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut bytes, spec).expect("writer");
    for i in 0..frames * usize::from(spec.channels) {
        if float {
            writer
                .write_sample((i as f32 * 0.01).sin())
                .expect("sample");
        } else {
            writer
                .write_sample((i * 37 % 65_536) as i16)
                .expect("sample");
        }
    }
    writer.finalize().expect("finalize");
    bytes.into_inner()
}

/// Open `bytes` as a WAV file and read all of it: never a panic; every error names the file.
fn read_wav(path: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    std::fs::write(path, bytes).expect("write");
    let shown = path.display().to_string();
    let mut source = match WavSource::open(path, false) {
        Ok(source) => source,
        Err(e) => {
            prop_assert!(e.to_string().contains(&shown), "{}", e);
            return Ok(());
        }
    };
    let format = source.format();
    prop_assert!(
        (8_000..=384_000).contains(&format.sample_rate),
        "{}",
        format
    );
    prop_assert!((1..=32).contains(&format.channels), "{}", format);
    let mut frames = Vec::new();
    loop {
        frames.clear();
        match source.read(256, &mut frames) {
            Ok(0) => return Ok(()),
            Ok(n) => prop_assert_eq!(frames.len(), n * usize::from(format.channels)),
            Err(e) => {
                prop_assert!(e.to_string().contains(&shown), "{}", e);
                return Ok(());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn wav_reader_never_panics_on_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        riff in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = bytes;
        if riff && bytes.len() >= 12 {
            // Get past the magic check more often than chance would.
            bytes[..4].copy_from_slice(b"RIFF");
            bytes[8..12].copy_from_slice(b"WAVE");
        }
        read_wav(&dir.path().join("any.wav"), &bytes)?;
    }

    #[test]
    fn wav_reader_never_panics_on_mutated_headers(
        float in any::<bool>(),
        frames in 0_usize..300,
        mutations in prop::collection::vec((0_usize..80, any::<u8>()), 1..8),
        cut in proptest::option::of(0_usize..2000),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = valid_wav(float, frames);
        for (at, byte) in mutations {
            if let Some(b) = bytes.get_mut(at) {
                *b = byte;
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut);
        }
        read_wav(&dir.path().join("mutated.wav"), &bytes)?;
    }
}

// ---------------------------------------------------------------------------------------------
// stdin samples, NaN and ±Inf included

/// An f32 that is often not a number, infinite or huge.
fn hostile_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -1.5_f32..1.5,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::MAX),
        1 => Just(f32::MIN),
        1 => any::<u32>().prop_map(f32::from_bits),
    ]
}

proptest! {
    // Each case builds a resampler and runs its FFT (slow in a debug build): fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn stdin_samples_convert_whatever_they_hold(
        f32le in any::<bool>(),
        rate in prop::sample::select(&[8_000_u32, 16_000, 22_050, 44_100, 48_000][..]),
        channels in 1_u16..=4,
        samples in prop::collection::vec(hostile_f32(), 0..3000),
        raw in prop::collection::vec(any::<u8>(), 0..2000),
        piece in 1_usize..700,
    ) {
        let (format, bytes) = if f32le {
            let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
            (SampleFormat::F32le, bytes)
        } else {
            (SampleFormat::S16le, raw)
        };
        let mut decoded = Vec::new();
        decode(&bytes, format, &mut decoded);
        let per_sample = if f32le { 4 } else { 2 };
        prop_assert_eq!(decoded.len(), bytes.len() / per_sample);
        let whole = decoded.len() - decoded.len() % usize::from(channels);
        let frames = whole / usize::from(channels);
        let non_finite = decoded[..whole].iter().filter(|s| !s.is_finite()).count() as u64;
        let mut converter = Converter::new(rate, channels, 16_000).expect("converter");
        let mut out = Vec::new();
        for part in decoded[..whole].chunks(piece * usize::from(channels)) {
            converter.push(part, &mut out).expect("push");
        }
        converter.finish(&mut out).expect("finish");
        prop_assert_eq!(converter.non_finite(), non_finite);
        let expected = (frames as u64 * 16_000).div_ceil(u64::from(rate));
        prop_assert_eq!(out.len() as u64, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// token documents

const DOCUMENT_FIELDS: &[&str] = &[
    "token",
    "minted_at",
    "expires_at",
    "expires_in_seconds",
    "max_session_duration_seconds",
    "error",
];

/// A plausible token: printable, no spaces or markup.
fn token_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+/=_.-]{16,120}"
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_268_800)
}

/// The field an error names, quoted as in its message.
fn names_a_field(e: &DocumentError) -> bool {
    let shown = e.to_string();
    DOCUMENT_FIELDS
        .iter()
        .any(|field| shown.contains(&format!("\"{field}\"")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn token_documents_never_panic_and_errors_name_the_field(
        mut object in object_with(DOCUMENT_FIELDS),
        token in proptest::option::of(token_text()),
        base_offset in -100_000_i64..100_000,
    ) {
        if let Some(token) = token {
            object.insert("token".into(), Value::String(token));
        }
        let base = shifted(now(), base_offset);
        match contract::parse_object(&object) {
            Ok(doc) => match doc.into_token("test", base, now()) {
                Ok(token) => {
                    // Whatever is accepted prints (no time arithmetic or formatting panics)
                    // and lies within a day of now.
                    let printed = contract::to_json(&token, now());
                    prop_assert!(printed["token"].is_string());
                    if let Some(at) = token.redeem_by {
                        prop_assert!(at <= now() + contract::MAX_LIFETIME);
                    }
                }
                Err(e) => prop_assert!(names_a_field(&e), "{}", e),
            },
            Err(e) => prop_assert!(names_a_field(&e), "{}", e),
        }
    }

    #[test]
    fn remote_answers_never_panic(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            object_with(DOCUMENT_FIELDS).prop_map(|o| Value::Object(o).to_string().into_bytes()),
        ],
    ) {
        if let Ok(doc) = remote::parse_answer(&body, &["secret-credential"]) {
            let _ = doc.into_token("remote", now(), now());
        }
    }

    /// A token of any length in a document that is refused never reaches the message: the
    /// document is quoted by its shape (it used to be quoted by content, masking only runs of
    /// 24 or more token characters, so a short token was shown and field names were masked).
    #[test]
    fn refused_answers_never_repeat_a_token_of_any_length(
        token in "[A-Za-z0-9+/=_.-]{1,40}",
        field in prop::sample::select(&["expires_in_seconds", "max_session_duration_seconds", "expires_at"][..]),
        bad in prop_oneof![Just(json!("soon")), Just(json!(-1)), Just(json!([1])), Just(json!({}))],
        credential in "[a-z]{1,6}",
    ) {
        let body = json!({ "token": token, field: bad }).to_string();
        if let Err(e) = remote::parse_answer(body.as_bytes(), &[credential.as_str()]) {
            let shown = e.as_str();
            prop_assert!(!shows_as_a_word(shown, &token), "{}", shown);
            prop_assert!(shown.contains(&format!("\"{field}\"")), "the field, unmasked: {}", shown);
            prop_assert!(!shown.contains("REDACTED"), "nothing to mask in a shape: {}", shown);
        }
        // A body that is one short word (a token too short to be taken for one) is described
        // by its length.
        let e = remote::parse_answer(token.as_bytes(), &[]);
        if let Err(e) = e {
            prop_assert!(!e.contains(&token) || token.len() < 3, "{}", e);
        }
    }

    #[test]
    fn plain_text_tokens_never_panic(text in ".{0,300}") {
        if let Some(doc) = contract::parse_plain(&text) {
            prop_assert!(contract::is_token_text(&doc.secret));
        }
    }

    #[test]
    fn valid_token_documents_round_trip(
        secret in token_text(),
        minted_ago in 0_u64..3600,
        window in 1_u64..=600,
        session in proptest::option::of(60_u64..=10_800),
    ) {
        let minted = now() - Duration::from_secs(minted_ago);
        let mut token = Token::new(secret.clone(), "test")
            .with_minted_at(minted)
            .with_redeem_by(minted + Duration::from_secs(window));
        if let Some(s) = session {
            token = token.with_max_session_duration(Duration::from_secs(s));
        }
        let printed = contract::to_json(&token, now());
        let object = printed.as_object().expect("an object");
        let back = contract::parse_object(object)
            .expect("parses")
            .into_token("test", now(), now())
            .expect("plausible");
        prop_assert_eq!(back.expose(), secret.as_str());
        prop_assert_eq!(back.minted_at, minted);
        prop_assert_eq!(back.redeem_by, token.redeem_by);
        prop_assert_eq!(back.max_session_duration, token.max_session_duration);
    }
}

/// Whether `text` holds `token` as a whole word, not inside a longer run of letters and digits
/// (a token "3" is not shown by "RFC 3339").
fn shows_as_a_word(text: &str, token: &str) -> bool {
    let inside = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.match_indices(token).any(|(at, _)| {
        !inside(text[..at].chars().next_back()) && !inside(text[at + token.len()..].chars().next())
    })
}

/// `at` moved by `secs` seconds, either way.
fn shifted(at: SystemTime, secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 { at + d } else { at - d }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn token_files_never_panic(
        content in prop_oneof![
            ".{0,200}",
            token_text(),
            object_with(DOCUMENT_FIELDS).prop_map(|o| Value::Object(o).to_string()),
            (token_text(), json_value()).prop_map(|(t, v)| {
                serde_json::json!({"token": t, "expires_in_seconds": v}).to_string()
            }),
        ],
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, &content).expect("write");
        let provider = FileProvider::new(FileSettings {
            path,
            wait: Duration::ZERO,
            poll_interval: Duration::from_millis(10),
            remove_after_use: false,
            timeout: Duration::from_secs(5),
            watch: false,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let request = TokenRequest { expires_in_seconds: 60, max_session_duration_seconds: None };
        if let Ok(token) = runtime.block_on(provider.fetch(&request)) {
            let _ = contract::to_json(&token, SystemTime::now());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// configuration values

const TYPED_KEYS: &[&str] = &[
    "audio.stdin_format",
    "audio.input",
    "audio.chunk_ms",
    "streaming.sample_rate",
    "streaming.encoding",
    "session.backoff_initial",
    "session.backoff_multiplier",
    "provider.kind",
    "provider.timeout",
    "log.max_files",
    "ui.theme",
];

fn load_with(key: &str, value: &str, file: Option<&Path>) -> Result<config::Loaded, String> {
    config::load(&LoadOptions {
        file: file.map(Path::to_path_buf),
        use_default_file: false,
        env: EnvSource::Vars(Vec::new()),
        overrides: if file.is_some() {
            Vec::new()
        } else {
            vec![(key.to_owned(), value.to_owned())]
        },
    })
    .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn config_values_never_panic_and_errors_name_the_key(
        key in prop::sample::select(TYPED_KEYS),
        value in prop_oneof![
            ".{0,40}",
            "-?[0-9]{1,25}(\\.[0-9]{0,5})?",
            "[a-z0-9]{0,8}:[0-9]{0,7}:[0-9]{0,3}",
            "[0-9]{1,20}(ms|s|m|h|d|us|ns)",
        ],
        through_file in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = through_file.then(|| {
            let (section, name) = key.split_once('.').expect("section.key");
            let path = dir.path().join("config.toml");
            let quoted = toml::Value::String(value.clone()).to_string();
            std::fs::write(&path, format!("[{section}]\n{name} = {quoted}\n")).expect("write");
            path
        });
        if let Err(e) = load_with(key, &value, file.as_deref()) {
            prop_assert!(e.contains(key), "{key} = {value:?}: {e}");
        }
    }
}
