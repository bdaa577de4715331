//! The optional sync controller (`sync` mode, cargo feature `sync`): `SecretSync` resources kept in step
//! with Kubernetes Secrets through the same backends and fetch pipeline as `serve`.
//!
//! Built so far: the resource's types and its CRD ([`crd`]). The controller itself (reconcile, rotation
//! polling, writes, rollouts, leader election) comes next.

pub mod crd;
