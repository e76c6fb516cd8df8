//! `cargo xtask token`: mints a development bearer token for the gateway
//! of `cargo xtask up`, signed with the machine's development secret (see
//! `shipshape_testkit::auth::dev_secret`), and prints it.

use std::process::ExitCode;
use std::time::Duration;

use shipshape_testkit::auth;

/// What the token says.
#[derive(Debug, PartialEq, clap::Args)]
pub struct Args {
    /// The customer the token names
    #[arg(long, value_name = "ID")]
    subject: String,
    /// A scope the token grants, e.g. admin for restocking (repeatable)
    #[arg(long = "scope", value_name = "S")]
    scopes: Vec<String>,
    /// How long the token is valid, in seconds
    #[arg(long, value_name = "N", default_value_t = auth::TOKEN_TTL.as_secs())]
    ttl_secs: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let minter = auth::minter(&auth::dev_secret()?)?;
    let scopes: Vec<&str> = args.scopes.iter().map(String::as_str).collect();
    let ttl = Duration::from_secs(args.ttl_secs);
    println!("{}", minter.mint(&args.subject, &scopes, ttl)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, clap::Error> {
        match crate::parse(&format!("token {line}"))? {
            crate::Command::Token(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subject_scopes_and_lifetime_are_read() {
        assert_eq!(
            parse("--subject ops --scope admin --ttl-secs 60").expect("parsed"),
            Args {
                subject: "ops".into(),
                scopes: vec!["admin".into()],
                ttl_secs: 60,
            }
        );
        assert_eq!(
            parse("--subject alice").expect("parsed").ttl_secs,
            auth::TOKEN_TTL.as_secs()
        );
        assert_eq!(
            parse("--subject a --scope admin --scope audit")
                .expect("parsed")
                .scopes,
            ["admin", "audit"]
        );
        assert!(parse("").is_err());
        assert!(parse("--subject").is_err());
        assert!(parse("--subject a --ttl-secs soon").is_err());
        assert!(parse("--subject a --sudo").is_err());
    }
}
