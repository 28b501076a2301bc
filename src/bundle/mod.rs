//! Self-extracting bundles: `airlock binary | payload | trailer`.
