//! Traces of calls: W3C Trace Context (`traceparent`) on every call, and, with
//! `--otlp-endpoint`, each call's span exported to an OpenTelemetry collector over OTLP/HTTP.
//!
//! Every call runs in a span of its own: a child of the client's `traceparent` when it sent one,
//! else the root of a new trace. The span's context travels with the call chain, so a call the
//! object makes (on this station or another) is a child of it, and one trace shows the whole
//! chain across stations. The station answers with the span's `traceparent`, and every log line
//! of the call carries its trace id. Ids are made here (not by the OpenTelemetry SDK), so they
//! exist whether or not spans are exported; the SDK's batch processor and OTLP exporter only
//! ship the finished spans.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanProcessor};

/// The request header (and response header) carrying a trace context.
pub const TRACEPARENT: &str = "traceparent";
/// [`TRACEPARENT`] as a header name (looked up and set on every call).
pub static TRACEPARENT_NAME: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);

/// A span's place in a trace: its trace id, its own span id, whether it is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace, shared by every span of a call chain.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// Whether the trace is recorded (the `sampled` flag).
    pub sampled: bool,
}

impl TraceContext {
    /// The first span of a new, sampled trace.
    pub fn root() -> TraceContext {
        TraceContext {
            trace_id: nonzero_random(),
            span_id: nonzero_random(),
            sampled: true,
        }
    }

