//! One proxied connection: waits out a blackhole, connects upstream, pumps
//! bytes both ways through a delay queue, and ends the way the active fault
//! says.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::Fault;
use crate::control::{Accepted, Shared};
use crate::proxy::Upstream;

/// The largest chunk read at once; each chunk gets its own delivery time.
const CHUNK_SIZE: usize = 16 * 1024;

/// Chunks read but not yet written, per direction. Bounded so a slow
/// receiver pushes back on the sender, as a real network does, instead of
/// the proxy buffering without limit.
const IN_FLIGHT_CHUNKS: usize = 64;

/// How a connection ends, and so what its peers see.
enum Ending {
    /// Both sides closed their end and the proxy passed each close on.
    Finished,
    /// A graceful close (FIN) to both sides: [`Fault::Drop`].
    Close,
    /// An abortive close (RST) to both sides: [`Fault::Reset`], an upstream
    /// that refused, or a peer that failed mid-stream, whose reset the
    /// other side should see too rather than a clean end.
    Abort,
}

/// Bytes read in one go, and when they may be written.
struct Chunk {
    due: Instant,
    bytes: Vec<u8>,
}

/// Serves one accepted client until it closes, fails or a fault ends it.
pub(crate) async fn serve(mut client: TcpStream, upstream: Arc<Upstream>, accepted: Accepted) {
    let shared = Arc::clone(&accepted.shared);
    let mut faults = shared.fault.subscribe();
    let carried = faults.clone();
    let mut server = None;
    let ending = tokio::select! {
        // Polled first, so a client accepted under Drop or Reset is ended
        // before anything is sent upstream.
        biased;
        ending = ending_fault(&mut faults) => ending,
        ending = carry(&mut client, &mut server, &upstream, carried, &shared) => ending,
    };
    let streams = std::iter::once(&mut client).chain(server.as_mut());
    for stream in streams {
        match ending {
            Ending::Finished => {}
            Ending::Close => {
                // A peer that is already gone has nothing left to hear.
                if let Err(e) = stream.shutdown().await {
                    tracing::trace!(error = %e, "close: peer already gone");
                }
            }
            Ending::Abort => {
                if let Err(e) = stream.set_zero_linger() {
                    tracing::trace!(error = %e, "reset: cannot set SO_LINGER");
                }
            }
        }
    }
    // Both streams are dropped here, which sends the RST when lingering is off.
}

/// Resolves once a fault that ends connections is active, which may be
/// right away.
async fn ending_fault(faults: &mut watch::Receiver<Fault>) -> Ending {
    // Copied out at once: the borrow locks the value for the fault's setter.
    let fault = faults
        .wait_for(|fault| fault.ends_connections())
        .await
        .map(|fault| *fault);
    match fault {
        Ok(Fault::Reset) => Ending::Abort,
        Ok(_) => Ending::Close,
        // The sender lives in `Shared`, which outlives every connection;
        // without it no fault can arrive any more.
        Err(_) => std::future::pending().await,
    }
}

/// Connects upstream (after any blackhole lifts) and forwards both ways.
/// The upstream stream is put in `server` so the caller can end it too.
async fn carry(
    client: &mut TcpStream,
    server: &mut Option<TcpStream>,
    upstream: &Upstream,
    mut faults: watch::Receiver<Fault>,
    shared: &Shared,
) -> Ending {
    // A client accepted during a blackhole is connected and hears nothing;
    // the upstream does not see it until the blackhole lifts.
    unheld(&mut faults).await;
    let server = match TcpStream::connect(upstream.as_str()).await {
        Ok(stream) => server.insert(stream),
        Err(e) => {
            tracing::debug!(proxy = %shared.addr, %upstream, error = %e, "upstream refused; resetting client");
            return Ending::Abort;
        }
    };
    // The proxy must not add Nagle delays of its own to what it measures.
    for stream in [&*client, &*server] {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::trace!(error = %e, "cannot set TCP_NODELAY");
        }
    }
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let counters = &shared.counters;
    let forwarded = tokio::try_join!(
        forward(
            client_read,
            server_write,
            faults.clone(),
            &counters.to_upstream
        ),
        forward(server_read, client_write, faults, &counters.to_client),
    );
    match forwarded {
        Ok(_) => Ending::Finished,
        Err(e) => {
            tracing::debug!(proxy = %shared.addr, error = %e, "connection failed; resetting both sides");
            Ending::Abort
        }
    }
}

/// Forwards one direction until `from` ends, then passes the end on.
///
/// Reading and writing run concurrently through a queue so each chunk is
/// delayed from the moment it was read: pipelined chunks overlap their
/// delays instead of adding them up.
async fn forward(
    from: impl AsyncRead + Unpin,
    to: impl AsyncWrite + Unpin,
    faults: watch::Receiver<Fault>,
    forwarded: &AtomicU64,
) -> io::Result<()> {
    let (queue, queued) = mpsc::channel(IN_FLIGHT_CHUNKS);
    tokio::try_join!(
        read_chunks(from, queue, faults.clone()),
        write_chunks(queued, to, faults, forwarded),
    )?;
    Ok(())
}

async fn read_chunks(
    mut from: impl AsyncRead + Unpin,
    queue: mpsc::Sender<Chunk>,
    mut faults: watch::Receiver<Fault>,
) -> io::Result<()> {
    let mut buf = vec![0; CHUNK_SIZE];
    loop {
        // Not reading during a blackhole leaves the bytes in the kernel's
        // buffers, so they are held, and the sender feels it as a stall.
        unheld(&mut faults).await;
        let read = from.read(&mut buf).await?;
        if read == 0 {
            // Dropping the queue lets the writer drain it, then close.
            return Ok(());
        }
        let due = Instant::now() + faults.borrow().delay();
        let chunk = Chunk {
            due,
            bytes: buf[..read].to_vec(),
        };
        if queue.send(chunk).await.is_err() {
            // The writer failed; its error is the one that ends the connection.
            return Ok(());
        }
    }
}

async fn write_chunks(
    mut queued: mpsc::Receiver<Chunk>,
    mut to: impl AsyncWrite + Unpin,
    mut faults: watch::Receiver<Fault>,
    forwarded: &AtomicU64,
) -> io::Result<()> {
    while let Some(chunk) = queued.recv().await {
        if chunk.due > Instant::now() {
            tokio::time::sleep_until(chunk.due).await;
        }
        // A chunk read just before a blackhole began waits here.
        unheld(&mut faults).await;
        to.write_all(&chunk.bytes).await?;
        forwarded.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
    }
    to.shutdown().await
}

/// Waits while a blackhole holds traffic.
async fn unheld(faults: &mut watch::Receiver<Fault>) {
    // An error means the sender is gone, so nothing can hold traffic any more.
    let _ = faults.wait_for(|fault| !fault.holds_traffic()).await;
}
