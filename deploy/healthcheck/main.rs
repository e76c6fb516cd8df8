//! `shipshape-healthcheck`: the container health probe shipped in the
//! Shipshape image, for engines that run a command inside the container
//! (Docker's `HEALTHCHECK`, Compose's `healthcheck`). Kubernetes does not
//! need it: the kubelet probes `/healthz` and `/readyz` over HTTP itself.
//!
//! The runtime image has no shell, curl or wget, so this is a small program of
//! its own: the standard library and clap (without colour or terminal
//! probing), built with the services in the image's build stage.
//!
//! `shipshape-healthcheck [PORT] [PATH]` sends `GET PATH` (default
//! `/readyz`) to the process's ops server and exits 0 on `200`, 1 otherwise,
//! printing one line that says why. The port is, in order: `PORT`; the port
//! of `OPS_ADDR`, the variable the service itself reads; the default ops port
//! of the service running as PID 1 (docs/configuration.md, `OPS_ADDR`:
//! gateway 9100, order 9101, inventory 9102, payment 9103, shipping 9104,
//! PSP simulator 9105).
#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Each of connect, write and read must finish within this; Docker's own
/// `--timeout` bounds the whole probe as well.
const TIMEOUT: Duration = Duration::from_secs(2);

const DEFAULT_PATH: &str = "/readyz";

/// The ops port each service binds when `OPS_ADDR` is unset.
const DEFAULT_OPS_PORTS: [(&str, u16); 6] = [
    ("shipshape-gateway", 9100),
    ("shipshape-order", 9101),
    ("shipshape-inventory", 9102),
    ("shipshape-payment", 9103),
    ("shipshape-shipping", 9104),
    ("shipshape-psp-simulator", 9105),
];

/// Sends `GET PATH` to the ops server of the service in this container and
/// exits 0 on `200`, 1 otherwise, printing one line that says why.
#[derive(Debug, Parser)]
#[command(name = "shipshape-healthcheck")]
struct Cli {
    /// The ops server's port on 127.0.0.1 [default: the address in OPS_ADDR,
    /// else the default ops port of the service running as PID 1]
    // Text, not a number: a PORT that is no port fails the probe (exit 1,
    // "unhealthy") like any other reason, rather than as a usage error.
    port: Option<String>,
    /// The path to GET
    #[arg(default_value = DEFAULT_PATH)]
    path: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = target(cli.port.as_deref()).and_then(|addr| probe(addr, &cli.path));
    match result {
        Ok(line) => {
            println!("healthy: {line}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("unhealthy: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Where the ops server listens, as seen from inside the container.
fn target(port_arg: Option<&str>) -> Result<SocketAddr, String> {
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    if let Some(raw) = port_arg {
        let port = raw
            .parse()
            .map_err(|_| format!("PORT {raw:?} is not a port number"))?;
        return Ok(SocketAddr::new(loopback.ip(), port));
    }
    if let Ok(raw) = std::env::var("OPS_ADDR") {
        let addr: SocketAddr = raw
            .trim()
            .parse()
            .map_err(|_| format!("OPS_ADDR {raw:?} is not an address"))?;
        // A server bound to every interface answers on loopback.
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        return Ok(SocketAddr::new(ip, addr.port()));
    }
    let service = pid1_program().ok_or("OPS_ADDR is unset and PID 1 is unknown; pass a PORT")?;
    DEFAULT_OPS_PORTS
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(_, port)| SocketAddr::new(loopback.ip(), *port))
        .ok_or_else(|| {
            format!("OPS_ADDR is unset and PID 1 ({service}) is no Shipshape service; pass a PORT")
        })
}

/// The file name of the program running as PID 1 (the service, in a
/// container started with the image's exec-form command).
fn pid1_program() -> Option<String> {
    let cmdline = std::fs::read("/proc/1/cmdline").ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next()?;
    let argv0 = String::from_utf8_lossy(argv0);
    Some(argv0.rsplit('/').next()?.to_owned())
}

/// One HTTP/1.1 request; `Ok` with the status line when it says 200.
fn probe(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("socket options: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: shipshape-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;

    // The status line is all we need; read until its end (or 1 KiB).
    let mut head = Vec::with_capacity(128);
    let mut buf = [0_u8; 128];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        let n = stream.read(&mut buf).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                format!("no answer from {addr} within {} s", TIMEOUT.as_secs())
            }
            _ => format!("read from {addr}: {e}"),
        })?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or("").trim().to_owned();
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/1.") => {
            Ok(format!("GET http://{addr}{path}: {status_line}"))
        }
        (Some(version), Some(_)) if version.starts_with("HTTP/1.") => {
            Err(format!("GET http://{addr}{path}: {status_line}"))
        }
        _ => Err(format!(
            "GET http://{addr}{path}: not an HTTP answer: {status_line:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shipshape-healthcheck").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn port_and_path_are_optional_positionals() {
        let cli = parse(&[]).expect("no arguments");
        assert_eq!((cli.port, cli.path.as_str()), (None, DEFAULT_PATH));
        let cli = parse(&["9101"]).expect("a port");
        assert_eq!(
            (cli.port.as_deref(), cli.path.as_str()),
            (Some("9101"), DEFAULT_PATH)
        );
        let cli = parse(&["9101", "/healthz"]).expect("a port and a path");
        assert_eq!(
            (cli.port.as_deref(), cli.path.as_str()),
            (Some("9101"), "/healthz")
        );
        assert!(parse(&["9101", "/a", "/b"]).is_err());
    }

    #[test]
    fn a_port_that_is_no_number_fails_the_probe_not_the_command_line() {
        let cli = parse(&["ops"]).expect("any text");
        let error = target(cli.port.as_deref()).expect_err("not a port");
        assert!(error.contains("is not a port number"), "{error}");
    }
}
