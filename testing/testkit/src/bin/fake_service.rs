//! A stand-in for a Shipshape service, for the test kit's own tests only.
//!
//! It honours the process contract and nothing else: serves `/healthz` and
//! `/readyz` on `OPS_ADDR`, holds the ports in `HTTP_ADDR` and `GRPC_ADDR`,
//! and exits 0 on SIGTERM or SIGINT. `GET /env` returns its environment as
//! JSON so tests can check what the stack gave it. Misbehaviour on demand:
//! `FAKE_FAIL_AT_START=1` exits with status 3 at once, `FAKE_NEVER_READY=1`
//! answers `/readyz` with 503.
#![forbid(unsafe_code)]

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args()
        .next()
        .and_then(|arg0| arg0.rsplit('/').next().map(str::to_owned))
        .unwrap_or_default();
    if flag("FAKE_FAIL_AT_START") {
        eprintln!("{name}: failing at start, as FAKE_FAIL_AT_START asks");
        std::process::exit(3);
    }
    let ops_addr = std::env::var("OPS_ADDR").context("OPS_ADDR must be set")?;
    let ops = TcpListener::bind(&ops_addr)
        .await
        .with_context(|| format!("binding {ops_addr}"))?;
    // Held, not served: a real service would listen there.
    let mut held = Vec::new();
    for var in ["HTTP_ADDR", "GRPC_ADDR"] {
        if let Ok(addr) = std::env::var(var) {
            held.push(
                TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("binding {var}={addr}"))?,
            );
        }
    }
    println!("{name}: ops server on {ops_addr}");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            accepted = ops.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(answer(stream));
                }
            }
        }
    }
    println!("{name}: stopping");
    Ok(())
}

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| value == "1")
}

/// Answers one HTTP/1.1 request and closes the connection.
async fn answer(mut stream: TcpStream) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/healthz" => ("200 OK", r#"{"status":"ok"}"#.to_owned()),
        "/readyz" if flag("FAKE_NEVER_READY") => (
            "503 Service Unavailable",
            r#"{"status":"not_ready"}"#.to_owned(),
        ),
        "/readyz" => ("200 OK", r#"{"status":"ready"}"#.to_owned()),
        "/env" => {
            let env: serde_json::Map<String, serde_json::Value> = std::env::vars()
                .map(|(key, value)| (key, value.into()))
                .collect();
            ("200 OK", serde_json::Value::Object(env).to_string())
        }
        _ => ("404 Not Found", r#"{"error":"not found"}"#.to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
