//! The V2 gRPC service's transport (HTTP/2 and gRPC framing) on tonic, for serving/grpc_service.py.
//!
//! Why Rust: grpc.aio, the best Python gRPC server measured here, spends ~0.25 ms of CPU per
//! unary call in its own machinery (a handler that does nothing answers ~5,000 calls/s on this
//! machine), more than the whole V2 JSON route. tonic (hyper's HTTP/2) on its own threads,
//! outside the GIL, costs a few microseconds. Everything the protocol means stays in Python:
//! message bytes pass through untouched (a pass-through codec), and the serving loop takes the
//! waiting calls in bulk when an eventfd becomes readable, answers each with `reply` (a
//! serialized message) or `abort` (a status code and message).
//!
//! Bounds: calls in progress at once (`max_in_flight`, more get RESOURCE_EXHAUSTED), the message
//! size (`max_message_bytes`, over it RESOURCE_EXHAUSTED as grpc-core says it, not tonic's
//! OUT_OF_RANGE), HTTP/2 keepalive pings every `idle_timeout_s` that close connections whose
//! peer stopped answering. `begin_stop` stops accepting and ends connections gracefully (GOAWAY);
//! calls in flight still get their answers until `close`.
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::oneshot;
use tonic::body::BoxBody;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Status};

const SERVICE: &str = "inference.GRPCInferenceService";
const METHODS: [&str; 6] = ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"];

type Reply = Result<Bytes, Status>;

struct Call {
    id: u64,
    method: usize,
    body: Bytes,
    peer: String,
    authorization: Option<String>,
    api_key: Option<String>,
}

struct Shared {
    queue: Mutex<Vec<Call>>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    max_message_bytes: usize,
    event_fd: i32,
}

impl Shared {
    fn wake(&self) {
        let one: u64 = 1;
        unsafe { libc::write(self.event_fd, &one as *const u64 as *const libc::c_void, 8) };
    }
}

// -- a codec that hands message bytes through: Python parses and serializes with protobuf --
#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;
impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}
impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}
impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder { RawEncoder }
    fn decoder(&mut self) -> RawDecoder { RawDecoder }
}

struct InFlight(Arc<Shared>);
impl Drop for InFlight {
    fn drop(&mut self) { self.0.in_flight.fetch_sub(1, Ordering::AcqRel); }
}

struct Handler { shared: Arc<Shared>, method: usize }
impl UnaryService<Bytes> for Handler {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let shared = self.shared.clone();
        let method = self.method;
        Box::pin(async move {
            if shared.in_flight.fetch_add(1, Ordering::AcqRel) >= shared.max_in_flight {
                shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(Status::resource_exhausted(format!(
                    "more than {} calls in progress; retry later or raise serving.max_connections", shared.max_in_flight)));
            }
            let _guard = InFlight(shared.clone());
            let peer = match request.remote_addr() {
                Some(std::net::SocketAddr::V4(a)) => format!("ipv4:{a}"),
                Some(std::net::SocketAddr::V6(a)) => format!("ipv6:{a}"),
                None => String::from("unknown"),
            };
            let md = request.metadata();
            let text = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(String::from);
            let (authorization, api_key) = (text("authorization"), text("x-api-key"));
            let (tx, rx) = oneshot::channel();
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            shared.waiters.lock().unwrap().insert(id, tx);
            let first = {
                let mut q = shared.queue.lock().unwrap();
                q.push(Call { id, method, body: request.into_inner(), peer, authorization, api_key });
                q.len() == 1
            };
            if first { shared.wake(); }
            match rx.await {
                Ok(Ok(b)) => Ok(tonic::Response::new(b)),
                Ok(Err(s)) => Err(s),
                Err(_) => Err(Status::unavailable("the server is stopping; retry")),
            }
        })
    }
}

