//! `airlock build`: a Kubefile and a context in, a cluster image in the store out.
//!
//! 1. Parse the Kubefile ([`crate::spec::kubefile`]); resolve `FROM` (scratch, an
//!    image in the store, or else one pulled through the [`ImageFetcher`] and named in
//!    the store; its layers, config and container images are inherited).
//! 2. For each target platform (`ARCH` set to its architecture) run the
//!    instructions over a [`Tree`]: `COPY`/`ADD`/`APP`/`RUN` each give a layer
//!    (`ADD` and `APP` URLs are fetched by [`Downloader`], cached by URL and ETag)
//!    ([`crate::image::layer`]), the others change the config. Each layer is looked
//!    up first in the build cache, keyed by the parent key, the instruction as
//!    substituted and the digest of its content: the digest of the diff ids it
//!    wrote, remembered against its files' stamps (inode, size, mtime), so an
//!    unchanged context is not read again and a first build reads each file once.
//! 3. Discover the container images the rootfs needs ([`crate::image::discover`]),
//!    plus `--image-list`, minus `--ignored-image-list`; fetch each for every
//!    platform through the [`ImageFetcher`] the caller gave.
//! 4. Write each platform's config and manifest, then the index (rootfs manifests
//!    first, then container images sorted by reference), and name it.
//!
//! Nothing depends on the build host: no timestamps, no host paths, normalised
//! modes, so the same context and Kubefile give the same digest anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use fs_err as fs;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::image::cluster::{self, ClusterImage};
use crate::image::discover::{self, Discovered};
use crate::image::download::{DownloadError, Downloaded, Downloader};
use crate::image::layer::{self, BuiltLayer};
use crate::image::oci::{
    self, AppConfig, ClusterConfig, Descriptor, ImageIndex, ImageManifest, MinResources, Platform,
    RootfsConfig, RootfsDiffIds,
};
use crate::image::store::{self, Store};
use crate::image::tree::{FileStamp, NodeKind, Tree};
use crate::image::{ImageFetcher, gc::GcLock};
use crate::spec::kubefile::{
    self, AppRole, AppSource, Instruction, Kubefile, KubefileError, Located, RunCommand, Span, Word,
};
use crate::spec::reference::Reference;

/// sealer's label for the cluster runtime (`kubernetes`, `k0s`, ...).
pub const LABEL_RUNTIME: &str = "cluster.alpha.sealer.io/cluster-runtime-type";
/// sealer's label for the runtime version.
pub const LABEL_RUNTIME_VERSION: &str = "cluster.alpha.sealer.io/cluster-runtime-version";
/// sealer's label for the container runtime (`containerd`, `docker`).
pub const LABEL_CONTAINER_RUNTIME: &str = "cluster.alpha.sealer.io/container-runtime-type";
/// Minimum CPUs per node.
pub const LABEL_MIN_CPUS: &str = "io.airlock.min-cpus";
/// Minimum memory per node, MiB.
pub const LABEL_MIN_MEMORY: &str = "io.airlock.min-memory-mib";

/// What to build, and with what.
#[derive(Clone)]
pub struct BuildOptions {
    /// The Kubefile to read.
    pub kubefile: PathBuf,
    /// The Kubefile's name in messages (as the user gave it).
    pub kubefile_label: String,
    /// The build context directory.
    pub context: PathBuf,
    /// The image's name.
    pub tag: Reference,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// `--platform`; empty means FROM's platform, the parent's, or the host's.
    pub platforms: Vec<Platform>,
    /// `--image-list` files.
    pub image_lists: Vec<PathBuf>,
    /// `--ignored-image-list` files.
    pub ignored_image_lists: Vec<PathBuf>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// zstd worker threads (all cores).
    pub threads: u32,
    /// Where container images come from (registries, local layouts).
    pub fetcher: Arc<dyn ImageFetcher>,
    /// Fetches `ADD https://...` and `APP NAME https://...` sources.
    pub downloader: Downloader,
    /// Output of `helm template` per chart path in the rootfs, when the caller ran it.
    pub helm: Option<Arc<dyn ChartRenderer>>,
}

/// Renders a Helm chart directory to YAML (`helm template`), for discovery.
pub trait ChartRenderer: Send + Sync {
    /// The rendered manifests of the chart in `dir`.
    fn render(&self, dir: &Path) -> Result<String, String>;
}

/// What the build tells its caller as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildEvent {
    /// A Kubefile warning (deprecated syntax, an app without a known type, ...).
    Warning(String),
    /// Instruction `index` of `total` starts.
    Step {
        /// The platform being built.
        platform: String,
        /// 1-based.
        index: usize,
        /// Number of instructions.
        total: usize,
        /// The instruction as written.
        text: String,
    },
    /// The step's layers came from the build cache.
    Cached,
    /// A line printed by a RUN command.
    Output(String),
    /// A layer was written.
    Layer {
        /// Its digest.
        digest: Digest,
        /// Compressed size.
        size: u64,
    },
    /// A container image was found.
    Found {
        /// The normalised reference.
        reference: Reference,
        /// Where it was found.
        origins: Vec<String>,
    },
    /// Something image-like could not be resolved.
    Unresolved {
        /// The text.
        text: String,
        /// Where.
        origin: String,
    },
    /// A remote source was fetched (or found current in the cache).
    Downloaded {
        /// The URL.
        url: String,
        /// Its content digest.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Whether the server said the cached copy is current.
        cached: bool,
    },
    /// A container image is being fetched.
    Fetching {
        /// Which.
        reference: Reference,
        /// 1-based.
        index: usize,
        /// Count.
        total: usize,
    },
}

