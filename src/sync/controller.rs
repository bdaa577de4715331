//! The leader's loop: what is due when. It keeps every SecretSync (from the watch) and the metadata of
//! the Secrets it labelled (from a label-filtered metadata watch, never their data), and runs at most
//! `--sync-concurrency` reconciles at a time, earliest due first.
//!
//! When a SecretSync is due:
//! - first seen: at once if it never synced, its spec changed since, or a rollout is pending; otherwise
//!   spread over min(interval, 5 min), so a restart or failover does not poll everything at once;
//! - after a success: its refresh interval ± 10 %; SecretSyncs that read the same thing (namespace,
//!   SecretProviderClass, service account) share one poll time, so the value cache serves all of them
//!   from one backend read (the jitter spreads load across distinct reads, not across copies of one);
//! - after a failure: 1 s doubling to 5 min (± 10 %), or the next poll for failures retrying cannot fix;
//!   a throttling endpoint also holds its namespace's other SecretSyncs until its window ends;
//! - soon (at once, but at most once a second) on a spec change, a new `force-sync` annotation value
//!   (which also reads past the value cache), or a change to its Secret by someone else (drift,
//!   deletion), which never shortens a failing SecretSync's backoff.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PartialObjectMeta;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::crd::SecretSync;
use super::reconcile::{self, Context, Input, Next, Outcome};
use super::source::Endpoint;
use super::target::SYNC_LABEL;
use super::watch::Change;
use crate::service::until_set;
use crate::telemetry::memory;

/// The annotation whose new value forces a refresh (ESO's name, so `kubectl annotate … force-sync=…`
/// works unchanged).
pub const FORCE_SYNC_ANNOTATION: &str = "force-sync";
/// Longest spread of first polls after a start.
const MAX_START_SPREAD: Duration = Duration::from_secs(300);
/// Longest error backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The shortest time between two runs of one SecretSync that changes start (edits, its Secret's).
const EVENT_GAP: Duration = Duration::from_secs(1);
/// How soon a SecretSync whose Secret another one is writing is tried again.
const TARGET_BUSY_RETRY: Duration = Duration::from_millis(250);
/// How often freed memory is handed back to the operating system.
const TRIM_EVERY: Duration = Duration::from_secs(60);
/// How long in-flight reconciles get to finish on shutdown.
const DRAIN_TIME: Duration = Duration::from_secs(10);

type Key = (String, String);

/// What the loop knows about one SecretSync.
struct Entry {
    sync: Arc<SecretSync>,
    /// Its place in the queue.
    slot: Option<Slot>,
    running: bool,
    /// It changed while a reconcile ran: run again right after.
    again: bool,
    /// The next reconcile reads past the value cache.
    force: bool,
    force_seen: Option<String>,
    failures: u32,
    last_warning: Option<String>,
    ready: Option<bool>,
    /// The Secret's version after this replica's last write.
    written_version: Option<String>,
    /// Where it reads from (known after its first fetch).
    backend: Option<Endpoint>,
    last_started: Option<Instant>,
}

impl Entry {
    fn target(&self) -> Key {
        let meta = &self.sync.metadata;
        let name = meta.name.as_deref().unwrap_or_default();
        (
            meta.namespace.clone().unwrap_or_default(),
            self.sync.spec.target_name(name).to_string(),
        )
    }

    fn known_version(&self) -> Option<&str> {
        self.written_version.as_deref().or(self
            .sync
            .status
            .as_ref()
            .and_then(|s| s.target_resource_version.as_deref()))
    }
}

/// A backend's throttle window: its end, and how many throttled answers in a row (it doubles with
/// each, 1 s to 5 min, and closes on the backend's first good answer).
#[derive(Default)]
struct Throttle {
    until: Option<Instant>,
    level: u32,
}

/// Where a SecretSync waits: in the time queue, or due in its namespace's ready list (the token
/// tells its current place from stale ones left behind when it is rescheduled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Timed((Instant, u64)),
    Ready(u64),
}

impl Slot {
    /// Whether it waits for a time later than `at`.
    fn due_after(self, at: Instant) -> bool {
        matches!(self, Slot::Timed((due, _)) if due > at)
    }
}

/// Why a SecretSync runs before it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Its spec or its force-sync annotation changed (its backoff starts over).
    Edit,
    /// Its Secret changed or went (drift).
    Secret,
}

