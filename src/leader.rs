//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection does
//! it: the holder renews every retry period; a candidate takes the Lease over once it has seen
//! the same record, unrenewed, for a whole lease duration (measured on its own clock, so clocks
//! need not agree); every write carries the `resourceVersion` read, so two candidates never both
//! win. A leader that cannot renew within the renew deadline, or finds another holder, has lost:
//! the caller stops publishing at once.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

/// Lease settings (`--leader-election-*`); the defaults are client-go's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What one attempt saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Leading,
    Held { holder: String },
}

/// A candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The other holder's record as last seen, and when it last changed (our clock).
    observed: Option<(String, Instant)>,
}

/// Held leadership: `lost` turns true when it is gone.
pub struct Leadership {
    lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Elector>,
    stop: watch::Sender<bool>,
}

impl Elector {
    pub fn new(client: &Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client.clone(), &config.namespace),
            config,
            observed: None,
        }
    }

    /// Waits until this candidate holds the Lease, then keeps renewing it in the background.
    pub async fn acquire(mut self) -> Leadership {
        let mut logged_holder = String::new();
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Seen::Leading) => break,
                Ok(Seen::Held { holder }) => {
                    if holder != logged_holder {
                        tracing::info!(
                            lease = %self.config.name,
                            %holder,
                            "standing by: another replica holds the lease"
                        );
                        logged_holder = holder;
                    }
                }
                Err(err) => {
                    tracing::warn!(lease = %self.config.name, error = %err, "lease check failed")
                }
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
        tracing::info!(
            lease = %self.config.name,
            identity = %self.config.identity,
            "leadership acquired"
        );
        let (lost_tx, lost) = watch::channel(false);
        let (stop, mut stopped) = watch::channel(false);
        let span = tracing::info_span!(
            "elector",
            lease = %self.config.name,
            identity = %self.config.identity
        );
        let task = tokio::spawn(async move {
            let mut renewed = Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(self.config.retry_period) => {}
                    _ = stopped.changed() => return self,
                }
                match self.try_acquire_or_renew().await {
                    Ok(Seen::Leading) => renewed = Instant::now(),
                    Ok(Seen::Held { holder }) => {
                        tracing::error!(lease = %self.config.name, %holder, "leadership lost to another replica");
                        let _ = lost_tx.send(true);
                        return self;
                    }
                    Err(err) => {
                        tracing::warn!(lease = %self.config.name, error = %err, "lease renewal failed");
                    }
                }
                if renewed.elapsed() > self.config.renew_deadline {
                    tracing::error!(
                        lease = %self.config.name,
                        deadline_s = self.config.renew_deadline.as_secs_f64(),
                        "leadership lost: the lease could not be renewed in time"
                    );
                    let _ = lost_tx.send(true);
                    return self;
                }
            }
        }.instrument(span));
        Leadership { lost, task, stop }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Seen, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let me = self.config.identity.clone();
        let duration =
            i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Seen::Leading),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Seen::Held {
                    holder: "(created concurrently)".into(),
                }),
                Err(err) => Err(err),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!(
            "{holder}|{:?}|{:?}",
            spec.renew_time.as_ref().map(|t| t.0),
            current.metadata.resource_version
        );
        let leading = holder == me;
        if !leading && !holder.is_empty() {
            // Another holder: take over only once its record stood still a whole lease duration.
            let their_duration = spec
                .lease_duration_seconds
                .map_or(self.config.lease_duration, |s| {
                    Duration::from_secs(s.max(1) as u64)
                });
            match &self.observed {
                Some((seen, since)) if *seen == record => {
                    if since.elapsed() < their_duration {
                        return Ok(Seen::Held { holder });
                    }
                }
                _ => {
                    self.observed = Some((record, Instant::now()));
                    return Ok(Seen::Held { holder });
                }
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!leading);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                resource_version: current.metadata.resource_version.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me),
                lease_duration_seconds: Some(duration),
                acquire_time: if leading {
                    spec.acquire_time
                } else {
                    Some(now.clone())
                },
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = None;
                Ok(Seen::Leading)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Seen::Held {
                holder: "(changed concurrently)".into(),
            }),
            Err(err) => Err(err),
        }
    }

    /// Gives the Lease up (on a clean shutdown), so a standby takes over without waiting.
    async fn release(&self) {
        let Ok(Some(current)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let mut spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                resource_version: current.metadata.resource_version.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.config.name, "leadership released"),
            Err(err) => {
                tracing::warn!(lease = %self.config.name, error = %err, "lease release failed")
            }
        }
    }
}

impl Leadership {
    /// Resolves when leadership is lost.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            while !*lost.borrow_and_update() {
                if lost.changed().await.is_err() {
                    // The renewer ended without losing: leadership was released.
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Stops renewing and gives the Lease up.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        if let Ok(elector) = self.task.await
            && !*self.lost.borrow()
        {
            elector.release().await;
        }
    }
}
