//! Fuzz image references and digests: parse, and a parsed reference round-trips.
//!
//! 1. Parse the input as a [`Reference`]; when it parses, its printed form parses
//!    to the same reference and its helpers do not panic.
//! 2. Parse the input as a [`Digest`]; when it parses, it prints back unchanged.
#![no_main]

use airlock::digest::Digest;
use airlock::spec::reference::{Reference, is_valid_repository};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(reference) = text.parse::<Reference>() {
        let printed = reference.to_string();
        let again: Reference = printed
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?} does not parse: {e}"));
        assert_eq!(again, reference, "{text:?} does not round-trip via {printed:?}");
        let _ = (reference.name(), reference.manifest_ref(), reference.familiar());
    }
    if let Ok(digest) = text.parse::<Digest>() {
        assert_eq!(digest.to_string(), text);
    }
    let _ = is_valid_repository(text);
});
