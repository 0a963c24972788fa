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
//! Bounds, like the HTTP front end's: at most `max_connections` connections (more are closed at
//! once), 100 concurrent streams per connection, at most `max_in_flight` calls between arrival and
//! answer (more get RESOURCE_EXHAUSTED before their message is read), at most `max_buffered_bytes`
//! of messages held across calls and `max_message_bytes` per message (RESOURCE_EXHAUSTED, as
//! grpc-core says it, not tonic's OUT_OF_RANGE), a message complete `request_timeout_s` after its
//! call began (DEADLINE_EXCEEDED), a connection's HTTP/2 preface within `request_timeout_s` and
//! a connection with no call for `idle_timeout_s` closed. A call's place is held until Python answers it,
//! even when its client went away; a call whose client is gone before Python takes it is handed
//! over marked cancelled, not run. Accept errors (EMFILE...) are retried after a pause and logged
//! at most once a second. `begin_stop` closes the listener (new connections are refused at once)
//! and sends GOAWAY; `close` answers what is left with UNAVAILABLE and ends the threads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use http_body::{Body, Frame};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Sleep;
use tonic::body::BoxBody;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::Connected;

use tonic::{Code, Status};

const PREFIX: &str = "/inference.GRPCInferenceService/";
const SERVICE: &str = "inference.GRPCInferenceService";
const METHODS: [&str; 6] = ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"];
const STREAMS_PER_CONNECTION: u32 = 100;
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
const PREFACE_BYTES: usize = 24; // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

type Reply = Result<Bytes, Status>;

/// What the transport hands to Python for one call.
struct Call {
    id: u64,
    method: usize,
    body: Bytes,
    peer: String,
    authorization: Option<String>,
    api_key: Option<String>,
}

/// Counts shared by the calls and connections that hold a share of them.
#[derive(Default)]
struct Counters {
    in_flight: AtomicUsize,
    buffered: AtomicUsize,
    connections: AtomicUsize,
}

/// A call's share of the bounds, from arrival until Python answers it (or `close`).
struct Slot {
    counters: Arc<Counters>,
    bytes: Arc<AtomicUsize>,
    connection: Arc<ConnectionState>,
}
impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.counters.buffered.fetch_sub(self.bytes.load(Ordering::Acquire), Ordering::AcqRel);
        self.connection.call_ended();
    }
}

/// What a connection's idle timer reads: its calls in progress and when the last one ended.
struct ConnectionState {
    calls: AtomicUsize,
    last_call_ms: AtomicU64, // since `epoch`
    epoch: Instant,
}
impl ConnectionState {
    fn new() -> Self {
        ConnectionState { calls: AtomicUsize::new(0), last_call_ms: AtomicU64::new(0), epoch: Instant::now() }
    }
    fn call_began(&self) {
        self.calls.fetch_add(1, Ordering::AcqRel);
    }
    fn call_ended(&self) {
        self.last_call_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        self.calls.fetch_sub(1, Ordering::AcqRel);
    }
    /// When the connection counts as idle, unless a call begins first (None while calls run).
    fn idle_at(&self, idle: Duration) -> Option<Instant> {
        if self.calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.epoch + Duration::from_millis(self.last_call_ms.load(Ordering::Acquire)) + idle)
    }
}

/// The connection's address and idle state, as tonic puts them in each request's extensions.
#[derive(Clone)]
struct ConnectionInfo {
    remote: Option<std::net::SocketAddr>,
    state: Arc<ConnectionState>,
}

struct Waiter {
    reply: oneshot::Sender<Reply>,
    _slot: Slot,
}

struct Shared {
    queue: Mutex<Vec<Call>>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    counters: Arc<Counters>,
    max_in_flight: usize,
    max_buffered_bytes: usize,
    max_message_bytes: usize,
    max_connections: usize,
    request_timeout: Duration,
    idle_timeout: Duration,
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

// -- a request body that counts its bytes against max_buffered_bytes as they arrive --

struct Counted {
    inner: BoxBody,
    counters: Arc<Counters>,
    bytes: Arc<AtomicUsize>,
    limit: usize,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>, // armed only once the body has to be waited for
    timeout: Duration,
}
impl Body for Counted {
    type Data = Bytes;
    type Error = Status;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() && self.expired(cx) {
            // A stalled message would hold its call's place: it must arrive in time, like an HTTP body.
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the message did not arrive within {} s (request_timeout_s); send it whole",
                self.timeout.as_secs_f64()
            )))));
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let n = data.len();
                self.bytes.fetch_add(n, Ordering::AcqRel);
                if self.counters.buffered.fetch_add(n, Ordering::AcqRel) + n > self.limit {
                    return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                        "the server holds more than {} bytes of messages in progress (max_buffered_bytes); retry later",
                        self.limit
                    )))));
                }
            }
        }
        polled
    }
    fn is_end_stream(&self) -> bool { self.inner.is_end_stream() }
    fn size_hint(&self) -> http_body::SizeHint { self.inner.size_hint() }
}

