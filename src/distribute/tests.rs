//! The relay protocol end to end on loopback: relays run in-process, the operator
//! side is the same code [`fan_out`] uses.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::protocol::{Header, RelayLine, RelayRequest, WireBlob, new_token};
use super::relay::{RelayConfig, blob_path, part_path, relay};
use super::*;
use crate::image::BlobLocation;

struct Node {
    dir: tempfile::TempDir,
    lines: Arc<Mutex<Vec<RelayLine>>>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(u32, u32), relay::RelayError>>,
}

fn config(store: &Path) -> RelayConfig {
    RelayConfig {
        store: store.to_path_buf(),
        idle_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
    }
}

/// Start a relay on 127.0.0.1 with `setup` applied to its store first.
async fn node(token: &Secret, wants: &[(Digest, u64)], setup: impl FnOnce(&Path)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
    setup(dir.path());
    let request = RelayRequest {
        token: token.clone(),
        wants: wants.to_vec(),
    };
    // Bind here to learn the port, then hand the port to the relay.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let cfg = config(dir.path());
    let task = tokio::spawn(async move {
        relay(addr, &request, &cfg, &mut |l| sink.lock().unwrap().push(l)).await
    });
    // Wait for `listening` (or the end, when nothing is wanted).
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| matches!(l, RelayLine::Listening { .. } | RelayLine::Finished { .. }))
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Node {
        dir,
        lines,
        addr,
        task,
    }
}

fn blob(dir: &Path, name: &str, len: usize, seed: u8) -> (Digest, BlobLocation) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (
        Digest::of(&bytes),
        BlobLocation {
            path,
            offset: 0,
            size: len as u64,
        },
    )
}

/// Open a chain over `nodes` for `blobs` (all wanted by every node) from `from`,
/// stream it, and wait for every relay.
async fn ship_to(
    nodes: &[&Node],
    token: &Secret,
    blobs: &[(Digest, BlobLocation)],
    need: &[Vec<bool>],
    from: Vec<u64>,
) -> (u32, u64) {
    let header = Header {
        hops: nodes[1..].iter().map(|n| n.addr).collect(),
        blobs: blobs
            .iter()
            .zip(need)
            .map(|((d, l), need)| WireBlob {
                digest: d.clone(),
                size: l.size,
                need: need.clone(),
            })
            .collect(),
    };
    let opts = FanOutOptions {
        connect_timeout: Duration::from_secs(2),
        ..FanOutOptions::for_data_root("/unused")
    };
    let (stream, reach) = open_chain(nodes[0].addr, &header, token, &opts)
        .await
        .unwrap();
    let locations: BTreeMap<_, _> = blobs.iter().cloned().collect();
    let sent = std::sync::atomic::AtomicU64::new(0);
    let list = blobs.iter().map(|(d, l)| (d.clone(), l.size)).collect();
    stream_chain(stream, list, from, &locations, &|_| {}, &sent)
        .await
        .unwrap();
    (reach, sent.into_inner())
}

async fn finish(n: Node) -> (Vec<RelayLine>, tempfile::TempDir) {
    n.task.await.unwrap().unwrap();
    let lines = n.lines.lock().unwrap().clone();
    (lines, n.dir)
}

#[tokio::test]
async fn chain_of_three_delivers_and_skips_what_a_node_has() {
    let src = tempfile::tempdir().unwrap();
    let a = blob(src.path(), "a", 3 << 20, 1);
    let b = blob(src.path(), "b", 1000, 2);
    let token = new_token();
    let wants = [(a.0.clone(), a.1.size), (b.0.clone(), b.1.size)];
    let n1 = node(&token, &wants, |_| {}).await;
    // Node 2 already has `a`: it forwards `a` to node 3 without keeping it.
    let a_bytes = std::fs::read(&a.1.path).unwrap();
    let n2 = node(&token, &wants, |s| {
        std::fs::write(blob_path(s, &a.0), &a_bytes).unwrap();
    })
    .await;
    let n3 = node(&token, &wants, |_| {}).await;
    let need = vec![vec![true, false, true], vec![true, true, true]];
    let (reach, sent) = ship_to(
        &[&n1, &n2, &n3],
        &token,
        &[a.clone(), b.clone()],
        &need,
        vec![0, 0],
    )
    .await;
    assert_eq!(reach, 3);
    assert_eq!(
        sent,
        a.1.size + b.1.size,
        "the operator sends each byte once"
    );
    for n in [n1, n2, n3] {
        let (lines, dir) = finish(n).await;
        for (d, _) in [&a, &b] {
            let held = std::fs::read(blob_path(dir.path(), d)).unwrap();
            assert_eq!(Digest::of(&held), *d);
        }
        assert!(
            lines.contains(&RelayLine::Finished { done: 2, failed: 0 }) || {
                // node 2 received only `b`
                lines.contains(&RelayLine::Finished { done: 1, failed: 0 })
                    && lines.contains(&RelayLine::Have(a.0.clone()))
            },
            "{lines:?}"
        );
    }
}