/// Receives [`BuildEvent`]s; the command renders them.
pub trait BuildReporter: Send + Sync {
    /// One event.
    fn report(&self, event: BuildEvent);
}

/// What a build produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOutput {
    /// The stored name.
    pub name: String,
    /// The descriptor of the index.
    pub descriptor: Descriptor,
    /// The container images it holds.
    pub images: Vec<Reference>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Kubefile is wrong (exit 2).
    #[error(transparent)]
    Kubefile(#[from] KubefileError),
    /// Other bad input: a flag or list file (exit 2).
    #[error("{0}")]
    BadInput(String),
    /// The work failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl BuildError {
    /// Whether this is the user's input at fault.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Kubefile(_) | Self::BadInput(_))
    }
}

fn failed(e: impl Into<anyhow::Error>) -> BuildError {
    BuildError::Failed(e.into())
}

/// Parse `os/arch[/variant]`.
pub fn parse_platform(s: &str) -> Result<Platform, String> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
            os: (*os).to_string(),
            architecture: (*arch).to_string(),
            variant: None,
        }),
        [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
            os: (*os).to_string(),
            architecture: (*arch).to_string(),
            variant: Some((*v).to_string()),
        }),
        _ => Err(format!(
            "{s:?} is not a platform; write OS/ARCH such as linux/amd64"
        )),
    }
}

/// Build the image and name it in `store`.
pub async fn build(
    store: &Store,
    options: &BuildOptions,
    reporter: &dyn BuildReporter,
) -> Result<BuildOutput, BuildError> {
    let _gc = GcLock::shared(store).map_err(failed)?;
    let text = fs::read_to_string(&options.kubefile)
        .map_err(|e| BuildError::BadInput(format!("cannot read the Kubefile: {e}")))?;
    let kubefile = kubefile::parse(&options.kubefile_label, &text)?;
    for w in &kubefile.warnings {
        reporter.report(BuildEvent::Warning(format!(
            "{}:{}:{}: {}",
            kubefile.file, w.span.line, w.span.col, w.message
        )));
    }
    let context = fs::canonicalize(&options.context)
        .map_err(|e| BuildError::BadInput(format!("build context: {e}")))?;

    // 1. FROM.
    let global_args = args_before_from(&kubefile, options)?;
    let (from_word, from_platform, from_span) = kubefile
        .instructions
        .iter()
        .find_map(|l| match &l.instruction {
            Instruction::From { image, platform } => {
                Some((image.clone(), platform.clone(), l.span))
            }
            _ => None,
        })
        .ok_or_else(|| kubefile.error(Span { line: 1, col: 1 }, "no FROM"))?;
    let from = kubefile::substitute(&from_word.text, &global_args).map_err(|m| {
        kubefile.error(
            Span {
                line: from_span.line,
                col: from_word.col,
            },
            m,
        )
    })?;
    let parent = if from == "scratch" {
        None
    } else {
        let at = Span {
            line: from_span.line,
            col: from_word.col,
        };
        let name = match cluster::resolve_name(store, &from) {
            Ok(name) => name,
            Err(_) => pull_base(store, options, &kubefile, at, &from, reporter).await?,
        };
        Some(ClusterImage::load(store, &name).map_err(failed)?)
    };

    // 2. Platforms.
    let platforms = if !options.platforms.is_empty() {
        options.platforms.clone()
    } else if let Some(p) = from_platform {
        let text = kubefile::substitute(&p.text, &global_args).unwrap_or(p.text.clone());
        vec![parse_platform(&text).map_err(|m| {
            kubefile.error(
                Span {
                    line: from_span.line,
                    col: p.col,
                },
                m,
            )
        })?]
    } else if let Some(parent) = &parent {
        parent
            .rootfs
            .iter()
            .filter_map(|r| r.descriptor.platform.clone())
            .collect()
    } else {
        vec![Platform::host()]
    };

    let workdir = tempfile::tempdir().map_err(failed)?;
    let mut step_cache = StepCache::load(store);
    let mut stages = Vec::new();
    for (i, platform) in platforms.iter().enumerate() {
        let base = match &parent {
            Some(p) => Some(p.rootfs_for(platform).cloned().ok_or_else(|| {
                kubefile.error(
                    from_span,
                    format!("base image `{from}` has no rootfs for {platform}; build for one of its platforms with --platform"),
                )
            })?),
            None => None,
        };
        let mut stage = Stage {
            store,
            options,
            kubefile: &kubefile,
            context: &context,
            platform,
            workdir: workdir.path().join(format!("p{i}")),
            tree: Tree::default(),
            layers: Vec::new(),
            config: ClusterConfig::default(),
            args: BTreeMap::new(),
            key: Digest::of(b"airlock build cache v1"),
            step_cache: &mut step_cache,
            reporter,
            run_dirs: 0,
        };
        fs::create_dir_all(&stage.workdir).map_err(failed)?;
        stage.start(base.as_ref())?;
        stage.run_all().await?;
        stages.push(stage.finish());
    }
    step_cache.save(store);

    // 3. Container images.
    let mut found = Discovered::default();
    for s in &stages {
        let rendered = render_charts(&s.tree, options, &workdir.path().join("charts"), reporter);
        found.merge(discover::discover(&s.tree, &rendered));
    }
    for list in &options.image_lists {
        found.merge(
            discover::read_image_list_file(list).map_err(|e| {
                BuildError::BadInput(format!("--image-list {}: {e}", list.display()))
            })?,
        );
    }
    for list in &options.ignored_image_lists {
        let ignored = discover::read_image_list_file(list).map_err(|e| {
            BuildError::BadInput(format!("--ignored-image-list {}: {e}", list.display()))
        })?;
        for r in ignored.found.keys() {
            found.found.remove(r);
        }
    }
    for (reference, origins) in &found.found {
        reporter.report(BuildEvent::Found {
            reference: reference.clone(),
            origins: origins.clone(),
        });
    }
    for (text, origin) in &found.unresolved {
        reporter.report(BuildEvent::Unresolved {
            text: text.clone(),
            origin: origin.clone(),
        });
    }
    let mut images: BTreeMap<Reference, Descriptor> = BTreeMap::new();
    if let Some(parent) = &parent {
        for (r, d) in &parent.container_images {
            images.insert(r.clone(), d.clone());
        }
    }
    let wanted: Vec<&Reference> = found
        .found
        .keys()
        .filter(|r| !images.contains_key(*r))
        .collect();
    for (i, reference) in wanted.iter().enumerate() {
        reporter.report(BuildEvent::Fetching {
            reference: (*reference).clone(),
            index: i + 1,
            total: wanted.len(),
        });
        let d = options
            .fetcher
            .fetch(store, reference, &platforms)
            .await
            .map_err(|e| {
                failed(e.context(format!(
                    "fetching {reference} (found in {})",
                    found.found[*reference].join(", ")
                )))
            })?;
        images.insert((*reference).clone(), d);
    }

    // 4. Configs, manifests, index.
    let platform_names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
    let image_names: Vec<String> = images.keys().map(ToString::to_string).collect();
    let mut entries = Vec::new();
    for (s, platform) in stages.iter().zip(&platforms) {
        let mut config = s.config.clone();
        config.images = image_names.clone();
        config.platforms = platform_names.clone();
        let rootfs_config = RootfsConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            rootfs: RootfsDiffIds {
                kind: "layers".to_string(),
                diff_ids: s.layers.iter().map(|l| l.diff_id.clone()).collect(),
            },
            airlock: config,
        };
        let config_bytes = store::to_json(&rootfs_config);
        let config_digest = store.put_bytes(&config_bytes).map_err(failed)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_MANIFEST.to_string()),
            config: Descriptor::new(
                oci::MEDIA_TYPE_CONFIG,
                config_digest,
                config_bytes.len() as u64,
            ),
            layers: s.layers.iter().map(|l| l.descriptor.clone()).collect(),
            annotations: BTreeMap::new(),
        };
        let manifest_bytes = store::to_json(&manifest);
        let manifest_digest = store.put_bytes(&manifest_bytes).map_err(failed)?;
        let mut entry = Descriptor::new(
            oci::MEDIA_TYPE_MANIFEST,
            manifest_digest,
            manifest_bytes.len() as u64,
        );
        entry.platform = Some(platform.clone());
        entry.annotations.insert(
            oci::ANNOTATION_ROLE.to_string(),
            oci::ROLE_ROOTFS.to_string(),
        );
        entries.push(entry);
    }
    for (reference, d) in &images {
        let mut entry = d.clone();
        entry.annotations.insert(
            oci::ANNOTATION_ROLE.to_string(),
            oci::ROLE_CONTAINER_IMAGE.to_string(),
        );
        entry
            .annotations
            .insert(oci::ANNOTATION_IMAGE_REF.to_string(), reference.to_string());
        entries.push(entry);
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_INDEX.to_string()),
        manifests: entries,
        annotations: BTreeMap::new(),
    };
    let index_bytes = store::to_json(&index);
    let index_digest = store.put_bytes(&index_bytes).map_err(failed)?;
    let descriptor = Descriptor::new(
        oci::MEDIA_TYPE_INDEX,
        index_digest,
        index_bytes.len() as u64,
    );
    let name = options.tag.to_string();
    store.set_ref(&name, &descriptor).map_err(failed)?;
    Ok(BuildOutput {
        name,
        descriptor,
        images: images.into_keys().collect(),
    })
}

