//! The fetch pipeline every remote backend shares, so a backend supplies only its parameters, who the
//! caller is ([`Source::identity`]), how to fetch one distinct request ([`Source::fetch`]) and what its
//! answers hold ([`Answer`]).
//!
//! One mount: the backend turns its objects into [`PlannedObject`]s; [`check_plan`] applies the driver's
//! output-path rule and refuses duplicates; [`FetchPipeline::run`] makes each distinct request once,
//! concurrently (at most `--backend-concurrency` at a time), reads through the identity-keyed value cache
//! ([`crate::cache`]; reads only), cuts each object's value out of its answer ([`crate::transform`]: key
//! extraction, decoding), skips optional objects the backend does not have, and builds the response with
//! each object's version: the backend's own where the answer has one, otherwise the keyed HMAC of the
//! object's configuration and content ([`Versions`]).
//!
//! An answer the source marks as not shareable (a dynamic secret with a lease) belongs to the one mount
//! that asked for it: it is never kept, and a mount that joined another's identical read in flight and
//! got such an answer asks again for its own. Only the objects of one mount share one.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::BoxFuture;
use crate::cache::{Loaded, ValueCache};
use crate::error::{ErrorKind, MountError, MountResult, Reason};
use crate::request::{FetchOptions, MountRequest, PreviousVersion};
use crate::response::{MountResponse, MountedFile, ObjectVersion, check_output_path};
use crate::telemetry::metrics::Metrics;
use crate::transform::{self, Encoding};
use crate::version_hmac::VersionKey;

/// What a backend's answer to one request holds, for the objects cut out of it.
pub trait Answer: Send + Sync + 'static {
    /// The file of an object that names no key: the whole answer, as the backend sent it.
    fn whole(&self) -> &[u8];
    /// The JSON object an object's key is looked up in, when the answer has one.
    fn keyed(&self) -> Option<&Value>;
    /// The backend's own version of the answer (e.g. KV v2's version number), when it has one.
    fn version(&self) -> Option<String>;
    /// Bytes the answer holds in memory, for the value cache's bound.
    fn size(&self) -> usize;
}

/// A backend, as the pipeline calls it.
pub trait Source: Send + Sync + 'static {
    /// One distinct request; the objects of a mount that make the same one share its answer.
    type Request: Clone + Eq + Hash + Send + Sync + 'static;
    /// Who a request is made as, with everything that changes what the backend answers (address, role,
    /// the pod's service account …): the value cache's key besides the request.
    type Identity: Clone + Eq + Hash + Send + Sync + 'static;
    /// What one mount's requests share: its parameters, identity and the pod's token.
    type Call: Send + Sync;
    type Answer: Answer;

    /// The backend's name (the `backend` parameter and metric label).
    const NAME: &'static str;

    fn identity(call: &Self::Call) -> &Self::Identity;

    /// Whether answers to the request may be kept and shared (reads) or not (writes).
    fn is_read(request: &Self::Request) -> bool;

    /// Makes one request as the call's identity, within `deadline` (the source budgets its retries by it).
    /// The answer's `cacheable` is false for what must not be shared (an answer with a lease).
    fn fetch<'a>(
        &'a self,
        call: &'a Self::Call,
        request: &'a Self::Request,
        deadline: Instant,
    ) -> BoxFuture<'a, MountResult<Loaded<Self::Answer>>>;

    /// Whether the backend reads several requests in one call ([`Source::batches`],
    /// [`Source::fetch_batch`]) instead of one [`Source::fetch`] each.
    const BATCHES: bool = false;

    /// The backend calls that make `requests` (reads not in the value cache), each a list for one
    /// [`Source::fetch_batch`]. Only asked when [`Source::BATCHES`].
    fn batches(requests: Vec<Self::Request>) -> Vec<Vec<Self::Request>> {
        requests.into_iter().map(|request| vec![request]).collect()
    }

    /// Makes the requests of one batch in one backend call: an answer or error for each of them (a
    /// failure of the whole call is that error for each).
    fn fetch_batch<'a>(
        &'a self,
        call: &'a Self::Call,
        requests: &'a [Self::Request],
        deadline: Instant,
    ) -> BoxFuture<'a, Vec<MountResult<Loaded<Self::Answer>>>> {
        Box::pin(async move {
            let mut answers = Vec::with_capacity(requests.len());
            for request in requests {
                answers.push(self.fetch(call, request, deadline).await);
            }
            answers
        })
    }

    /// Whether [`Source::probe`] can tell versions without values.
    const PROBES: bool = false;

    /// The request's current version, asked without its value, when the source can tell it cheaply
    /// and `previous` is a version of its kind (e.g. KV v2's metadata for a number); `None`: read the
    /// value instead. Only in-process callers ask ([`FetchOptions::probe`]).
    fn probe<'a>(
        &'a self,
        _call: &'a Self::Call,
        _request: &'a Self::Request,
        _previous: &'a str,
        _deadline: Instant,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { None })
    }

    /// The bytes of the object's key in its answer (`object.key` is set): by default the key of the
    /// answer's JSON object ([`Answer::keyed`]), strings as they are and other values as JSON.
    fn cut(
        object: &PlannedObject<Self::Request>,
        key: &str,
        answer: &Self::Answer,
    ) -> MountResult<Zeroizing<Vec<u8>>> {
        let what = format!("the secret at {:?}", object.location);
        let container = answer.keyed().unwrap_or(&Value::Null);
        transform::value_of_key(container, key, &what)
    }
}

