//! The image's working rootfs during a build, held as a sorted map of paths.
//!
//! 1. Instructions add entries: a `COPY` adds [`Node`]s whose file content is still
//!    the file in the build context (nothing is copied), a `FROM` or `RUN` scans a
//!    directory with [`Tree::scan`].
//! 2. A layer is the [`Tree`] of what one instruction changed, written by
//!    [`crate::image::layer`] in path order.
//! 3. `RUN` needs real files: [`Tree::materialise`] writes the tree into a directory,
//!    the command runs there, and a new scan compared with [`Tree::diff`] gives the
//!    changes and deletions.
//!
//! Modes are normalised so that the build host's umask never changes a digest:
//! directories 0755, files 0755 when any execute bit is set and 0644 otherwise.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fs_err as fs;

/// What a path in the rootfs is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular file whose bytes are at `source` on the build host.
    File {
        /// Where the content is read from.
        source: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// The link target, as written.
        target: String,
    },
}

/// One entry of the rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// Normalised permission bits.
    pub mode: u32,
}

impl Node {
    /// A directory with mode 0755.
    pub fn dir() -> Self {
        Self {
            kind: NodeKind::Dir,
            mode: 0o755,
        }
    }
}

/// Normalise permission bits: only "is it executable" survives.
pub fn normalise_mode(kind: &NodeKind, mode: u32) -> u32 {
    match kind {
        NodeKind::Dir => 0o755,
        NodeKind::Symlink { .. } => 0o777,
        NodeKind::File { .. } if mode & 0o111 != 0 => 0o755,
        NodeKind::File { .. } => 0o644,
    }
}

/// Errors while reading or writing a tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file name that is not UTF-8 cannot be put in an image reproducibly.
    #[error("{0}: file name is not UTF-8; rename it")]
    NotUtf8(PathBuf),
    /// Something other than a file, directory or symlink.
    #[error("{0}: only files, directories and symlinks can go in an image")]
    Special(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A rootfs: relative paths (`bin/kubectl`, no leading `/`) to nodes, in path order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// The entries.
    pub nodes: BTreeMap<String, Node>,
}

/// What changed between two trees.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Added or modified entries (with their parent directories).
    pub changed: Tree,
    /// Paths that disappeared (only the topmost of a removed subtree).
    pub removed: Vec<String>,
}

impl Tree {
    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Insert `node` at `path`, creating parent directories as needed and replacing
    /// whatever was there (a replaced directory loses its children).
    pub fn insert(&mut self, path: &str, node: Node) {
        self.ensure_parents(path);
        if !matches!(node.kind, NodeKind::Dir) {
            self.remove_children(path);
        }
        self.nodes.insert(path.to_string(), node);
    }

    /// Create the directories above `path`; a non-directory in the way is replaced.
    pub fn ensure_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            match self.nodes.get(parent) {
                Some(n) if n.kind == NodeKind::Dir => {}
                _ => {
                    self.nodes.insert(parent.to_string(), Node::dir());
                }
            }
            end += i + 1;
        }
    }

    fn remove_children(&mut self, path: &str) {
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Remove `path` and everything under it.
    pub fn remove(&mut self, path: &str) {
        self.remove_children(path);
        self.nodes.remove(path);
    }

    /// Whether `path` is a directory in the tree.
    pub fn is_dir(&self, path: &str) -> bool {
        path.is_empty()
            || self
                .nodes
                .get(path)
                .is_some_and(|n| n.kind == NodeKind::Dir)
    }

    /// Entries at or under `path` (all entries for `""`).
    pub fn under<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (&'a String, &'a Node)> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        self.nodes
            .iter()
            .filter(move |(k, _)| path.is_empty() || k.as_str() == path || k.starts_with(&prefix))
    }

    /// Add everything in `source` (a file, symlink or directory on the build host)
    /// at `dest`; a directory's contents go under `dest`. Returns the tree of what
    /// was added.
    pub fn add_path(&mut self, source: &Path, dest: &str) -> Result<Tree, TreeError> {
        let mut added = Tree::default();
        let meta = fs::symlink_metadata(source).map_err(|e| TreeError::Io {
            path: source.to_path_buf(),
            source: e,
        })?;
        if meta.is_dir() {
            if !dest.is_empty() {
                added.insert(dest, Node::dir());
            }
            scan_into(source, dest, &mut added)?;
        } else {
            added.insert(dest, node_of(source, &meta)?);
        }
        for (path, node) in &added.nodes {
            self.insert(path, node.clone());
        }
        let mut with_parents = Tree::default();
        for (path, node) in added.nodes {
            with_parents.insert(&path, node);
        }
        Ok(with_parents)
    }

    /// Read the directory `root` (its contents, not itself) into a tree.
    pub fn scan(root: &Path) -> Result<Tree, TreeError> {
        let mut tree = Tree::default();
        scan_into(root, "", &mut tree)?;
        Ok(tree)
    }

    /// Write the tree into the empty directory `dir`, copying file contents.
    /// Returns, for each file written, its identity (inode, size, mtime) so a
    /// later scan can tell which files a command changed without reading them.
    pub fn materialise(&self, dir: &Path) -> Result<BTreeMap<String, FileStamp>, TreeError> {
        let mut stamps = BTreeMap::new();
        for (path, node) in &self.nodes {
            let target = dir.join(path);
            match &node.kind {
                NodeKind::Dir => {
                    fs::create_dir_all(&target).map_err(io_err(&target))?;
                }
                NodeKind::File { source, .. } => {
                    fs::copy(source, &target).map_err(io_err(&target))?;
                    set_mode(&target, node.mode)?;
                    let meta = fs::symlink_metadata(&target).map_err(io_err(&target))?;
                    stamps.insert(path.clone(), FileStamp::of(&meta));
                }
                NodeKind::Symlink { target: link } => {
                    std::os::unix::fs::symlink(link, &target).map_err(io_err(&target))?;
                }
            }
        }
        for (path, node) in self.nodes.iter().rev() {
            if node.kind == NodeKind::Dir {
                set_mode(&dir.join(path), node.mode)?;
            }
        }
        Ok(stamps)
    }

    /// What `after` (a scan of a materialised copy of `self`) changed, using the
    /// stamps [`Tree::materialise`] returned to spot modified files.
    pub fn diff(
        &self,
        after: &Tree,
        stamps: &BTreeMap<String, FileStamp>,
    ) -> Result<Changes, TreeError> {
        let mut changes = Changes::default();
        for (path, node) in &after.nodes {
            let same = match (self.nodes.get(path), &node.kind) {
                (None, _) => false,
                (Some(old), NodeKind::File { source, .. }) => {
                    matches!(old.kind, NodeKind::File { .. })
                        && old.mode == node.mode
                        && match stamps.get(path) {
                            Some(stamp) => {
                                let meta = fs::symlink_metadata(source).map_err(io_err(source))?;
                                *stamp == FileStamp::of(&meta)
                            }
                            None => false,
                        }
                }
                (Some(old), _) => old.kind == node.kind && old.mode == node.mode,
            };
            if !same {
                changes.changed.insert(path, node.clone());
            }
        }
        for path in self.nodes.keys() {
            if !after.nodes.contains_key(path) {
                let parent_gone = path
                    .rfind('/')
                    .is_some_and(|i| !after.nodes.contains_key(&path[..i]));
                if !parent_gone {
                    changes.removed.push(path.clone());
                }
            }
        }
        Ok(changes)
    }
}