/// Pull the base image `from` (not in the store) with every platform it has, through
/// the caller's fetcher, and name it in the store as its normalised reference.
async fn pull_base(
    store: &Store,
    options: &BuildOptions,
    kubefile: &Kubefile,
    at: Span,
    from: &str,
    reporter: &dyn BuildReporter,
) -> Result<String, BuildError> {
    let reference: Reference = from.parse().map_err(|e| {
        kubefile.error(
            at,
            format!(
                "base image `{from}` is not an image reference ({e}); write NAME[:TAG] or `scratch`"
            ),
        )
    })?;
    reporter.report(BuildEvent::Fetching {
        reference: reference.clone(),
        index: 1,
        total: 1,
    });
    let descriptor = options
        .fetcher
        .fetch(store, &reference, &[])
        .await
        .map_err(|e| {
            let missing = matches!(
                e.downcast_ref::<crate::registry::client::ClientError>(),
                Some(crate::registry::client::ClientError::NotFound { .. })
            );
            if missing {
                BuildError::Kubefile(kubefile.error(
                    at,
                    format!("base image `{from}` is neither in the local store nor on its registry ({e}); build, load or push it first, or use `FROM scratch`"),
                ))
            } else {
                failed(e.context(format!(
                    "{}:{}:{}: base image `{from}` is not in the local store and could not be pulled",
                    kubefile.file, at.line, at.col
                )))
            }
        })?;
    let name = reference.to_string();
    store.set_ref(&name, &descriptor).map_err(failed)?;
    Ok(name)
}

/// `ARG`s declared before `FROM`, for substituting `FROM` itself.
fn args_before_from(
    k: &Kubefile,
    options: &BuildOptions,
) -> Result<BTreeMap<String, String>, BuildError> {
    let mut vars = BTreeMap::new();
    for l in &k.instructions {
        match &l.instruction {
            Instruction::Arg { name, default } => {
                let v = match (options.build_args.get(name), default) {
                    (Some(v), _) => v.clone(),
                    (None, Some(d)) => kubefile::substitute(&d.text, &vars).map_err(|m| {
                        k.error(
                            Span {
                                line: l.span.line,
                                col: d.col,
                            },
                            m,
                        )
                    })?,
                    (None, None) => String::new(),
                };
                vars.insert(name.clone(), v);
            }
            _ => break,
        }
    }
    Ok(vars)
}