/// One object of a mount, as its backend planned it.
#[derive(Debug, Clone)]
pub struct PlannedObject<R> {
    /// Its id in the object versions.
    pub id: String,
    /// Its file in the volume.
    pub path: String,
    /// The parameter `path` came from, for errors (e.g. `objects[2].objectName`).
    pub path_field: String,
    pub mode: u32,
    /// A missing secret or key skips the object instead of failing the mount.
    pub optional: bool,
    /// The key of the answer's JSON object the file holds; `None`: the whole answer.
    pub key: Option<String>,
    pub encoding: Encoding,
    /// Where the value lives, as the SecretProviderClass wrote it (for errors and versions).
    pub location: String,
    pub request: R,
}

/// Refuses output paths the driver would refuse and two objects writing one file.
pub fn check_plan<R>(plan: &[PlannedObject<R>]) -> MountResult<()> {
    let mut paths = HashSet::with_capacity(plan.len());
    for object in plan {
        check_output_path(&object.path_field, &object.path)?;
        if !paths.insert(object.path.as_str()) {
            return Err(MountError::invalid(
                Reason::DuplicateObjectName,
                format!(
                    "{} {:?} is listed twice: each object needs its own file",
                    object.path_field, object.path
                ),
            ));
        }
    }
    Ok(())
}

/// Object versions: the backend's where it has one, otherwise a keyed HMAC (never a plain hash).
#[derive(Clone)]
pub struct Versions {
    key: Arc<VersionKey>,
    backend: &'static str,
}

impl Versions {
    pub fn new(key: Arc<VersionKey>, backend: &'static str) -> Self {
        Self { key, backend }
    }

    /// The keyed HMAC of an object's configuration and content.
    pub fn keyed(&self, configuration: &[&[u8]], contents: &[u8]) -> String {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(configuration.len() + 2);
        parts.push(self.backend.as_bytes());
        parts.extend_from_slice(configuration);
        parts.push(contents);
        self.key.version(&parts)
    }

    /// The one version of a mount whose objects were all optional and missing: the driver refuses an
    /// empty version list, so it says plainly that nothing is mounted.
    pub fn nothing_present(&self) -> ObjectVersion {
        ObjectVersion {
            id: format!("{}/no-objects-present", self.backend),
            version: self
                .key
                .version(&[self.backend.as_bytes(), b"no-objects-present"]),
        }
    }
}

/// Adds files and versions to a response, and marks one with no objects present.
pub struct ResponseBuilder {
    response: MountResponse,
    versions: Versions,
}

impl ResponseBuilder {
    pub fn new(versions: Versions, capacity: usize) -> Self {
        Self {
            response: MountResponse {
                files: Vec::with_capacity(capacity),
                versions: Vec::with_capacity(capacity),
                missing: Vec::new(),
                skipped: Vec::new(),
                unchanged: false,
            },
            versions,
        }
    }

    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    pub fn push(
        &mut self,
        id: String,
        version: String,
        path: String,
        mode: u32,
        contents: Zeroizing<Vec<u8>>,
    ) {
        self.response.versions.push(ObjectVersion { id, version });
        self.response.files.push(MountedFile {
            path,
            mode,
            contents,
        });
    }

    /// Skips the file of an object the backend does not have: listed in `missing` when `reported` (a
    /// required object of a request with `report_missing`), otherwise in `skipped`.
    pub fn missing(&mut self, path: String, reported: bool) {
        if reported {
            self.response.missing.push(path);
        } else {
            self.response.skipped.push(path);
        }
    }

    pub fn finish(mut self) -> MountResponse {
        if self.response.versions.is_empty() {
            self.response.versions.push(self.versions.nothing_present());
        }
        self.response
    }
}

