//! Everything the wizard knows, in one serde value: what the user typed, what the
//! engine reported, which screen is up. [`super::draw`] only reads it; [`super::on`]
//! is the only thing that changes it.
//!
//! 1. Forms ([`HostsForm`], [`CredentialsForm`], [`SettingsForm`]) hold text as typed;
//!    validation is a pure function of the text ([`HostsForm::problems`], ...).
//! 2. [`State::to_cluster_doc`] turns the forms into a sealer `Cluster` document and
//!    [`State::to_spec`] resolves it with the same code the CLI uses, so the wizard
//!    and `FILE.run install -f Clusterfile` run the same [`ClusterSpec`].
//! 3. Secrets are `#[serde(skip)]`: a saved session asks for them again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::install::StepId;
use crate::preflight::{self, CheckId, Finding, Status};
use crate::remote::Secret;
use crate::spec::clusterfile::{
    ClusterDoc, ClusterSpec, ClusterSpecFields, Clusterfile, ClusterfileError, HostGroup,
    LocalRegistryFields, Metadata, Port, ROLE_MASTER, ROLE_NODE, RegistryFields, SshFields,
    expand_ips,
};

/// The version of the saved session format.
pub const SESSION_VERSION: u32 = 1;

/// The screens, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Screen {
    /// Image facts and integrity verification.
    Welcome,
    /// IPs, ranges, roles, per-host overrides.
    Hosts,
    /// How to log in.
    Credentials,
    /// Registry, networks, image parameters.
    Settings,
    /// Read-only checks of every host.
    Preflight,
    /// The Clusterfile that will be used.
    Summary,
    /// Live progress.
    Install,
    /// Endpoints or the failure.
    Result,
}

impl Screen {
    /// Every screen in order.
    pub const ALL: [Self; 8] = [
        Self::Welcome,
        Self::Hosts,
        Self::Credentials,
        Self::Settings,
        Self::Preflight,
        Self::Summary,
        Self::Install,
        Self::Result,
    ];

    /// The title shown at the top.
    pub fn title(self) -> &'static str {
        match self {
            Self::Welcome => "Welcome",
            Self::Hosts => "Hosts",
            Self::Credentials => "Credentials",
            Self::Settings => "Settings",
            Self::Preflight => "Preflight",
            Self::Summary => "Summary",
            Self::Install => "Install",
            Self::Result => "Result",
        }
    }

    /// 1-based position.
    pub fn number(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0) + 1
    }
}

/// What the bundle says about its image (given by the app).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The image's name.
    pub name: String,
    /// Its version (tag).
    pub version: String,
    /// `kubernetes`, `k0s`, `generic`.
    pub runtime: String,
    /// Bundle size in bytes.
    pub size: u64,
    /// Who signed it, if signed.
    pub signer: Option<String>,
    /// Supported platforms.
    pub platforms: Vec<String>,
    /// Parameters the image declares (its `ENV`), with defaults and help.
    pub params: Vec<Param>,
}

/// A parameter of the image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    /// Env name.
    pub name: String,
    /// Default value.
    pub default: String,
    /// One line of help.
    pub help: String,
}

/// Integrity verification of the bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Verify {
    /// Not started.
    #[default]
    Pending,
    /// Running: bytes checked out of total.
    Running {
        /// Bytes checked.
        done: u64,
        /// Bytes to check.
        total: u64,
    },
    /// Every blob matched its digest.
    Passed,
    /// Something did not match: do not install.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A host's role in the form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Control plane (and etcd).
    #[default]
    Master,
    /// Worker.
    Node,
}

impl Role {
    /// The Clusterfile's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => ROLE_MASTER,
            Self::Node => ROLE_NODE,
        }
    }

    /// The other one.
    #[must_use]
    pub fn toggled(self) -> Self {
        match self {
            Self::Master => Self::Node,
            Self::Node => Self::Master,
        }
    }
}

/// One line of the hosts list: an IP or a range with its role and overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    /// `198.18.0.2` or `198.18.0.3-198.18.0.5`.
    pub ips: String,
    /// Role.
    pub role: Role,
    /// Login user override (empty: the Credentials screen's).
    pub user: String,
    /// SSH port override (empty: the Credentials screen's).
    pub port: String,
}

/// Which part of the Hosts screen has the keyboard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostFocus {
    /// The IPs field of the entry line.
    #[default]
    Ips,
    /// The role toggle.
    Role,
    /// The user override.
    User,
    /// The port override.
    Port,
    /// The list above.
    List,
}