/// Whether a watch has listed once (reconciles may start) and works now (readiness).
#[derive(Default)]
struct FeedState {
    listed: bool,
    up: bool,
}

impl FeedState {
    fn hear<K>(&mut self, change: &Change<K>) {
        match change {
            Change::Listed(_) => (self.listed, self.up) = (true, true),
            Change::Resumed => self.up = self.listed,
            Change::Interrupted => self.up = false,
            Change::Applied(_) | Change::Deleted(_) => {}
        }
    }
}

/// A finished reconcile: which SecretSync, the target Secret it held, what it did.
struct Done {
    key: Key,
    target: Key,
    outcome: Outcome,
}

/// The scheduling loop (see the module doc).
pub struct Controller {
    ctx: Arc<Context>,
    concurrency: usize,
    entries: HashMap<Key, Entry>,
    queue: BTreeMap<(Instant, u64), Key>,
    /// Due SecretSyncs by namespace, and the namespaces' turns.
    ready: HashMap<String, VecDeque<(Key, u64)>>,
    turns: VecDeque<String>,
    seq: u64,
    secrets: HashMap<Key, WatchedSecret>,
    groups: HashMap<(String, String, String), Instant>,
    /// The target Secrets of the reconciles running now.
    writing: HashSet<Key>,
    /// Endpoints that answered "slow down": none of their SecretSyncs runs before the window ends.
    throttles: HashMap<Endpoint, Throttle>,
    running: usize,
    gauges_at: Instant,
    trimmed_at: Instant,
}

/// The streams the loop reads.
pub struct Feeds {
    pub syncs: mpsc::Receiver<Change<SecretSync>>,
    pub secrets: mpsc::Receiver<Change<PartialObjectMeta<Secret>>>,
}

impl Controller {
    pub fn new(ctx: Arc<Context>, concurrency: usize) -> Self {
        Self {
            ctx,
            concurrency: concurrency.max(1),
            entries: HashMap::new(),
            queue: BTreeMap::new(),
            ready: HashMap::new(),
            turns: VecDeque::new(),
            seq: 0,
            secrets: HashMap::new(),
            groups: HashMap::new(),
            writing: HashSet::new(),
            throttles: HashMap::new(),
            running: 0,
            gauges_at: Instant::now(),
            trimmed_at: Instant::now(),
        }
    }

