use cairn_common::Sample;

use super::*;
use cairn_common::wire::RawRequest;

fn raw<'a>(labels: &[(&'a str, &'a str)]) -> RawSeries<'a> {
    RawSeries {
        labels: labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect(),
        samples: vec![Sample::new(1000, 1.0)],
        ..Default::default()
    }
}

fn run(series: Vec<RawSeries<'_>>) -> Validated {
    validate(RawRequest { series, metadata: vec![] }, &ValidationConfig::default(), 10_000)
}

#[test]
fn sorts_labels_and_drops_empty_values() {
    let v = run(vec![raw(&[("job", "x"), ("__name__", "up"), ("empty", "")])]);
    assert!(v.first_error.is_none());
    assert_eq!(v.batch.series[0].labels.to_string(), r#"up{job="x"}"#);
}

#[test]
fn each_offence_is_named() {
    let long = "v".repeat(3000);
    let cases: Vec<(RawSeries<'_>, DiscardReason, &str)> = vec![
        (raw(&[("job", "x")]), DiscardReason::MissingMetricName, "without a metric name"),
        (raw(&[("__name__", ""), ("job", "x")]), DiscardReason::MissingMetricName, "without a metric name"),
        (raw(&[("__name__", "up"), ("", "x")]), DiscardReason::InvalidLabel, "empty label name"),
        (
            raw(&[("__name__", "up"), ("a", "1"), ("a", "2")]),
            DiscardReason::DuplicateLabelNames,
            r#"duplicate label name "a""#,
        ),
        (raw(&[("__name__", "up"), ("a", &long)]), DiscardReason::LabelValueTooLong, r#"label "a" has a value longer"#),
    ];
    for (series, reason, text) in cases {
        let v = run(vec![series, raw(&[("__name__", "ok")])]);
        assert_eq!(v.discarded.get(&reason), Some(&1), "{reason:?}");
        let msg = v.first_error.expect("an error");
        assert!(msg.contains(text), "{msg}");
        assert_eq!(v.batch.series.len(), 1, "the good series still goes through");
        assert!(msg.len() < 800, "messages stay readable: {}", msg.len());
    }
}

#[test]
fn invalid_utf8_names_the_label() {
    let series = RawSeries {
        labels: vec![(b"__name__", b"up"), (b"job", &[0xff, 0xfe])],
        samples: vec![Sample::new(1, 1.0)],
        ..Default::default()
    };
    let v = run(vec![series]);
    let msg = v.first_error.expect("error");
    assert!(msg.contains(r#"label "job" has a value that is not valid UTF-8"#), "{msg}");
}

#[test]
fn too_many_labels_and_legacy_names() {
    let many: Vec<(String, String)> = (0..40).map(|i| (format!("l{i:02}"), "v".to_owned())).collect();
    let mut labels: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    labels.push(("__name__", "up"));
    let v = run(vec![raw(&labels)]);
    assert_eq!(v.discarded.get(&DiscardReason::MaxLabelNamesPerSeries), Some(&1));

    let cfg = ValidationConfig { name_validation_scheme: NameValidation::Legacy, ..Default::default() };
    let req = RawRequest {
        series: vec![raw(&[("__name__", "http.requests")]), raw(&[("__name__", "up"), ("a-b", "1")])],
        metadata: vec![],
    };
    let v = validate(req, &cfg, 0);
    assert_eq!(v.discarded.get(&DiscardReason::InvalidMetricName), Some(&1));
    assert_eq!(v.discarded.get(&DiscardReason::InvalidLabel), Some(&1));
    // UTF-8 names are fine under the default scheme.
    let v = run(vec![raw(&[("__name__", "http.requests"), ("a-b", "1")])]);
    assert!(v.first_error.is_none());
}

#[test]
fn future_samples_are_dropped_individually() {
    let mut s = raw(&[("__name__", "up")]);
    s.samples = vec![Sample::new(1000, 1.0), Sample::new(10_000 + 11 * 60_000, 2.0)];
    let v = run(vec![s]);
    assert_eq!(v.discarded.get(&DiscardReason::TooFarInFuture), Some(&1));
    assert_eq!(v.batch.series[0].samples.len(), 1);
    assert!(v.first_error.expect("error").contains("in the future"));
}

#[test]
fn histograms_and_exemplars_are_counted_not_errors() {
    let mut s = raw(&[("__name__", "up")]);
    s.histograms = 2;
    s.exemplars = 1;
    let v = run(vec![s]);
    assert!(v.first_error.is_none());
    assert_eq!(v.histograms_received, 2);
    assert_eq!(v.discarded.get(&DiscardReason::NativeHistogramsUnsupported), Some(&2));
    assert_eq!(v.samples_discarded(), 0);
}

#[test]
fn samples_before_the_epoch_are_refused_naming_the_bound() {
    let mut s = raw(&[("__name__", "up")]);
    s.samples = vec![Sample::new(i64::MIN, 1.0), Sample::new(-1, 2.0), Sample::new(0, 3.0)];
    let v = run(vec![s]);
    assert_eq!(v.discarded.get(&DiscardReason::TooFarInPast), Some(&2));
    assert_eq!(v.batch.series[0].samples, vec![Sample::new(0, 3.0)]);
    let msg = v.first_error.expect("error");
    assert!(msg.contains("1970-01-01T00:00:00.000Z"), "{msg}");
}

#[test]
fn without_a_grace_period_the_year_9999_is_the_bound() {
    let cfg =
        ValidationConfig { create_grace_period: cairn_common::PromDuration::from_millis(0), ..Default::default() };
    let mut s = raw(&[("__name__", "up")]);
    s.samples = vec![
        Sample::new(MAX_SAMPLE_TIME_MS, 1.0),
        Sample::new(MAX_SAMPLE_TIME_MS + 1, 2.0),
        Sample::new(i64::MAX, 3.0),
    ];
    let v = validate(RawRequest { series: vec![s], metadata: vec![] }, &cfg, 10_000);
    assert_eq!(v.discarded.get(&DiscardReason::TooFarInFuture), Some(&2));
    assert_eq!(v.batch.series[0].samples.len(), 1);
    assert!(v.first_error.expect("error").contains("9999-12-31T23:59:59.999Z"));
}

proptest::proptest! {
    /// Whatever the timestamps, the clock and the grace period, validation
    /// neither panics nor lets through a timestamp Cairn does not store.
    #[test]
    fn only_storable_timestamps_pass(
        ts in proptest::collection::vec(proptest::prelude::any::<i64>(), 1..20),
        now in proptest::prelude::any::<i64>(),
        grace in proptest::prelude::any::<u64>(),
    ) {
        let cfg = ValidationConfig {
            create_grace_period: cairn_common::PromDuration::from_millis(grace),
            ..Default::default()
        };
        let mut s = raw(&[("__name__", "up")]);
        s.samples = ts.iter().map(|&t| Sample::new(t, 1.0)).collect();
        let v = validate(RawRequest { series: vec![s], metadata: vec![] }, &cfg, now);
        for series in &v.batch.series {
            for sample in &series.samples {
                proptest::prop_assert!(cairn_common::time::is_storable(sample.t), "{}", sample.t);
            }
        }
    }
}