impl HostFocus {
    /// The next part (Tab).
    #[must_use]
    pub fn next(self) -> Self {
        match self {
            Self::Ips => Self::Role,
            Self::Role => Self::User,
            Self::User => Self::Port,
            Self::Port => Self::List,
            Self::List => Self::Ips,
        }
    }

    /// The previous part (Shift-Tab).
    #[must_use]
    pub fn prev(self) -> Self {
        match self {
            Self::Ips => Self::List,
            Self::Role => Self::Ips,
            Self::User => Self::Role,
            Self::Port => Self::User,
            Self::List => Self::Port,
        }
    }
}

/// The Hosts screen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsForm {
    /// Hosts entered so far.
    pub rows: Vec<HostRow>,
    /// The entry line.
    pub entry: HostRow,
    /// The row being edited, when the entry line edits one.
    pub editing: Option<usize>,
    /// The selected row of the list.
    pub selected: usize,
    /// Where the keyboard goes.
    pub focus: HostFocus,
}

/// What is wrong with the hosts; errors block the next screen, warnings do not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// Blocking.
    pub errors: Vec<String>,
    /// Advice.
    pub warnings: Vec<String>,
}

impl HostsForm {
    /// Problems of the entry line as typed (empty entry: none).
    pub fn entry_problem(&self) -> Option<String> {
        let e = &self.entry;
        if e.ips.trim().is_empty() {
            return None;
        }
        let ips = match expand_ips(&e.ips) {
            Ok(ips) => ips,
            Err(m) => return Some(m),
        };
        if !e.port.trim().is_empty() && parse_port(&e.port).is_none() {
            return Some(format!("port {:?} is not 1-65535", e.port.trim()));
        }
        if !e.user.is_empty() && !is_user_name(&e.user) {
            return Some(format!("{:?} is not a user name", e.user));
        }
        let taken = self.expanded(self.editing);
        ips.iter()
            .find(|ip| taken.contains(ip))
            .map(|ip| format!("{ip} is already in the list"))
    }

    /// Every IP of the rows, except row `except`.
    fn expanded(&self, except: Option<usize>) -> BTreeSet<IpAddr> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .flat_map(|(_, r)| expand_ips(&r.ips).unwrap_or_default())
            .collect()
    }

    /// Masters and nodes, counted over ranges.
    pub fn counts(&self) -> (usize, usize) {
        let count = |role| {
            self.rows
                .iter()
                .filter(|r| r.role == role)
                .map(|r| expand_ips(&r.ips).map_or(0, |v| v.len()))
                .sum()
        };
        (count(Role::Master), count(Role::Node))
    }

    /// Problems of the list as a whole.
    pub fn problems(&self) -> Problems {
        let mut p = Problems::default();
        let (masters, nodes) = self.counts();
        if masters == 0 {
            p.errors.push("add at least one master".to_string());
        } else if masters % 2 == 0 {
            p.warnings.push(format!(
                "{masters} masters: etcd needs an odd number (1, 3, 5) to survive a failure"
            ));
        }
        if masters == 1 && nodes > 0 {
            p.warnings
                .push("one master: the cluster stops if it fails (3 recommended)".to_string());
        }
        p
    }

    /// Put the entry line into the list (or back into the row it edits).
    pub fn commit_entry(&mut self) -> Result<(), String> {
        if self.entry.ips.trim().is_empty() {
            return Err("type an IP or a range first".to_string());
        }
        if let Some(problem) = self.entry_problem() {
            return Err(problem);
        }
        let mut row = std::mem::take(&mut self.entry);
        row.ips = row.ips.trim().to_string();
        row.user = row.user.trim().to_string();
        row.port = row.port.trim().to_string();
        // The next entry keeps the role: people type masters, then nodes.
        self.entry.role = row.role;
        match self.editing.take() {
            Some(i) if i < self.rows.len() => self.rows[i] = row,
            _ => {
                self.rows.push(row);
                self.selected = self.rows.len() - 1;
            }
        }
        Ok(())
    }
}

/// How to log in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A private key file.
    #[default]
    Key,
    /// A password.
    Password,
}

/// The fields of the Credentials screen, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredField {
    /// Login user.
    #[default]
    User,
    /// Key or password.
    Method,
    /// Password (password method).
    Password,
    /// Key file (key method).
    KeyFile,
    /// Key passphrase (key method).
    Passphrase,
    /// Sudo password.
    SudoPassword,
    /// SSH port.
    Port,
    /// Jump host.
    Bastion,
}

