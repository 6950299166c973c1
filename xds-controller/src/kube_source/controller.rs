//! `aigw controller`: the Kubernetes mode. Serves ADS, the credential
//! service and the rate-limit service on configurable addresses, and
//! configures them from the watched resources. Envoy runs elsewhere (its
//! own Deployment) with a bootstrap pointing here.

use super::{leader, sync, Published, SourceConfig};
use crate::credentials::CredentialService;
use crate::ratelimit::{RateLimitServer, Store};
use crate::run::{RunConfig, TOKEN_ENV};
use crate::translate::Options;
use crate::xds::{AdsServer, Snapshot};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Address of the ADS (xDS) gRPC server Envoy connects to.
    #[arg(long, default_value = "0.0.0.0:18000")]
    pub xds_address: String,
    /// Address of the credential service the filter fetches upstream keys from.
    #[arg(long, default_value = "0.0.0.0:18001")]
    pub credential_address: String,
    /// Address of the rate-limit gRPC service.
    #[arg(long, default_value = "0.0.0.0:18002")]
    pub rate_limit_address: String,
    /// The credential service's authority as Envoy reaches it (through the
    /// bootstrap's aigw_controller cluster).
    #[arg(long, default_value = "aigw-controller.aigw-system.svc:18001")]
    pub credential_authority: String,
    /// Token the filter presents to the credential service; Envoy gets the
    /// same value in its environment.
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub credential_token: String,
    /// Path of the filter's .wasm inside the Envoy pods.
    #[arg(long, default_value = "/etc/aigw/wasm/aigw_filter.wasm")]
    pub wasm_path: PathBuf,
    /// CA bundle inside the Envoy pods, for upstream TLS.
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    pub envoy_ca_file: String,
    /// Address the Gateway listeners bind inside the Envoy pods.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_address: String,
    /// Gateway listener ports below 1024 are bound at port + this offset in
    /// the Envoy pods (unprivileged), as Envoy Gateway does; 0 binds them as is.
    #[arg(long, default_value_t = 10000)]
    pub privileged_port_offset: u16,
    /// JSON-lines access log inside the Envoy pods (e.g. /dev/stdout).
    #[arg(long)]
    pub access_log: Option<PathBuf>,
    /// Watch this namespace only (default: all namespaces).
    #[arg(long)]
    pub namespace: Option<String>,
    /// API version of the aigateway.envoyproxy.io kinds to watch.
    #[arg(long, default_value = "v1alpha1")]
    pub ai_gateway_version: String,
    /// API version of BackendTLSPolicy to watch (v1alpha3 or v1).
    #[arg(long, default_value = "v1alpha3")]
    pub backend_tls_policy_version: String,
    /// Quiet time after a change before translating, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub debounce_ms: u64,
    /// Redis URL for rate-limit counters (default: in memory).
    #[arg(long, env = "AIGW_REDIS")]
    pub redis: Option<String>,
    /// Refuse requests when rate limits cannot be checked.
    #[arg(long)]
    pub rate_limit_fail_closed: bool,
    /// Reserve-then-settle token budgets, reserving this many output tokens
    /// when a request names no max_tokens (see `aigw run --help`).
    #[arg(long, env = "AIGW_RATE_LIMIT_RESERVE", value_name = "DEFAULT_OUTPUT_TOKENS", num_args = 0..=1, default_missing_value = "1024")]
    pub rate_limit_reserve: Option<u64>,
    /// Elect a leader among controller replicas over a coordination.k8s.io
    /// Lease: every replica serves xDS, credentials and rate limits; only
    /// the leader writes status. `--leader-elect=false` writes status
    /// unconditionally (one replica only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: the controller's own namespace, from
    /// the service account or the kubeconfig context).
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "aigw-controller")]
    pub leader_election_id: String,
    /// Lease duration in seconds: a dead leader's lease is taken over this
    /// long after its last renewal was seen; the leader renews every third
    /// of it.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub leader_lease_seconds: u64,
    /// `controllerName` of the `status.ancestors` entries aigw writes on
    /// BackendTrafficPolicy and SecurityPolicy, and of the GatewayClasses
    /// whose status (and their Gateways' status) aigw writes. The default is Envoy
    /// Gateway's (aigw serves the same GatewayClass); where Envoy Gateway
    /// runs too, set another one so the two do not overwrite each other.
    #[arg(long, default_value = super::policy_status::DEFAULT_CONTROLLER_NAME)]
    pub controller_name: String,
    /// Serve only the Gateways whose GatewayClass has `--controller-name`
    /// as its controllerName (e.g. next to an Envoy Gateway that serves the
    /// others); by default every Gateway is served, whatever its class.
    #[arg(long)]
    pub own_gateway_classes_only: bool,
    /// This replica's name in the Lease (a random suffix is added); the
    /// Deployment passes the pod name. Default: the host name.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Send every request through the filter's upstream role, also on rules
    /// the listener's filter serves directly by default (see README).
    #[arg(long)]
    pub no_direct: bool,
}

impl ControllerArgs {
    pub fn source_config(&self) -> SourceConfig {
        SourceConfig {
            namespace: self.namespace.clone(),
            ai_gateway_version: self.ai_gateway_version.clone(),
            backend_tls_policy_version: self.backend_tls_policy_version.clone(),
            debounce: Duration::from_millis(self.debounce_ms),
            controller_name: self.controller_name.clone(),
            own_gateway_classes_only: self.own_gateway_classes_only,
            ..SourceConfig::default()
        }
    }

