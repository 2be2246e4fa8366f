//! Secrets never reach a log line or an error message: the API key, temporary tokens (in the
//! `Authorization` header or `?token=`) and their percent-encoded forms. Logs are captured through
//! the real logging set-up (`logging::subscriber`: the same filters, the secret filter, the format
//! and the `log` bridge that brings in our dependencies' records) at TRACE for every crate,
//! around token minting, connecting with the token in the URL and in the header, and the error
//! paths. tungstenite's handshake dumps the whole request at TRACE, so without the secret filter
//! this test fails.

mod common;

use aai_live::protocol::{StreamingParams, build_ws_url};
use aai_live::secret::{ApiKey, Token};
use common::*;

#[test]
fn no_secret_in_logs_or_errors_around_mint_and_connect() {
    let capture = Capture::default();
    // What `--log-level trace` (RUST_LOG unset) writes, into `capture` instead of the file.
    let subscriber = aai_live::logging::subscriber("trace", capture.clone()).expect("set-up");
    // A current-thread runtime keeps every task on this thread, under this subscriber.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (tokens, fingerprint) = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let emu = start(config()).await;
            let query_token = mint_token(&emu, "expires_in_seconds=60").await;
            let header_token = mint_token(&emu, "expires_in_seconds=60").await;

            // Token in the query, through our URL builder; the URL is logged as a real caller would.
            let token = Token::new(query_token.clone(), "api-key");
            let fingerprint_q = token.fingerprint();
            let endpoint = url::Url::parse(&emu.ws_url()).expect("url");
            let ws_url =
                build_ws_url(&endpoint, &StreamingParams::default(), Some(&token)).expect("url");
            tracing::info!(url = %ws_url, ?token, "connecting");
            tracing::debug!(?ws_url, "connect url");
            let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.expose())
                .await
                .expect("connect");
            terminate(&mut ws).await;
            assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));

            // Token in the Authorization header.
            let mut ws = connect(&emu, Some(&header_token), "")
                .await
                .expect("connect");
            terminate(&mut ws).await;
            assert_eq!(read_to_close(&mut ws).await.code(), Some(1000));

            // Error paths: reuse of both tokens, a wrong key, an insecure URL.
            for reused in [&query_token, &header_token] {
                let mut ws = connect(&emu, Some(reused), "").await.expect("connect");
                let out = read_to_close(&mut ws).await;
                assert_eq!(out.code(), Some(1008));
                let error = format!("{:?} {:?}", out.error(), out.close);
                assert_clean(&error, reused, "token in a close/Error");
            }
            let insecure = url::Url::parse("ws://example.com/v3/ws").expect("url");
            let err = build_ws_url(&insecure, &StreamingParams::default(), Some(&token))
                .expect_err("insecure");
            tracing::warn!(%err, "refused");
            let key = ApiKey::new(KEY);
            tracing::info!(?key, "using key");
            emu.shutdown().await;
            (vec![query_token, header_token], fingerprint_q)
        })
    });
    let logs = capture.text();
    assert!(logs.contains("connecting"), "logs were captured:\n{logs}");
    assert!(
        logs.contains("tungstenite::"),
        "our dependencies' `log` records were captured too:\n{logs}"
    );
    assert!(
        logs.contains(&fingerprint),
        "tokens are identified by fingerprint"
    );
    for token in &tokens {
        assert_clean(&logs, token, "token");
    }
    assert_clean(&logs, KEY, "API key");
}
