use clap::{CommandFactory, FromArgMatches, Parser};

use super::*;

#[derive(Parser, Debug)]
struct TestCli {
    #[command(flatten)]
    config: Config,
}

fn parse(args: &[&str]) -> (Config, ArgMatches) {
    let mut argv = vec!["cairn"];
    argv.extend_from_slice(args);
    let m = TestCli::command().try_get_matches_from(argv).expect("flags parse");
    let c = TestCli::from_arg_matches(&m).expect("flags convert").config;
    (c, m)
}

#[test]
fn flag_defaults_equal_yaml_defaults() {
    let (flags, _) = parse(&[]);
    assert_eq!(flags, Config::default(), "a clap default_value disagrees with a Default impl");
}

#[test]
fn flags_override_the_file_and_the_file_overrides_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cairn.yaml");
    std::fs::write(&file, "server:\n  http_listen_address: 127.0.0.1:1234\ningester:\n  wal:\n    sync_mode: always\nquerier:\n  lookback_delta: 1m\n").expect("write");
    let (flags, m) = parse(&["--query.lookback-delta=2m", "--data.dir", "/tmp/x"]);
    let cfg = Config::load(&flags, &m, Some(&file)).expect("loads");
    assert_eq!(cfg.server.http_listen_address, "127.0.0.1:1234", "from the file");
    assert_eq!(cfg.ingester.wal.sync_mode, cairn_ingester::wal::SyncMode::Always, "from the file");
    assert_eq!(cfg.querier.lookback_delta.as_millis(), 120_000, "the flag wins");
    assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(cfg.server.grpc_listen_address, ":9095", "default");
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "ingester:\n  wal:\n    sync_mod: always\n").expect("write");
    let (flags, m) = parse(&[]);
    let err = Config::load(&flags, &m, Some(&file)).expect_err("unknown key").to_string();
    assert!(err.contains("sync_mod"), "{err}");
    std::fs::write(&file, "querier:\n  timeout: soon\n").expect("write");
    let err = Config::load(&flags, &m, Some(&file)).expect_err("bad duration").to_string();
    assert!(err.contains("soon"), "{err}");
    let (flags, m) = parse(&["--http.listen-address", "nowhere"]);
    let err = Config::load(&flags, &m, None).expect_err("bad address").to_string();
    assert!(err.contains("nowhere"), "{err}");
    let (flags, m) = parse(&["--query.timeout=0s"]);
    let err = Config::load(&flags, &m, None).expect_err("no time to answer").to_string();
    assert!(err.contains("querier.timeout must be positive"), "{err}");
}

/// docs/configuration.md holds the defaults and every flag.
#[test]
fn configuration_doc_is_true() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/configuration.md exists");
    let defaults = Config::defaults_yaml();
    assert!(
        doc.contains(&defaults),
        "docs/configuration.md must contain the output of `cairn config defaults`:\n{defaults}"
    );
    for arg in TestCli::command().get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(doc.contains(&format!("--{long}")), "docs/configuration.md does not mention --{long}");
        }
    }
}
