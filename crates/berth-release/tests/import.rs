//! Importing releases from directories and tarballs, bad input, permissions and pruning.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_release::meta::meta_path;
use berth_release::{
    Error, Limits, Origin, Release, ReleaseId, hash_tree, import_dir, import_dir_with,
    import_tarball, import_tarball_built, import_tarball_with, list_releases, prune, read_release,
};
use flate2::{Compression, write::GzEncoder};
use tar::{EntryType, Header};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Top-level names in a directory, sorted: what "nothing changed" is checked against.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A small app: a script, static files, an empty dir, an inner symlink, and a `.git`.
fn app_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("static/css")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("bin/app"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("static/index.html"), "<h1>hi</h1>").unwrap();
    fs::write(root.join("static/css/site.css"), "body{}").unwrap();
    symlink("../static/index.html", root.join("bin/index")).unwrap();
    fs::create_dir_all(root.join(".git/refs/heads")).unwrap();
    fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::write(root.join(".git/refs/heads/main"), format!("{COMMIT}\n")).unwrap();
    dir
}

/// A header with raw name bytes: the `tar` crate's setters refuse `..` and absolute paths,
/// which is exactly what these tests need to write.
fn header(name: &[u8], kind: EntryType, size: u64, mode: u32, link: Option<&str>) -> Header {
    let mut h = Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    if let Some(link) = link {
        h.set_link_name(link).unwrap();
    }
    h.set_cksum();
    h
}

/// Entries of a test archive: (name, type, contents or link target, mode).
type Spec<'a> = [(&'a str, EntryType, &'a str, u32)];