    /// A new span in the same trace, with this one as its parent.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: nonzero_random(),
            ..*self
        }
    }

    /// Parses a `traceparent` header (W3C Trace Context level 1): `VV-TRACE-SPAN-FLAGS` in
    /// lowercase hex, ids not all zero, version `ff` refused; a later version's extra fields
    /// are ignored, as the specification asks. `None` for anything else.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let header = header.trim();
        let mut fields = header.split('-');
        let version = fields.next()?;
        let (trace, span, flags) = (fields.next()?, fields.next()?, fields.next()?);
        let extra = fields.next();
        if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && extra.is_some() {
            return None;
        }
        if flags.len() != 2 || !is_lower_hex(flags) {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let span_id: [u8; 8] = decode_hex(span)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` header of this span. (Written into a fixed buffer: every answer
    /// carries one.)
    pub fn header(&self) -> String {
        let mut header = [0u8; 55];
        header[..3].copy_from_slice(b"00-");
        hex::encode_to_slice(self.trace_id, &mut header[3..35]).expect("16 bytes, 32 digits");
        header[35] = b'-';
        hex::encode_to_slice(self.span_id, &mut header[36..52]).expect("8 bytes, 16 digits");
        header[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        String::from_utf8(header.to_vec()).expect("hex digits and dashes are ASCII")
    }

    /// The trace id as 32 lowercase hex digits (as log lines carry it).
    pub fn trace_id_hex(&self) -> String {
        hex_id(&self.trace_id)
    }

    /// The `traceparent` of a request's headers, if it has a valid one.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<TraceContext> {
        TraceContext::parse(headers.get(&TRACEPARENT_NAME)?.to_str().ok()?)
    }
}

/// The span a call runs in, and the span it is a child of (if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSpan {
    /// The call's own span.
    pub span: TraceContext,
    /// The parent span's id; `None` for a trace's root.
    pub parent_span_id: Option<[u8; 8]>,
}

impl CallSpan {
    /// A span that is a child of `parent`, or the root of a new trace.
    pub fn child_of(parent: Option<&TraceContext>) -> CallSpan {
        match parent {
            Some(parent) => CallSpan {
                span: parent.child(),
                parent_span_id: Some(parent.span_id),
            },
            None => CallSpan {
                span: TraceContext::root(),
                parent_span_id: None,
            },
        }
    }
}

/// A finished span of a call, as exported.
#[derive(Debug)]
pub struct FinishedCall<'a> {
    /// The call's span.
    pub span: CallSpan,
    /// The object called.
    pub object_id: &'a str,
    /// The HTTP method the object saw.
    pub method: &'a str,
    /// The object's status, or `None` when the call failed (trap, timeout, refusal).
    pub status: Option<u16>,
    /// Why the call failed, when it did.
    pub error: Option<String>,
    /// The chain's request id.
    pub request_id: &'a str,
    /// When the call began.
    pub started: SystemTime,
    /// How long it took.
    pub took: Duration,
}

/// Where finished spans go: nowhere (the default), or an OTLP collector; and which new traces
/// are sampled.
#[derive(Clone)]
pub struct Tracer {
    export: Option<Arc<Export>>,
    /// New traces whose id falls below this (of `u64::MAX`) are sampled.
    sample_below: u64,
}

impl Default for Tracer {
    fn default() -> Tracer {
        Tracer {
            export: None,
            sample_below: u64::MAX,
        }
    }
}

struct Export {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
    station_id: String,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("exporting", &self.export.is_some())
            .finish()
    }
}

/// The wire format of OTLP/HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// `application/x-protobuf` (the collector default).
    Protobuf,
    /// `application/json`.
    Json,
}

impl Tracer {
    /// A tracer that exports nothing (ids and headers still work).
    pub fn disabled() -> Tracer {
        Tracer::default()
    }

    /// A tracer that exports spans in batches to the OTLP/HTTP collector at `endpoint`
    /// (`http://host:4318`, to which `/v1/traces` is added, or a full `.../v1/traces` URL),
    /// sent with `http`, this station's client. Must be called inside the tokio runtime.
    pub fn otlp(
        endpoint: &str,
        protocol: OtlpProtocol,
        station_id: &str,
        http: reqwest::Client,
    ) -> anyhow::Result<Tracer> {
        Tracer::otlp_sampled(endpoint, protocol, station_id, http, 1.0)
    }

    /// [`Tracer::otlp`] sampling `ratio` (0–1) of the traces that begin at this station; a
    /// trace begun elsewhere keeps its caller's decision (the `sampled` flag).
    pub fn otlp_sampled(
        endpoint: &str,
        protocol: OtlpProtocol,
        station_id: &str,
        http: reqwest::Client,
        ratio: f64,
    ) -> anyhow::Result<Tracer> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&ratio),
            "--otlp-sample-ratio must be between 0 and 1, not {ratio}"
        );
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let endpoint = traces_url(endpoint)?;
        let client = OtlpHttpClient {
            http,
            runtime: tokio::runtime::Handle::current(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(endpoint)
            .with_protocol(match protocol {
                OtlpProtocol::Protobuf => opentelemetry_otlp::Protocol::HttpBinary,
                OtlpProtocol::Json => opentelemetry_otlp::Protocol::HttpJson,
            })
            .with_timeout(Duration::from_secs(10))
            .build()
            .context("building the OTLP span exporter")?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(
            &Resource::builder_empty()
                .with_service_name("object-primitive")
                .with_attributes([
                    KeyValue::new("service.instance.id", station_id.to_string()),
                    KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                ])
                .build(),
        );
        Ok(Tracer {
            sample_below: ratio_bound(ratio),
            export: Some(Arc::new(Export {
                processor,
                scope: InstrumentationScope::builder("object-primitive-host")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
                station_id: station_id.to_string(),
            })),
        })
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.export.is_some()
    }

    /// The span of a call arriving from a client or another station: a child of `parent`, or
    /// the root of a new trace, sampled by this station's ratio (as OpenTelemetry's
    /// `ParentBased(TraceIdRatioBased)` does: the trace id's low 8 bytes against the ratio).
    pub fn call_span(&self, parent: Option<&TraceContext>) -> CallSpan {
        let mut span = CallSpan::child_of(parent);
        if parent.is_none() {
            let low = u64::from_be_bytes(span.span.trace_id[8..].try_into().unwrap_or([0; 8]));
            span.span.sampled = self.sample_below == u64::MAX || low < self.sample_below;
        }
        span
    }

    /// Hands a finished call's span to the exporter (when exporting and the trace is sampled).
    pub fn record(&self, call: FinishedCall<'_>) {
        let Some(export) = &self.export else {
            return;
        };
        if !call.span.span.sampled {
            return;
        }
        export.processor.on_end(export.span_data(call));
    }

    /// Sends the spans still queued and stops the exporter (at shutdown).
    pub fn shutdown(&self) {
        if let Some(export) = &self.export
            && let Err(e) = export
                .processor
                .shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!("the OTLP exporter did not shut down cleanly: {e}");
        }
    }
}