#[derive(Clone)]
struct Inference { shared: Arc<Shared> }
impl NamedService for Inference { const NAME: &'static str = SERVICE; }
impl tower::Service<http::Request<BoxBody>> for Inference {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> { Poll::Ready(Ok(())) }
    fn call(&mut self, req: http::Request<BoxBody>) -> Self::Future {
        let shared = self.shared.clone();
        let name = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
        Box::pin(async move {
            match METHODS.iter().position(|m| *m == name) {
                Some(method) => {
                    let limit = shared.max_message_bytes;
                    let mut grpc = tonic::server::Grpc::new(RawCodec)
                        .max_decoding_message_size(limit)
                        .max_encoding_message_size(usize::MAX);
                    let response = grpc.unary(Handler { shared, method }, req).await;
                    // Only tonic's size check ends a call with OUT_OF_RANGE here, before the handler.
                    if response.headers().get("grpc-status").map_or(false, |v| v == "11") {
                        return Ok(Status::resource_exhausted(format!(
                            "the message is over {limit} bytes (serving.max_body_bytes); send fewer samples per call or raise it"
                        )).into_http());
                    }
                    Ok(response)
                }
                None => Ok(Status::unimplemented(format!("{SERVICE} has no method {name}")).into_http()),
            }
        })
    }
}

#[pyclass]
struct Server {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<oneshot::Sender<()>>,
    finished: Arc<std::sync::atomic::AtomicBool>,
    #[pyo3(get)]
    port: u16,
}

#[pymethods]
impl Server {
    #[new]
    #[pyo3(signature = (host, port, max_message_bytes, max_in_flight, idle_timeout_s, threads=1))]
    fn new(host: &str, port: u16, max_message_bytes: usize, max_in_flight: usize, idle_timeout_s: f64, threads: usize) -> PyResult<Self> {
        let event_fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if event_fd < 0 { return Err(PyOSError::new_err("eventfd failed")); }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()), waiters: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0), max_in_flight, max_message_bytes, event_fd,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1))
            .thread_name("grpc-front").enable_all().build()
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let listener = std::net::TcpListener::bind((host, port)).map_err(|e| PyOSError::new_err(format!("cannot bind gRPC to {host}:{port}: {e}")))?;
        listener.set_nonblocking(true).map_err(|e| PyOSError::new_err(e.to_string()))?;
        let bound = listener.local_addr().map_err(|e| PyOSError::new_err(e.to_string()))?.port();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let finished_flag = finished.clone();
        let service = Inference { shared: shared.clone() };
        let idle = Duration::from_secs_f64(idle_timeout_s.max(0.001));
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None).expect("incoming");
            let _ = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(idle))
                .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async { let _ = stop_rx.await; })
                .await;
            finished_flag.store(true, Ordering::Release);
        });
        Ok(Server { shared, runtime: Some(runtime), stop: Some(stop_tx), finished, port: bound })
    }

    /// The eventfd that becomes readable when calls are waiting.
    fn fileno(&self) -> i32 { self.shared.event_fd }

    /// Every waiting call: (id, method name, message bytes, peer, authorization, x-api-key).
    fn take<'py>(&self, py: Python<'py>) -> Vec<(u64, &'static str, Bound<'py, PyBytes>, String, Option<String>, Option<String>)> {
        let mut counter: u64 = 0;
        unsafe { libc::read(self.shared.event_fd, &mut counter as *mut u64 as *mut libc::c_void, 8) };
        let calls = std::mem::take(&mut *self.shared.queue.lock().unwrap());
        calls.into_iter().map(|c| (c.id, METHODS[c.method], PyBytes::new(py, &c.body), c.peer, c.authorization, c.api_key)).collect()
    }

    /// Answer call `id` with a serialized response message.
    fn reply(&self, id: u64, message: &[u8]) {
        if let Some(tx) = self.shared.waiters.lock().unwrap().remove(&id) {
            let _ = tx.send(Ok(Bytes::copy_from_slice(message)));
        }
    }

    /// End call `id` with a gRPC status code (its number) and message.
    fn abort(&self, id: u64, code: i32, message: &str) {
        if let Some(tx) = self.shared.waiters.lock().unwrap().remove(&id) {
            let _ = tx.send(Err(Status::new(Code::from_i32(code), message)));
        }
    }

    /// Stop accepting new calls and connections; calls in flight go on until answered.
    fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() { let _ = tx.send(()); }
    }

    /// Whether every connection has ended since `begin_stop`.
    fn stopped(&self) -> bool { self.finished.load(Ordering::Acquire) }

    /// End what is left: calls still waiting get UNAVAILABLE, the runtime's threads end.
    fn close(&mut self) {
        self.begin_stop();
        self.shared.waiters.lock().unwrap().clear();
        if let Some(rt) = self.runtime.take() { rt.shutdown_background(); }
    }
}

#[pymodule]
fn modelstack_grpc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Server>()?;
    Ok(())
}