    /// Runs until `stop` is set, then lets running reconciles finish (up to 10 s). `ready` is true
    /// while both watches work (from their first list on; false while either is failing).
    pub async fn run(
        mut self,
        mut feeds: Feeds,
        ready: watch::Sender<bool>,
        stop: watch::Receiver<bool>,
    ) {
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(self.concurrency * 2);
        let (mut syncs, mut secrets) = (FeedState::default(), FeedState::default());
        loop {
            let up = syncs.up && secrets.up;
            ready.send_if_modified(|r| std::mem::replace(r, up) != up);
            if syncs.listed && secrets.listed {
                self.dispatch(&done_tx);
            }
            // With every slot taken, only a finished reconcile (or news) can start another.
            let wake = (self.running < self.concurrency)
                .then(|| self.queue.first_key_value().map(|((at, _), _)| *at))
                .flatten();
            tokio::select! {
                Some(change) = feeds.syncs.recv() => {
                    syncs.hear(&change);
                    self.on_sync(change);
                }
                Some(change) = feeds.secrets.recv() => {
                    secrets.hear(&change);
                    self.on_secret(change);
                }
                Some(done) = done_rx.recv() => self.on_done(done),
                () = sleep_until(wake) => {}
                () = until_set(stop.clone()) => break,
            }
        }
        let drained = tokio::time::timeout(DRAIN_TIME, async {
            while self.running > 0 {
                match done_rx.recv().await {
                    Some(_) => self.running -= 1,
                    None => break,
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                running = self.running,
                "reconciles still running at shutdown"
            );
        }
    }

    /// Starts due reconciles up to the concurrency, taking namespaces in turn (one with many due or
    /// failing SecretSyncs does not hold up the others). Two SecretSyncs naming one Secret never run at
    /// once (the second sees what the first wrote, and is refused if it is not its own).
    fn dispatch(&mut self, done: &mpsc::Sender<Done>) {
        let now = Instant::now();
        self.promote_due(now);
        let mut held = Vec::new();
        while self.running < self.concurrency {
            let Some(key) = self.next_ready() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            entry.slot = None;
            let (backend, target) = (entry.backend.clone(), entry.target());
            if let Some(until) = backend.and_then(|b| self.throttled_until(&b, now)) {
                held.push((key, until));
            } else if self.writing.contains(&target) {
                held.push((key, now + TARGET_BUSY_RETRY));
            } else {
                self.start(key, target, now, done);
            }
        }
        for (key, at) in held {
            self.schedule(&key, at);
        }
        self.update_gauges();
    }

    /// Moves the SecretSyncs that are due from the time queue to their namespace's ready list.
    fn promote_due(&mut self, now: Instant) {
        while let Some(((at, _), _)) = self.queue.first_key_value() {
            if *at > now {
                break;
            }
            let Some((_, key)) = self.queue.pop_first() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            self.seq += 1;
            entry.slot = Some(Slot::Ready(self.seq));
            let list = self.ready.entry(key.0.clone()).or_default();
            if list.is_empty() {
                self.turns.push_back(key.0.clone());
            }
            list.push_back((key, self.seq));
        }
    }

    /// The next ready SecretSync, the namespaces taking turns (entries rescheduled since they became
    /// ready are skipped).
    fn next_ready(&mut self) -> Option<Key> {
        while let Some(namespace) = self.turns.pop_front() {
            let Some(list) = self.ready.get_mut(&namespace) else {
                continue;
            };
            while let Some((key, token)) = list.pop_front() {
                let current = self.entries.get(&key).and_then(|e| e.slot);
                if current != Some(Slot::Ready(token)) {
                    continue;
                }
                if list.is_empty() {
                    self.ready.remove(&namespace);
                } else {
                    self.turns.push_back(namespace);
                }
                return Some(key);
            }
            self.ready.remove(&namespace);
        }
        None
    }

    /// Runs one reconcile of the SecretSync, which writes `target`.
    fn start(&mut self, key: Key, target: Key, now: Instant, done: &mpsc::Sender<Done>) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.running = true;
        entry.last_started = Some(now);
        self.running += 1;
        self.writing.insert(target.clone());
        let input = Input {
            sync: entry.sync.clone(),
            secret: self
                .secrets
                .get(&target)
                .map(|w| Arc::new(w.metadata(&target))),
            force: std::mem::take(&mut entry.force),
            last_warning: entry.last_warning.clone(),
        };
        let ctx = self.ctx.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let outcome = reconcile::reconcile(&ctx, input).await;
            let _ = done
                .send(Done {
                    key,
                    target,
                    outcome,
                })
                .await;
        });
    }

    fn on_sync(&mut self, change: Change<SecretSync>) {
        match change {
            Change::Listed(all) => {
                let keys: HashSet<Key> = all.iter().map(key_of).collect();
                let gone: Vec<Key> = self
                    .entries
                    .keys()
                    .filter(|k| !keys.contains(*k))
                    .cloned()
                    .collect();
                gone.iter().for_each(|k| self.remove(k));
                // Those that read the same thing in a row: their first syncs share the value cache.
                let mut all = all;
                all.sort_by(|a, b| read_group(a).cmp(&read_group(b)));
                all.into_iter().for_each(|sync| self.upsert(sync));
                memory::release_free_memory();
            }
            Change::Applied(sync) => self.upsert(sync),
            Change::Deleted(sync) => self.remove(&key_of(&sync)),
            Change::Interrupted | Change::Resumed => {}
        }
    }

    fn upsert(&mut self, sync: SecretSync) {
        let key = key_of(&sync);
        let force = force_value(&sync);
        let now = Instant::now();
        let Some(entry) = self.entries.get_mut(&key) else {
            let first = self.first_poll(&sync, now);
            self.entries.insert(
                key.clone(),
                Entry {
                    sync: Arc::new(sync),
                    slot: None,
                    running: false,
                    again: false,
                    force: false,
                    force_seen: force,
                    failures: 0,
                    last_warning: None,
                    ready: None,
                    written_version: None,
                    backend: None,
                    last_started: None,
                },
            );
            if let Some(at) = first {
                self.schedule(&key, at);
            }
            return;
        };
        let spec_changed = entry.sync.metadata.generation != sync.metadata.generation;
        let forced = force.is_some() && force != entry.force_seen;
        entry.force_seen = force;
        entry.force |= forced;
        entry.sync = Arc::new(sync);
        if spec_changed || forced {
            entry.failures = 0;
            entry.last_warning = None;
            self.run_soon(&key, Cause::Edit);
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.entries.remove(key)
            && let Some(Slot::Timed(slot)) = entry.slot
        {
            self.queue.remove(&slot);
        }
    }

    fn on_secret(&mut self, change: Change<PartialObjectMeta<Secret>>) {
        match change {
            Change::Listed(all) => {
                self.secrets = all
                    .into_iter()
                    .filter_map(|s| Some((secret_key(&s.metadata)?, WatchedSecret::of(s.metadata))))
                    .collect();
                let drifted: Vec<Key> = self
                    .entries
                    .iter()
                    .filter(|(_, e)| !e.running && e.known_version().is_some())
                    .filter(|(_, e)| {
                        let live = self.secrets.get(&e.target());
                        live.and_then(|m| m.resource_version.as_deref()) != e.known_version()
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                drifted.iter().for_each(|k| self.run_soon(k, Cause::Secret));
                memory::release_free_memory();
            }
            Change::Applied(secret) => {
                let Some(key) = secret_key(&secret.metadata) else {
                    return;
                };
                let version = secret.metadata.resource_version.clone();
                self.secrets
                    .insert(key.clone(), WatchedSecret::of(secret.metadata.clone()));
                for writer in self.writers_of(&key, &secret.metadata) {
                    if self.entries[&writer].known_version() != version.as_deref() {
                        self.run_soon(&writer, Cause::Secret);
                    }
                }
            }
            Change::Deleted(secret) => {
                let Some(key) = secret_key(&secret.metadata) else {
                    return;
                };
                self.secrets.remove(&key);
                for writer in self.writers_of(&key, &secret.metadata) {
                    self.run_soon(&writer, Cause::Secret);
                }
            }
            Change::Interrupted | Change::Resumed => {}
        }
    }

    /// The SecretSyncs (not running now) that write this Secret: the one its label names, or, before
    /// any has written it (a `Merge` target its owner just labelled), every one naming it.
    fn writers_of(&self, secret: &Key, meta: &ObjectMeta) -> Vec<Key> {
        let idle_writer = |key: &Key| {
            self.entries
                .get(key)
                .is_some_and(|e| e.target() == *secret && !e.running)
        };
        match meta.labels.as_ref().and_then(|l| l.get(SYNC_LABEL)) {
            Some(name) => {
                let owner = (secret.0.clone(), name.clone());
                if idle_writer(&owner) {
                    vec![owner]
                } else {
                    Vec::new()
                }
            }
            None => self
                .entries
                .keys()
                .filter(|k| k.0 == secret.0 && idle_writer(k))
                .cloned()
                .collect(),
        }
    }

    fn on_done(&mut self, done: Done) {
        let Done {
            key,
            target,
            outcome,
        } = done;
        self.running -= 1;
        self.writing.remove(&target);
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.running = false;
        entry.last_warning = outcome.last_warning;
        entry.ready = Some(outcome.ready);
        if outcome.written_version.is_some() {
            entry.written_version = outcome.written_version;
        }
        if let Some(status) = outcome.status {
            Arc::make_mut(&mut entry.sync).status = Some(status);
        }
        let now = Instant::now();
        if let Some(endpoint) = outcome.backend {
            entry.backend = Some(endpoint.clone());
            if outcome.next == Next::Throttled {
                self.throttle(endpoint, now);
            } else if outcome.result != "failed" {
                self.throttles.remove(&endpoint);
            }
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let failed = matches!(outcome.next, Next::Backoff | Next::Throttled);
        let at = if std::mem::take(&mut entry.again) && !failed {
            Some(entry.last_started.map_or(now, |s| (s + EVENT_GAP).max(now)))
        } else {
            match outcome.next {
                Next::Throttled => {
                    entry.failures = entry.failures.saturating_add(1);
                    let own = now + backoff(entry.failures);
                    let endpoint = entry.backend.clone();
                    let window = endpoint.and_then(|b| self.throttled_until(&b, now));
                    Some(window.map_or(own, |until| until.max(own)))
                }
                Next::Backoff => {
                    entry.failures = entry.failures.saturating_add(1);
                    Some(now + backoff(entry.failures))
                }
                Next::After(delay) => {
                    entry.failures = 0;
                    Some(now + delay)
                }
                Next::Poll => {
                    entry.failures = 0;
                    let sync = entry.sync.clone();
                    reconcile::refresh_of(&sync, self.ctx.settings.min_interval)
                        .ok()
                        .flatten()
                        .map(|interval| self.group_time(&sync, now, jittered(interval), interval))
                }
            }
        };
        if let Some(at) = at {
            self.schedule(&key, at);
        }
    }

    /// Opens the endpoint's throttle window (or leaves the open one: reconciles that were in flight
    /// together open one window, not one each).
    fn throttle(&mut self, endpoint: Endpoint, now: Instant) {
        let backend = endpoint.backend;
        // Windows long closed are forgotten (their level with them).
        self.throttles
            .retain(|_, t| t.until.is_some_and(|until| until + MAX_BACKOFF > now));
        let throttle = self.throttles.entry(endpoint).or_default();
        if throttle.until.is_some_and(|until| until > now) {
            return;
        }
        throttle.level = throttle.level.saturating_add(1);
        let wait = backoff(throttle.level);
        throttle.until = Some(now + wait);
        tracing::warn!(backend, wait = ?wait, "the backend throttles: its SecretSyncs wait");
        if let Some(metrics) = self.ctx.sync_metrics() {
            metrics.record_throttled(backend);
        }
    }

    /// The end of the endpoint's throttle window, when one is open.
    fn throttled_until(&self, backend: &Endpoint, now: Instant) -> Option<Instant> {
        self.throttles
            .get(backend)
            .and_then(|t| t.until)
            .filter(|until| *until > now)
    }

    /// When a SecretSync first seen is due (see the module doc); `None`: synced once, never again.
    fn first_poll(&mut self, sync: &SecretSync, now: Instant) -> Option<Instant> {
        let status = sync.status.clone().unwrap_or_default();
        let never_synced = status.synced_hash.is_none();
        let spec_changed = status.observed_generation != sync.metadata.generation;
        let rollout_pending = status.rolled_out_hash != status.synced_hash;
        if never_synced || spec_changed || rollout_pending {
            return Some(now);
        }
        let interval = reconcile::refresh_of(sync, self.ctx.settings.min_interval)
            .ok()
            .flatten()?;
        let window = interval.min(MAX_START_SPREAD);
        Some(self.group_time(sync, now, window.mul_f64(random_fraction()), window))
    }

    /// The poll time of the SecretSync's group, when one is set within `window`; else `now + delay`,
    /// which becomes the group's.
    fn group_time(
        &mut self,
        sync: &SecretSync,
        now: Instant,
        delay: Duration,
        window: Duration,
    ) -> Instant {
        let (namespace, class, account) = read_group(sync);
        let group = (
            namespace.to_string(),
            class.to_string(),
            account.to_string(),
        );
        if let Some(&at) = self.groups.get(&group)
            && at > now
            && at <= now + window
        {
            return at;
        }
        let at = now + delay;
        if self.groups.len() > 2 * self.entries.len() + 1024 {
            self.groups.retain(|_, at| *at > now);
        }
        self.groups.insert(group, at);
        at
    }

    /// Runs the SecretSync soon because something changed: at once, but at most once per
    /// [`EVENT_GAP`]; a change to its Secret (`Cause::Secret`) leaves a failing SecretSync to its
    /// backoff, so other writers' edits cannot make it retry faster.
    fn run_soon(&mut self, key: &Key, cause: Cause) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if cause == Cause::Secret && entry.failures > 0 {
            return;
        }
        let now = Instant::now();
        let at = entry
            .last_started
            .map_or(now, |started| (started + EVENT_GAP).max(now));
        if entry.running {
            entry.again = true;
        } else if entry.slot.is_none_or(|slot| slot.due_after(at)) {
            self.schedule(key, at);
        }
    }

    fn schedule(&mut self, key: &Key, at: Instant) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(Slot::Timed(slot)) = entry.slot.take() {
            self.queue.remove(&slot);
        }
        self.seq += 1;
        let slot = (at, self.seq);
        self.queue.insert(slot, key.clone());
        entry.slot = Some(Slot::Timed(slot));
    }

    /// Refreshes the Ready gauges, at most every 5 s.
    fn update_gauges(&mut self) {
        let Some(metrics) = self.ctx.sync_metrics() else {
            return;
        };
        if self.gauges_at.elapsed() < Duration::from_secs(5) && !self.queue.is_empty() {
            return;
        }
        self.gauges_at = Instant::now();
        if self.trimmed_at.elapsed() >= TRIM_EVERY {
            self.trimmed_at = Instant::now();
            memory::release_free_memory();
        }
        let (mut ready, mut not_ready, mut unknown) = (0, 0, 0);
        for entry in self.entries.values() {
            match entry.ready.or_else(|| ready_in_status(&entry.sync)) {
                Some(true) => ready += 1,
                Some(false) => not_ready += 1,
                None => unknown += 1,
            }
        }
        metrics.set_objects(ready, not_ready, unknown);
    }
}

/// What a SecretSync reads, and as whom: SecretSyncs alike in this are polled together.
fn read_group(sync: &SecretSync) -> (&str, &str, &str) {
    (
        sync.metadata.namespace.as_deref().unwrap_or_default(),
        &sync.spec.secret_provider_class_name,
        &sync.spec.service_account_name,
    )
}

fn ready_in_status(sync: &SecretSync) -> Option<bool> {
    let status = sync.status.as_ref()?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some(ready.status == "True")
}

fn key_of(sync: &SecretSync) -> Key {
    (
        sync.metadata.namespace.clone().unwrap_or_default(),
        sync.metadata.name.clone().unwrap_or_default(),
    )
}

/// Drops what the controller never reads from a SecretSync's metadata (managedFields, labels, other
/// annotations): with thousands of SecretSyncs, most of what a watch brings.
pub fn prune(sync: &mut SecretSync) {
    let meta = &mut sync.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.finalizers = None;
    meta.owner_references = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == FORCE_SYNC_ANNOTATION);
    }
}

