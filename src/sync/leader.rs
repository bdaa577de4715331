//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's leader election does it: the
//! holder renews the Lease every third of its duration; another replica takes it over once it has seen no
//! renewal for a whole duration (measured on its own clock, so clock skew between nodes does not matter);
//! every write carries the `resourceVersion` it read, so two replicas racing for it cannot both win (the
//! API server answers the second with 409 Conflict).
//!
//! A leader that cannot renew within two thirds of the duration stops leading (the process exits and
//! its Deployment restarts it), so at most one replica writes at a time.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    holder: String,
    duration: Duration,
    /// The Lease record last seen (holder, renew time) and when this replica saw it change.
    observed: Mutex<Option<(String, Option<MicroTime>, Instant)>>,
}

/// Why leading ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaseLost {
    #[error("the Lease {0} was taken over by {1}")]
    TakenOver(String, String),
    #[error("the Lease {0} could not be renewed for {1:?}: {2}")]
    NotRenewed(String, Duration, String),
}

impl Elector {
    /// An elector for Lease `namespace/name` as `holder`, lasting `duration` without renewal.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        holder: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            holder: holder.to_string(),
            duration: duration.max(Duration::from_secs(1)),
            observed: Mutex::new(None),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn retry_period(&self) -> Duration {
        self.duration / 5
    }

    fn renew_period(&self) -> Duration {
        self.duration / 3
    }

    /// Returns once this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_lead().await {
                Ok(Ok(())) => {
                    tracing::info!(lease = %self.name, holder = %self.holder, "leading");
                    return;
                }
                Ok(Err(other)) => {
                    tracing::debug!(lease = %self.name, leader = %other, "standing by")
                }
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "cannot read the Lease"),
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renews the Lease until that fails; returns why.
    pub async fn keep(&self) -> LeaseLost {
        let renew_deadline = self.duration * 2 / 3;
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.renew_period()).await;
            match self.try_lead().await {
                Ok(Ok(())) => renewed = Instant::now(),
                Ok(Err(other)) => return LeaseLost::TakenOver(self.name.clone(), other),
                Err(e) if renewed.elapsed() >= renew_deadline => {
                    return LeaseLost::NotRenewed(self.name.clone(), renew_deadline, e.to_string());
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "renewing the Lease failed")
                }
            }
        }
    }

    /// Gives the Lease up (on shutdown), so the other replica need not wait for it to expire.
    pub async fn release(&self) {
        let Ok(mut lease) = self.api.get(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "released the Lease"),
            Err(e) => tracing::warn!(lease = %self.name, error = %e, "releasing the Lease failed"),
        }
    }

    /// One round: `Ok(Ok(()))` when this replica holds the Lease afterwards, `Ok(Err(holder))` when
    /// another does.
    async fn try_lead(&self) -> Result<Result<(), String>, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return self.create(now).await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.duration, Duration::from_secs);
        let expired = self.observe(&holder, &spec.renew_time, duration).await;
        if !holder.is_empty() && holder != self.holder && !expired {
            return Ok(Err(holder));
        }
        let taking_over = holder != self.holder;
        let mut next = spec;
        next.holder_identity = Some(self.holder.clone());
        next.lease_duration_seconds = Some(self.duration_seconds());
        next.renew_time = Some(now.clone());
        if taking_over {
            next.acquire_time = Some(now);
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Ok(())),
            // Someone wrote it since it was read: they hold it now.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Err(holder)),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, now: MicroTime) -> Result<Result<(), String>, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.holder.clone()),
                lease_duration_seconds: Some(self.duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Ok(())),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Err(String::from("?"))),
            Err(e) => Err(e),
        }
    }

    /// Records the record seen; whether it has gone unrenewed for `duration` on this replica's clock.
    async fn observe(&self, holder: &str, renew: &Option<MicroTime>, duration: Duration) -> bool {
        let mut observed = self.observed.lock().await;
        let changed = match observed.as_ref() {
            Some((seen_holder, seen_renew, _)) => seen_holder != holder || seen_renew != renew,
            None => true,
        };
        if changed {
            *observed = Some((holder.to_string(), renew.clone(), Instant::now()));
            // A record never seen before counts from now; a holder of "" is free at once.
            return holder.is_empty();
        }
        observed
            .as_ref()
            .is_some_and(|(_, _, since)| since.elapsed() >= duration)
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// This replica's holder identity: `$POD_NAME`, else the host name plus a random suffix.
pub fn holder_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "openclaw-sync".into());
    let mut suffix = [0u8; 4];
    let _ = getrandom::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}_{suffix}")
}
