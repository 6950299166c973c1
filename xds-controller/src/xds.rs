//! The ADS server (state of the world): pushes each new snapshot to every
//! connected Envoy, and follows its ACKs and NACKs by version and nonce.

use crate::proto::{self, prost_types_any::Any};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Order in which a new snapshot is pushed: clusters before the listeners
/// and routes that refer to them.
const PUSH_ORDER: [&str; 3] = [proto::CLUSTER, proto::LISTENER, proto::ROUTE];

#[derive(Debug, Default)]
pub struct Snapshot {
    /// 0: no configuration yet (a controller that has not read its source).
    /// Such a snapshot is never sent: an Envoy that reconnects to a
    /// restarted controller keeps serving what it has until there is a
    /// real configuration, instead of being emptied.
    pub version: u64,
    /// Resources by type URL, each with its name.
    pub resources: BTreeMap<&'static str, Vec<(String, Any)>>,
}

/// What Envoy last did with a pushed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Acked(u64),
    Rejected { version: u64, message: String },
}

#[derive(Clone)]
pub struct AdsServer {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    replies: Arc<watch::Sender<BTreeMap<String, Reply>>>,
}

#[derive(Default)]
struct Subscription {
    names: Vec<String>,
    nonce: String,
    sent_version: u64,
}

impl AdsServer {
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>) -> Self {
        AdsServer {
            snapshots,
            replies: Arc::new(watch::channel(BTreeMap::new()).0),
        }
    }

    /// Envoy's latest reply per type URL.
    pub fn replies(&self) -> watch::Receiver<BTreeMap<String, Reply>> {
        self.replies.subscribe()
    }

    pub fn service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(64 << 20)
    }
}

struct Stream {
    subscriptions: HashMap<String, Subscription>,
    nonce: u64,
    out: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    replies: Arc<watch::Sender<BTreeMap<String, Reply>>>,
}

impl Stream {
    async fn send(&mut self, type_url: &str, snapshot: &Snapshot) -> bool {
        let Some(sub) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        if snapshot.version == 0 {
            return true;
        }
        let wildcard = sub.names.is_empty() || sub.names.iter().any(|n| n == "*");
        let resources: Vec<Any> = snapshot
            .resources
            .get(type_url)
            .map(|all| {
                all.iter()
                    .filter(|(name, _)| wildcard || sub.names.contains(name))
                    .map(|(_, any)| any.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.nonce += 1;
        sub.nonce = self.nonce.to_string();
        sub.sent_version = snapshot.version;
        let response = DiscoveryResponse {
            version_info: snapshot.version.to_string(),
            resources,
            type_url: type_url.to_string(),
            nonce: sub.nonce.clone(),
            ..Default::default()
        };
        self.out.send(Ok(response)).await.is_ok()
    }

    async fn on_request(&mut self, request: DiscoveryRequest, snapshot: &Snapshot) -> bool {
        let type_url = request.type_url.clone();
        let sub = self.subscriptions.entry(type_url.clone()).or_default();
        if !request.response_nonce.is_empty() && request.response_nonce != sub.nonce {
            // A reply to a response that has since been superseded.
            return true;
        }
        if !request.response_nonce.is_empty() {
            let reply = match &request.error_detail {
                Some(error) => {
                    eprintln!(
                        "aigw: Envoy rejected {} version {}: {}",
                        short_type(&type_url),
                        sub.sent_version,
                        error.message
                    );
                    Reply::Rejected {
                        version: sub.sent_version,
                        message: error.message.clone(),
                    }
                }
                None => Reply::Acked(sub.sent_version),
            };
            self.replies.send_modify(|r| {
                r.insert(type_url.clone(), reply);
            });
        }
        let names_changed = request.resource_names != sub.names;
        let first = request.response_nonce.is_empty();
        if names_changed || first {
            sub.names = request.resource_names;
            return self.send(&type_url, snapshot).await;
        }
        true
    }
}

fn short_type(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

type ResponseStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let mut snapshots = self.snapshots.clone();
        let (tx, rx) = mpsc::channel(16);
        let mut stream = Stream {
            subscriptions: HashMap::new(),
            nonce: 0,
            out: tx,
            replies: self.replies.clone(),
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = inbound.message() => {
                        let Ok(Some(request)) = message else { break };
                        let snapshot = snapshots.borrow().clone();
                        if !stream.on_request(request, &snapshot).await {
                            break;
                        }
                    }
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let snapshot = snapshots.borrow_and_update().clone();
                        for type_url in PUSH_ORDER {
                            if !stream.send(type_url, &snapshot).await {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "this control plane serves state-of-the-world ADS",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (Stream, mpsc::Receiver<Result<DiscoveryResponse, Status>>) {
        let (out, rx) = mpsc::channel(4);
        let stream = Stream {
            subscriptions: HashMap::new(),
            nonce: 0,
            out,
            replies: Arc::new(watch::channel(BTreeMap::new()).0),
        };
        (stream, rx)
    }

    fn first_request() -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: proto::CLUSTER.to_string(),
            // An Envoy reconnecting to a restarted controller names the
            // version it serves.
            version_info: "7".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn no_configuration_yet_is_never_sent() {
        let (mut stream, mut rx) = stream();
        assert!(
            stream
                .on_request(first_request(), &Snapshot::default())
                .await
        );
        assert!(
            rx.try_recv().is_err(),
            "an empty version-0 snapshot was sent"
        );
        // The first real configuration goes to the subscription made before.
        let snapshot = Snapshot {
            version: 1,
            ..Default::default()
        };
        assert!(stream.send(proto::CLUSTER, &snapshot).await);
        let sent = rx.try_recv().unwrap().unwrap();
        assert_eq!(sent.version_info, "1");
        assert_eq!(sent.type_url, proto::CLUSTER);
    }

    #[tokio::test]
    async fn a_configuration_is_sent_on_the_first_request() {
        let (mut stream, mut rx) = stream();
        let snapshot = Snapshot {
            version: 3,
            ..Default::default()
        };
        assert!(stream.on_request(first_request(), &snapshot).await);
        assert_eq!(rx.try_recv().unwrap().unwrap().version_info, "3");
    }
}
