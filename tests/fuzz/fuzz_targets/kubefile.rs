//! Fuzz the Kubefile parser: arbitrary text must give a Kubefile or a located error.
//!
//! 1. Parse the input as a Kubefile named `Kubefile`.
//! 2. Run `${VAR}` substitution and version-range parsing on the same text, the other
//!    two entry points that see user text.
#![no_main]

use std::collections::BTreeMap;

use airlock::spec::kubefile::{self, VersionRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = kubefile::parse("Kubefile", text);
    let vars = BTreeMap::from([("A".to_string(), "a".to_string())]);
    let _ = kubefile::substitute(text, &vars);
    if let Ok(range) = VersionRange::parse(text) {
        let _ = range.matches("v1.30.2");
        let _ = range.matches(text);
    }
});
