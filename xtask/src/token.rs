//! `cargo xtask token`: mints a development bearer token for the gateway
//! of `cargo xtask up`, signed with the machine's development secret (see
//! `shipshape_testkit::auth::dev_secret`), and prints it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use shipshape_testkit::auth;

#[derive(Debug, PartialEq)]
struct Args {
    subject: String,
    scopes: Vec<String>,
    ttl: Duration,
}

fn parse(args: Vec<String>) -> anyhow::Result<Args> {
    let mut subject = None;
    let mut scopes = Vec::new();
    let mut ttl = auth::TOKEN_TTL;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--subject" => subject = Some(value("--subject")?),
            "--scope" => scopes.push(value("--scope")?),
            "--ttl-secs" => {
                let secs = value("--ttl-secs")?;
                ttl = Duration::from_secs(
                    secs.parse()
                        .with_context(|| format!("--ttl-secs {secs} is not a number"))?,
                );
            }
            _ => bail!("unknown argument `{arg}`"),
        }
    }
    Ok(Args {
        subject: subject.context("--subject is required: the customer the token names")?,
        scopes,
        ttl,
    })
}

pub fn run(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let args = parse(args)?;
    let minter = auth::minter(&auth::dev_secret()?)?;
    let scopes: Vec<&str> = args.scopes.iter().map(String::as_str).collect();
    println!("{}", minter.mint(&args.subject, &scopes, args.ttl)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn subject_scopes_and_lifetime_are_read() {
        assert_eq!(
            parse(args("--subject ops --scope admin --ttl-secs 60")).unwrap(),
            Args {
                subject: "ops".into(),
                scopes: vec!["admin".into()],
                ttl: Duration::from_secs(60),
            }
        );
        assert_eq!(parse(args("--subject alice")).unwrap().ttl, auth::TOKEN_TTL);
        assert!(parse(args("")).is_err());
        assert!(parse(args("--subject")).is_err());
        assert!(parse(args("--subject a --ttl-secs soon")).is_err());
        assert!(parse(args("--subject a --sudo")).is_err());
    }
}
