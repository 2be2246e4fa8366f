//! aai-live: live speech-to-text on AssemblyAI Universal Streaming v3 that survives one-time
//! tokens and session expiry.
//!
//! The binary (`src/main.rs`) is a thin adapter: every subcommand calls into a module here, so
//! tests drive the whole program without a terminal. See `docs/architecture.md` for the map.

pub mod app;
pub mod archive;
pub mod audio;
pub mod cli;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod diagnosis;
pub mod doctor;
pub mod duration;
pub mod emulator;
pub mod events;
pub mod failure;
pub mod feed;
pub mod files;
pub mod headless;
pub mod listener;
pub mod load;
pub mod logging;
pub mod protocol;
pub mod provider;
pub mod secret;
pub mod server;
pub mod session;
pub mod signals;
pub mod strings;
pub mod subcommands;
pub mod trace;
pub mod transcript;
pub mod tui;
pub mod ui;
pub mod untrusted;
