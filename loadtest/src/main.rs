use std::process::ExitCode;

use clap::Parser;
use shipshape_loadtest::cli::{Cli, TokensFromEnv};
use shipshape_loadtest::command;

#[tokio::main]
async fn main() -> ExitCode {
    let command = match Cli::parse().into_command(TokensFromEnv::read()) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    match command::execute(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