impl CredField {
    /// The fields shown for `method`, in order.
    pub fn visible(method: AuthMethod) -> Vec<Self> {
        let mut v = vec![Self::User, Self::Method];
        match method {
            AuthMethod::Password => v.push(Self::Password),
            AuthMethod::Key => v.extend([Self::KeyFile, Self::Passphrase]),
        }
        v.extend([Self::SudoPassword, Self::Port, Self::Bastion]);
        v
    }
}

/// The Credentials screen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsForm {
    /// Login user.
    pub user: String,
    /// Key or password.
    pub method: AuthMethod,
    /// Password (not saved in sessions).
    #[serde(skip)]
    pub password: Secret,
    /// Private key file.
    pub key_file: String,
    /// Its passphrase (not saved in sessions).
    #[serde(skip)]
    pub passphrase: Secret,
    /// Sudo password (not saved in sessions; empty: the login password).
    #[serde(skip)]
    pub sudo_password: Secret,
    /// SSH port.
    pub port: String,
    /// Jump host, `user@host:port`.
    pub bastion: String,
    /// The hosts' SSH keys, shown for the user to accept before any login.
    pub host_keys: HostKeys,
    /// Where the keyboard goes.
    pub focus: CredField,
}

/// Where one host's SSH server is, for fetching its host key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyTarget {
    /// Address.
    pub host: String,
    /// SSH port.
    pub port: u16,
}

impl KeyTarget {
    /// `host:port`, IPv6 in brackets.
    pub fn label(&self) -> String {
        crate::remote::known_hosts::host_label(&self.host, self.port)
    }
}

/// What the known-hosts file says of a host's key, or why it could not be fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum KeyStatus {
    /// Already recorded: nothing to accept.
    Known,
    /// Not seen before: the user compares and accepts the fingerprint.
    New,
    /// Recorded with another key: refused until the user removes the old line.
    Changed {
        /// Why, and the file and line to remove.
        reason: String,
    },
    /// The host did not answer.
    Unreachable {
        /// Why.
        reason: String,
    },
}

/// One host's key on the Credentials screen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKeyRow {
    /// The host.
    pub target: KeyTarget,
    /// Key type, e.g. `ssh-ed25519` (empty when unreachable).
    pub algorithm: String,
    /// `SHA256:...` as `ssh-keygen -lf` prints it (empty when unreachable).
    pub fingerprint: String,
    /// The public key in OpenSSH form, recorded when accepted. Public, not a secret.
    pub public_key: String,
    /// Known, new, changed or unreachable.
    pub status: KeyStatus,
}

/// The host keys step of the Credentials screen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum HostKeys {
    /// Not fetched for the current hosts.
    #[default]
    NotScanned,
    /// Being fetched.
    Scanning {
        /// From these hosts.
        targets: Vec<KeyTarget>,
    },
    /// Fetched: shown for the user to accept.
    Scanned {
        /// One row per host, in host order.
        rows: Vec<HostKeyRow>,
        /// First row shown.
        scroll: usize,
    },
    /// Accepted by the user for these hosts.
    Accepted {
        /// The hosts.
        targets: Vec<KeyTarget>,
    },
}

impl Default for CredentialsForm {
    fn default() -> Self {
        Self {
            user: "root".to_string(),
            method: AuthMethod::Key,
            password: Secret::default(),
            key_file: String::new(),
            passphrase: Secret::default(),
            sudo_password: Secret::default(),
            port: "22".to_string(),
            bastion: String::new(),
            host_keys: HostKeys::NotScanned,
            focus: CredField::User,
        }
    }
}

impl CredentialsForm {
    /// The first problem, naming the field.
    pub fn problem(&self) -> Option<String> {
        if !is_user_name(&self.user) {
            return Some("User: type a login user name".to_string());
        }
        match self.method {
            AuthMethod::Password if self.password.expose().is_empty() => {
                return Some("Password: type the login password".to_string());
            }
            AuthMethod::Key if self.key_file.trim().is_empty() => {
                return Some("Key file: type the path of the private key".to_string());
            }
            _ => {}
        }
        if parse_port(&self.port).is_none() {
            return Some(format!("Port: {:?} is not 1-65535", self.port));
        }
        None
    }
}