fn tarball(dir: &Path, entries: &Spec) -> std::path::PathBuf {
    let path = dir.join("app.tar.gz");
    let gz = GzEncoder::new(fs::File::create(&path).unwrap(), Compression::fast());
    let mut b = tar::Builder::new(gz);
    for &(name, kind, data, mode) in entries {
        if kind == EntryType::Symlink || kind == EntryType::Link {
            let h = header(name.as_bytes(), kind, 0, mode, Some(data));
            b.append(&h, std::io::empty()).unwrap();
        } else {
            let h = header(name.as_bytes(), kind, data.len() as u64, mode, None);
            b.append(&h, data.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap().finish().unwrap();
    path
}

/// The same app as `app_dir` (minus `.git`), as a tarball.
fn app_entries() -> Vec<(&'static str, EntryType, &'static str, u32)> {
    use EntryType::*;
    vec![
        ("./", Directory, "", 0o755),
        ("bin/", Directory, "", 0o755),
        ("bin/app", Regular, "#!/bin/sh\necho hi\n", 0o755),
        ("bin/index", Symlink, "../static/index.html", 0o777),
        ("empty/", Directory, "", 0o755),
        ("static/index.html", Regular, "<h1>hi</h1>", 0o644),
        ("static/css/site.css", Regular, "body{}", 0o600),
    ]
}

/// `app_dir`, imported into the `releases` directory of a fresh data directory.
struct Imported {
    src: tempfile::TempDir,
    /// Bind it (`data: _data`), not `..`: dropping it deletes the releases.
    data: tempfile::TempDir,
    releases: PathBuf,
    release: Release,
}

fn imported_app() -> Imported {
    let src = app_dir();
    let data = tempfile::tempdir().unwrap();
    let releases = data.path().join("releases");
    let release = import_dir(src.path(), &releases).unwrap();
    Imported {
        src,
        data,
        releases,
        release,
    }
}

#[test]
fn import_dir_copies_skips_git_records_commit_and_freezes() {
    let Imported {
        src,
        releases,
        release: r,
        data: _data,
    } = imported_app();

    assert_eq!(r.path, releases.join(r.id.as_str()));
    assert_eq!(r.git_commit.as_deref(), Some(COMMIT));
    assert_eq!((r.files, r.size_bytes), (3, 18 + 11 + 6));
    assert_eq!(
        r.source,
        fs::canonicalize(src.path()).unwrap().to_string_lossy()
    );
    assert!(!r.path.join(".git").exists());
    assert_eq!(
        fs::read_link(r.path.join("bin/index")).unwrap(),
        Path::new("../static/index.html")
    );
    assert_eq!(hash_tree(&r.path).unwrap().id, r.id);
    assert_eq!(
        listing(&releases),
        [r.id.to_string(), format!("{}.json", r.id)]
    );
    assert_eq!(read_release(&releases, &r.id).unwrap().unwrap(), r);

    // Read-only on disk: plain files 0444, executables and directories 0555.
    assert_eq!(mode(&r.path), 0o555);
    assert_eq!(mode(&r.path.join("bin")), 0o555);
    assert_eq!(mode(&r.path.join("empty")), 0o555);
    assert_eq!(mode(&r.path.join("bin/app")), 0o555);
    assert_eq!(mode(&r.path.join("static/index.html")), 0o444);
    assert_eq!(mode(&r.path.join("static/css/site.css")), 0o444);
}

#[test]
fn reimport_is_idempotent_and_tarball_of_same_content_has_same_id() {
    let Imported {
        src,
        data,
        releases,
        release: first,
    } = imported_app();
    let before = listing(&releases);
    let again = import_dir(src.path(), &releases).unwrap();
    assert_eq!(
        again, first,
        "same id, same metadata (original creation time)"
    );
    assert_eq!(
        listing(&releases),
        before,
        "no temp dir or second copy left"
    );

    let tgz = tarball(data.path(), &app_entries());
    let from_tar = import_tarball(&tgz, &releases).unwrap();
    assert_eq!(from_tar.id, first.id);
    assert_eq!(listing(&releases), before);
}

#[test]
fn import_tarball_extracts_and_freezes() {
    let data = tempfile::tempdir().unwrap();
    let releases = data.path().join("releases");
    let mut entries = app_entries();
    // A pax global header, as `git archive` writes, is ignored.
    entries.insert(
        0,
        ("pax_global_header", EntryType::XGlobalHeader, "", 0o644),
    );
    let r = import_tarball(&tarball(data.path(), &entries), &releases).unwrap();
    assert_eq!(r.git_commit, None);
    assert_eq!(
        fs::read_to_string(r.path.join("bin/app")).unwrap(),
        "#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode(&r.path.join("bin/app")), 0o555);
    assert_eq!(mode(&r.path.join("static/css/site.css")), 0o444);
    assert_eq!(mode(&r.path.join("static/css")), 0o555);
    assert_eq!(list_releases(&releases).unwrap(), [r]);
}

#[test]
fn build_runs_at_the_final_path_before_freezing_and_only_once() {
    let data = tempfile::tempdir().unwrap();
    let releases = data.path().join("releases");
    let archive = tarball(data.path(), &app_entries());
    let origin = Origin {
        source: "upload:/home/dev/app".into(),
        git_commit: Some(COMMIT.into()),
    };
    let mut runs = Vec::new();
    let mut build = |dir: &Path| -> Result<(), String> {
        runs.push(dir.to_owned());
        fs::write(dir.join("built.txt"), dir.to_string_lossy().as_bytes())
            .map_err(|e| e.to_string())
    };
    let r = import_tarball_built(
        &archive,
        &releases,
        Limits::default(),
        origin.clone(),
        Some(&mut build),
    )
    .unwrap();
    assert_eq!(runs, std::slice::from_ref(&r.path));
    assert_eq!(r.source, "upload:/home/dev/app");
    assert_eq!(r.git_commit.as_deref(), Some(COMMIT));
    // What the build wrote names the release's own path, and is frozen with the rest.
    assert_eq!(
        fs::read_to_string(r.path.join("built.txt")).unwrap(),
        r.path.to_string_lossy()
    );
    assert_eq!(mode(&r.path.join("built.txt")), 0o444);
    // The id is the source's: the same content is the same release, and is not rebuilt.
    let mut rebuilt = false;
    let mut again = |_: &Path| -> Result<(), String> {
        rebuilt = true;
        Ok(())
    };
    let r2 = import_tarball_built(
        &archive,
        &releases,
        Limits::default(),
        origin,
        Some(&mut again),
    )
    .unwrap();
    assert!(!rebuilt);
    assert_eq!(r2.id, r.id);
    assert_eq!(list_releases(&releases).unwrap(), [r]);
}

#[test]
fn failed_build_leaves_nothing_behind() {
    let data = tempfile::tempdir().unwrap();
    let releases = data.path().join("releases");
    let first = import_tarball(&tarball(data.path(), &app_entries()[..3]), &releases).unwrap();
    let before = listing(&releases);
    let mut build = |dir: &Path| -> Result<(), String> {
        fs::write(dir.join("half-built"), "x").unwrap();
        Err("npm ci exited with status 1".into())
    };
    let err = import_tarball_built(
        &tarball(data.path(), &app_entries()),
        &releases,
        Limits::default(),
        Origin::default(),
        Some(&mut build),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Build { reason, .. } if reason == "npm ci exited with status 1"),
        "{err}"
    );
    assert_eq!(listing(&releases), before);
    assert_eq!(list_releases(&releases).unwrap(), [first]);
}

/// Imports a tarball made of `extra` added to the app, expects an error mentioning `entry`,
/// and checks nothing changed in the releases directory or beside it.
fn assert_tar_rejected(extra: &Spec, limits: Limits, entry: &str) -> Error {
    let data = tempfile::tempdir().unwrap();
    let releases = data.path().join("releases");
    fs::create_dir_all(&releases).unwrap();
    // An existing release must survive a failed import untouched.
    let ok = import_tarball(&tarball(data.path(), &app_entries()), &releases).unwrap();
    let mut entries = app_entries();
    entries.extend_from_slice(extra);
    let tgz = tarball(data.path(), &entries);
    let (before, around) = (listing(&releases), listing(data.path()));
    let err = import_tarball_with(&tgz, &releases, limits).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(entry), "error {msg:?} should name {entry:?}");
    assert_eq!(
        listing(&releases),
        before,
        "releases dir changed after: {msg}"
    );
    assert_eq!(
        listing(data.path()),
        around,
        "wrote beside the releases dir: {msg}"
    );
    assert_eq!(hash_tree(&ok.path).unwrap().id, ok.id);
    err
}

#[test]
fn tarball_bad_entries_are_rejected_and_change_nothing() {
    use EntryType::*;
    let d = Limits::default();
    let cases: &[(&Spec, &str, &str)] = &[
        (&[("../evil", Regular, "x", 0o644)], "../evil", "`..`"),
        (
            &[("bin/../../evil", Regular, "x", 0o644)],
            "bin/../../evil",
            "`..`",
        ),
        (
            &[("/etc/evil", Regular, "x", 0o644)],
            "/etc/evil",
            "absolute",
        ),
        (&[("up", Symlink, "../..", 0o777)], "up", "outside"),
        (&[("abs", Symlink, "/etc/passwd", 0o777)], "abs", "absolute"),
        // Lexically `here/..` is the root; really it is the root's parent.
        (
            &[
                ("here", Symlink, ".", 0o777),
                ("sneaky", Symlink, "here/../x", 0o777),
            ],
            "sneaky",
            "outside",
        ),
        // Writing through a symlink would escape before any symlink check.
        (
            &[
                ("out", Symlink, "..", 0o777),
                ("out/evil", Regular, "x", 0o644),
            ],
            "out/evil",
            "symlink",
        ),
        (&[("hard", Link, "bin/app", 0o644)], "hard", "hard link"),
        (&[("tty", Char, "", 0o644)], "tty", "device"),
        (&[("disk", Block, "", 0o644)], "disk", "device"),
        (&[("pipe", Fifo, "", 0o644)], "pipe", "fifo"),
        (
            &[("bin/app", Regular, "again", 0o644)],
            "bin/app",
            "duplicate",
        ),
    ];
    for (extra, entry, reason) in cases {
        let err = assert_tar_rejected(extra, d, entry);
        assert!(
            err.to_string().contains(reason),
            "{err} should say {reason}"
        );
    }
}

#[test]
fn tarball_limits() {
    use EntryType::*;
    let tiny = Limits {
        max_bytes: 40,
        ..Limits::default()
    };
    let err = assert_tar_rejected(&[("big", Regular, "0123456789", 0o644)], tiny, "big");
    assert!(matches!(err, Error::TooLarge { limit: 40, .. }), "{err}");

    let few = Limits {
        max_entries: 5,
        ..Limits::default()
    };
    let err = assert_tar_rejected(&[], few, "static/css/site.css");
    assert!(
        matches!(err, Error::TooManyEntries { limit: 5, .. }),
        "{err}"
    );
}

#[test]
fn corrupt_tarball_is_an_archive_error() {
    let data = tempfile::tempdir().unwrap();
    let releases = data.path().join("releases");
    let path = data.path().join("bad.tar.gz");
    fs::write(&path, b"this is not gzip").unwrap();
    let err = import_tarball(&path, &releases).unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err}");
    assert!(listing(&releases).is_empty());
}

/// Adds something to the app dir, imports it, expects an error naming `entry`.
fn assert_dir_rejected(add: impl FnOnce(&Path), limits: Limits, entry: &str) -> Error {
    let src = app_dir();
    add(src.path());
    let data = tempfile::tempdir().unwrap();
    let releases = data.path().join("releases");
    fs::create_dir_all(&releases).unwrap();
    let err = import_dir_with(src.path(), &releases, limits).unwrap_err();
    assert!(
        err.to_string().contains(entry),
        "error {err} should name {entry:?}"
    );
    assert!(
        listing(&releases).is_empty(),
        "releases dir changed after: {err}"
    );
    err
}

#[test]
fn dir_bad_entries_are_rejected_and_change_nothing() {
    let d = Limits::default();
    assert_dir_rejected(
        |r| symlink("../../etc", r.join("static/up")).unwrap(),
        d,
        "static/up",
    );
    assert_dir_rejected(
        |r| symlink("/etc/passwd", r.join("passwd")).unwrap(),
        d,
        "passwd",
    );
    let fifo = |r: &Path| {
        let ok = std::process::Command::new("mkfifo")
            .arg(r.join("pipe"))
            .status()
            .unwrap();
        assert!(ok.success());
    };
    assert_dir_rejected(fifo, d, "pipe");
    let tiny = Limits { max_bytes: 20, ..d };
    let err = assert_dir_rejected(|_| {}, tiny, "bin/app");
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[test]
fn dir_containing_the_releases_dir_is_refused() {
    let src = app_dir();
    let releases = src.path().join("data/releases");
    let err = import_dir(src.path(), &releases).unwrap_err();
    assert!(matches!(err, Error::BadSource { .. }), "{err}");
    assert!(listing(&releases).is_empty());
}

#[test]
fn prune_on_disk_keeps_newest_and_active() {
    let data = tempfile::tempdir().unwrap();
    let releases = data.path().join("releases");
    let mut ids: Vec<ReleaseId> = Vec::new();
    for n in 0..5 {
        let src = app_dir();
        fs::write(src.path().join("VERSION"), n.to_string()).unwrap();
        ids.push(import_dir(src.path(), &releases).unwrap().id);
        // Distinct creation times, so "newest" is unambiguous.
        std::thread::sleep(Duration::from_millis(5));
    }
    let listed: Vec<ReleaseId> = list_releases(&releases)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ids, "listed oldest first");

    let pruned = prune(&releases, 2, std::slice::from_ref(&ids[0])).unwrap();
    assert_eq!(pruned, ids[1..3]);
    let mut expect: Vec<String> = [&ids[0], &ids[3], &ids[4]]
        .iter()
        .flat_map(|id| [id.to_string(), format!("{id}.json")])
        .collect();
    expect.sort();
    assert_eq!(listing(&releases), expect);
    assert_eq!(
        prune(&releases, 2, std::slice::from_ref(&ids[0])).unwrap(),
        []
    );
}

#[test]
fn packed_directory_imports_as_the_same_release_minus_what_is_ignored() {
    let app = app_dir();
    let root = app.path();
    fs::write(root.join(".gitignore"), "dist/\n*.log\n").unwrap();
    fs::write(root.join(".berthignore"), "!dist/\nlocal-only\n").unwrap();
    fs::create_dir_all(root.join("dist")).unwrap();
    fs::write(root.join("dist/app.js"), "built").unwrap();
    fs::write(root.join("debug.log"), "noise").unwrap();
    fs::write(root.join("local-only"), "secret-ish").unwrap();
    let data = tempfile::tempdir().unwrap();
    let archive = data.path().join("up.tar.gz");
    let summary = berth_release::pack_dir(root, fs::File::create(&archive).unwrap()).unwrap();
    let r = import_tarball(&archive, &data.path().join("releases")).unwrap();
    assert!(
        r.path.join("dist/app.js").is_file(),
        "re-included by .berthignore"
    );
    assert!(!r.path.join("debug.log").exists(), "ignored by .gitignore");
    assert!(
        !r.path.join("local-only").exists(),
        "ignored by .berthignore"
    );
    assert!(!r.path.join(".git").exists());
    assert_eq!(
        fs::read_link(r.path.join("bin/index")).unwrap(),
        Path::new("../static/index.html")
    );
    assert_eq!(mode(&r.path.join("bin/app")), 0o555);
    // 3 app files, 2 ignore files, dist/app.js.
    assert_eq!(summary.files, 6);
    assert_eq!(r.files, 6);
    // Packing is deterministic: the same tree gives the same archive bytes.
    let again = data.path().join("again.tar.gz");
    berth_release::pack_dir(root, fs::File::create(&again).unwrap()).unwrap();
    assert_eq!(fs::read(&archive).unwrap(), fs::read(&again).unwrap());
}

#[test]
fn packing_refuses_an_absolute_symlink_with_a_hint() {
    let app = app_dir();
    fs::create_dir_all(app.path().join(".venv/bin")).unwrap();
    symlink("/usr/bin/python3", app.path().join(".venv/bin/python3")).unwrap();
    let err = berth_release::pack_dir(app.path(), std::io::sink()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(".venv/bin/python3") && msg.contains(".berthignore"),
        "{msg}"
    );
    fs::write(app.path().join(".berthignore"), ".venv/\n").unwrap();
    berth_release::pack_dir(app.path(), std::io::sink()).unwrap();
}

#[test]
fn same_id_with_a_different_digest_is_a_collision_not_a_reuse() {
    let Imported {
        src,
        releases,
        release: r,
        data: _data,
    } = imported_app();
    // What an earlier release whose digest shares the id's 48 bits would have left.
    let meta = meta_path(&releases, &r.id);
    let text = fs::read_to_string(&meta).unwrap();
    fs::write(&meta, text.replace(&r.digest, &"0".repeat(r.digest.len()))).unwrap();
    let before = listing(&releases);
    let err = import_dir(src.path(), &releases).unwrap_err();
    assert!(
        matches!(&err, Error::Collision { id } if *id == r.id.to_string()),
        "{err}"
    );
    assert_eq!(listing(&releases), before);
}

#[test]
fn a_tree_left_without_metadata_is_adopted_when_its_content_matches() {
    let Imported {
        src,
        releases,
        release: r,
        data: _data,
    } = imported_app();
    let before = listing(&releases);
    // A crash between the rename and the metadata write.
    fs::remove_file(meta_path(&releases, &r.id)).unwrap();
    assert_eq!(list_releases(&releases).unwrap(), []);

    let again = import_dir(src.path(), &releases).unwrap();
    assert_eq!(again.id, r.id);
    assert_eq!((again.files, &again.digest), (r.files, &r.digest));
    assert_eq!(listing(&releases), before);
    assert_eq!(read_release(&releases, &r.id).unwrap(), Some(again));

    // The same, but the stored tree was changed meanwhile: it is not what the id names.
    fs::remove_file(meta_path(&releases, &r.id)).unwrap();
    let css = r.path.join("static/css/site.css");
    fs::set_permissions(r.path.join("static/css"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&css, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&css, "body{color:red}").unwrap();
    let err = import_dir(src.path(), &releases).unwrap_err();
    assert!(matches!(err, Error::Collision { .. }), "{err}");
}

#[test]
fn a_built_tree_left_without_metadata_is_built_again() {
    let data = tempfile::tempdir().unwrap();
    let releases = data.path().join("releases");
    let archive = tarball(data.path(), &app_entries());
    let mut builds = 0;
    let mut build = |dir: &Path| -> Result<(), String> {
        builds += 1;
        fs::write(dir.join("built.txt"), "x").map_err(|e| e.to_string())
    };
    let r = import_tarball_built(
        &archive,
        &releases,
        Limits::default(),
        Origin::default(),
        Some(&mut build),
    )
    .unwrap();
    // A crash after the build, before the metadata was written.
    fs::remove_file(meta_path(&releases, &r.id)).unwrap();
    let again = import_tarball_built(
        &archive,
        &releases,
        Limits::default(),
        Origin::default(),
        Some(&mut build),
    )
    .unwrap();
    assert_eq!(builds, 2);
    assert_eq!(again.id, r.id);
    assert!(again.path.join("built.txt").is_file());
    assert_eq!(list_releases(&releases).unwrap(), [again]);
}

#[test]
fn read_root_file_finds_a_root_entry_with_or_without_dot_slash() {
    use EntryType::*;
    let data = tempfile::tempdir().unwrap();
    let archive = tarball(
        data.path(),
        &[
            ("./", Directory, "", 0o755),
            ("./berth.toml", Regular, "name = \"a\"\n", 0o644),
            ("sub/", Directory, "", 0o755),
            ("sub/other.toml", Regular, "x", 0o644),
            ("README", Regular, "0123456789", 0o644),
        ],
    );
    let read = |name: &str, max: u64| berth_release::read_root_file(&archive, name, max).unwrap();
    assert_eq!(
        read("berth.toml", 1024).as_deref(),
        Some(&b"name = \"a\"\n"[..])
    );
    assert_eq!(read("README", 1024).as_deref(), Some(&b"0123456789"[..]));
    assert_eq!(
        read("README", 4).as_deref(),
        Some(&b"0123"[..]),
        "cut at max"
    );
    assert_eq!(read("other.toml", 1024), None, "only the root is searched");
    assert_eq!(read("sub", 1024), None, "a directory is not a file");
    assert_eq!(read("missing", 1024), None);
}
