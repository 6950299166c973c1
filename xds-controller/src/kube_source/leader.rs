//! Leader election over a coordination.k8s.io/v1 Lease, so that several
//! controller replicas can run side by side: every replica watches and
//! serves xDS, credentials and rate limits from its own watches; only the
//! leader writes status (otherwise replicas fight over it).
//!
//! The protocol is client-go's: the holder renews `renewTime` every renew
//! period with a resourceVersion-guarded replace; another replica takes the
//! lease over when it has seen the same lease record unchanged for
//! `leaseDurationSeconds` (measured on its own clock, so clock skew between
//! nodes does not matter). A leader that could not renew for the renew
//! deadline (shorter than the lease duration) stops acting as leader before
//! anyone can take over. A leader that is shut down releases the lease.
//!
//! [`decide`] is the pure decision; [`Elector`] is the I/O around it.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What identifies one version of the lease record: a change in any of
/// these means the holder is alive (or a new one took over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `None` when released (empty holderIdentity).
    pub holder: Option<String>,
    pub duration: Duration,
    /// `renewTime` as written by the holder; compared, never trusted as a clock.
    pub renew_time: Option<String>,
    pub transitions: i32,
}

/// A record and when this replica first saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub record: Record,
    pub at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No lease exists: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Released or expired: take it over.
    Acquire,
    /// Someone else holds it until at least `expires`.
    Follow { holder: String, expires: Instant },
}

/// What to do with the lease as it is now. `observed` is the record this
/// replica saw before (and since when); `me` is this replica's identity.
pub fn decide(
    current: Option<&Record>,
    observed: Option<&Observed>,
    me: &str,
    now: Instant,
) -> Action {
    let Some(current) = current else {
        return Action::Create;
    };
    let holder = match current.holder.as_deref() {
        None | Some("") => return Action::Acquire,
        Some(h) if h == me => return Action::Renew,
        Some(h) => h,
    };
    let since = observed
        .filter(|o| o.record == *current)
        .map(|o| o.at)
        .unwrap_or(now);
    let expires = since + current.duration;
    if now >= expires {
        Action::Acquire
    } else {
        Action::Follow {
            holder: holder.to_string(),
            expires,
        }
    }
}

/// Whether a replica whose last successful renewal was at `renewed` may
/// still act as leader.
pub fn still_leading(renewed: Option<Instant>, deadline: Duration, now: Instant) -> bool {
    renewed.is_some_and(|r| now.saturating_duration_since(r) < deadline)
}

/// The periods of the election, derived from the lease duration the way
/// client-go's defaults relate (15 s lease, 10 s renew deadline, 2 s retry),
/// with the holder renewing every third of the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lease: Duration,
    /// How often the holder renews.
    pub renew: Duration,
    /// How often a follower looks at the lease.
    pub retry: Duration,
    /// A holder that has not renewed for this long stops leading.
    pub deadline: Duration,
}

impl Timing {
    pub fn from_lease(lease: Duration) -> Timing {
        Timing {
            lease,
            renew: lease / 3,
            retry: lease * 2 / 15,
            deadline: lease * 2 / 3,
        }
    }
}

/// The record of a Lease object.
pub fn record_of(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64),
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// The lease to write for `action` (Create, Renew or Acquire) over `current`.
pub fn next_lease(
    current: Option<&Lease>,
    action: &Action,
    me: &str,
    namespace: &str,
    name: &str,
    lease_seconds: i32,
    now: k8s_openapi::jiff::Timestamp,
) -> Lease {
    let old = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let now = MicroTime(now);
    let taking_over = *action != Action::Renew;
    let holder_changed = old.holder_identity.as_deref().unwrap_or("") != me;
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version: current.and_then(|l| l.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: Some(lease_seconds),
            acquire_time: if taking_over {
                Some(now.clone())
            } else {
                old.acquire_time.or_else(|| Some(now.clone()))
            },
            renew_time: Some(now),
            lease_transitions: Some(match (current, taking_over && holder_changed) {
                (None, _) => 0,
                (Some(_), true) => old.lease_transitions.unwrap_or(0) + 1,
                (Some(_), false) => old.lease_transitions.unwrap_or(0),
            }),
            ..LeaseSpec::default()
        }),
    }
}

