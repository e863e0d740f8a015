//! Validation and normalisation of received series, after Mimir's rules:
//! a series that breaks one is dropped (the rest of the request goes on) and
//! the request answers 400 naming the first offence.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cairn_common::push::{MetricMetadata, MetricType, PushBatch, PushSeries};
use cairn_common::time::{MAX_SAMPLE_TIME_MS, MIN_SAMPLE_TIME_MS, format_ms};
use cairn_common::{Label, Labels, METRIC_NAME};

use crate::config::{NameValidation, ValidationConfig};
use cairn_common::wire::{RawLabel, RawRequest, RawSeries};

/// Why received data was dropped (the `reason` label of
/// `cairn_distributor_discarded_samples_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiscardReason {
    MissingMetricName,
    InvalidMetricName,
    InvalidLabel,
    InvalidUtf8,
    LabelNameTooLong,
    LabelValueTooLong,
    MaxLabelNamesPerSeries,
    DuplicateLabelNames,
    TooFarInFuture,
    /// Before 1970-01-01T00:00:00Z, the earliest timestamp Cairn stores.
    TooFarInPast,
    /// Native histogram samples: Cairn stores float samples only.
    NativeHistogramsUnsupported,
    /// Exemplars are accepted on the wire and not stored.
    ExemplarsUnsupported,
}

impl DiscardReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MissingMetricName => "missing_metric_name",
            Self::InvalidMetricName => "invalid_metric_name",
            Self::InvalidLabel => "invalid_label",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::LabelNameTooLong => "label_name_too_long",
            Self::LabelValueTooLong => "label_value_too_long",
            Self::MaxLabelNamesPerSeries => "max_label_names_per_series",
            Self::DuplicateLabelNames => "duplicate_label_names",
            Self::TooFarInFuture => "too_far_in_future",
            Self::TooFarInPast => "too_far_in_past",
            Self::NativeHistogramsUnsupported => "native_histograms_unsupported",
            Self::ExemplarsUnsupported => "exemplars_unsupported",
        }
    }

    /// Whether the sender should hear about it as an error (400). Dropping
    /// histograms and exemplars is a documented limitation, not bad data.
    pub fn is_error(&self) -> bool {
        !matches!(self, Self::NativeHistogramsUnsupported | Self::ExemplarsUnsupported)
    }
}

/// The outcome of validating a request.
#[derive(Debug, Default)]
pub struct Validated {
    pub batch: PushBatch,
    /// Samples (or histograms, exemplars) dropped, by reason.
    pub discarded: BTreeMap<DiscardReason, u64>,
    /// Description of the first offence that makes the request a 400.
    pub first_error: Option<String>,
    pub samples_received: u64,
    pub histograms_received: u64,
    pub exemplars_received: u64,
}

impl Validated {
    fn discard(&mut self, reason: DiscardReason, n: u64, msg: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        *self.discarded.entry(reason).or_default() += n;
        if reason.is_error() && self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }

    /// Float samples dropped for errors.
    pub fn samples_discarded(&self) -> u64 {
        self.discarded.iter().filter(|(r, _)| r.is_error()).map(|(_, n)| n).sum()
    }
}

/// Validates a decoded request and turns it into a batch for the ingesters.
pub fn validate(req: RawRequest<'_>, cfg: &ValidationConfig, now_ms: i64) -> Validated {
    let mut out = Validated::default();
    out.batch.series.reserve(req.series.len());
    // Timestamps Cairn stores: from the epoch to now plus the grace period
    // (or to the year 9999 without one). Outside, a sample is refused, so
    // that nothing downstream computes with a timestamp near i64's ends.
    let grace = i64::try_from(cfg.create_grace_period.as_millis()).unwrap_or(i64::MAX);
    let max_t = if cfg.create_grace_period.is_zero() {
        MAX_SAMPLE_TIME_MS
    } else {
        now_ms.saturating_add(grace).min(MAX_SAMPLE_TIME_MS)
    };
    for raw in req.series {
        out.samples_received += raw.samples.len() as u64;
        out.histograms_received += u64::from(raw.histograms);
        out.exemplars_received += u64::from(raw.exemplars);
        out.discard(DiscardReason::NativeHistogramsUnsupported, u64::from(raw.histograms), String::new);
        out.discard(DiscardReason::ExemplarsUnsupported, u64::from(raw.exemplars), String::new);
        let n = raw.samples.len() as u64;
        let labels = match series_labels(&raw, cfg) {
            Ok(l) => l,
            Err((reason, msg)) => {
                // Metadata-only v2 series carry no samples but still count.
                out.discard(reason, n.max(1), || msg);
                continue;
            }
        };
        if let Some((kind, help, unit)) = raw.metadata
            && (kind != 0 || !help.is_empty() || !unit.is_empty())
            && let (Some(family), Ok(help), Ok(unit)) =
                (labels.metric_name(), std::str::from_utf8(help), std::str::from_utf8(unit))
        {
            out.batch.metadata.push(MetricMetadata {
                metric_family: family.to_owned(),
                kind: MetricType::from_proto(kind),
                help: truncate(help, cfg.max_metadata_length).to_owned(),
                unit: truncate(unit, cfg.max_metadata_length).to_owned(),
            });
        }
        if raw.samples.is_empty() {
            continue;
        }
        let mut samples = raw.samples;
        let first_past = samples.iter().find(|s| s.t < MIN_SAMPLE_TIME_MS).map(|s| s.t);
        let before = samples.len();
        samples.retain(|s| s.t >= MIN_SAMPLE_TIME_MS);
        out.discard(DiscardReason::TooFarInPast, (before - samples.len()) as u64, || {
            format!(
                "received a sample at {}ms, before {}, the earliest timestamp Cairn stores (timestamps are milliseconds since the epoch), series {labels}",
                first_past.unwrap_or_default(),
                format_ms(MIN_SAMPLE_TIME_MS)
            )
        });
        let before = samples.len();
        samples.retain(|s| s.t <= max_t);
        let dropped = (before - samples.len()) as u64;
        out.discard(DiscardReason::TooFarInFuture, dropped, || {
            if cfg.create_grace_period.is_zero() {
                format!(
                    "received a sample after {}, the latest timestamp Cairn stores (timestamps are milliseconds since the epoch), series {labels}",
                    format_ms(MAX_SAMPLE_TIME_MS)
                )
            } else {
                format!(
                    "received a sample more than {} in the future, after {} (timestamps are milliseconds since the epoch; raise --validation.create-grace-period), series {labels}",
                    cfg.create_grace_period,
                    format_ms(max_t)
                )
            }
        });
        if !samples.is_empty() {
            out.batch.series.push(PushSeries { labels, samples });
        }
    }
    for m in req.metadata {
        let (Ok(family), Ok(help), Ok(unit)) =
            (std::str::from_utf8(m.family), std::str::from_utf8(m.help), std::str::from_utf8(m.unit))
        else {
            continue;
        };
        if family.is_empty() {
            continue;
        }
        out.batch.metadata.push(MetricMetadata {
            metric_family: family.to_owned(),
            kind: MetricType::from_proto(m.kind),
            help: truncate(help, cfg.max_metadata_length).to_owned(),
            unit: truncate(unit, cfg.max_metadata_length).to_owned(),
        });
    }
    out
}