/// The fields of the Settings screen: fixed ones, then the image's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingField {
    /// Registry domain.
    RegistryDomain,
    /// Registry port.
    RegistryPort,
    /// Pod network.
    PodCidr,
    /// Service network.
    ServiceCidr,
    /// Virtual IP of the API server (HA).
    Vip,
    /// Data root on hosts.
    DataRoot,
    /// The image's parameter at this index.
    Param(usize),
}

/// The Settings screen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsForm {
    /// Registry domain.
    pub registry_domain: String,
    /// Registry port.
    pub registry_port: String,
    /// Pod CIDR.
    pub pod_cidr: String,
    /// Service CIDR.
    pub service_cidr: String,
    /// API server VIP (optional).
    pub vip: String,
    /// Data root on hosts.
    pub data_root: String,
    /// Values of the image's parameters, by name.
    pub params: BTreeMap<String, String>,
    /// Index of the focused field in [`SettingsForm::fields`].
    pub focus: usize,
}

impl Default for SettingsForm {
    fn default() -> Self {
        let req = preflight::Requirements::default();
        Self {
            registry_domain: crate::spec::clusterfile::DEFAULT_REGISTRY_DOMAIN.to_string(),
            registry_port: crate::spec::clusterfile::DEFAULT_REGISTRY_PORT.to_string(),
            pod_cidr: req.pod_cidr,
            service_cidr: req.service_cidr,
            vip: String::new(),
            data_root: crate::spec::clusterfile::DEFAULT_DATA_ROOT.to_string(),
            params: BTreeMap::new(),
            focus: 0,
        }
    }
}

impl SettingsForm {
    /// Every field, fixed ones first.
    pub fn fields(params: &[Param]) -> Vec<SettingField> {
        let mut v = vec![
            SettingField::RegistryDomain,
            SettingField::RegistryPort,
            SettingField::PodCidr,
            SettingField::ServiceCidr,
            SettingField::Vip,
            SettingField::DataRoot,
        ];
        v.extend((0..params.len()).map(SettingField::Param));
        v
    }

    /// The problem of one field, if any.
    pub fn field_problem(&self, field: SettingField) -> Option<String> {
        match field {
            SettingField::RegistryDomain => (self.registry_domain.is_empty()
                || !self
                    .registry_domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
            .then(|| "a DNS name such as sea.hub".to_string()),
            SettingField::RegistryPort => parse_port(&self.registry_port)
                .is_none()
                .then(|| "1-65535".to_string()),
            SettingField::PodCidr => preflight::checks::parse_cidr(&self.pod_cidr)
                .is_none()
                .then(|| "an IPv4 network such as 100.64.0.0/10".to_string()),
            SettingField::ServiceCidr => preflight::checks::parse_cidr(&self.service_cidr)
                .is_none()
                .then(|| "an IPv4 network such as 10.96.0.0/12".to_string()),
            SettingField::Vip => (!self.vip.is_empty() && self.vip.parse::<IpAddr>().is_err())
                .then(|| "an IP address, or empty".to_string()),
            SettingField::DataRoot => (!self.data_root.starts_with('/')
                || self.data_root.split('/').any(|c| c == ".."))
            .then(|| "an absolute path".to_string()),
            SettingField::Param(_) => None,
        }
    }
}

/// The Preflight screen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightView {
    /// Checks are running.
    pub running: bool,
    /// Checks have finished at least once.
    pub finished: bool,
    /// Findings so far.
    pub findings: Vec<Finding>,
    /// Selected check (row).
    pub row: usize,
    /// Selected host (column).
    pub column: usize,
    /// Checks the user skipped, recorded in the saved Clusterfile's notes and the log.
    pub skipped: BTreeSet<CheckId>,
    /// A skip waiting for confirmation.
    pub confirm_skip: Option<CheckId>,
    /// Connecting failed before any check could run.
    pub error: Option<String>,
}

impl PreflightView {
    /// The finding of `check` on `host`.
    pub fn finding(&self, host: IpAddr, check: CheckId) -> Option<&Finding> {
        self.findings
            .iter()
            .rev()
            .find(|f| f.host == host && f.check == check)
    }

    /// Counts of failures and warnings.
    pub fn counts(&self) -> (usize, usize) {
        let n = |s| self.findings.iter().filter(|f| f.status == s).count();
        (n(Status::Fail), n(Status::Warn))
    }

    /// Whether the install may start.
    pub fn is_passed(&self) -> bool {
        self.finished && !self.running && self.error.is_none() && self.counts().0 == 0
    }
}