/// Run `helm template` through the caller's renderer on each chart directory.
fn render_charts(
    tree: &Tree,
    options: &BuildOptions,
    dir: &Path,
    reporter: &dyn BuildReporter,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(helm) = &options.helm else {
        return out;
    };
    for chart in discover::chart_locations(tree).dirs {
        let target = dir.join(chart.replace('/', "_"));
        let mut sub = Tree::default();
        for (path, node) in tree.under(&chart) {
            if let Some(rel) = path.strip_prefix(&format!("{chart}/")) {
                sub.insert(rel, node.clone());
            }
        }
        let rendered = fs::create_dir_all(&target)
            .map_err(|e| e.to_string())
            .and_then(|()| sub.materialise(&target).map_err(|e| e.to_string()))
            .and_then(|_| helm.render(&target));
        match rendered {
            Ok(text) => {
                out.insert(chart, text);
            }
            Err(e) => reporter.report(BuildEvent::Warning(format!(
                "helm template {chart} failed ({e}); reading its values.yaml instead"
            ))),
        }
    }
    out
}

struct Finished {
    tree: Tree,
    layers: Vec<BuiltLayer>,
    config: ClusterConfig,
}

struct Stage<'a> {
    store: &'a Store,
    options: &'a BuildOptions,
    kubefile: &'a Kubefile,
    context: &'a Path,
    platform: &'a Platform,
    workdir: PathBuf,
    tree: Tree,
    layers: Vec<BuiltLayer>,
    config: ClusterConfig,
    args: BTreeMap<String, String>,
    key: Digest,
    step_cache: &'a mut StepCache,
    reporter: &'a dyn BuildReporter,
    run_dirs: usize,
}

