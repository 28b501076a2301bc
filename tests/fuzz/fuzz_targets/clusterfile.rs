//! Fuzz the Clusterfile reader: arbitrary YAML must parse or fail with a field error.
//!
//! 1. Parse the input as a (multi-document) Clusterfile.
//! 2. When it parses, resolve it (environment lookups answer a fixed value) and
//!    write it back without secrets.
//! 3. Feed the text to the IP-range and bastion parsers too.
#![no_main]

use airlock::spec::clusterfile::{Bastion, Clusterfile, expand_ips};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(file) = Clusterfile::parse("Clusterfile", text) {
        let _ = file.resolve(&|_| Some("secret".to_string()));
        let _ = file.to_yaml_without_secrets();
    }
    let _ = expand_ips(text);
    let _ = Bastion::parse(text, "root");
});