impl Counted {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if Instant::now() >= self.deadline {
            return true;
        }
        let deadline = tokio::time::Instant::from_std(self.deadline);
        self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline))).as_mut().poll(cx).is_ready()
    }
}

struct Handler {
    shared: Arc<Shared>,
    method: usize,
    slot: Option<Slot>,
}
impl UnaryService<Bytes> for Handler {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let shared = self.shared.clone();
        let method = self.method;
        let slot = self.slot.take().expect("one call per handler");
        let peer = match request.extensions().get::<ConnectionInfo>().and_then(|info| info.remote) {
            Some(std::net::SocketAddr::V4(a)) => format!("ipv4:{a}"),
            Some(std::net::SocketAddr::V6(a)) => format!("ipv6:{a}"),
            None => String::from("unknown"),
        };
        let metadata = request.metadata();
        let text = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok()).map(String::from);
        let (authorization, api_key) = (text("authorization"), text("x-api-key"));
        let body = request.into_inner();
        let (tx, rx) = oneshot::channel();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        // The waiter keeps the call's slot until Python answers, whether or not anyone still waits.
        shared.waiters.lock().unwrap().insert(id, Waiter { reply: tx, _slot: slot });
        let first = {
            let mut queue = shared.queue.lock().unwrap();
            queue.push(Call { id, method, body, peer, authorization, api_key });
            queue.len() == 1
        };
        if first {
            shared.wake();
        }
        Box::pin(async move {
            match rx.await {
                Ok(Ok(message)) => Ok(tonic::Response::new(message)),
                Ok(Err(status)) => Err(status),
                Err(_) => Err(Status::unavailable("the server is stopping; retry")),
            }
        })
    }
}

#[derive(Clone)]
struct Inference {
    shared: Arc<Shared>,
}
impl NamedService for Inference {
    const NAME: &'static str = SERVICE;
}
impl tower::Service<http::Request<BoxBody>> for Inference {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
        let shared = self.shared.clone();
        let path = request.uri().path();
        let method = path.strip_prefix(PREFIX).and_then(|name| METHODS.iter().position(|m| *m == name));
        let Some(method) = method else {
            let status = Status::unimplemented(format!("{PREFIX} has no method {path:?}"));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        // Admission before the message is read: the call's place under max_in_flight.
        let counters = shared.counters.clone();
        if !take_place(&counters.in_flight, shared.max_in_flight) {
            let status = Status::resource_exhausted(format!(
                "more than {} calls in progress (max_connections); retry later", shared.max_in_flight
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let bytes = Arc::new(AtomicUsize::new(0));
        let connection = request.extensions().get::<ConnectionInfo>()
            .map_or_else(|| Arc::new(ConnectionState::new()), |info| info.state.clone());
        connection.call_began();
        let slot = Slot { counters: counters.clone(), bytes: bytes.clone(), connection };
        let (limit, timeout) = (shared.max_buffered_bytes, shared.request_timeout);
        let request = request.map(|inner| {
            let deadline = Instant::now() + timeout;
            BoxBody::new(Counted { inner, counters: counters.clone(), bytes, limit, deadline, timer: None, timeout })
        });
        Box::pin(async move {
            let max_message = shared.max_message_bytes;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(usize::MAX);
            let response = grpc.unary(Handler { shared, method, slot: Some(slot) }, request).await;
            // Only tonic's size check ends a call with OUT_OF_RANGE, before the handler runs.
            if response.headers().get("grpc-status").map_or(false, |v| v == "11") {
                return Ok(Status::resource_exhausted(format!(
                    "the message is over {max_message} bytes (max_body_bytes); send fewer samples per call or raise it"
                ))
                .into_http());
            }
            Ok(response)
        })
    }
}

// -- connections: counted, closed at once over max_connections --

struct Connection {
    stream: TcpStream,
    counters: Arc<Counters>,
    info: ConnectionInfo,
    read: usize,
    opened: Instant,
    handshake: Duration,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>, // the deadline the timer is set to
}
impl Connection {
    /// Until the preface arrives: the handshake deadline; then, with no call running, the idle one.
    fn deadline(&self) -> Option<Instant> {
        if self.read < PREFACE_BYTES {
            Some(self.opened + self.handshake)
        } else {
            self.info.state.idle_at(self.idle)
        }
    }
}
impl Drop for Connection {
    fn drop(&mut self) {
        self.counters.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;
    fn connect_info(&self) -> ConnectionInfo { self.info.clone() }
}
impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) => {
                self.read = self.read.saturating_add(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                // Waiting for the client: close the connection once its deadline has passed.
                if let Some(deadline) = self.deadline() {
                    if self.armed != Some(deadline) {
                        self.armed = Some(deadline);
                        self.timer.as_mut().reset(tokio::time::Instant::from_std(deadline));
                    }
                    // The timer is ready at once when the deadline has already passed.
                    if self.timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "handshake or idle timeout")));
                    }
                }
                Poll::Pending
            }
            other => other,
        }
    }
}
impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool { self.stream.is_write_vectored() }
}

