//! Starting and stopping one homeserver.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    api,
    config::{Config, FederationTls},
    serve::{ConnectionLimits, serve},
    service::Services,
    storage::Storage,
};

/// A running server.
pub struct Handle {
    pub addr: SocketAddr,
    /// The federation listener's address, when federation is on.
    pub federation_addr: Option<SocketAddr>,
    pub services: Arc<Services>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    federation_task: Option<JoinHandle<std::io::Result<()>>>,
}

pub struct Server;

impl Server {
    /// Connects storage (migrating it), then serves the API on `listener` until
    /// [`Handle::shutdown`] is called. The federation listener binds `federation.listen`.
    pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<Handle> {
        let federation = match config.federation.listen {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.with_context(|| format!("binding the federation listener {addr}"))?)
            }
            None => None,
        };
        Self::start_with(config, listener, federation).await
    }

    /// As [`Server::start`], with the federation listener given (tests bind port 0).
    pub async fn start_with(
        config: Config,
        listener: TcpListener,
        federation: Option<TcpListener>,
    ) -> anyhow::Result<Handle> {
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
        let task = tokio::spawn(serve(listener, app, limits, None, stop.clone()));
        tracing::info!(%addr, server_name = %config.server_name, backend = ?services.storage.backend, "listening");
        let (federation_addr, federation_task) = match federation {
            Some(listener) => {
                let federation_addr = listener.local_addr().context("reading the federation listener's address")?;
                let tls = match config.federation.tls {
                    FederationTls::Https => Some(crate::tls::acceptor(&config.federation, &config.server_name)?),
                    FederationTls::BehindProxy => None,
                };
                let app = api::router::build_federation(&services);
                tracing::info!(addr = %federation_addr, tls = tls.is_some(), "federation listening");
                (Some(federation_addr), Some(tokio::spawn(serve(listener, app, limits, tls, stop))))
            }
            None => (None, None),
        };
        Ok(Handle { addr, federation_addr, services, shutdown, task, federation_task })
    }
}

impl Handle {
    /// Stops accepting connections, lets in-flight requests finish, then closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task")?.context("serving")?;
        if let Some(task) = self.federation_task {
            task.await.context("federation server task")?.context("serving federation")?;
        }
        self.services.storage.close().await;
        Ok(())
    }

    /// Resolves when the server stops by itself (an accept loop error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task")?.context("serving")
    }
}