/// How [`FetchPipeline::run`] fetches: by when, the in-process caller's options, and the versions the
/// caller holds (for [`FetchOptions::probe`]).
#[derive(Debug, Clone, Copy)]
pub struct RunOptions<'a> {
    pub deadline: Instant,
    pub fetch: FetchOptions,
    pub previous: &'a [PreviousVersion],
}

impl<'a> RunOptions<'a> {
    /// The request's deadline, fetch options and previous versions.
    pub fn of(request: &'a MountRequest) -> Self {
        Self {
            deadline: request.deadline(),
            fetch: request.fetch,
            previous: &request.previous_versions,
        }
    }
}

impl From<Instant> for RunOptions<'static> {
    /// Only a deadline: what a driver's mount gets.
    fn from(deadline: Instant) -> Self {
        Self {
            deadline,
            fetch: FetchOptions::default(),
            previous: &[],
        }
    }
}

/// How one mount's objects are fetched: concurrency, the value cache, metrics and versions.
pub struct FetchPipeline<S: Source> {
    values: ValueCache<(S::Identity, S::Request), S::Answer>,
    /// Versions told without values ([`Source::probe`]), kept as long as values are, so SecretSyncs
    /// polled together make one probe; `None` with the value cache off.
    probes: Option<ProbeCache<S>>,
    concurrency: usize,
    max_response_bytes: usize,
    mount_answer_bytes: usize,
    metrics: Arc<Metrics>,
    versions: Versions,
}

/// Settings of a [`FetchPipeline`].
pub struct PipelineSettings {
    /// Requests of one mount in flight at once.
    pub concurrency: usize,
    /// How long read answers are kept (0 = no cache, no coalescing).
    pub cache_ttl: std::time::Duration,
    /// Most bytes of answers kept.
    pub cache_bytes: u64,
    /// `--max-response-bytes`: the files of one mount together are at most this, and its answers at
    /// most [`ANSWER_BYTES_PER_RESPONSE_BYTE`] times this (each one is already bounded by the source), so
    /// with the requests in flight one mount holds a small multiple of it.
    pub max_response_bytes: usize,
}

/// Versions told without values, by identity and request.
type ProbeCache<S> =
    moka::future::Cache<(<S as Source>::Identity, <S as Source>::Request), Option<String>>;

/// Most versions told without values that are kept.
const PROBES_KEPT: u64 = 10_000;

/// What one mount's answers may hold together, as a multiple of `--max-response-bytes`: keys are cut
/// out of answers, so the answers may be larger than the response, but not without bound.
pub const ANSWER_BYTES_PER_RESPONSE_BYTE: usize = 2;

impl<S: Source> FetchPipeline<S> {
    pub fn new(
        settings: PipelineSettings,
        versions: Arc<VersionKey>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let probes = (!settings.cache_ttl.is_zero() && S::PROBES).then(|| {
            moka::future::Cache::builder()
                .time_to_live(settings.cache_ttl)
                .max_capacity(PROBES_KEPT)
                .build()
        });
        Self {
            values: ValueCache::new(settings.cache_ttl, settings.cache_bytes, S::Answer::size),
            probes,
            concurrency: settings.concurrency.max(1),
            max_response_bytes: settings.max_response_bytes,
            mount_answer_bytes: settings
                .max_response_bytes
                .saturating_mul(ANSWER_BYTES_PER_RESPONSE_BYTE),
            metrics,
            versions: Versions::new(versions, S::NAME),
        }
    }

    /// Fetches every object of the plan (checked with [`check_plan`]) as the call's identity.
    pub async fn run(
        &self,
        source: &S,
        call: &S::Call,
        mut plan: Vec<PlannedObject<S::Request>>,
        options: impl Into<RunOptions<'_>>,
    ) -> MountResult<MountResponse> {
        let options = options.into();
        check_plan(&plan)?;
        if options.fetch.probe
            && let Some(unchanged) = self.unchanged(source, call, &plan, &options).await
        {
            return Ok(unchanged);
        }
        // With report_missing, absent required objects are listed (optional ones are only skipped).
        let mut reported: HashSet<String> = HashSet::new();
        if options.fetch.report_missing {
            for object in plan.iter_mut().filter(|o| !o.optional) {
                reported.insert(object.path.clone());
                object.optional = true;
            }
        }
        if options.fetch.fresh {
            self.forget(call, &plan).await;
        }
        let deadline = options.deadline;
        let answers = self.fetch_distinct(source, call, &plan, deadline).await?;
        let mut response = ResponseBuilder::new(self.versions.clone(), plan.len());
        // Many objects may cut one large answer: count the files before copying them.
        let mut file_bytes = 0usize;
        for object in plan {
            let answer = match answers.get(&object.request) {
                Some(Ok(answer)) => answer,
                Some(Err(error)) if object.optional && is_absent(error) => {
                    let listed = reported.contains(&object.path);
                    response.missing(object.path, listed);
                    continue;
                }
                Some(Err(error)) => return Err(error.clone()),
                None => {
                    return Err(MountError::internal(
                        Reason::BackendBadAnswer,
                        "a request of this mount got no answer",
                    ));
                }
            };
            if object.key.is_none() {
                self.count_file_bytes(&mut file_bytes, answer.value.whole().len())?;
            }
            let contents = match contents_of::<S>(&object, &answer.value) {
                Ok(contents) => contents,
                Err(error) if object.optional && is_absent(&error) => {
                    let listed = reported.contains(&object.path);
                    response.missing(object.path, listed);
                    continue;
                }
                Err(error) => return Err(error),
            };
            if object.key.is_some() {
                self.count_file_bytes(&mut file_bytes, contents.len())?;
            }
            let version = answer
                .value
                .version()
                .unwrap_or_else(|| self.keyed_version(&object, &contents));
            response.push(object.id, version, object.path, object.mode, contents);
        }
        Ok(response.finish())
    }

