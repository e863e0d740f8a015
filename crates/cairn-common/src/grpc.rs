//! gRPC channels to other processes, one per address, connected lazily and
//! shared by every client in the process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// Runs a gRPC call with its deadline enforced on this side too: the
/// `grpc-timeout` header alone does not help against a peer that hangs
/// without closing the connection.
pub async fn with_deadline<T>(d: Duration, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    match tokio::time::timeout(d, call).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!("no answer within {d:?}"))),
    }
}

#[derive(Clone, Debug, Default)]
pub struct Channels {
    by_addr: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    /// The channel to `addr` (`host:port`). Fails only for an address that
    /// cannot be a URI; connection errors surface on the first call.
    pub fn get(&self, addr: &str) -> Result<Channel, String> {
        if let Some(c) = self.by_addr.lock().get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect_lazy();
        self.by_addr.lock().insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}
