use super::*;

fn ok(text: &str) -> Kubefile {
    parse("Kubefile", text).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> KubefileError {
    parse("Kubefile", text).expect_err("parsed")
}

fn only(text: &str) -> Instruction {
    let k = ok(&format!("FROM scratch\n{text}"));
    k.instructions[1].instruction.clone()
}

fn texts(words: &[Word]) -> Vec<&str> {
    words.iter().map(|w| w.text.as_str()).collect()
}

#[test]
fn every_verb_parses_with_sealer_meaning() {
    let k = ok(r#"
# a sealer Kubefile
ARG VERSION=1.28.0
FROM --platform=linux/amd64 scratch
COPY bin/${ARCH}/kubelet bin/kubeadm bin/
ADD ["charts/app.tgz", "charts/"]
RUN echo "hello" \
    && echo world
RUN ["sh", "-c", "true"]
ENV KEY=value OTHER="with space"
ENV LEGACY some words
LABEL io.sealer.version=v1 "x"=y
MAINTAINER Jane <jane@example.com>
APP nginx local://nginx.yaml local://svc.yaml
APP web https://example.invalid/web.tgz
APPCMDS nginx ["kubectl apply -f nginx.yaml"]
APPENV nginx REPLICAS=2 NAME=web
CNI calico local://calico.yaml
CSI openebs local://openebs/
KUBEVERSION >=1.24.0 <1.30.0
LAUNCH ["calico", "nginx"]
"#);
    let verbs: Vec<&str> = k
        .instructions
        .iter()
        .map(|l| l.instruction.verb())
        .collect();
    assert_eq!(
        verbs,
        [
            "ARG",
            "FROM",
            "COPY",
            "ADD",
            "RUN",
            "RUN",
            "ENV",
            "ENV",
            "LABEL",
            "MAINTAINER",
            "APP",
            "APP",
            "APPCMDS",
            "APPENV",
            "CNI",
            "CSI",
            "KUBEVERSION",
            "LAUNCH"
        ]
    );
    assert_eq!(k.instructions[0].span, Span { line: 3, col: 1 });
    match &k.instructions[1].instruction {
        Instruction::From { image, platform } => {
            assert_eq!(image.text, "scratch");
            assert_eq!(platform.as_ref().unwrap().text, "linux/amd64");
        }
        other => panic!("{other:?}"),
    }
    match &k.instructions[2].instruction {
        Instruction::Copy { sources, dest } => {
            assert_eq!(texts(sources), ["bin/${ARCH}/kubelet", "bin/kubeadm"]);
            assert_eq!(dest.text, "bin/");
            assert_eq!(sources[0].col, 6);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&k.instructions[3].instruction, Instruction::Add { sources, .. } if sources[0].text == "charts/app.tgz")
    );
    assert_eq!(
        k.instructions[4].instruction,
        Instruction::Run(RunCommand::Shell(
            "echo \"hello\" && echo world".to_string()
        ))
    );
    assert_eq!(
        k.instructions[5].instruction,
        Instruction::Run(RunCommand::Exec(vec![
            "sh".into(),
            "-c".into(),
            "true".into()
        ]))
    );
    match &k.instructions[6].instruction {
        Instruction::Env(pairs) => {
            assert_eq!(pairs[0].0, "KEY");
            assert_eq!(pairs[1].1.text, "with space");
        }
        other => panic!("{other:?}"),
    }
    match &k.instructions[7].instruction {
        Instruction::Env(pairs) => assert_eq!(pairs[0].1.text, "some words"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        k.instructions[9].instruction,
        Instruction::Maintainer("Jane <jane@example.com>".into())
    );
    match &k.instructions[10].instruction {
        Instruction::App {
            role,
            name,
            sources,
        } => {
            assert_eq!(*role, AppRole::App);
            assert_eq!(name.text, "nginx");
            assert!(matches!(&sources[1], AppSource::Local(w) if w.text == "svc.yaml"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&k.instructions[11].instruction, Instruction::App { sources, .. } if matches!(sources[0], AppSource::Remote(_)))
    );
    assert_eq!(
        k.instructions[12].instruction,
        Instruction::AppCmds {
            name: Word {
                text: "nginx".into(),
                col: 9
            },
            cmds: vec!["kubectl apply -f nginx.yaml".into()]
        }
    );
    assert!(matches!(
        &k.instructions[14].instruction,
        Instruction::App {
            role: AppRole::Cni,
            ..
        }
    ));
    assert!(matches!(
        &k.instructions[15].instruction,
        Instruction::App {
            role: AppRole::Csi,
            ..
        }
    ));
    match &k.instructions[16].instruction {
        Instruction::KubeVersion(r) => {
            assert_eq!(r.matches("v1.28.3"), Some(true));
            assert_eq!(r.matches("1.30.0"), Some(false));
        }
        other => panic!("{other:?}"),
    }
    match &k.instructions[17].instruction {
        Instruction::Launch(apps) => assert_eq!(texts(apps), ["calico", "nginx"]),
        other => panic!("{other:?}"),
    }
    assert!(k.warnings.is_empty());
}

#[test]
fn cmds_launch_and_deprecated_cmd() {
    assert_eq!(
        only(r#"CMDS ["kubectl apply -f a.yaml", "sh run.sh"]"#),
        Instruction::Cmds(vec!["kubectl apply -f a.yaml".into(), "sh run.sh".into()])
    );
    assert_eq!(
        only("CMDS kubectl get nodes"),
        Instruction::Cmds(vec!["kubectl get nodes".into()])
    );
    match only("LAUNCH app1 app2") {
        Instruction::Launch(apps) => assert_eq!(texts(&apps), ["app1", "app2"]),
        other => panic!("{other:?}"),
    }
    let k = ok("FROM scratch\nCMD kubectl apply -f a.yaml\nCMD kubectl apply -f b.yaml\n");
    assert_eq!(k.warnings.len(), 2);
    assert_eq!(k.warnings[0].span.line, 2);
    assert!(k.warnings[0].message.contains("CMDS"));
}

#[test]
fn verbs_are_case_insensitive_and_comments_in_continuations_are_skipped() {
    let k = ok("from scratch\ncopy a \\\n# comment\n  b\n");
    assert!(
        matches!(&k.instructions[1].instruction, Instruction::Copy { sources, dest } if sources[0].text == "a" && dest.text == "b")
    );
}

#[test]
fn errors_name_line_column_and_fix() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("FROM scratch\nCOPPY a b\n", 2, 1, "did you mean COPY"),
        ("FROM scratch\nFOO a\n", 2, 1, "unknown instruction `FOO`"),
        ("COPY a b\n", 1, 1, "before FROM"),
        ("", 1, 1, "no instructions"),
        ("# only a comment\n", 1, 1, "no instructions"),
        ("FROM scratch\nFROM other\n", 2, 1, "second FROM"),
        ("FROM\n", 1, 5, "FROM needs an image"),
        ("FROM a b\n", 1, 8, "one image"),
        ("FROM --squash a\n", 1, 6, "--platform"),
        ("FROM scratch\nCOPY a\n", 2, 6, "source and a destination"),
        ("FROM scratch\nCOPY --chown=1 a b\n", 2, 6, "no flags"),
        ("FROM scratch\nADD [\"a\", 1]\n", 2, 5, "JSON array"),
        ("FROM scratch\nCOPY \"a b\n", 2, 6, "unterminated"),
        ("FROM scratch\nRUN\n", 2, 4, "RUN needs a command"),
        ("FROM scratch\nRUN []\n", 2, 5, "no program"),
        ("FROM scratch\nARG 1X\n", 2, 5, "not a variable name"),
        ("FROM scratch\nARG A B\n", 2, 7, "one variable"),
        ("FROM scratch\nENV A\n", 2, 5, "no value"),
        ("FROM scratch\nLABEL a\n", 2, 7, "not KEY=VALUE"),
        ("FROM scratch\nLABEL =x\n", 2, 7, "empty key"),
        ("FROM scratch\nMAINTAINER\n", 2, 11, "MAINTAINER needs"),
        ("FROM scratch\nAPP\n", 2, 4, "APP needs a name"),
        ("FROM scratch\nAPP a/b local://x\n", 2, 5, "not an app name"),
        ("FROM scratch\nAPP nginx\n", 2, 10, "has no sources"),
        (
            "FROM scratch\nAPP nginx ftp://x\n",
            2,
            11,
            "not an app source",
        ),
        (
            "FROM scratch\nAPP nginx local://\n",
            2,
            11,
            "empty local://",
        ),
        (
            "FROM scratch\nAPP nginx local://a\nAPP nginx local://b\n",
            3,
            5,
            "declared twice",
        ),
        ("FROM scratch\nAPPCMDS nginx\n", 2, 14, "needs more"),
        ("FROM scratch\nAPPENV nginx X\n", 2, 14, "not KEY=VALUE"),
        ("FROM scratch\nKUBEVERSION\n", 2, 12, "version range"),
        (
            "FROM scratch\nKUBEVERSION >=one\n",
            2,
            13,
            "not a version range term",
        ),
        (
            "FROM scratch\nKUBEVERSION 1.2.3.4\n",
            2,
            13,
            "not a version range term",
        ),
        ("FROM scratch\nLAUNCH []\n", 2, 8, "LAUNCH needs app names"),
        (
            "FROM scratch\nLAUNCH [\"a\"]\nCOPY a b\n",
            3,
            1,
            "must be the last instruction",
        ),
        (
            "FROM scratch\nLAUNCH [\"a\"]\nCMDS [\"x\"]\n",
            3,
            1,
            "only one of LAUNCH, CMDS and CMD",
        ),
        (
            "FROM scratch\nCMDS [\"x\"]\nCMDS [\"y\"]\n",
            3,
            1,
            "only one of LAUNCH, CMDS and CMD",
        ),
    ];
    for (text, line, col, needle) in cases {
        let e = err(text);
        assert_eq!(
            (e.line, e.col),
            (*line, *col),
            "{text:?} gave {e}, expected {line}:{col}"
        );
        assert!(e.message.contains(needle), "{text:?} gave {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("Kubefile:{line}:{col}: "))
        );
    }
}

#[test]
fn substitution_follows_docker() {
    let vars: BTreeMap<String, String> = [("ARCH", "amd64"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let s = |t: &str| substitute(t, &vars).unwrap();
    assert_eq!(s("bin/${ARCH}/x"), "bin/amd64/x");
    assert_eq!(s("bin/$ARCH/x"), "bin/amd64/x");
    assert_eq!(s("$NOPE-x"), "-x");
    assert_eq!(s("${EMPTY:-d}"), "d");
    assert_eq!(s("${ARCH:+yes}"), "yes");
    assert_eq!(s("\\$ARCH $5"), "$ARCH $5");
    assert!(substitute("${ARCH", &vars).is_err());
}

#[test]
fn version_ranges() {
    let m = |r: &str, v: &str| VersionRange::parse(r).unwrap().matches(v).unwrap();
    assert!(m("1.28.x", "1.28.9"));
    assert!(!m("1.28.x", "1.29.0"));
    assert!(m("~1.28", "1.28.4"));
    assert!(!m("~1.28", "1.29.0"));
    assert!(m("^1.2", "1.9.0"));
    assert!(!m("^1.2", "2.0.0"));
    assert!(m("1.24 - 1.26", "1.26.7"));
    assert!(!m("1.24 - 1.26", "1.27.0"));
    assert!(m(">=1.20, <1.22 || >=1.25", "1.26.0"));
    assert!(!m(">=1.20, <1.22 || >=1.25", "1.23.0"));
    assert!(m("1.28.3", "v1.28.3"));
    assert!(!m("!=1.28.3", "1.28.3"));
    assert!(m(">1.28", "1.29.0"));
    assert!(!m(">1.28", "1.28.5"));
    assert!(VersionRange::parse(">= ").is_err());
    assert!(VersionRange::parse("1.x.3").is_err());
}

#[test]
fn add_takes_a_checksum_for_urls() {
    let hex = "a".repeat(64);
    match only(&format!(
        "ADD --checksum=sha256:{hex} https://example.test/kubectl bin/"
    )) {
        Instruction::Add {
            sources,
            dest,
            checksum: Some(c),
        } => {
            assert_eq!(texts(&sources), ["https://example.test/kubectl"]);
            assert_eq!(dest.text, "bin/");
            assert_eq!(c.text, format!("sha256:{hex}"));
            assert_eq!(c.col, 5 + "--checksum=".len());
        }
        other => panic!("{other:?}"),
    }
    let e = err("FROM scratch\nADD --checksum=md5:x https://example.test/a bin/\n");
    assert!(
        e.to_string()
            .contains("2:5: --checksum=md5:x is not a digest"),
        "{e}"
    );
    let e = err("FROM scratch\nCOPY --checksum=sha256:x a bin/\n");
    assert!(e.to_string().contains("COPY takes no flags"), "{e}");
}