    /// Asks the source for the versions alone ([`Source::probe`]): a response with no files, marked
    /// unchanged, when every object has a previous version and each request's current version equals
    /// it; `None` (read the values) when anything differs or cannot be told without values.
    async fn unchanged(
        &self,
        source: &S,
        call: &S::Call,
        plan: &[PlannedObject<S::Request>],
        options: &RunOptions<'_>,
    ) -> Option<MountResponse> {
        if !S::PROBES || plan.is_empty() {
            return None;
        }
        let previous: HashMap<&str, &str> = options
            .previous
            .iter()
            .map(|v| (v.id.as_str(), v.version.as_str()))
            .collect();
        let mut expected: HashMap<&S::Request, &str> = HashMap::with_capacity(plan.len());
        for object in plan {
            let version = previous.get(object.id.as_str())?;
            if *expected.entry(&object.request).or_insert(version) != *version {
                return None;
            }
        }
        let deadline = options.deadline;
        let checks: Vec<BoxFuture<'_, bool>> = expected
            .into_iter()
            .map(|(request, version)| -> BoxFuture<'_, bool> {
                Box::pin(async move {
                    let probe = source.probe(call, request, version, deadline);
                    let current = match &self.probes {
                        Some(kept) => {
                            let key = (S::identity(call).clone(), request.clone());
                            kept.get_with(key, probe).await
                        }
                        None => probe.await,
                    };
                    current.as_deref() == Some(version)
                })
            })
            .collect();
        let mut probes = futures_util::stream::iter(checks).buffer_unordered(self.concurrency);
        while let Some(same) = probes.next().await {
            if !same {
                return None;
            }
        }
        let mut response = ResponseBuilder::new(self.versions.clone(), plan.len());
        for object in plan {
            let version = previous.get(object.id.as_str())?.to_string();
            response.response.versions.push(ObjectVersion {
                id: object.id.clone(),
                version,
            });
        }
        response.response.unchanged = true;
        Some(response.finish())
    }

    /// Drops the kept answers of the plan's reads (a forced refresh reads them afresh).
    async fn forget(&self, call: &S::Call, plan: &[PlannedObject<S::Request>]) {
        for object in plan.iter().filter(|o| S::is_read(&o.request)) {
            let key = (S::identity(call).clone(), object.request.clone());
            self.values.invalidate(&key).await;
        }
    }

    /// Each distinct request of the plan, once, at most `concurrency` backend calls at a time (a call
    /// makes one request, or one batch where the source batches). A request of an optional object may
    /// fail without failing the mount; any other failure ends it.
    async fn fetch_distinct(
        &self,
        source: &S,
        call: &S::Call,
        plan: &[PlannedObject<S::Request>],
        deadline: Instant,
    ) -> MountResult<HashMap<S::Request, MountResult<Arc<Loaded<S::Answer>>>>> {
        let mut required: HashMap<S::Request, bool> = HashMap::with_capacity(plan.len());
        for object in plan {
            *required.entry(object.request.clone()).or_default() |= !object.optional;
        }
        let calls = self.calls(call, required.keys().cloned().collect());
        let required = &required;
        let mut answers = futures_util::stream::iter(calls)
            .map(|requests| async move {
                let answers =
                    if S::BATCHES && !(requests.len() == 1 && self.is_kept(call, &requests[0])) {
                        self.fetch_batch(source, call, &requests, deadline).await
                    } else {
                        vec![self.fetch_one(source, call, &requests[0], deadline).await]
                    };
                requests
                    .into_iter()
                    .zip(answers)
                    .map(|(request, answer)| {
                        let required = required.get(&request).copied().unwrap_or(true);
                        (request, required, answer)
                    })
                    .collect::<Vec<_>>()
            })
            .buffer_unordered(self.concurrency);
        let mut by_request = HashMap::with_capacity(plan.len());
        let mut held = 0usize;
        while let Some(results) = answers.next().await {
            for (request, required, answer) in results {
                match &answer {
                    Err(error) if required || !is_absent(error) => return Err(error.clone()),
                    Err(_) => {}
                    Ok(loaded) => {
                        held = held.saturating_add(loaded.value.whole().len());
                        if held > self.mount_answer_bytes {
                            return Err(self.answers_too_large(plan.len()));
                        }
                    }
                }
                by_request.insert(request, answer);
            }
        }
        Ok(by_request)
    }

    /// The backend calls for the distinct requests: one each, or, where the source batches, one each
    /// for those the value cache holds and the source's batches for the rest.
    fn calls(&self, call: &S::Call, requests: Vec<S::Request>) -> Vec<Vec<S::Request>> {
        if !S::BATCHES {
            return requests.into_iter().map(|request| vec![request]).collect();
        }
        let (kept, missing): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .partition(|request| self.is_kept(call, request));
        let mut calls: Vec<Vec<S::Request>> = kept.into_iter().map(|r| vec![r]).collect();
        calls.extend(
            S::batches(missing)
                .into_iter()
                .filter(|batch| !batch.is_empty()),
        );
        calls
    }

    fn is_kept(&self, call: &S::Call, request: &S::Request) -> bool {
        S::is_read(request)
            && self
                .values
                .contains(&(S::identity(call).clone(), request.clone()))
    }

    /// One batch: one backend call, each answer through the value cache (so identical reads in flight
    /// in other mounts are joined, and the answers kept for later mounts).
    async fn fetch_batch(
        &self,
        source: &S,
        call: &S::Call,
        requests: &[S::Request],
        deadline: Instant,
    ) -> Vec<MountResult<Arc<Loaded<S::Answer>>>> {
        let batch = async {
            let answers = source.fetch_batch(call, requests, deadline).await;
            Arc::new(
                answers
                    .into_iter()
                    .map(|answer| answer.map(Arc::new))
                    .collect::<Vec<_>>(),
            )
        };
        let batch = futures_util::FutureExt::shared(Box::pin(batch));
        let each = requests.iter().enumerate().map(|(index, request)| {
            let batch = batch.clone();
            async move {
                let answer_of_batch = async move {
                    batch.await.get(index).cloned().unwrap_or_else(|| {
                        Err(MountError::internal(
                            Reason::BackendBadAnswer,
                            "a batch call returned fewer answers than it was asked for",
                        ))
                    })
                };
                if !S::is_read(request) {
                    return answer_of_batch.await;
                }
                let key = (S::identity(call).clone(), request.clone());
                let (loaded, missed) = self.values.get_or_load_shared(key, answer_of_batch).await?;
                if self.values.is_on() {
                    self.metrics.record_cache_lookup(S::NAME, !missed);
                }
                if !loaded.cacheable && !missed {
                    return source.fetch(call, request, deadline).await.map(Arc::new);
                }
                Ok(loaded)
            }
        });
        futures_util::future::join_all(each).await
    }

    fn answers_too_large(&self, objects: usize) -> MountError {
        MountError::exhausted(
            Reason::AnswersTooLarge,
            format!(
                "the answers for this mount's {objects} objects hold more than {} bytes \
                 together ({ANSWER_BYTES_PER_RESPONSE_BYTE} × the provider's \
                 --max-response-bytes): mount fewer or smaller secrets per volume",
                self.mount_answer_bytes
            ),
        )
    }

    /// One distinct request: reads through the value cache, writes straight to the backend.
    async fn fetch_one(
        &self,
        source: &S,
        call: &S::Call,
        request: &S::Request,
        deadline: Instant,
    ) -> MountResult<Arc<Loaded<S::Answer>>> {
        if !S::is_read(request) {
            return source.fetch(call, request, deadline).await.map(Arc::new);
        }
        let key = (S::identity(call).clone(), request.clone());
        let (loaded, missed) = self
            .values
            .get_or_load(key, source.fetch(call, request, deadline))
            .await?;
        if self.values.is_on() {
            self.metrics.record_cache_lookup(S::NAME, !missed);
        }
        if !loaded.cacheable && !missed {
            // Another mount's answer that must not be shared: this mount asks for its own.
            return source.fetch(call, request, deadline).await.map(Arc::new);
        }
        Ok(loaded)
    }

    /// Adds a file's size to the mount's total; past `--max-response-bytes` the mount fails.
    fn count_file_bytes(&self, total: &mut usize, bytes: usize) -> MountResult<()> {
        *total = total.saturating_add(bytes);
        if *total > self.max_response_bytes {
            return Err(MountError::exhausted(
                Reason::ResponseTooLarge,
                format!(
                    "the files of this mount hold more than {} bytes (the provider's \
                     --max-response-bytes, at most the driver's --max-call-recv-msg-size)",
                    self.max_response_bytes
                ),
            ));
        }
        Ok(())
    }

    fn keyed_version(&self, object: &PlannedObject<S::Request>, contents: &[u8]) -> String {
        let mode = object.mode.to_string();
        let encoding = format!("{:?}", object.encoding);
        self.versions.keyed(
            &[
                object.id.as_bytes(),
                object.location.as_bytes(),
                object.key.as_deref().unwrap_or("").as_bytes(),
                encoding.as_bytes(),
                mode.as_bytes(),
            ],
            contents,
        )
    }
}

