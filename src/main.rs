//! `aai-live` binary: parse the command line and hand over to the library. Everything else lives
//! in `aai_live::subcommands` so it can be tested without a terminal.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = aai_live::cli::Cli::parse();
    match aai_live::subcommands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line: "what failed: why".
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