/// What identifies a file's content without reading it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TreeError> {
    fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

fn node_of(path: &Path, meta: &std::fs::Metadata) -> Result<Node, TreeError> {
    let kind = if meta.is_dir() {
        NodeKind::Dir
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(path).map_err(io_err(path))?;
        let target = target
            .to_str()
            .ok_or_else(|| TreeError::NotUtf8(path.to_path_buf()))?
            .to_string();
        NodeKind::Symlink { target }
    } else if meta.is_file() {
        NodeKind::File {
            source: path.to_path_buf(),
            size: meta.len(),
        }
    } else {
        return Err(TreeError::Special(path.to_path_buf()));
    };
    let mode = normalise_mode(&kind, meta.mode());
    Ok(Node { kind, mode })
}

fn scan_into(dir: &Path, prefix: &str, tree: &mut Tree) -> Result<(), TreeError> {
    let entries = fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| TreeError::NotUtf8(path.clone()))?;
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let node = node_of(&path, &meta)?;
        let is_dir = node.kind == NodeKind::Dir;
        tree.nodes.insert(rel.clone(), node);
        if is_dir {
            scan_into(&path, &rel, tree)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_scan_materialise_and_diff() {
        let ctx = tempfile::tempdir().unwrap();
        fs::create_dir_all(ctx.path().join("d/e")).unwrap();
        fs::write(ctx.path().join("d/e/f"), b"f").unwrap();
        fs::write(ctx.path().join("x.sh"), b"#!/bin/sh").unwrap();
        set_mode(&ctx.path().join("x.sh"), 0o700).unwrap();
        std::os::unix::fs::symlink("e/f", ctx.path().join("d/link")).unwrap();

        let mut tree = Tree::default();
        let added = tree.add_path(&ctx.path().join("d"), "opt/d").unwrap();
        assert_eq!(
            added.nodes.keys().collect::<Vec<_>>(),
            ["opt", "opt/d", "opt/d/e", "opt/d/e/f", "opt/d/link"]
        );
        tree.add_path(&ctx.path().join("x.sh"), "bin/x.sh").unwrap();
        assert_eq!(tree.nodes["bin/x.sh"].mode, 0o755);
        assert_eq!(
            tree.nodes["opt/d/link"].kind,
            NodeKind::Symlink {
                target: "e/f".into()
            }
        );

        let out = tempfile::tempdir().unwrap();
        let stamps = tree.materialise(out.path()).unwrap();
        let after = Tree::scan(out.path()).unwrap();
        let none = tree.diff(&after, &stamps).unwrap();
        assert!(
            none.changed.is_empty() && none.removed.is_empty(),
            "{none:?}"
        );

        fs::write(out.path().join("opt/d/e/f"), b"changed").unwrap();
        fs::remove_dir_all(out.path().join("bin")).unwrap();
        fs::write(out.path().join("new"), b"n").unwrap();
        let after = Tree::scan(out.path()).unwrap();
        let changes = tree.diff(&after, &stamps).unwrap();
        assert_eq!(
            changes.changed.nodes.keys().collect::<Vec<_>>(),
            ["new", "opt", "opt/d", "opt/d/e", "opt/d/e/f"]
        );
        assert_eq!(changes.removed, ["bin"]);
    }
}
