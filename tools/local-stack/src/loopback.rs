//! The local stack's own HTTP servers (the IAM authorizer, the Twilio mock, the tests' proxies):
//! a router served on a free loopback port until the server is dropped.

use std::net::SocketAddr;

pub struct LoopbackServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackServer {
    /// Serves `app` on a free loopback port; `name` says which server stopped, if one does.
    pub async fn start(app: axum::Router, name: &'static str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(error = %error, server = name, "a local server stopped");
            }
        });
        Ok(Self { address, task })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