impl Stage<'_> {
    fn err(&self, l: &Located, col: usize, m: impl Into<String>) -> BuildError {
        BuildError::Kubefile(self.kubefile.error(
            Span {
                line: l.span.line,
                col,
            },
            m,
        ))
    }

    /// Variables for substitution: ARGs, then ENV over them.
    fn vars(&self) -> BTreeMap<String, String> {
        let mut v = self.args.clone();
        v.extend(self.config.env.clone());
        v
    }

    fn sub(&self, l: &Located, w: &Word) -> Result<String, BuildError> {
        kubefile::substitute(&w.text, &self.vars()).map_err(|m| self.err(l, w.col, m))
    }

    fn chain(&mut self, what: &[&str]) {
        let mut h = Sha256::new();
        h.update(self.key.to_string());
        for w in what {
            h.update([0u8]);
            h.update(w.as_bytes());
        }
        self.key = Digest::from_hasher(h);
    }

    fn start(&mut self, base: Option<&cluster::RootfsImage>) -> Result<(), BuildError> {
        self.args
            .insert("ARCH".to_string(), self.platform.architecture.clone());
        self.args
            .insert("TARGETARCH".to_string(), self.platform.architecture.clone());
        self.args
            .insert("TARGETOS".to_string(), self.platform.os.clone());
        self.config.runtime = "generic".to_string();
        self.config.container_runtime = "containerd".to_string();
        self.chain(&["platform", &self.platform.to_string()]);
        if let Some(base) = base {
            let dir = self.workdir.join("base");
            cluster::unpack_rootfs(self.store, base, &dir).map_err(failed)?;
            self.tree = Tree::scan(&dir).map_err(failed)?;
            self.layers = base
                .manifest
                .layers
                .iter()
                .zip(&base.config.rootfs.diff_ids)
                .map(|(d, id)| BuiltLayer {
                    descriptor: d.clone(),
                    diff_id: id.clone(),
                })
                .collect();
            self.config = base.config.airlock.clone();
            self.config.images.clear();
            self.config.platforms.clear();
            self.chain(&["from", &base.descriptor.digest.to_string()]);
        }
        Ok(())
    }

    async fn run_all(&mut self) -> Result<(), BuildError> {
        let total = self.kubefile.instructions.len();
        for (i, l) in self.kubefile.instructions.iter().enumerate() {
            self.reporter.report(BuildEvent::Step {
                platform: self.platform.to_string(),
                index: i + 1,
                total,
                text: l.text.clone(),
            });
            // ARGs before FROM stay visible after it (sealer's Kubefiles rely on
            // that); FROM itself was resolved before the stages started.
            if matches!(l.instruction, Instruction::From { .. }) {
                continue;
            }
            self.step(l).await?;
        }
        self.derive_from_labels();
        Ok(())
    }

    fn derive_from_labels(&mut self) {
        let labels = self.config.labels.clone();
        if let Some(r) = labels
            .get(LABEL_RUNTIME)
            .or_else(|| labels.get("io.airlock.runtime"))
        {
            self.config.runtime = r.clone();
        }
        if let Some(v) = labels
            .get(LABEL_RUNTIME_VERSION)
            .or_else(|| labels.get("io.airlock.runtime-version"))
        {
            self.config.runtime_version = Some(v.clone());
        }
        if let Some(c) = labels
            .get(LABEL_CONTAINER_RUNTIME)
            .or_else(|| labels.get("io.airlock.container-runtime"))
        {
            self.config.container_runtime = c.clone();
        }
        let cpus = labels.get(LABEL_MIN_CPUS).and_then(|v| v.parse().ok());
        let memory_mib = labels.get(LABEL_MIN_MEMORY).and_then(|v| v.parse().ok());
        if cpus.is_some() || memory_mib.is_some() {
            self.config.min_resources = Some(MinResources { cpus, memory_mib });
        }
    }

    fn finish(self) -> Finished {
        Finished {
            tree: self.tree,
            layers: self.layers,
            config: self.config,
        }
    }

    async fn step(&mut self, l: &Located) -> Result<(), BuildError> {
        match &l.instruction {
            Instruction::From { .. } => {}
            Instruction::Arg { name, default } => {
                let v = match (self.options.build_args.get(name), default) {
                    (Some(v), _) => v.clone(),
                    (None, Some(d)) => self.sub(l, d)?,
                    (None, None) => self.args.get(name).cloned().unwrap_or_default(),
                };
                self.chain(&["ARG", name, &v]);
                self.args.insert(name.clone(), v);
            }
            Instruction::Env(pairs) => {
                for (k, w) in pairs {
                    let v = self.sub(l, w)?;
                    self.chain(&["ENV", k, &v]);
                    self.config.env.insert(k.clone(), v);
                }
            }
            Instruction::Label(pairs) => {
                for (k, w) in pairs {
                    let v = self.sub(l, w)?;
                    self.config.labels.insert(k.clone(), v);
                }
            }
            Instruction::Maintainer(m) => self.config.maintainer = Some(m.clone()),
            Instruction::KubeVersion(r) => self.config.kube_version = Some(r.to_string()),
            Instruction::Copy { sources, dest } => self.copy(l, sources, dest, None).await?,
            Instruction::Add {
                sources,
                dest,
                checksum,
            } => self.copy(l, sources, dest, checksum.as_ref()).await?,
            Instruction::Run(cmd) => self.run(l, cmd)?,
            Instruction::App {
                role,
                name,
                sources,
            } => self.app(l, *role, name, sources).await?,
            Instruction::AppCmds { name, cmds } => {
                let app = self.app_mut(l, name)?;
                app.cmds = cmds.clone();
            }
            Instruction::AppEnv { name, pairs } => {
                let mut values = Vec::new();
                for (k, w) in pairs {
                    values.push((k.clone(), self.sub(l, w)?));
                }
                let app = self.app_mut(l, name)?;
                app.env.extend(values);
            }
            Instruction::Launch(apps) => {
                let mut launch = Vec::new();
                for w in apps {
                    if !self.config.apps.iter().any(|a| a.name == w.text) {
                        let known: Vec<&str> =
                            self.config.apps.iter().map(|a| a.name.as_str()).collect();
                        return Err(self.err(
                            l,
                            w.col,
                            format!(
                                "LAUNCH names app `{}`, which is not declared; declare it with `APP {} local://...` first (apps: {})",
                                w.text,
                                w.text,
                                if known.is_empty() { "none".to_string() } else { known.join(", ") }
                            ),
                        ));
                    }
                    launch.push(w.text.clone());
                }
                self.config.launch = launch;
                self.config.cmds.clear();
            }
            Instruction::Cmds(cmds) => {
                self.config.cmds = cmds.clone();
                self.config.launch.clear();
            }
            Instruction::Cmd(cmds) => {
                self.config.cmds.extend(cmds.iter().cloned());
                self.config.launch.clear();
            }
        }
        Ok(())
    }

    fn app_mut(&mut self, l: &Located, name: &Word) -> Result<&mut AppConfig, BuildError> {
        let Some(i) = self.config.apps.iter().position(|a| a.name == name.text) else {
            return Err(self.err(
                l,
                name.col,
                format!(
                    "app `{}` is not declared; add `APP {} local://...` before this line",
                    name.text, name.text
                ),
            ));
        };
        Ok(&mut self.config.apps[i])
    }

    /// A context path for `w` (already substituted as `text`), checked to stay inside.
    fn context_path(&self, l: &Located, w: &Word, text: &str) -> Result<PathBuf, BuildError> {
        let mut rel = PathBuf::new();
        for c in Path::new(text).components() {
            match c {
                Component::Normal(n) => rel.push(n),
                Component::CurDir | Component::RootDir => {}
                Component::ParentDir => {
                    if !rel.pop() {
                        return Err(self.err(
                            l,
                            w.col,
                            format!("`{text}` is outside the build context; move the file into the context and name it relative to it"),
                        ));
                    }
                }
                Component::Prefix(_) => {}
            }
        }
        Ok(self.context.join(rel))
    }

    /// Expand `pattern` (with `*`, `?`) in the context; each match checked to exist
    /// and to stay inside the context after resolving symlinks.
    fn sources(&self, l: &Located, w: &Word) -> Result<Vec<PathBuf>, BuildError> {
        let text = self.sub(l, w)?;
        let path = self.context_path(l, w, &text)?;
        let matches = if text.contains(['*', '?']) {
            let rel = path
                .strip_prefix(self.context)
                .unwrap_or(&path)
                .to_path_buf();
            glob(self.context, &rel)
        } else if fs::symlink_metadata(&path).is_ok() {
            vec![path]
        } else {
            Vec::new()
        };
        if matches.is_empty() {
            return Err(self.err(
                l,
                w.col,
                format!("`{text}` does not exist in the build context {}; check the path (relative to the context)", self.options.context.display()),
            ));
        }
        for m in &matches {
            let real =
                fs::canonicalize(m).map_err(|e| self.err(l, w.col, format!("`{text}`: {e}")))?;
            if !real.starts_with(self.context) {
                return Err(self.err(
                    l,
                    w.col,
                    format!("`{text}` resolves outside the build context (a symlink to {}); copy the target into the context instead", real.display()),
                ));
            }
        }
        Ok(matches)
    }

    fn dest(&self, l: &Located, w: &Word) -> Result<(String, bool), BuildError> {
        let text = self.sub(l, w)?;
        let is_dir = text.ends_with('/') || text.is_empty() || text == ".";
        let mut parts: Vec<&str> = Vec::new();
        for p in text.split('/') {
            match p {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(self.err(l, w.col, format!("destination `{text}` leaves the image root; write a path inside it, e.g. `bin/`")));
                    }
                }
                other => parts.push(other),
            }
        }
        Ok((parts.join("/"), is_dir))
    }

    async fn copy(
        &mut self,
        l: &Located,
        sources: &[Word],
        dest: &Word,
        checksum: Option<&Word>,
    ) -> Result<(), BuildError> {
        let (dest_path, dest_is_dir) = self.dest(l, dest)?;
        let is_add = matches!(l.instruction, Instruction::Add { .. });
        let expected = checksum
            .map(|w| {
                w.text
                    .parse::<Digest>()
                    .map_err(|e| self.err(l, w.col, e.to_string()))
            })
            .transpose()?;
        let mut added = Tree::default();
        let mut files = Vec::new();
        let mut downloads = Vec::new();
        for w in sources {
            if is_url(&w.text) {
                if !is_add {
                    return Err(self.err(
                        l,
                        w.col,
                        "COPY takes files from the build context; use ADD to download a URL",
                    ));
                }
                downloads.push(self.download(l, w, expected.as_ref()).await?);
            } else {
                files.extend(self.sources(l, w)?);
            }
        }
        if expected.is_some() && downloads.is_empty() {
            return Err(self.err(
                l,
                l.span.col,
                "ADD --checksum applies to URL sources only; this ADD has none",
            ));
        }
        let into_dir =
            dest_is_dir || files.len() + downloads.len() > 1 || self.tree.is_dir(&dest_path);
        for d in &downloads {
            let target = if into_dir {
                join(&dest_path, &d.file_name)
            } else {
                dest_path.clone()
            };
            added.insert(&target, downloaded_node(d));
        }
        for f in &files {
            let is_dir = fs::metadata(f).map(|m| m.is_dir()).unwrap_or(false);
            let target = if is_dir || !into_dir {
                dest_path.clone()
            } else {
                join(
                    &dest_path,
                    &f.file_name().unwrap_or_default().to_string_lossy(),
                )
            };
            added.add_path(f, &target).map_err(failed)?;
        }
        self.apply_layer(l, &added)
    }

    /// Fetch the URL in `w` (after substitution), reporting it, and remember the
    /// blob's digest so the cache check stays stat-only.
    async fn download(
        &mut self,
        l: &Located,
        w: &Word,
        expected: Option<&Digest>,
    ) -> Result<Downloaded, BuildError> {
        let url = self.sub(l, w)?;
        let d = self
            .options
            .downloader
            .fetch(self.store, &url, expected)
            .await
            .map_err(|e| match e {
                DownloadError::BadUrl { .. } | DownloadError::Checksum { .. } => {
                    self.err(l, w.col, e.to_string())
                }
                other => failed(
                    anyhow::Error::new(other)
                        .context(format!("{}:{}:{}", self.kubefile.file, l.span.line, w.col)),
                ),
            })?;
        self.reporter.report(BuildEvent::Downloaded {
            url,
            digest: d.digest.clone(),
            size: d.size,
            cached: d.cached,
        });
        Ok(d)
    }

    /// Cache lookup (by the content of `added`), else write the layer; then add it to the tree.
    ///
    /// When the step's files have the stamps remembered from an earlier build, its
    /// content digest is known and the cache is checked without reading anything.
    /// Otherwise the layers are written first and the content digest is that of their
    /// diff ids: the context is read once, and hashed only as the layer's tar.
    fn apply_layer(&mut self, l: &Located, added: &Tree) -> Result<(), BuildError> {
        let verb = l.instruction.verb();
        let stamps = StepStamps::of(added).map_err(failed)?;
        let layers = match self.step_cache.known(&stamps) {
            Some(content) => {
                self.chain(&[verb, &l.text, &content.to_string()]);
                if let Some(layers) = self.cached() {
                    self.reporter.report(BuildEvent::Cached);
                    layers
                } else {
                    let layers = self.write_layers(added, &[])?;
                    self.remember(&layers);
                    layers
                }
            }
            None => {
                let layers = self.write_layers(added, &[])?;
                let content = content_digest(&layers);
                self.step_cache.record(stamps, content.clone());
                self.chain(&[verb, &l.text, &content.to_string()]);
                self.remember(&layers);
                layers
            }
        };
        for (path, node) in &added.nodes {
            self.tree.insert(path, node.clone());
        }
        self.layers.extend(layers);
        Ok(())
    }

    /// Write `added` (and whiteouts for `removed`) as layers and report them.
    fn write_layers(
        &mut self,
        added: &Tree,
        removed: &[String],
    ) -> Result<Vec<BuiltLayer>, BuildError> {
        let layers = layer::write_layers(self.store, added, removed, self.options.threads)
            .map_err(failed)?;
        for ly in &layers {
            self.reporter.report(BuildEvent::Layer {
                digest: ly.descriptor.digest.clone(),
                size: ly.descriptor.size,
            });
        }
        Ok(layers)
    }

    fn cache_path(&self) -> PathBuf {
        self.store.root().join("cache/build").join(self.key.hex())
    }

    fn cached(&self) -> Option<Vec<BuiltLayer>> {
        if self.options.no_cache {
            return None;
        }
        let bytes = fs::read(self.cache_path()).ok()?;
        let layers: Vec<BuiltLayer> = serde_json::from_slice(&bytes).ok()?;
        layers
            .iter()
            .all(|l| self.store.has_blob(&l.descriptor.digest))
            .then_some(layers)
    }

    fn remember(&self, layers: &[BuiltLayer]) {
        let path = self.cache_path();
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        // The cache is an optimisation: failing to write it does not fail the build.
        let _ = store::write_atomic(&path, &store::to_json(&layers));
    }

    async fn app(
        &mut self,
        l: &Located,
        role: AppRole,
        name: &Word,
        sources: &[AppSource],
    ) -> Result<(), BuildError> {
        if self.config.apps.iter().any(|a| a.name == name.text) {
            return Err(self.err(
                l,
                name.col,
                format!(
                    "app `{}` is already declared by the base image; choose another name",
                    name.text
                ),
            ));
        }
        let base = format!("application/apps/{}", name.text);
        let mut added = Tree::default();
        let mut files = Vec::new();
        let mut kinds = BTreeSet::new();
        for s in sources {
            let w = match s {
                AppSource::Local(w) => w,
                AppSource::Remote(w) => {
                    let d = self.download(l, w, None).await?;
                    let target = format!("{base}/{}", d.file_name);
                    kinds.insert(app_kind_of_name(&d.file_name, &d.path, false));
                    added.insert(&target, downloaded_node(&d));
                    files.push(target);
                    continue;
                }
            };
            for f in self.sources(l, w)? {
                let file_name = f
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let target = format!("{base}/{file_name}");
                kinds.insert(app_kind(&f));
                added.add_path(&f, &target).map_err(failed)?;
                files.push(target);
            }
        }
        let kind = if kinds.len() == 1 {
            kinds.into_iter().next().unwrap_or("untyped")
        } else {
            self.reporter.report(BuildEvent::Warning(format!(
                "{}:{}:{}: app `{}` mixes file types ({}); it is untyped and needs APPCMDS to launch",
                self.kubefile.file,
                l.span.line,
                name.col,
                name.text,
                kinds.into_iter().collect::<Vec<_>>().join(", ")
            )));
            "untyped"
        };
        self.apply_layer(l, &added)?;
        self.config.apps.push(AppConfig {
            name: name.text.clone(),
            role: match role {
                AppRole::App => "app",
                AppRole::Cni => "cni",
                AppRole::Csi => "csi",
            }
            .to_string(),
            kind: kind.to_string(),
            files,
            cmds: Vec::new(),
            env: BTreeMap::new(),
        });
        Ok(())
    }

    fn run(&mut self, l: &Located, cmd: &RunCommand) -> Result<(), BuildError> {
        let vars = self.vars();
        let env_text: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.chain(&["RUN", &l.text, &env_text.join("\0")]);
        self.run_dirs += 1;
        let dir = self.workdir.join(format!("run{}", self.run_dirs));
        fs::create_dir_all(&dir).map_err(failed)?;
        let stamps = self.tree.materialise(&dir).map_err(failed)?;
        if let Some(layers) = self.cached() {
            self.reporter.report(BuildEvent::Cached);
            for ly in &layers {
                let blob = self
                    .store
                    .open_blob(&ly.descriptor.digest)
                    .map_err(failed)?;
                let tar = layer::decompress(
                    &ly.descriptor.media_type,
                    &ly.descriptor.digest,
                    BufReader::new(blob),
                )
                .map_err(failed)?;
                layer::unpack_layer(&ly.descriptor.digest, tar, &dir).map_err(failed)?;
            }
            self.tree = Tree::scan(&dir).map_err(failed)?;
            self.layers.extend(layers);
            return Ok(());
        }
        let mut command = std::process::Command::new("sh");
        match cmd {
            RunCommand::Shell(script) => {
                command
                    .arg("-c")
                    .arg(format!("PATH=\"$PWD/bin:$PATH\"; export PATH\n{script}"));
            }
            RunCommand::Exec(argv) => {
                command
                    .arg("-c")
                    .arg("PATH=\"$PWD/bin:$PATH\"; export PATH; exec \"$@\"")
                    .arg("sh")
                    .args(argv);
            }
        }
        command
            .current_dir(&dir)
            .envs(&vars)
            .stdin(std::process::Stdio::null());
        let status = self
            .stream(command)
            .map_err(|e| self.err(l, l.span.col, format!("RUN could not start `sh`: {e}")))?;
        if !status.success() {
            return Err(failed(anyhow::anyhow!(
                "{}:{}:{}: RUN failed with {status}; its output is above",
                self.kubefile.file,
                l.span.line,
                l.span.col
            )));
        }
        let after = Tree::scan(&dir).map_err(failed)?;
        let changes = self.tree.diff(&after, &stamps).map_err(failed)?;
        let layers = self.write_layers(&changes.changed, &changes.removed)?;
        self.remember(&layers);
        self.tree = after;
        self.layers.extend(layers);
        Ok(())
    }

    /// Run `command`, reporting each line of its stdout and stderr as it comes.
    fn stream(
        &self,
        mut command: std::process::Command,
    ) -> std::io::Result<std::process::ExitStatus> {
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn()?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            }));
        }
        if let Some(err) = child.stderr.take() {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            }));
        }
        drop(tx);
        for line in rx {
            self.reporter.report(BuildEvent::Output(line));
        }
        for r in readers {
            let _ = r.join();
        }
        child.wait()
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

