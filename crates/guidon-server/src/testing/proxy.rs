//! A TCP proxy that injects faults between a client and a server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::Rng;

/// What the proxy does to connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Random delays, cuts mid-message and short connection lifetimes.
    pub chaos: bool,
    /// Accept and close at once (the server looks down).
    pub refuse: bool,
    /// Refuse stream requests (SSE and WebSocket) only.
    pub block_streams: bool,
    /// Keep connections open but stop forwarding the server's bytes.
    pub stall: bool,
}

/// A proxy on 127.0.0.1:0 in front of `upstream`. Each connection takes
/// the faults set when it was accepted (and `stall`/`chaos` as they are
/// now, for each chunk the server sends); its randomness comes from the
/// seed and the connection's number. Stops accepting, and cuts every
/// connection, on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    faults: Arc<Mutex<Faults>>,
    /// Bumped to cut every open connection.
    epoch: watch::Sender<u64>,
    /// Connections ended by the proxy (a fault, a cut, a lifetime over).
    pub cuts: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let upstream = Arc::new(Mutex::new(upstream));
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (epoch, _) = watch::channel(0_u64);
        let cuts = Arc::new(AtomicU64::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let proxy = Proxy {
            addr,
            upstream: upstream.clone(),
            faults: faults.clone(),
            epoch: epoch.clone(),
            cuts: cuts.clone(),
            stopped: stopped.clone(),
        };
        tokio::spawn(async move {
            let mut n: u64 = 0;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                n += 1;
                let rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n);
                let up = *upstream.lock().unwrap_or_else(PoisonError::into_inner);
                let f = *faults.lock().unwrap_or_else(PoisonError::into_inner);
                tokio::spawn(relay(
                    client,
                    up,
                    f,
                    faults.clone(),
                    rng,
                    epoch.subscribe(),
                    cuts.clone(),
                ));
            }
        });
        proxy
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    pub fn set_upstream(&self, addr: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) = addr;
    }

    /// Cuts every open connection.
    pub fn cut_all(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.cut_all();
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    at_accept: Faults,
    faults: Arc<Mutex<Faults>>,
    mut rng: Rng,
    mut epoch: watch::Receiver<u64>,
    cuts: Arc<AtomicU64>,
) {
    if at_accept.refuse || (at_accept.chaos && rng.chance(5)) {
        cuts.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // The request's first bytes tell a stream from other requests.
    let mut first = vec![0_u8; 8192];
    let n = match tokio::time::timeout(Duration::from_secs(10), client.read(&mut first)).await {
        Ok(Ok(n)) if n > 0 => n,
        _ => return,
    };
    first.truncate(n);
    let head = String::from_utf8_lossy(&first);
    let is_stream = head.contains("/api/v1/sdk/stream") || head.contains("/api/v1/sdk/ws");
    if at_accept.block_streams && is_stream {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    if server.write_all(&first).await.is_err() {
        return;
    }
    // A chaotic connection lives a random while (cut even when idle).
    let lifetime = if at_accept.chaos {
        Duration::from_millis(50 + rng.below(1500))
    } else {
        Duration::from_secs(3600)
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up_rng = Rng::new(rng.next_u64());
    let upward = async move {
        let mut buf = vec![0_u8; 16384];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if at_accept.chaos && up_rng.chance(2) {
                return;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downward = async move {
        let mut buf = vec![0_u8; 16384];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let now = *faults.lock().unwrap_or_else(PoisonError::into_inner);
            if now.stall {
                // Hold the connection open, forward nothing.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            if now.chaos {
                if rng.chance(20) {
                    tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
                }
                if rng.chance(8) {
                    // Cut mid-message: forward a prefix, then close.
                    let cut = usize::try_from(rng.below(n as u64)).unwrap_or(0);
                    let _ = cw.write_all(&buf[..cut]).await;
                    return;
                }
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = upward => {}
        () = downward => {}
        () = tokio::time::sleep(lifetime) => {}
        _ = epoch.changed() => {}
    }
    cuts.fetch_add(1, Ordering::Relaxed);
}
