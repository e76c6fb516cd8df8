use std::process::ExitCode;

use shipshape_loadtest::cli::{self, TokensFromEnv, USAGE};
use shipshape_loadtest::command;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args, TokensFromEnv::read()) {
        Ok(command) => command,
        Err(error) => {
            eprint!("error: {error:#}\n\n{USAGE}");
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