/// A downloaded file in the rootfs: mode 0644 (as `RUN chmod` can change).
fn downloaded_node(d: &Downloaded) -> crate::image::tree::Node {
    crate::image::tree::Node {
        kind: NodeKind::File {
            source: d.path.clone(),
            size: d.size,
        },
        mode: 0o644,
    }
}

/// The app type of one source: a chart, YAML, a script, or untyped.
fn app_kind(path: &Path) -> &'static str {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    app_kind_of_name(&name, path, path.is_dir())
}

/// [`app_kind`] for content at `path` named `name` in the image.
fn app_kind_of_name(name: &str, path: &Path, is_dir: bool) -> &'static str {
    if is_dir {
        if path.join("Chart.yaml").is_file() {
            return "helm";
        }
        let mut kinds = BTreeSet::new();
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                kinds.insert(app_kind(&e.path()));
            }
        }
        return if kinds.len() == 1 {
            kinds.into_iter().next().unwrap_or("untyped")
        } else {
            "untyped"
        };
    }
    if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
        let is_chart = fs::read(path)
            .ok()
            .and_then(|b| discover::read_chart_archive(&b).ok())
            .is_some_and(|files| files.contains_key("Chart.yaml"));
        return if is_chart { "helm" } else { "untyped" };
    }
    if name.ends_with(".yaml") || name.ends_with(".yml") {
        "kube"
    } else if name.ends_with(".sh") {
        "shell"
    } else {
        "untyped"
    }
}

