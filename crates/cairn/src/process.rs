//! Running a process: servers, roles, signals, orderly shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use cairn_common::Shutdown;
use cairn_common::metrics::Registry;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tonic::service::RoutesBuilder;
use tracing::{error, info, warn};

use crate::config::{Config, listen_addr};
use crate::listener;
use crate::roles::{self, Target};
use crate::server::{self, Ops, ProcessMetrics};

/// Runs `target` until SIGTERM or SIGINT, then shuts down in order: stop
/// accepting, drain in-flight requests, let the roles flush, return.
pub async fn run(target: Target, cfg: Config) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let process = ProcessMetrics::register(&mut registry);
    let durations = server::request_durations(&mut registry);
    let roles = roles::build(target, &cfg, &mut registry).await?;
    let roles = Arc::new(roles);
    let registry = Arc::new(Mutex::new(registry));

    // HTTP: ops routes plus every role's routes, all measured.
    let mut app = Router::new();
    for r in roles.iter() {
        app = app.merge(r.http());
    }
    app = app
        .merge(server::ops_routes(Ops { roles: roles.clone(), registry, durations: durations.clone(), process }))
        .layer(axum::middleware::from_fn_with_state(durations, server::track));

    // gRPC: every role's services plus the standard health service.
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut grpc = RoutesBuilder::default();
    grpc.add_service(health_service);
    for r in roles.iter() {
        r.grpc(&mut grpc);
    }

    let http_addr = listen_addr(&cfg.server.http_listen_address)?;
    let grpc_addr = listen_addr(&cfg.server.grpc_listen_address)?;
    let http_listener =
        TcpListener::bind(http_addr).await.with_context(|| format!("binding the HTTP listener on {http_addr}"))?;
    let grpc_listener =
        TcpListener::bind(grpc_addr).await.with_context(|| format!("binding the gRPC listener on {grpc_addr}"))?;
    info!(
        roles = ?roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
        http = %http_listener.local_addr()?,
        grpc = %grpc_listener.local_addr()?,
        data_dir = %cfg.data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "starting cairn"
    );

    let stop_serving = Shutdown::new();
    let http = {
        let stop = stop_serving.clone();
        let bounds = listener::HttpBounds::from_config(&cfg.server);
        tokio::spawn(async move { listener::serve_http(http_listener, app, bounds, stop).await })
    };
    let grpc_server = {
        let stop = stop_serving.clone();
        let routes = grpc.routes();
        let s = &cfg.server;
        let idle = s.grpc_idle_timeout.as_std();
        let incoming = listener::grpc_incoming(
            grpc_listener,
            listener::GrpcBounds { conn_limit: s.grpc_conn_limit, idle_timeout: idle },
        );
        let server = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(s.grpc_max_concurrent_streams))
            .http2_keepalive_interval((!idle.is_zero()).then_some(idle / 2))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        tokio::spawn(async move {
            let mut server = server;
            server
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await })
                .await
        })
    };

    // Roles' background duties run until the servers have drained.
    let stop_roles = Shutdown::new();
    let mut duties = Vec::new();
    for (i, _) in roles.iter().enumerate() {
        let roles = roles.clone();
        let stop = stop_roles.clone();
        duties.push(tokio::spawn(async move {
            let r = &roles[i];
            if let Err(e) = r.run(stop).await {
                error!(role = r.name(), error = %e, "role failed");
            }
        }));
    }

    let signal = shutdown_signal();
    tokio::pin!(signal);
    // Start-up work (WAL replay) while already answering health checks.
    let started = async {
        for r in roles.iter() {
            r.start().await.map_err(|e| anyhow::anyhow!("starting the {}: {e}", r.name()))?;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::select! {
        res = started => {
            res?;
            health.set_service_status("", tonic_health::ServingStatus::Serving).await;
            info!("cairn is ready");
        }
        _ = &mut signal => {
            warn!("stopping before start-up finished");
        }
    }
    if !stop_serving.is_cancelled() {
        tokio::select! {
            _ = &mut signal => {}
            _ = stop_serving.cancelled() => {}
        }
    }

    for r in roles.iter() {
        r.stopping().await;
    }
    info!("shutting down: no new requests, draining in-flight ones");
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    stop_serving.cancel();
    let grace = cfg.server.graceful_shutdown_timeout.as_std();
    let drained = tokio::time::timeout(grace, async {
        let (h, g) = tokio::join!(http, grpc_server);
        if let Ok(Err(e)) = h {
            error!(error = %e, "HTTP server failed");
        }
        if let Ok(Err(e)) = g {
            error!(error = %e, "gRPC server failed");
        }
    })
    .await;
    if drained.is_err() {
        warn!(timeout = ?grace, "in-flight requests did not finish in time");
    }
    stop_roles.cancel();
    for d in duties {
        let _ = tokio::time::timeout(Duration::from_secs(60), d).await;
    }
    info!("cairn stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("received SIGINT"),
        _ = term => info!("received SIGTERM"),
    }
}