    /// The translation's inputs for configuration `version`: paths and
    /// addresses as seen from the Envoy pods.
    pub fn options(&self, version: u64) -> Options {
        let config = RunConfig {
            wasm: self.wasm_path.clone(),
            listen_address: self.listen_address.clone(),
            access_log: self.access_log.clone(),
            redis: self.redis.clone(),
            rate_limit_fail_closed: self.rate_limit_fail_closed,
            rate_limit_reserve: self.rate_limit_reserve,
            no_direct: self.no_direct,
            ..RunConfig::default()
        };
        let mut options = crate::run::options(&config, 0, version);
        options.credential_source.authority = self.credential_authority.clone();
        options.ca_file = self.envoy_ca_file.clone();
        if self.privileged_port_offset > 0 {
            options.port_map = (1..1024u16)
                .filter_map(|p| Some((p, p.checked_add(self.privileged_port_offset)?)))
                .collect();
        }
        options
    }
}

/// Where a published configuration goes.
#[derive(Clone)]
pub struct Servers {
    pub snapshots: Arc<watch::Sender<Arc<Snapshot>>>,
    pub credentials: CredentialService,
    /// Mints and refreshes the credentials the configuration names.
    pub refresher: crate::mint::Refresher,
    pub rate_limiter: RateLimitServer,
}

impl Servers {
    pub fn publish(&self, published: &Published) {
        self.credentials
            .update(published.translation.credentials.clone());
        self.refresher.sync(&published.translation.minted);
        self.rate_limiter
            .update(published.translation.rate_limits.clone());
        let _ = self.snapshots.send(published.snapshot.clone());
    }
}

async fn bind(address: &str, what: &str) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for {what}"))
}

pub async fn run(args: ControllerArgs) -> Result<()> {
    if args.credential_token.len() < 16 {
        bail!("{TOKEN_ENV} must be set to a random token of at least 16 characters");
    }
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let xds_listener = bind(&args.xds_address, "xDS").await?;
    let credential_listener = bind(&args.credential_address, "credentials").await?;
    let ratelimit_listener = bind(&args.rate_limit_address, "rate limits").await?;

    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let credentials = CredentialService::new(args.credential_token.clone());
    let rate_limiter = RateLimitServer::new(
        match &args.redis {
            Some(url) => Store::Redis(
                crate::ratelimit::redis::RedisStore::new(url).map_err(anyhow::Error::msg)?,
            ),
            None => Store::Memory(Default::default()),
        },
        args.rate_limit_fail_closed,
    );
    let servers = Servers {
        snapshots: Arc::new(snapshot_tx),
        credentials: credentials.clone(),
        refresher: crate::mint::Refresher::new(credentials.clone(), 30),
        rate_limiter: rate_limiter.clone(),
    };
    let ads = AdsServer::new(snapshot_rx);
    let xds = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ads.service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(xds_listener)),
    );
    let ratelimit = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rate_limiter.service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                ratelimit_listener,
            )),
    );
    let router = credentials.router();
    let creds = tokio::spawn(async move { axum::serve(credential_listener, router).await });
    eprintln!(
        "aigw: controller serving xDS on {}, credentials on {}, rate limits on {}",
        args.xds_address, args.credential_address, args.rate_limit_address
    );

    let (leading_tx, leading) = watch::channel(!args.leader_elect);
    let elector = args.leader_elect.then(|| {
        let namespace = args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        Arc::new(leader::Elector::new(
            client.clone(),
            &namespace,
            &args.leader_election_id,
            leader::identity(args.pod_name.as_deref()),
            leader::Timing::from_lease(Duration::from_secs(args.leader_lease_seconds)),
        ))
    });
    let election = match &elector {
        Some(elector) => {
            eprintln!(
                "aigw: leader election as {}; status is written by the lease holder only",
                elector.identity()
            );
            let elector = elector.clone();
            tokio::spawn(async move { elector.run(leading_tx).await })
        }
        None => tokio::spawn(async move {
            let _keep = leading_tx;
            std::future::pending::<()>().await
        }),
    };

    let election_stop = election.abort_handle();

    let source = args.source_config();
    let options = |version| args.options(version);
    let publish = |p: &Published| {
        servers.publish(p);
        eprintln!(
            "aigw: configuration version {} pushed ({} AIGatewayRoutes)",
            p.version,
            p.resources.ai_gateway_routes.len()
        );
    };
    let result = tokio::select! {
        () = sync(client, source, leading, options, publish) => Err(anyhow::anyhow!("the Kubernetes watch ended")),
        r = xds => Err(anyhow::anyhow!("the xDS server stopped: {r:?}")),
        r = ratelimit => Err(anyhow::anyhow!("the rate-limit server stopped: {r:?}")),
        r = creds => Err(anyhow::anyhow!("the credential server stopped: {r:?}")),
        r = election => Err(anyhow::anyhow!("the leader election stopped: {r:?}")),
        _ = tokio::signal::ctrl_c() => Ok(()),
        () = terminate() => Ok(()),
    };
    // Hand the lease over at once rather than after its duration, after
    // stopping the campaign (which could otherwise take it back).
    election_stop.abort();
    if let Some(elector) = elector {
        elector.release().await;
    }
    result
}

/// SIGTERM, which Kubernetes sends to stop the pod.
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}
