//! The bundled detectors linked into the host as native code.
//!
//! Only for the benchmark that measures what the wasm sandbox costs: the
//! same detector code, called through the same analysis path, with the batch
//! copied into the SDK's types as the component model copies it into guest
//! memory. Native detectors get no sandbox, so this is never the default.

use std::sync::Arc;

use clean_host_sdk as sdk;

use clean_host_core::bindings::{Analysis, BatchParts, Finding, MetricValue, Reads, Severity, TimeBasis, WindowKind};
use clean_host_runtime::{Analyzer, BatchView, DetectorSource, PluginFault, Projection, ValuesView, Window};

struct Native<D> {
    detector: D,
    /// What it reads, as it says natively: as a wasm instance of it would,
    /// but text it reads only as the host groups it (`and_grouped_text`),
    /// which natively it is handed and groups itself.
    projection: Option<Projection>,
}

impl<D: sdk::Detector + Send> Analyzer for Native<D> {
    fn analyze(&mut self, window: &Arc<Window>) -> Result<Analysis, PluginFault> {
        let batch = to_sdk(&BatchView::of(window, self.projection.as_ref()));
        let analysis = self.detector.analyze(&batch).map_err(PluginFault::Guest)?;
        Ok(from_sdk(analysis))
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, PluginFault> {
        Ok(self.detector.snapshot())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginFault> {
        self.detector.restore(state).map_err(PluginFault::Guest)
    }
}

struct NativeSource<D> {
    info: sdk::PluginInfo,
    _detector: std::marker::PhantomData<fn() -> D>,
}

impl<D: sdk::Detector + Send + 'static> DetectorSource for NativeSource<D> {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn version(&self) -> &str {
        &self.info.version
    }

    fn instantiate(&self, config: &str) -> Result<Box<dyn Analyzer>, PluginFault> {
        let mut detector = D::default();
        detector.configure(config).map_err(PluginFault::Guest)?;
        let projection = Projection::new(to_host_reads(detector.reads()))?;
        Ok(Box::new(Native { detector, projection }))
    }
}

fn source<D: sdk::Detector + Send + 'static>() -> Arc<dyn DetectorSource> {
    Arc::new(NativeSource::<D> { info: D::describe(), _detector: std::marker::PhantomData })
}

/// Every bundled detector, by name.
pub fn detectors() -> Vec<Arc<dyn DetectorSource>> {
    vec![
        source::<completeness::Completeness>(),
        source::<duplicates::Duplicates>(),
        source::<freshness::Freshness>(),
        source::<outliers::Outliers>(),
        source::<schema::Schema>(),
        source::<validity::Validity>(),
        source::<volume::Volume>(),
        source::<drift::Drift>(),
    ]
}

fn to_host_reads(reads: sdk::Reads) -> Reads {
    let parts = [
        (sdk::BatchParts::FLOAT64_VALUES, BatchParts::FLOAT64_VALUES),
        (sdk::BatchParts::INT64_VALUES, BatchParts::INT64_VALUES),
        (sdk::BatchParts::BOOLEAN_VALUES, BatchParts::BOOLEAN_VALUES),
        (sdk::BatchParts::TIMESTAMP_VALUES, BatchParts::TIMESTAMP_VALUES),
        (sdk::BatchParts::TEXT_VALUES, BatchParts::TEXT_VALUES),
        (sdk::BatchParts::OFFSETS, BatchParts::OFFSETS),
        (sdk::BatchParts::RECORD_HASHES, BatchParts::RECORD_HASHES),
        (sdk::BatchParts::EVENT_TIMES, BatchParts::EVENT_TIMES),
    ];
    let parts = parts.into_iter().filter(|(sdk, _)| reads.parts.contains(*sdk)).fold(BatchParts::empty(), |all, (_, host)| all | host);
    Reads { parts, columns: reads.columns }
}

fn to_sdk(b: &BatchView) -> sdk::Batch {
    let i = b.info;
    sdk::Batch {
        info: sdk::WindowInfo {
            pipeline: i.pipeline.clone(),
            source: i.source.clone(),
            partition: i.partition,
            kind: match i.kind {
                WindowKind::Count => sdk::WindowKind::Count,
                WindowKind::ProcessingTime => sdk::WindowKind::ProcessingTime,
                WindowKind::EventTime => sdk::WindowKind::EventTime,
            },
            start_ms: i.start_ms,
            end_ms: i.end_ms,
            time_basis: match i.time_basis {
                TimeBasis::Event => sdk::TimeBasis::Event,
                TimeBasis::Processing => sdk::TimeBasis::Processing,
            },
            closed_at_ms: i.closed_at_ms,
            first_offset: i.first_offset,
            last_offset: i.last_offset,
            seq: i.seq,
        },
        row_count: b.row_count,
        columns: b
            .columns
            .iter()
            .map(|c| sdk::Column {
                name: c.name.to_string(),
                values: match &c.values {
                    ValuesView::Float64(v) => sdk::ColumnValues::Float64(v.to_vec()),
                    ValuesView::Int64(v) => sdk::ColumnValues::Int64(v.to_vec()),
                    ValuesView::Boolean(v) => sdk::ColumnValues::Boolean(v.to_vec()),
                    ValuesView::Timestamp(v) => sdk::ColumnValues::Timestamp(v.to_vec()),
                    ValuesView::Text(s) => sdk::ColumnValues::Text(sdk::StringColumn { bytes: s.bytes.to_vec(), offsets: s.offsets.to_vec() }),
                },
                validity: c.validity.to_vec(),
            })
            .collect(),
        offsets: b.offsets.to_vec(),
        record_hashes: b.record_hashes.to_vec(),
        event_times: b.event_times.to_vec(),
    }
}

fn from_sdk(a: sdk::Analysis) -> Analysis {
    Analysis {
        findings: a
            .findings
            .into_iter()
            .map(|f| Finding {
                metric: f.metric,
                column: f.column,
                value: f.value,
                threshold: f.threshold,
                severity: match f.severity {
                    sdk::Severity::Info => Severity::Info,
                    sdk::Severity::Warning => Severity::Warning,
                    sdk::Severity::Critical => Severity::Critical,
                },
                message: f.message,
                sample_rows: f.sample_rows,
            })
            .collect(),
        metrics: a.metrics.into_iter().map(|m| MetricValue { metric: m.metric, column: m.column, value: m.value }).collect(),
    }
}
