//! The facts one host reported: `key=value` lines from `installer/preflight-facts.sh`.

use std::collections::BTreeMap;

/// Facts about one host, as reported. Keys may repeat (`addr`, `listen`, `binary`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Facts {
    values: BTreeMap<String, Vec<String>>,
}

impl Facts {
    /// Parse the script's output; lines without `=` are ignored.
    pub fn parse(text: &str) -> Self {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                values
                    .entry(k.trim().to_string())
                    .or_default()
                    .push(v.trim().to_string());
            }
        }
        Self { values }
    }

    /// The first value of `key`, if present and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `key`.
    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.values
            .get(key)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `key` as a number.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    /// TCP ports something listens on, from `ss -ltn` (`listen=`) or `/proc/net/tcp` (`tcp=`).
    pub fn listening_ports(&self) -> Vec<u16> {
        let from_ss = self
            .all("listen")
            .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()));
        let from_proc = self.all("tcp").filter_map(|a| {
            a.rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        });
        let mut ports: Vec<u16> = from_ss.chain(from_proc).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

impl Facts {
    /// TCP ports that airlock's own processes listen on (its registry, its load
    /// balancer), from `ss -ltnp` (`airlock_listen=`): an earlier install, not a conflict.
    pub fn airlock_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .all("airlock_listen")
            .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_keys_and_both_port_sources() {
        let f = Facts::parse(
            "hostname=m1\nlisten=0.0.0.0:22\nlisten=[::]:6443\nlisten=127.0.0.1:22\ntcp=0100007F:2710\nempty=\nnoise\n",
        );
        assert_eq!(f.get("hostname"), Some("m1"));
        assert_eq!(f.get("empty"), None);
        assert_eq!(f.listening_ports(), [22, 6443, 10000]);
    }
}