/// The Summary screen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryView {
    /// Write passwords into the saved Clusterfile (0600).
    pub include_secrets: bool,
    /// Where it was saved.
    pub saved: Option<PathBuf>,
    /// Why saving failed.
    pub error: Option<String>,
    /// First line shown of the YAML.
    pub scroll: usize,
}

/// Progress of one host during the install.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostProgress {
    /// The step running or last run ([`StepId`] name).
    pub step: Option<String>,
    /// Steps finished (done or skipped).
    pub steps_done: usize,
    /// Bytes sent.
    pub sent: u64,
    /// Bytes to send.
    pub total: u64,
    /// Milliseconds since the start when the first byte was reported.
    pub transfer_started_ms: Option<u64>,
    /// The failure, if the host failed.
    pub failed: Option<String>,
    /// Last lines of output.
    pub log: Vec<String>,
}

/// How many log lines are kept per host.
pub const LOG_LINES: usize = 200;

/// The Install screen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dashboard {
    /// Per host.
    pub hosts: BTreeMap<IpAddr, HostProgress>,
    /// Selected host (index into `hosts`).
    pub selected: usize,
    /// Milliseconds since the install started (from ticks).
    pub now_ms: u64,
    /// The install is running.
    pub running: bool,
    /// Failed steps the user chose to skip: (host, step name). Recorded in the saved
    /// Clusterfile's notes.
    pub skipped_steps: Vec<(IpAddr, String)>,
    /// A skip of the failed step waiting for confirmation.
    pub confirm_skip: bool,
}

/// How the install ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// The cluster runs.
    Success {
        /// API server and other endpoints.
        endpoints: Vec<String>,
        /// The admin kubeconfig, copied next to the bundle.
        kubeconfig: Option<PathBuf>,
        /// The install log.
        log_file: Option<PathBuf>,
    },
    /// A step failed.
    Failure {
        /// The host (none when the install stopped before any host).
        host: Option<IpAddr>,
        /// The step ([`StepId`] name).
        step: Option<String>,
        /// The cause.
        cause: String,
        /// What to do.
        fix: String,
    },
}

/// The whole wizard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Session format version.
    pub version: u32,
    /// The screen up.
    pub screen: Screen,
    /// The image.
    pub image: ImageInfo,
    /// Integrity verification.
    pub verify: Verify,
    /// Screen 2.
    pub hosts: HostsForm,
    /// Screen 3.
    pub credentials: CredentialsForm,
    /// Screen 4.
    pub settings: SettingsForm,
    /// Screen 5.
    pub preflight: PreflightView,
    /// Screen 6.
    pub summary: SummaryView,
    /// Screen 7.
    pub dashboard: Dashboard,
    /// Screen 8.
    pub outcome: Option<Outcome>,
    /// Where the support bundle was written.
    pub support_bundle: Option<PathBuf>,
    /// A message for the bottom line (why Next did nothing, what was saved).
    pub notice: Option<String>,
    /// Ctrl-C was pressed: asking whether to quit.
    pub confirm_quit: bool,
    /// Colours allowed (`NO_COLOR` unset). Not saved.
    #[serde(skip)]
    pub color: bool,
}

impl State {
    /// A fresh wizard for `image`.
    pub fn new(image: ImageInfo) -> Self {
        let mut settings = SettingsForm::default();
        for p in &image.params {
            settings.params.insert(p.name.clone(), p.default.clone());
        }
        Self {
            version: SESSION_VERSION,
            screen: Screen::Welcome,
            image,
            verify: Verify::Pending,
            hosts: HostsForm::default(),
            credentials: CredentialsForm::default(),
            settings,
            preflight: PreflightView::default(),
            summary: SummaryView::default(),
            dashboard: Dashboard::default(),
            outcome: None,
            support_bundle: None,
            notice: None,
            confirm_quit: false,
            color: true,
        }
    }

    /// The hosts, one IP each, in list order (rows that do not parse are left out).
    pub fn host_ips(&self) -> Vec<IpAddr> {
        self.hosts
            .rows
            .iter()
            .flat_map(|r| expand_ips(&r.ips).unwrap_or_default())
            .collect()
    }