/// What one round of the election found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// We hold the lease (created, renewed or acquired it just now).
    Holding,
    /// Someone else holds it, or won the race to write it.
    Following(String),
}

/// Runs the election for one replica.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timing: Timing,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
        timing: Timing,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity,
            timing,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    async fn round(&self, observed: &mut Option<Observed>) -> Result<Outcome, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let record = current.as_ref().map(record_of);
        let now = Instant::now();
        let action = decide(record.as_ref(), observed.as_ref(), &self.identity, now);
        if let Some(record) = record {
            if observed.as_ref().map(|o| &o.record) != Some(&record) {
                *observed = Some(Observed { record, at: now });
            }
        }
        if let Action::Follow { holder, .. } = action {
            return Ok(Outcome::Following(holder));
        }
        let lease = next_lease(
            current.as_ref(),
            &action,
            &self.identity,
            &self.namespace,
            &self.name,
            self.timing.lease.as_secs().max(1) as i32,
            k8s_openapi::jiff::Timestamp::now(),
        );
        let written = match action {
            Action::Create => self.api.create(&PostParams::default(), &lease).await,
            _ => {
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(Outcome::Holding),
            // Another replica wrote first (409 Conflict or AlreadyExists).
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Following(
                "another replica (lost the race to write the lease)".into(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Campaigns forever, publishing whether this replica leads.
    pub async fn run(&self, leading: watch::Sender<bool>) {
        let mut observed = None;
        let mut renewed: Option<Instant> = None;
        let mut following: Option<String> = None;
        let mut last_error: Option<String> = None;
        loop {
            let started = Instant::now();
            let round = tokio::time::timeout(self.timing.renew, self.round(&mut observed)).await;
            match round {
                Ok(Ok(Outcome::Holding)) => {
                    renewed = Some(started);
                    following = None;
                    last_error = None;
                }
                Ok(Ok(Outcome::Following(holder))) => {
                    renewed = None;
                    last_error = None;
                    if following.as_ref() != Some(&holder) {
                        eprintln!(
                            "aigw: leader election: lease {}/{} is held by {holder}; not writing status",
                            self.namespace, self.name
                        );
                        following = Some(holder);
                    }
                }
                // Unknown: a holder keeps leading until its renew deadline.
                Ok(Err(e)) => {
                    let text = e.to_string();
                    if last_error.as_ref() != Some(&text) {
                        eprintln!(
                            "aigw: leader election: lease {}/{}: {text}",
                            self.namespace, self.name
                        );
                        last_error = Some(text);
                    }
                }
                Err(_) => eprintln!(
                    "aigw: leader election: lease {}/{}: no answer within {:?}",
                    self.namespace, self.name, self.timing.renew
                ),
            }
            let lead = still_leading(renewed, self.timing.deadline, Instant::now());
            if lead != *leading.borrow() {
                eprintln!(
                    "aigw: leader election: {} {} lease {}/{}",
                    self.identity,
                    if lead { "holds" } else { "lost" },
                    self.namespace,
                    self.name
                );
                let _ = leading.send(lead);
            }
            let period = if lead {
                self.timing.renew
            } else {
                self.timing.retry
            };
            tokio::time::sleep(period.saturating_sub(started.elapsed())).await;
        }
    }

    /// Gives the lease up if this replica holds it, so that another one
    /// takes over at once instead of after the lease duration.
    pub async fn release(&self) {
        let release = async {
            let Some(current) = self.api.get_opt(&self.name).await? else {
                return Ok(false);
            };
            if record_of(&current).holder.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            let mut lease = current;
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
            }
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        };
        match tokio::time::timeout(Duration::from_secs(2), release).await {
            Ok(Ok(true)) => eprintln!(
                "aigw: leader election: released lease {}/{}",
                self.namespace, self.name
            ),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => eprintln!(
                "aigw: leader election: cannot release lease {}/{}: {e}",
                self.namespace, self.name
            ),
            Err(_) => eprintln!(
                "aigw: leader election: cannot release lease {}/{}: no answer",
                self.namespace, self.name
            ),
        }
    }
}

/// This replica's identity: the pod name (or host name) and a random
/// suffix, so that a restarted pod with the same name is a new candidate.
pub fn identity(pod_name: Option<&str>) -> String {
    let base = pod_name
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "aigw".into());
    format!("{base}_{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: Option<&str>, renew: &str) -> Record {
        Record {
            holder: holder.map(String::from),
            duration: Duration::from_secs(15),
            renew_time: Some(renew.into()),
            transitions: 0,
        }
    }

    #[test]
    fn decides_like_client_go() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let other = record(Some("b"), "t1");
        let seen = |r: &Record, at| Observed {
            record: r.clone(),
            at,
        };
        // (current, observed, now, expected)
        let table: Vec<(Option<Record>, Option<Observed>, Instant, Action)> = vec![
            (None, None, t0, Action::Create),
            (Some(record(None, "t1")), None, t0, Action::Acquire),
            (Some(record(Some(""), "t1")), None, t0, Action::Acquire),
            (Some(record(Some("a"), "t1")), None, t0, Action::Renew),
            // First sight of someone else's lease: wait a full duration,
            // whatever renewTime says (the clocks may differ).
            (
                Some(other.clone()),
                None,
                t0,
                Action::Follow {
                    holder: "b".into(),
                    expires: t0 + s(15),
                },
            ),
            // Unchanged for less than the duration: follow.
            (
                Some(other.clone()),
                Some(seen(&other, t0)),
                t0 + s(14),
                Action::Follow {
                    holder: "b".into(),
                    expires: t0 + s(15),
                },
            ),
            // Unchanged for the duration: take over.
            (
                Some(other.clone()),
                Some(seen(&other, t0)),
                t0 + s(15),
                Action::Acquire,
            ),
            // Renewed meanwhile: the clock starts again.
            (
                Some(record(Some("b"), "t2")),
                Some(seen(&other, t0)),
                t0 + s(20),
                Action::Follow {
                    holder: "b".into(),
                    expires: t0 + s(35),
                },
            ),
        ];
        for (i, (current, observed, now, expected)) in table.into_iter().enumerate() {
            assert_eq!(
                decide(current.as_ref(), observed.as_ref(), "a", now),
                expected,
                "row {i}"
            );
        }
    }

    #[test]
    fn a_holder_stops_leading_at_its_renew_deadline() {
        let t0 = Instant::now();
        let deadline = Duration::from_secs(10);
        assert!(!still_leading(None, deadline, t0));
        assert!(still_leading(
            Some(t0),
            deadline,
            t0 + Duration::from_secs(9)
        ));
        assert!(!still_leading(
            Some(t0),
            deadline,
            t0 + Duration::from_secs(10)
        ));
        let timing = Timing::from_lease(Duration::from_secs(15));
        assert_eq!(
            (timing.renew, timing.retry, timing.deadline),
            (
                Duration::from_secs(5),
                Duration::from_secs(2),
                Duration::from_secs(10)
            )
        );
        // Nobody can take over before the holder stops leading.
        assert!(timing.deadline < timing.lease);
    }

    #[test]
    fn writes_the_lease_for_each_action() {
        let now: k8s_openapi::jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let created = next_lease(None, &Action::Create, "a", "ns", "l", 15, now);
        let spec = created.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(created.metadata.resource_version, None);

        let mut held = created.clone();
        held.metadata.resource_version = Some("7".into());
        let later: k8s_openapi::jiff::Timestamp = "2026-01-01T00:00:05Z".parse().unwrap();
        let renewed = next_lease(Some(&held), &Action::Renew, "a", "ns", "l", 15, later);
        let spec = renewed.spec.clone().unwrap();
        // The replace is guarded by the resourceVersion that was read.
        assert_eq!(renewed.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(later)));
        assert_eq!(spec.lease_transitions, Some(0));

        let taken = next_lease(Some(&held), &Action::Acquire, "b", "ns", "l", 15, later);
        let spec = taken.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.acquire_time, Some(MicroTime(later)));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(record_of(&held).holder.as_deref(), Some("a"));
    }

    #[test]
    fn identities_differ_per_process_start() {
        let a = identity(Some("aigw-controller-7d9f-x"));
        let b = identity(Some("aigw-controller-7d9f-x"));
        assert!(a.starts_with("aigw-controller-7d9f-x_"), "{a}");
        assert_ne!(a, b);
    }
}