/// What is kept of a watched Secret's metadata: what the ownership check and drift need, compact
/// (thousands are kept). Not its annotations (`kubectl apply`'s last-applied-configuration holds the
/// data), other labels or managedFields, which anyone labelling a Secret could make large.
struct WatchedSecret {
    uid: Option<String>,
    resource_version: Option<String>,
    /// Its `openclaw.io/` labels.
    labels: Vec<(String, String)>,
    /// Its controller owner references.
    controllers: Vec<OwnerReference>,
}

impl WatchedSecret {
    fn of(meta: ObjectMeta) -> Self {
        let labels = meta
            .labels
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("openclaw.io/"))
            .collect();
        let controllers = meta
            .owner_references
            .into_iter()
            .flatten()
            .filter(|o| o.controller == Some(true))
            .collect();
        Self {
            uid: meta.uid,
            resource_version: meta.resource_version,
            labels,
            controllers,
        }
    }

    /// The metadata a reconcile checks, for the Secret `key`.
    fn metadata(&self, key: &Key) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(key.0.clone()),
            name: Some(key.1.clone()),
            uid: self.uid.clone(),
            resource_version: self.resource_version.clone(),
            labels: Some(self.labels.iter().cloned().collect()),
            owner_references: Some(self.controllers.clone()),
            ..Default::default()
        }
    }
}

fn secret_key(meta: &ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn force_value(sync: &SecretSync) -> Option<String> {
    sync.metadata
        .annotations
        .as_ref()?
        .get(FORCE_SYNC_ANNOTATION)
        .cloned()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A uniform random number in [0, 1).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// `interval` ± 10 %.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * random_fraction())
}

/// 1 s doubling per failure up to 5 min, ± 10 %.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(9)).min(MAX_BACKOFF);
    jittered(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes_with_jitter() {
        let seconds: Vec<f64> = (1..=12).map(|n| backoff(n).as_secs_f64()).collect();
        for (n, s) in seconds.iter().enumerate() {
            let base = (1u64 << n.min(9)).min(300) as f64;
            assert!(*s >= base * 0.9 && *s <= base * 1.1, "{n}: {s}");
        }
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(3600)).as_secs_f64();
            assert!((3240.0..=3960.0).contains(&j), "{j}");
        }
    }
}
