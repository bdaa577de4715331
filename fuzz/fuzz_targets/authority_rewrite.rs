//! Arbitrary client bytes through the HTTP/2 `:authority` rewriter (and its HPACK decoder), split at
//! arbitrary points: it must never panic, and every header block it rewrites, decoded afresh as h2
//! decodes it, must hold the input's fields with only `:authority` changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openclaw_csi_provider::transport::authority::{PREFACE, Rewriter, check_rewrite};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(rest);
    let mut rewriter = Rewriter::default();
    let mut output = Vec::new();
    for chunk in input.chunks(usize::from(split).max(1)) {
        rewriter.feed(chunk);
        output.extend_from_slice(&rewriter.output().split());
    }
    rewriter.finish();
    output.extend_from_slice(&rewriter.output().split());
    if let Err(difference) = check_rewrite(&input, &output) {
        panic!("{difference}");
    }
});