/// Match `rel` (relative, with `*`/`?` in any component) under `root`.
fn glob(root: &Path, rel: &Path) -> Vec<PathBuf> {
    let mut current = vec![root.to_path_buf()];
    for c in rel.components() {
        let pat = c.as_os_str().to_string_lossy().into_owned();
        let mut next = Vec::new();
        for dir in &current {
            if pat.contains(['*', '?']) {
                let Ok(entries) = fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for n in names {
                    if (pat.starts_with('.') || !n.starts_with('.')) && wildcard(&pat, &n) {
                        next.push(dir.join(n));
                    }
                }
            } else if fs::symlink_metadata(dir.join(&pat)).is_ok() {
                next.push(dir.join(&pat));
            }
        }
        current = next;
    }
    current
}

fn wildcard(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The content digest of a step: the digest of the diff ids of the layers it wrote
/// (a layer's tar is a deterministic function of its paths, modes and contents).
fn content_digest(layers: &[BuiltLayer]) -> Digest {
    let mut h = Sha256::new();
    h.update(b"layers");
    for l in layers {
        h.update([0u8]);
        h.update(l.diff_id.to_string());
    }
    Digest::from_hasher(h)
}

/// What a step adds, in two digests: `what` of its paths, modes, link targets and
/// source paths, and `stamps` of that plus every source file's stamp (one `stat`
/// each, no read).
#[derive(Clone, Debug, PartialEq, Eq)]
struct StepStamps {
    what: Digest,
    stamps: Digest,
}

impl StepStamps {
    fn of(tree: &Tree) -> std::io::Result<Self> {
        let mut what = Sha256::new();
        let mut stamps = Sha256::new();
        for (path, node) in &tree.nodes {
            let entry = match &node.kind {
                NodeKind::Dir => format!("{path}\0{:o}\0d", node.mode),
                NodeKind::Symlink { target } => format!("{path}\0{:o}\0l{target}", node.mode),
                NodeKind::File { source, .. } => {
                    let stamp = FileStamp::of(&fs::metadata(source)?);
                    stamps.update(serde_json::to_vec(&stamp).unwrap_or_default());
                    format!("{path}\0{:o}\0f{}", node.mode, source.display())
                }
            };
            what.update(entry.as_bytes());
            what.update([0u8]);
            stamps.update(entry.as_bytes());
            stamps.update([0u8]);
        }
        Ok(Self {
            what: Digest::from_hasher(what),
            stamps: Digest::from_hasher(stamps),
        })
    }
}

/// Content digests of steps remembered by their files' stamps, so an unchanged
/// context is not read again. One entry per step (by [`StepStamps::what`]): a step
/// whose files were touched replaces its entry.
#[derive(Default, Serialize, Deserialize)]
struct StepCache {
    #[serde(default)]
    version: u32,
    /// `what` to (`stamps`, content digest).
    #[serde(default)]
    entries: BTreeMap<String, (Digest, Digest)>,
    #[serde(skip)]
    dirty: bool,
}

impl StepCache {
    const VERSION: u32 = 3;

    fn path(store: &Store) -> PathBuf {
        store.root().join("cache/build/steps.json")
    }

    fn load(store: &Store) -> Self {
        fs::read(Self::path(store))
            .ok()
            .and_then(|b| serde_json::from_slice::<Self>(&b).ok())
            .filter(|c| c.version == Self::VERSION)
            .unwrap_or(Self {
                version: Self::VERSION,
                ..Self::default()
            })
    }

    fn save(&self, store: &Store) {
        if !self.dirty {
            return;
        }
        let path = Self::path(store);
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        // An optimisation only: a build does not fail because its cache could not be saved.
        let _ = store::write_atomic(&path, &serde_json::to_vec(self).unwrap_or_default());
    }

    /// The content digest of the step if its files still have the remembered stamps.
    fn known(&self, step: &StepStamps) -> Option<Digest> {
        self.entries
            .get(step.what.hex())
            .filter(|(stamps, _)| *stamps == step.stamps)
            .map(|(_, content)| content.clone())
    }

    fn record(&mut self, step: StepStamps, content: Digest) {
        self.entries
            .insert(step.what.hex().to_string(), (step.stamps, content));
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*.yaml", "a.yaml"));
        assert!(!wildcard("*.yaml", "a.yml"));
        assert!(wildcard("kube?et", "kubelet"));
        assert!(wildcard("*", ""));
        assert!(wildcard("a*b*c", "aXbYc"));
    }

    #[test]
    fn platforms_parse() {
        assert_eq!(
            parse_platform("linux/arm64").unwrap(),
            Platform::linux("arm64")
        );
        assert!(parse_platform("linux").is_err());
    }
}