    /// Every host's SSH server, in list order (per-host port overrides applied).
    pub fn key_targets(&self) -> Vec<KeyTarget> {
        let default_port = parse_port(&self.credentials.port).unwrap_or(22);
        self.hosts
            .rows
            .iter()
            .flat_map(|r| {
                let port = parse_port(&r.port).unwrap_or(default_port);
                expand_ips(&r.ips)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |ip| KeyTarget {
                        host: ip.to_string(),
                        port,
                    })
            })
            .collect()
    }

    /// The `Cluster` document the forms describe; secrets only if `with_secrets`.
    pub fn to_cluster_doc(&self, with_secrets: bool) -> ClusterDoc {
        let c = &self.credentials;
        let secret =
            |s: &Secret| (with_secrets && !s.expose().is_empty()).then(|| s.expose().to_string());
        let ssh = SshFields {
            user: Some(c.user.clone()),
            passwd: match c.method {
                AuthMethod::Password => secret(&c.password),
                AuthMethod::Key => None,
            },
            pk: match c.method {
                AuthMethod::Key => Some(PathBuf::from(c.key_file.trim())),
                AuthMethod::Password => None,
            },
            pk_passwd: match c.method {
                AuthMethod::Key => secret(&c.passphrase),
                AuthMethod::Password => None,
            },
            port: parse_port(&c.port).map(Port),
            sudo_passwd: secret(&c.sudo_password),
            ..SshFields::default()
        };
        let hosts = self
            .hosts
            .rows
            .iter()
            .map(|r| {
                let over = SshFields {
                    user: (!r.user.is_empty()).then(|| r.user.clone()),
                    port: parse_port(&r.port).map(Port),
                    ..SshFields::default()
                };
                HostGroup {
                    ips: vec![r.ips.clone()],
                    roles: vec![r.role.as_str().to_string()],
                    ssh: (over != SshFields::default()).then_some(over),
                    ..HostGroup::default()
                }
            })
            .collect();
        let s = &self.settings;
        let mut env: Vec<String> = vec![
            format!("PodCIDR={}", s.pod_cidr),
            format!("SvcCIDR={}", s.service_cidr),
        ];
        if !s.vip.is_empty() {
            env.push(format!("VIP={}", s.vip));
        }
        env.extend(
            self.image
                .params
                .iter()
                .filter_map(|p| s.params.get(&p.name).map(|v| (p, v)))
                .filter(|(p, v)| **v != p.default)
                .map(|(p, v)| format!("{}={v}", p.name)),
        );
        let image = if self.image.version.is_empty() {
            self.image.name.clone()
        } else {
            format!("{}:{}", self.image.name, self.image.version)
        };
        ClusterDoc {
            api_version: "sealer.io/v2".to_string(),
            kind: "Cluster".to_string(),
            metadata: Metadata {
                name: "default".to_string(),
            },
            spec: ClusterSpecFields {
                image,
                env,
                ssh,
                hosts,
                registry: Some(RegistryFields {
                    local_registry: Some(LocalRegistryFields {
                        domain: Some(s.registry_domain.clone()),
                        port: parse_port(&s.registry_port).map(Port),
                        ..LocalRegistryFields::default()
                    }),
                    external_registry: None,
                }),
                data_root: Some(s.data_root.clone()),
                ..ClusterSpecFields::default()
            },
        }
    }

    /// The Clusterfile YAML text, secrets only if `with_secrets`.
    pub fn to_yaml(&self, with_secrets: bool) -> String {
        let doc = self.to_cluster_doc(with_secrets);
        let body = serde_saphyr::to_string(&doc).unwrap_or_default();
        let mut text = String::from("# Written by the airlock wizard.\n");
        if !with_secrets && self.credentials.method == AuthMethod::Password {
            text.push_str(
                "# The password is not saved: add spec.ssh.passwd, passwdEnv or passwdFile.\n",
            );
        }
        for id in &self.preflight.skipped {
            text.push_str(&format!(
                "# Preflight check skipped by the user: {id} (without the wizard: --ignore-preflight-errors={id})\n"
            ));
        }
        for (host, step) in &self.dashboard.skipped_steps {
            text.push_str(&format!(
                "# Install step skipped by the user after it failed: {step} on {host}\n"
            ));
        }
        text.push_str(&body);
        text
    }

    /// The [`ClusterSpec`] the install runs, resolved as the CLI resolves a Clusterfile.
    pub fn to_spec(&self) -> Result<ClusterSpec, ClusterfileError> {
        let cluster = Clusterfile {
            file: "wizard".to_string(),
            cluster: self.to_cluster_doc(true),
            ..Clusterfile::default()
        };
        cluster.resolve(&|_| None)
    }
}

/// A port number 1-65535.
pub fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

fn is_user_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}