/// Whether an error says the secret or key is not there (what an optional object may be).
fn is_absent(error: &MountError) -> bool {
    error.kind == ErrorKind::NotFound
}

/// An object's file from its request's answer: the whole answer, or its key as the source cuts it,
/// decoded as the object's `encoding` says.
fn contents_of<S: Source>(
    object: &PlannedObject<S::Request>,
    answer: &S::Answer,
) -> MountResult<Zeroizing<Vec<u8>>> {
    let (raw, what) = match &object.key {
        None => (
            Zeroizing::new(answer.whole().to_vec()),
            format!("the secret at {:?}", object.location),
        ),
        Some(key) => (
            S::cut(object, key, answer)?,
            format!("key {key:?} of the secret at {:?}", object.location),
        ),
    };
    transform::decode(object.encoding, raw, &what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A source answering from a table, counting requests.
    struct Table {
        answers: HashMap<&'static str, MountResult<(Value, bool)>>,
        requests: Mutex<Vec<&'static str>>,
    }

    struct JsonAnswer {
        raw: Vec<u8>,
        json: Value,
    }

    impl Answer for JsonAnswer {
        fn whole(&self) -> &[u8] {
            &self.raw
        }
        fn keyed(&self) -> Option<&Value> {
            Some(&self.json)
        }
        fn version(&self) -> Option<String> {
            self.json
                .get("version")
                .and_then(Value::as_u64)
                .map(|v| v.to_string())
        }
        fn size(&self) -> usize {
            self.raw.len()
        }
    }

    impl Source for Table {
        type Request = &'static str;
        type Identity = &'static str;
        type Call = &'static str;
        type Answer = JsonAnswer;
        const NAME: &'static str = "table";

        fn identity(call: &Self::Call) -> &Self::Identity {
            call
        }
        fn is_read(request: &Self::Request) -> bool {
            !request.starts_with("write")
        }
        fn fetch<'a>(
            &'a self,
            _: &'a Self::Call,
            request: &'a Self::Request,
            _: Instant,
        ) -> BoxFuture<'a, MountResult<Loaded<JsonAnswer>>> {
            Box::pin(async move {
                self.requests.lock().unwrap().push(request);
                tokio::time::sleep(Duration::from_millis(20)).await;
                let (json, cacheable) = self.answers[request].clone()?;
                Ok(Loaded {
                    cacheable,
                    value: JsonAnswer {
                        raw: json.to_string().into_bytes(),
                        json,
                    },
                })
            })
        }
    }

    fn table() -> Table {
        let missing = MountError::not_found(Reason::SecretNotFound, "no secret at \"gone\"");
        Table {
            answers: HashMap::from([
                (
                    "app",
                    Ok((serde_json::json!({"a": "1", "b": "Mg=="}), true)),
                ),
                (
                    "kv2",
                    Ok((serde_json::json!({"k": "v", "version": 7}), true)),
                ),
                ("lease", Ok((serde_json::json!({"user": "u"}), false))),
                ("write", Ok((serde_json::json!({"cert": "c"}), false))),
                ("gone", Err(missing)),
            ]),
            requests: Mutex::new(Vec::new()),
        }
    }

    fn object(path: &str, request: &'static str, key: Option<&str>) -> PlannedObject<&'static str> {
        PlannedObject {
            id: path.into(),
            path: path.into(),
            path_field: format!("objects[{path}].objectName"),
            mode: 0o644,
            optional: false,
            key: key.map(String::from),
            encoding: Encoding::Utf8,
            location: request.into(),
            request,
        }
    }

    fn pipeline(ttl: u64, concurrency: usize) -> FetchPipeline<Table> {
        FetchPipeline::new(
            PipelineSettings {
                concurrency,
                cache_ttl: Duration::from_secs(ttl),
                cache_bytes: 1 << 20,
                max_response_bytes: 1 << 20,
            },
            Arc::new(VersionKey::random().unwrap()),
            Arc::new(Metrics::default()),
        )
    }

    fn contents(response: &MountResponse, path: &str) -> String {
        let file = response.files.iter().find(|f| f.path == path).unwrap();
        String::from_utf8(file.contents.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn one_request_per_distinct_answer_with_keys_decoding_and_versions() {
        let source = table();
        let mut b = object("b", "app", Some("b"));
        b.encoding = Encoding::Base64;
        let plan = vec![
            object("a", "app", Some("a")),
            b,
            object("whole", "app", None),
            object("k", "kv2", Some("k")),
        ];
        let response = pipeline(0, 8)
            .run(
                &source,
                &"sa-1",
                plan,
                Instant::now() + Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(contents(&response, "a"), "1");
        assert_eq!(contents(&response, "b"), "2");
        assert_eq!(contents(&response, "whole"), r#"{"a":"1","b":"Mg=="}"#);
        let mut requests = source.requests.lock().unwrap().clone();
        requests.sort();
        assert_eq!(requests, ["app", "kv2"]);
        let version = |id: &str| {
            response
                .versions
                .iter()
                .find(|v| v.id == id)
                .unwrap()
                .version
                .clone()
        };
        assert_eq!(version("k"), "7", "the backend's own version");
        assert_eq!(
            version("a").len(),
            43,
            "a keyed HMAC (base64url of 32 bytes) otherwise"
        );
        assert_ne!(version("a"), version("b"));
    }

    #[tokio::test]
    async fn optional_objects_are_skipped_only_when_absent() {
        let source = table();
        let mut gone = object("gone", "gone", Some("x"));
        gone.optional = true;
        let mut no_key = object("no-key", "app", Some("missing"));
        no_key.optional = true;
        let deadline = Instant::now() + Duration::from_secs(5);
        let response = pipeline(0, 8)
            .run(
                &source,
                &"sa",
                vec![object("a", "app", Some("a")), gone.clone(), no_key],
                deadline,
            )
            .await
            .unwrap();
        assert_eq!(response.files.len(), 1);
        let nothing = pipeline(0, 8)
            .run(&source, &"sa", vec![gone], deadline)
            .await
            .unwrap();
        assert!(nothing.files.is_empty());
        assert_eq!(nothing.versions[0].id, "table/no-objects-present");
        let required = pipeline(0, 8)
            .run(
                &source,
                &"sa",
                vec![object("gone", "gone", Some("x"))],
                deadline,
            )
            .await
            .unwrap_err();
        assert_eq!(required.reason, Reason::SecretNotFound);
        let mut bad_encoding = object("a", "app", Some("a"));
        bad_encoding.optional = true;
        bad_encoding.encoding = Encoding::Hex;
        let error = pipeline(0, 8)
            .run(&source, &"sa", vec![bad_encoding], deadline)
            .await
            .unwrap_err();
        assert_eq!(
            error.kind,
            ErrorKind::InvalidArgument,
            "only absence is skipped"
        );
    }

    #[tokio::test]
    async fn cache_is_per_identity_and_never_keeps_writes_or_leases() {
        let source = table();
        let pipeline = pipeline(60, 8);
        let deadline = Instant::now() + Duration::from_secs(5);
        for call in ["sa-1", "sa-1", "sa-2"] {
            let plan = vec![
                object("a", "app", Some("a")),
                object("u", "lease", Some("user")),
                object("c", "write", Some("cert")),
            ];
            pipeline.run(&source, &call, plan, deadline).await.unwrap();
        }
        let requests = source.requests.lock().unwrap().clone();
        let count = |r: &str| requests.iter().filter(|x| **x == r).count();
        assert_eq!(count("app"), 2, "kept per identity");
        assert_eq!((count("lease"), count("write")), (3, 3));
        // Concurrent mounts joining one leased read each get their own.
        let source = table();
        let plan = || vec![object("u", "lease", Some("user"))];
        let (a, b) = tokio::join!(
            pipeline.run(&source, &"sa-1", plan(), deadline),
            pipeline.run(&source, &"sa-1", plan(), deadline)
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(source.requests.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn one_mounts_answers_are_bounded_together() {
        let source = table();
        let mut small = pipeline(0, 8);
        // The "app" answer is 20 bytes, "kv2" 21.
        small.mount_answer_bytes = 30;
        small.max_response_bytes = 30;
        let deadline = Instant::now() + Duration::from_secs(5);
        let one = vec![object("a", "app", Some("a"))];
        small.run(&source, &"sa", one, deadline).await.unwrap();
        let two = vec![object("a", "app", Some("a")), object("k", "kv2", Some("k"))];
        let error = small.run(&source, &"sa", two, deadline).await.unwrap_err();
        assert_eq!(error.reason, "AnswersTooLarge");
        assert!(error.message.contains("--max-response-bytes"), "{error}");
        // One answer cut into many files: the files count, before they are copied.
        let many: Vec<_> = (0..3)
            .map(|i| object(&format!("w{i}"), "app", None))
            .collect();
        let error = small.run(&source, &"sa", many, deadline).await.unwrap_err();
        assert_eq!(error.reason, "ResponseTooLarge");
    }

    /// [`Table`], read two requests per backend call.
    struct Pairs {
        table: Table,
        batches: Mutex<Vec<Vec<&'static str>>>,
    }

    impl Source for Pairs {
        type Request = &'static str;
        type Identity = &'static str;
        type Call = &'static str;
        type Answer = JsonAnswer;
        const NAME: &'static str = "pairs";
        const BATCHES: bool = true;

        fn identity(call: &Self::Call) -> &Self::Identity {
            call
        }
        fn is_read(request: &Self::Request) -> bool {
            Table::is_read(request)
        }
        fn fetch<'a>(
            &'a self,
            call: &'a Self::Call,
            request: &'a Self::Request,
            deadline: Instant,
        ) -> BoxFuture<'a, MountResult<Loaded<JsonAnswer>>> {
            self.table.fetch(call, request, deadline)
        }
        fn batches(mut requests: Vec<&'static str>) -> Vec<Vec<&'static str>> {
            requests.sort();
            requests.chunks(2).map(|c| c.to_vec()).collect()
        }
        fn fetch_batch<'a>(
            &'a self,
            call: &'a Self::Call,
            requests: &'a [&'static str],
            deadline: Instant,
        ) -> BoxFuture<'a, Vec<MountResult<Loaded<JsonAnswer>>>> {
            Box::pin(async move {
                self.batches.lock().unwrap().push(requests.to_vec());
                let mut answers = Vec::new();
                for request in requests {
                    answers.push(self.table.fetch(call, request, deadline).await);
                }
                answers
            })
        }
    }

    #[tokio::test]
    async fn batching_sources_read_misses_in_batches_and_keep_their_answers() {
        let source = Pairs {
            table: table(),
            batches: Mutex::new(Vec::new()),
        };
        let plan = || {
            vec![
                object("a", "app", Some("a")),
                object("k", "kv2", Some("k")),
                object("u", "lease", Some("user")),
                object("w", "app", None),
            ]
        };
        let pipeline: FetchPipeline<Pairs> = FetchPipeline::new(
            PipelineSettings {
                concurrency: 8,
                cache_ttl: Duration::from_secs(60),
                cache_bytes: 1 << 20,
                max_response_bytes: 1 << 20,
            },
            Arc::new(VersionKey::random().unwrap()),
            Arc::new(Metrics::default()),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let response = pipeline
            .run(&source, &"sa", plan(), deadline)
            .await
            .unwrap();
        assert_eq!(contents(&response, "a"), "1");
        assert_eq!(contents(&response, "u"), "u");
        assert_eq!(
            *source.batches.lock().unwrap(),
            [vec!["app", "kv2"], vec!["lease"]],
            "three distinct reads, two calls"
        );
        // Kept answers are not asked again; the leased one is.
        source.batches.lock().unwrap().clear();
        pipeline
            .run(&source, &"sa", plan(), deadline)
            .await
            .unwrap();
        assert_eq!(*source.batches.lock().unwrap(), [vec!["lease"]]);
        // Another identity has nothing kept.
        source.batches.lock().unwrap().clear();
        pipeline
            .run(&source, &"sa-2", plan(), deadline)
            .await
            .unwrap();
        assert_eq!(source.batches.lock().unwrap().len(), 2);
    }

    #[test]
    fn plans_with_bad_or_duplicate_paths_are_refused() {
        let duplicate = [object("a", "app", None), object("a", "kv2", None)];
        assert_eq!(
            check_plan(&duplicate).unwrap_err().reason,
            Reason::DuplicateObjectName
        );
        let bad = [object("../x", "app", None)];
        assert!(
            check_plan(&bad)
                .unwrap_err()
                .message
                .contains("objects[../x].objectName")
        );
        assert!(check_plan(&[object("dir/file", "app", None)]).is_ok());
    }
}
