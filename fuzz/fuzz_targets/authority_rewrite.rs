//! Arbitrary client bytes through the HTTP/2 `:authority` rewriter (and its HPACK decoder), split at
//! arbitrary points: it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openclaw_csi_provider::transport::authority::{PREFACE, Rewriter};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(rest);
    let mut rewriter = Rewriter::default();
    for chunk in input.chunks(usize::from(split).max(1)) {
        rewriter.feed(chunk);
        rewriter.output().clear();
    }
    rewriter.finish();
});
