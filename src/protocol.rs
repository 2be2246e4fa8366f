//! The AssemblyAI Universal Streaming v3 wire protocol, shared by the client session, the
//! emulator and the tests: message types, connection parameters and URLs, close
//! classification and audio arithmetic. No I/O here.

pub mod audio;
pub mod close;
pub mod expiry;
pub mod messages;
pub mod params;

pub use audio::{AudioFormat, Encoding};
pub use close::{CloseClass, classify};
pub use messages::{
    Begin, BeginConfiguration, ClientMessage, ErrorMessage, ServerMessage, Termination, Turn,
    UpdateConfiguration, Word,
};
pub use params::{Region, StreamingParams, TokenPlacement, WsUrl, build_ws_url};

/// The API version aai-live speaks (sent as `AssemblyAI-Version`, echoed in `Begin`).
pub const API_VERSION: &str = "2025-05-12";
