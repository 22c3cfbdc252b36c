//! Starting and stopping one homeserver.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    api,
    config::Config,
    serve::{ConnectionLimits, serve},
    service::Services,
    storage::Storage,
};

/// A running server.
pub struct Handle {
    pub addr: SocketAddr,
    pub services: Arc<Services>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

pub struct Server;

impl Server {
    /// Connects storage (migrating it), then serves the API on `listener` until
    /// [`Handle::shutdown`] is called.
    pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<Handle> {
        let config = Arc::new(config);
        let storage = Storage::connect(&config.database.url, config.database.max_connections).await?;
        let (shutdown, stop) = watch::channel(false);
        let services = Services::build(Arc::clone(&config), storage, shutdown.subscribe()).await?;
        services.spawn_background(&shutdown);
        let addr = listener.local_addr().context("reading the listener's address")?;
        let app = api::router::build(&services);
        let limits = ConnectionLimits {
            header_read_timeout: config.http.header_read_timeout(),
            max_connections: config.http.max_connections,
        };
        let task = tokio::spawn(serve(listener, app, limits, stop));
        tracing::info!(%addr, server_name = %config.server_name, backend = ?services.storage.backend, "listening");
        Ok(Handle { addr, services, shutdown, task })
    }
}

impl Handle {
    /// Stops accepting connections, lets in-flight requests finish, then closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task")?.context("serving")?;
        self.services.storage.close().await;
        Ok(())
    }

    /// Resolves when the server stops by itself (an accept loop error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task")?.context("serving")
    }
}