/// One more under `max`, or false (and nothing taken) when `count` is already there.
fn take_place(count: &AtomicUsize, max: usize) -> bool {
    if count.fetch_add(1, Ordering::AcqRel) >= max {
        count.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

/// Accept until told to stop, then drop the listener so new connections are refused at once.
async fn accept(listener: TcpListener, shared: Arc<Shared>, out: mpsc::Sender<io::Result<Connection>>,
                mut stop: watch::Receiver<bool>) {
    let mut last_log: Option<Instant> = None;
    let mut unlogged = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let counters = shared.counters.clone();
                if !take_place(&counters.connections, shared.max_connections) {
                    continue; // over the cap: closed at once, the client retries elsewhere or later
                }
                let _ = stream.set_nodelay(true);
                let info = ConnectionInfo { remote: stream.peer_addr().ok(), state: Arc::new(ConnectionState::new()) };
                let connection = Connection {
                    stream, counters, info, read: 0, opened: Instant::now(),
                    handshake: shared.request_timeout, idle: shared.idle_timeout,
                    timer: Box::pin(tokio::time::sleep(shared.request_timeout)), armed: None,
                };
                if out.send(Ok(connection)).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                // EMFILE and the like: keep the listener, pause, try again; log at most once a second.
                unlogged += 1;
                if last_log.map_or(true, |at| at.elapsed() >= Duration::from_secs(1)) {
                    log_line(&format!(
                        "\"event\":\"grpc_accept_error\",\"error\":{:?},\"count\":{unlogged}", error.to_string()
                    ));
                    last_log = Some(Instant::now());
                    unlogged = 0;
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// One JSON log line on stderr, in the server's format ({"ts": UTC with milliseconds, ...}).
fn log_line(fields: &str) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (now.as_secs() as i64, now.subsec_millis());
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    eprintln!(
        "{{\"ts\":\"{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z\",{fields}}}",
        rem / 3600, rem % 3600 / 60, rem % 60
    );
}

#[pyclass]
struct Server {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    stop_accepting: watch::Sender<bool>,
    stop_serving: Option<oneshot::Sender<()>>,
    finished: Arc<AtomicBool>,
    #[pyo3(get)]
    port: u16,
}

#[pymethods]
impl Server {
    #[new]
    #[pyo3(signature = (host, port, *, max_message_bytes, max_in_flight, max_buffered_bytes, max_connections,
                        request_timeout_s, idle_timeout_s, threads=1))]
    #[allow(clippy::too_many_arguments)]
    fn new(host: &str, port: u16, max_message_bytes: usize, max_in_flight: usize, max_buffered_bytes: usize,
           max_connections: usize, request_timeout_s: f64, idle_timeout_s: f64, threads: usize) -> PyResult<Self> {
        let listener = std::net::TcpListener::bind((host, port)).map_err(|e| PyOSError::new_err(e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| PyOSError::new_err(e.to_string()))?;
        let bound = listener.local_addr().map_err(|e| PyOSError::new_err(e.to_string()))?.port();
        let event_fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if event_fd < 0 {
            return Err(PyOSError::new_err(io::Error::last_os_error().to_string()));
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            counters: Arc::new(Counters::default()),
            max_in_flight, max_buffered_bytes, max_message_bytes, max_connections, event_fd,
            request_timeout: Duration::from_secs_f64(request_timeout_s.max(0.001)),
            idle_timeout: Duration::from_secs_f64(idle_timeout_s.max(0.001)),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("grpc-transport")
            .enable_all()
            .build()
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let (stop_accepting, accepting) = watch::channel(false);
        let (stop_serving, serving) = oneshot::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let service = Inference { shared: shared.clone() };
        let keepalive = Duration::from_secs_f64(idle_timeout_s.max(1.0));
        let accept_shared = shared.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("a non-blocking listener");
            let (connections, incoming) = mpsc::channel(64);
            tokio::spawn(accept(listener, accept_shared, connections, accepting));
            let served = tonic::transport::Server::builder()
                .max_concurrent_streams(STREAMS_PER_CONNECTION)
                .http2_keepalive_interval(Some(keepalive))
                .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                .add_service(service)
                .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(incoming), async {
                    let _ = serving.await;
                })
                .await;
            if let Err(error) = served {
                log_line(&format!("\"event\":\"grpc_transport_error\",\"error\":{:?}", error.to_string()));
            }
            done.store(true, Ordering::Release);
        });
        Ok(Server { shared, runtime: Some(runtime), stop_accepting, stop_serving: Some(stop_serving), finished, port: bound })
    }

    /// The eventfd that becomes readable when calls are waiting.
    fn fileno(&self) -> i32 {
        self.shared.event_fd
    }

    /// Every waiting call: (id, method name, message bytes, peer, authorization, x-api-key,
    /// cancelled). A cancelled call's client has gone: it is not to be run, only recorded.
    #[allow(clippy::type_complexity)]
    fn take<'py>(&self, py: Python<'py>)
        -> Vec<(u64, &'static str, Bound<'py, PyBytes>, String, Option<String>, Option<String>, bool)> {
        let mut counter: u64 = 0;
        // Read the eventfd before taking the queue: a call queued after the read wakes us again.
        unsafe { libc::read(self.shared.event_fd, &mut counter as *mut u64 as *mut libc::c_void, 8) };
        let calls = std::mem::take(&mut *self.shared.queue.lock().unwrap());
        let mut waiters = self.shared.waiters.lock().unwrap();
        calls
            .into_iter()
            .map(|c| {
                let gone = waiters.get(&c.id).map_or(true, |w| w.reply.is_closed());
                if gone {
                    waiters.remove(&c.id); // its slot is free again
                }
                (c.id, METHODS[c.method], PyBytes::new(py, &c.body), c.peer, c.authorization, c.api_key, gone)
            })
            .collect()
    }

    /// Answer call `id` with a serialized response message; false when its client has gone.
    fn reply(&self, id: u64, message: &[u8]) -> bool {
        let waiter = self.shared.waiters.lock().unwrap().remove(&id);
        waiter.map_or(false, |w| w.reply.send(Ok(Bytes::copy_from_slice(message))).is_ok())
    }

    /// End call `id` with a gRPC status code (its number) and message; false when its client has gone.
    fn abort(&self, id: u64, code: i32, message: &str) -> bool {
        let waiter = self.shared.waiters.lock().unwrap().remove(&id);
        waiter.map_or(false, |w| w.reply.send(Err(Status::new(Code::from_i32(code), message))).is_ok())
    }

    /// Calls that arrived and are not answered yet.
    fn in_flight(&self) -> usize {
        self.shared.counters.in_flight.load(Ordering::Acquire)
    }

    /// Close the listener (new connections are refused) and end connections gracefully (GOAWAY);
    /// calls in flight go on until answered.
    fn begin_stop(&mut self) {
        let _ = self.stop_accepting.send(true);
        if let Some(tx) = self.stop_serving.take() {
            let _ = tx.send(());
        }
    }

    /// Whether every connection has ended since `begin_stop`.
    fn stopped(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// End what is left: calls still unanswered get UNAVAILABLE, then the threads end.
    fn close(&mut self, py: Python<'_>) {
        self.begin_stop();
        let left: Vec<Waiter> = self.shared.waiters.lock().unwrap().drain().map(|(_, w)| w).collect();
        let answered = !left.is_empty();
        for waiter in left {
            let _ = waiter.reply.send(Err(Status::unavailable("the server stopped before answering; retry")));
        }
        if answered {
            py.allow_threads(|| std::thread::sleep(Duration::from_millis(50))); // let those answers go out
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
            unsafe { libc::close(self.shared.event_fd) };
        }
    }
}

#[pymodule]
fn modelstack_grpc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Server>()?;
    Ok(())
}