impl Export {
    fn span_data(&self, call: FinishedCall<'_>) -> SpanData {
        let span = call.span.span;
        let mut attributes = vec![
            KeyValue::new("op.object", call.object_id.to_string()),
            KeyValue::new("http.request.method", call.method.to_string()),
            KeyValue::new("op.request_id", call.request_id.to_string()),
            KeyValue::new("op.station", self.station_id.clone()),
        ];
        if let Some(status) = call.status {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        let status = match (&call.error, call.status) {
            (Some(error), _) => Status::error(error.clone()),
            (None, Some(code)) if code >= 500 => Status::error(format!("status {code}")),
            _ => Status::Unset,
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(span.trace_id),
                SpanId::from_bytes(span.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: call
                .span
                .parent_span_id
                .map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: call.span.parent_span_id.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(format!("{} {}", call.method, call.object_id)),
            start_time: call.started,
            end_time: call.started + call.took,
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

/// The bound of [`Tracer::call_span`]'s decision for a sampling `ratio`.
fn ratio_bound(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio.max(0.0) * u64::MAX as f64) as u64
    }
}

/// The traces URL of an OTLP/HTTP endpoint given on the command line.
fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(endpoint)
        .with_context(|| format!("--otlp-endpoint {endpoint:?} is not a URL"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https"),
        "--otlp-endpoint must be an http:// or https:// URL, not {endpoint:?}"
    );
    let trimmed = endpoint.trim_end_matches('/');
    Ok(if trimmed.ends_with("/v1/traces") {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    })
}

/// The OTLP exporter's HTTP client: the station's own reqwest client (its TLS trust), run on
/// the station's runtime (the batch processor exports from a thread of its own).
#[derive(Debug)]
struct OtlpHttpClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let http = self.http.clone();
        let send = async move {
            let request = reqwest::Request::try_from(request)?;
            let response = http.execute(request).await?;
            let mut answer = http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(answer.body(body)?)
        };
        self.runtime.spawn(send).await?
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !is_lower_hex(text) {
        return None;
    }
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

fn nonzero_random<const N: usize>() -> [u8; N] {
    loop {
        let bytes: [u8; N] = random_bytes();
        if bytes != [0; N] {
            return bytes;
        }
    }
}

/// `bytes` as lowercase hex (through a buffer: `hex::encode` goes a `char` at a time).
pub fn hex_id(bytes: &[u8]) -> String {
    let mut digits = [0u8; 64];
    let Some(digits) = digits.get_mut(..bytes.len() * 2) else {
        return hex::encode(bytes);
    };
    hex::encode_to_slice(bytes, digits).expect("two digits per byte");
    String::from_utf8(digits.to_vec()).expect("hex digits are ASCII")
}

/// Random bytes for ids (trace, span and request ids): from a fast generator per thread
/// (xoshiro, `SmallRng`) seeded from the operating system. These ids must be unique, not
/// unguessable (nothing is authorized by them), and every call makes three: the
/// cryptographic generator cost more than the rest of the tracing.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::{RngCore, SeedableRng, rngs::SmallRng};
    thread_local! {
        static IDS: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(SmallRng::from_os_rng());
    }
    let mut bytes = [0u8; N];
    IDS.with(|rng| rng.borrow_mut().fill_bytes(&mut bytes));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_a_child_keeps_the_trace() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceContext::parse(header).expect("the specification's example");
        assert_eq!(parent.header(), header);
        assert!(parent.sampled);
        let span = CallSpan::child_of(Some(&parent));
        assert_eq!(span.span.trace_id, parent.trace_id);
        assert_ne!(span.span.span_id, parent.span_id);
        assert_eq!(span.parent_span_id, Some(parent.span_id));
        let unsampled = TraceContext::parse(&header.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        assert!(unsampled.header().ends_with("-00"));
        let root = CallSpan::child_of(None);
        assert_eq!(root.parent_span_id, None);
        assert!(TraceContext::parse(&root.span.header()).is_some());
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more fields; the first four are read.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        assert!(TraceContext::parse(later).is_some());
    }

    #[test]
    fn new_traces_are_sampled_by_the_ratio_and_others_keep_their_callers_flag() {
        let tracer = |ratio| Tracer {
            export: None,
            sample_below: ratio_bound(ratio),
        };
        let sampled = |t: &Tracer| {
            (0..2_000)
                .filter(|_| t.call_span(None).span.sampled)
                .count()
        };
        assert_eq!(sampled(&tracer(1.0)), 2_000);
        assert_eq!(sampled(&tracer(0.0)), 0);
        let tenth = sampled(&tracer(0.1));
        assert!((100..300).contains(&tenth), "{tenth} of 2000 at 0.1");
        let parent = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(tracer(0.0).call_span(parent.as_ref()).span.sampled);
    }

    #[test]
    fn the_endpoint_gets_the_traces_path_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert!(traces_url("collector:4318").is_err());
    }
}