type Invalid = (DiscardReason, String);

fn series_labels(raw: &RawSeries<'_>, cfg: &ValidationConfig) -> Result<Labels, Invalid> {
    let shown = || show(&raw.labels);
    if cfg.max_label_names_per_series > 0 && raw.labels.len() > cfg.max_label_names_per_series {
        return Err((
            DiscardReason::MaxLabelNamesPerSeries,
            format!(
                "received a series with {} labels, more than the limit of {} (raise --validation.max-label-names-per-series), series {}",
                raw.labels.len(),
                cfg.max_label_names_per_series,
                shown()
            ),
        ));
    }
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(raw.labels.len());
    for (i, &(name, value)) in raw.labels.iter().enumerate() {
        let Ok(name) = std::str::from_utf8(name) else {
            return Err((
                DiscardReason::InvalidUtf8,
                format!("received a series whose label #{i} has a name that is not valid UTF-8, series {}", shown()),
            ));
        };
        let Ok(value) = std::str::from_utf8(value) else {
            return Err((
                DiscardReason::InvalidUtf8,
                format!(
                    "received a series whose label {name:?} has a value that is not valid UTF-8, series {}",
                    shown()
                ),
            ));
        };
        if name.is_empty() {
            return Err((
                DiscardReason::InvalidLabel,
                format!("received a series with an empty label name, series {}", shown()),
            ));
        }
        if cfg.name_validation_scheme == NameValidation::Legacy && !is_legacy_label_name(name) {
            return Err((
                DiscardReason::InvalidLabel,
                format!("received a series with an invalid label name {name:?}, series {}", shown()),
            ));
        }
        if cfg.max_label_name_length > 0 && name.len() > cfg.max_label_name_length {
            return Err((
                DiscardReason::LabelNameTooLong,
                format!(
                    "received a series with a label name longer than {} bytes (raise --validation.max-length-label-name): {:?}, series {}",
                    cfg.max_label_name_length,
                    truncate(name, 64),
                    shown()
                ),
            ));
        }
        if cfg.max_label_value_length > 0 && value.len() > cfg.max_label_value_length {
            return Err((
                DiscardReason::LabelValueTooLong,
                format!(
                    "received a series whose label {name:?} has a value longer than {} bytes (raise --validation.max-length-label-value), series {}",
                    cfg.max_label_value_length,
                    shown()
                ),
            ));
        }
        labels.push((name, value));
    }
    labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err((
            DiscardReason::DuplicateLabelNames,
            format!("received a series with duplicate label name {:?}, series {}", w[0].0, shown()),
        ));
    }
    match labels.iter().find(|l| l.0 == METRIC_NAME) {
        Some((_, name)) if !name.is_empty() => {
            if cfg.name_validation_scheme == NameValidation::Legacy && !is_legacy_metric_name(name) {
                return Err((
                    DiscardReason::InvalidMetricName,
                    format!("received a series with an invalid metric name {name:?}, series {}", shown()),
                ));
            }
        }
        _ => {
            return Err((
                DiscardReason::MissingMetricName,
                format!("received a series without a metric name (__name__ label), series {}", shown()),
            ));
        }
    }
    // A label with an empty value is the same as no label.
    Ok(Labels::from_sorted(labels.into_iter().filter(|l| !l.1.is_empty()).map(|(n, v)| Label::new(n, v)).collect()))
}

fn is_legacy_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn is_legacy_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn truncate(s: &str, max: usize) -> &str {
    if max == 0 || s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Renders raw labels for an error message, lossily and at most ~512 bytes.
fn show(labels: &[RawLabel<'_>]) -> String {
    let mut s = String::from("{");
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{}={:?}", String::from_utf8_lossy(n), String::from_utf8_lossy(v));
        if s.len() > 512 {
            let cut = truncate(&s, 512).len();
            s.truncate(cut);
            s.push_str("...");
            break;
        }
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests;