#[tokio::test]
async fn a_partial_blob_resumes_from_the_smallest_offset() {
    let src = tempfile::tempdir().unwrap();
    let a = blob(src.path(), "a", 2 << 20, 3);
    let bytes = std::fs::read(&a.1.path).unwrap();
    let token = new_token();
    let wants = [(a.0.clone(), a.1.size)];
    let n1 = node(&token, &wants, |s| {
        std::fs::write(part_path(s, &a.0), &bytes[..1_500_000]).unwrap();
    })
    .await;
    let n2 = node(&token, &wants, |s| {
        std::fs::write(part_path(s, &a.0), &bytes[..1_000_000]).unwrap();
    })
    .await;
    assert!(n1.lines.lock().unwrap().contains(&RelayLine::Partial {
        digest: a.0.clone(),
        offset: 1_500_000
    }));
    let (_, sent) = ship_to(
        &[&n1, &n2],
        &token,
        std::slice::from_ref(&a),
        &[vec![true, true]],
        vec![1_000_000],
    )
    .await;
    assert_eq!(sent, a.1.size - 1_000_000);
    let (l1, d1) = finish(n1).await;
    let (l2, d2) = finish(n2).await;
    assert!(l1.contains(&RelayLine::Done {
        digest: a.0.clone(),
        received: a.1.size - 1_500_000,
        resumed: 1_500_000
    }));
    assert!(l2.contains(&RelayLine::Done {
        digest: a.0.clone(),
        received: a.1.size - 1_000_000,
        resumed: 1_000_000
    }));
    for d in [d1, d2] {
        assert_eq!(std::fs::read(blob_path(d.path(), &a.0)).unwrap(), bytes);
        assert!(!part_path(d.path(), &a.0).exists());
    }
}

#[tokio::test]
async fn corrupted_bytes_are_rejected_and_not_renamed() {
    let src = tempfile::tempdir().unwrap();
    let a = blob(src.path(), "a", 1 << 20, 4);
    // Flip one byte after the digest was taken: what arrives no longer matches.
    let mut bytes = std::fs::read(&a.1.path).unwrap();
    bytes[4242] ^= 0xff;
    std::fs::write(&a.1.path, &bytes).unwrap();
    let token = new_token();
    let wants = [(a.0.clone(), a.1.size)];
    let n1 = node(&token, &wants, |_| {}).await;
    let n2 = node(&token, &wants, |_| {}).await;
    ship_to(
        &[&n1, &n2],
        &token,
        std::slice::from_ref(&a),
        &[vec![true, true]],
        vec![0],
    )
    .await;
    for n in [n1, n2] {
        let (lines, dir) = finish(n).await;
        assert!(
            lines.iter().any(|l| matches!(l, RelayLine::Fail { reason, .. } if reason.contains("digest mismatch"))),
            "{lines:?}"
        );
        assert!(!blob_path(dir.path(), &a.0).exists());
        assert!(!part_path(dir.path(), &a.0).exists());
    }
}

#[tokio::test]
async fn a_wrong_token_is_refused() {
    let token = new_token();
    let wants = [(Digest::of(b"x"), 1)];
    let n = node(&token, &wants, |_| {}).await;
    let mut stream = TcpStream::connect(n.addr).await.unwrap();
    protocol::write_hello(&mut stream, &new_token())
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(stream.read(&mut buf).await.unwrap(), 0, "connection closed");
    while !n
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| matches!(l, RelayLine::Refused { .. }))
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n.task.abort();
}

#[tokio::test]
async fn an_unreachable_next_hop_ends_the_chain_there() {
    let src = tempfile::tempdir().unwrap();
    let a = blob(src.path(), "a", 100_000, 5);
    let token = new_token();
    let wants = [(a.0.clone(), a.1.size)];
    let n1 = node(&token, &wants, |_| {}).await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = Node {
        addr: closed.local_addr().unwrap(),
        dir: tempfile::tempdir().unwrap(),
        lines: Arc::default(),
        task: tokio::spawn(async { Ok((0, 0)) }),
    };
    drop(closed);
    let (reach, _) = ship_to(
        &[&n1, &gone],
        &token,
        std::slice::from_ref(&a),
        &[vec![true, true]],
        vec![0],
    )
    .await;
    assert_eq!(reach, 1);
    let (lines, _dir) = finish(n1).await;
    assert!(
        lines
            .iter()
            .any(|l| matches!(l, RelayLine::Unreachable { .. }))
    );
    assert!(lines.contains(&RelayLine::Finished { done: 1, failed: 0 }));
}
