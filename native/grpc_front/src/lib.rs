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
//! once), 100 concurrent streams per connection, at most `max_in_flight` calls between their whole
//! message and their answer sent (a stream with headers only holds no place), at most
//! `max_buffered_bytes` of messages held across calls (counted as they arrive) and as many answer
//! bytes not yet handed to HTTP/2, `max_message_bytes` per message (RESOURCE_EXHAUSTED, as grpc-core
//! says it, not tonic's OUT_OF_RANGE). Each cap is shared fairly (`Shared::make_room`, the rule of
//! `serving/shares.py`): when it is full, a connection within its share pushes out the connections
//! holding more (they are closed), and one over its share is refused. A message must be complete
//! `request_timeout_s` after its call began (DEADLINE_EXCEEDED), a connection's HTTP/2 preface
//! arrive within `request_timeout_s`; a connection with no call for `idle_timeout_s`, or whose
//! answers have not moved for as long (window 0), is closed. A call's place is held until its
//! answer is sent, even when its client went away; a call whose client is gone before Python takes
//! it is handed over marked cancelled, not run. A client that half-closes still gets its answers.
//! Client mistakes get client-error codes (no message, a bad compressed flag: INVALID_ARGUMENT; a
//! content type that is not gRPC's: HTTP 415; metadata over 16 KiB: RESOURCE_EXHAUSTED). Accept
//! errors (EMFILE...) are retried after a pause and logged at most once a second, never waiting
//! for a stalled log reader. `begin_stop` closes the listener (new connections are refused at
//! once) and sends GOAWAY; `close` answers what is left with UNAVAILABLE and ends the threads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
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
const MAX_PENDING_RESETS: usize = 1000;
const EOF_STALL: Duration = Duration::from_secs(1);
// After a client's FIN with no call in progress: how many quiet turns in a row before its end is
// reported (a call already read may still be on its way to the service).
const EOF_QUIET_TURNS: u32 = 8;
const MAX_METADATA_BYTES: usize = 16 * 1024; // grpc-core's default hard limit
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

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
    unsent: AtomicUsize,
    connections: AtomicUsize,
}

/// A call's hold on the bounds: its request bytes as they arrive until Python answers, its place
/// under `max_in_flight` from the whole message until the answer is sent, the answer's bytes
/// until they are handed to HTTP/2 (at most `SEND_CHUNK` at a time). Whatever it still holds is
/// given back when the last of the transport's references to the call goes.
struct Slot {
    counters: Arc<Counters>,
    connection: Arc<ConnectionState>,
    request_bytes: AtomicUsize,
    response_bytes: AtomicUsize,
    place: AtomicBool,
    handled: AtomicBool, // the message was read whole and handed over (its errors are Python's)
}
impl Slot {
    fn release_request(&self) {
        let n = self.request_bytes.swap(0, Ordering::AcqRel);
        self.counters.buffered.fetch_sub(n, Ordering::AcqRel);
        self.connection.buffered.fetch_sub(n, Ordering::AcqRel);
    }
    fn sent(&self, n: usize) {
        let n = n.min(self.response_bytes.load(Ordering::Acquire));
        self.response_bytes.fetch_sub(n, Ordering::AcqRel);
        self.counters.unsent.fetch_sub(n, Ordering::AcqRel);
        self.connection.unsent.fetch_sub(n, Ordering::AcqRel);
    }
}
impl Drop for Slot {
    fn drop(&mut self) {
        self.release_request();
        let unsent = self.response_bytes.swap(0, Ordering::AcqRel);
        self.counters.unsent.fetch_sub(unsent, Ordering::AcqRel);
        self.connection.unsent.fetch_sub(unsent, Ordering::AcqRel);
        if self.place.swap(false, Ordering::AcqRel) {
            self.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.connection.places.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A connection's state as its timers, its calls and the fair shares read it.
struct ConnectionState {
    streams: AtomicUsize, // calls in progress, from their headers until their answer is sent
    began: AtomicU64,     // calls ever begun
    places: AtomicUsize,  // of them, those holding a place under max_in_flight
    buffered: AtomicUsize, // request bytes its calls hold
    unsent: AtomicUsize,  // answer bytes not yet handed to HTTP/2
    sending: AtomicUsize, // answers ready and not yet all sent
    last_call_ms: AtomicU64, // since `epoch`: when the last call ended
    last_progress_ms: AtomicU64, // since `epoch`: when an answer last moved (or became ready)
    epoch: Instant,
    cut: AtomicBool,      // to be closed: a connection within its share needs what this one holds
    eof: AtomicBool,      // the client half-closed: reported once its calls are answered
    waker: Mutex<Option<Waker>>, // the connection's reader, woken to notice `cut` or the end of calls
}
impl ConnectionState {
    fn new() -> Self {
        ConnectionState {
            streams: AtomicUsize::new(0), began: AtomicU64::new(0), places: AtomicUsize::new(0),
            buffered: AtomicUsize::new(0),
            unsent: AtomicUsize::new(0), sending: AtomicUsize::new(0),
            last_call_ms: AtomicU64::new(0), last_progress_ms: AtomicU64::new(0), epoch: Instant::now(),
            cut: AtomicBool::new(false), eof: AtomicBool::new(false), waker: Mutex::new(None),
        }
    }
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
    fn stream_began(&self) {
        self.began.fetch_add(1, Ordering::AcqRel);
        self.streams.fetch_add(1, Ordering::AcqRel);
    }
    fn stream_ended(&self) {
        self.last_call_ms.store(self.now_ms(), Ordering::Release);
        if self.streams.fetch_sub(1, Ordering::AcqRel) == 1 && self.eof.load(Ordering::Acquire) {
            self.wake(); // the half-closed client has its answers: the reader reports the end now
        }
    }
    fn progressed(&self) {
        self.last_progress_ms.store(self.now_ms(), Ordering::Release);
    }
    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.wake();
    }
    fn wake(&self) {
        if let Some(waker) = self.waker.lock().unwrap().take() {
            waker.wake();
        }
    }
    /// When the connection is to be closed unless something happens first: answers waiting that
    /// have not moved for `idle` (a client that does not read them: new calls do not count as
    /// moving), or no call for `idle`.
    fn deadline(&self, idle: Duration) -> Option<Instant> {
        if self.sending.load(Ordering::Acquire) > 0 || self.unsent.load(Ordering::Acquire) > 0 {
            // After the client's FIN its answers must move at once: a client that closed its
            // socket (not only its side) looks the same until something is written to it.
            let stall = if self.eof.load(Ordering::Acquire) { idle.min(EOF_STALL) } else { idle };
            return Some(self.epoch + Duration::from_millis(self.last_progress_ms.load(Ordering::Acquire)) + stall);
        }
        if self.streams.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.epoch + Duration::from_millis(self.last_call_ms.load(Ordering::Acquire)) + idle)
    }
}

/// A call's stream in progress, for the idle timer and a half-closed client's end.
struct StreamGuard(Arc<ConnectionState>);
impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.stream_ended();
    }
}

/// The connection's address and state, as tonic puts them in each request's extensions.
#[derive(Clone)]
struct ConnectionInfo {
    remote: Option<std::net::SocketAddr>,
    state: Arc<ConnectionState>,
}

struct Waiter {
    reply: oneshot::Sender<Reply>,
    slot: Arc<Slot>,
}

struct Shared {
    queue: Mutex<Vec<Call>>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    connections: Mutex<Vec<Weak<ConnectionState>>>, // for fair shares: who holds what
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

    /// Whether `amount` more of a cap (`total` of `limit`, read per connection by `held`) may go to
    /// `own`, which holds `own_held` of it: it fits, or `own` stays within its share and the connections holding more than it
    /// would are cut, largest first, until it does (`serving/shares.py` is the same rule).
    #[allow(clippy::too_many_arguments)]
    fn make_room(&self, own: &Arc<ConnectionState>, own_held: usize, total: usize, limit: usize, amount: usize,
                 floor: usize, held: impl Fn(&ConnectionState) -> usize) -> bool {
        if total + amount <= limit {
            return true;
        }
        let mut holding: Vec<(usize, Arc<ConnectionState>)> = {
            let mut connections = self.connections.lock().unwrap();
            connections.retain(|weak| weak.strong_count() > 0);
            connections.iter().filter_map(Weak::upgrade)
                .filter(|c| !Arc::ptr_eq(c, own) && !c.cut.load(Ordering::Acquire))
                .map(|c| (held(&c), c)).filter(|(n, _)| *n > 0).collect()
        };
        let wanted = own_held + amount;
        if wanted > (limit / (holding.len() + 1)).max(floor) {
            return false;
        }
        holding.sort_by(|a, b| b.0.cmp(&a.0));
        let mut left = total;
        let mut cut = Vec::new();
        for (n, connection) in holding {
            if n <= wanted {
                return false;
            }
            cut.push(connection);
            left = left.saturating_sub(n);
            if left + amount <= limit {
                for connection in cut {
                    connection.cut(); // its calls and answers are given back as it closes
                }
                return true;
            }
        }
        false
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
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>, // armed only once the body has to be waited for
}
impl Body for Counted {
    type Data = Bytes;
    type Error = Status;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() && self.expired(cx) {
            // A stalled message would hold its stream and bytes: it must arrive in time, like an HTTP body.
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the message did not arrive within {} s (request_timeout_s); send it whole",
                self.shared.request_timeout.as_secs_f64()
            )))));
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let n = data.len();
                let (shared, slot) = (&self.shared, &self.slot);
                let total = shared.counters.buffered.fetch_add(n, Ordering::AcqRel);
                slot.request_bytes.fetch_add(n, Ordering::AcqRel);
                let own = slot.connection.buffered.fetch_add(n, Ordering::AcqRel);
                // Within its share, a call may push out the connections holding more than it.
                if !shared.make_room(&slot.connection, own, total, shared.max_buffered_bytes, n, shared.max_message_bytes,
                                     |c| c.buffered.load(Ordering::Acquire)) {
                    return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                        "the server holds more than {} bytes of messages in progress (max_buffered_bytes); retry later",
                        shared.max_buffered_bytes
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

// -- an answer's body: handed to HTTP/2 a chunk at a time, counted until then --

/// At most this much of an answer leaves the count at once: hyper takes one chunk before it has
/// window to send it, and h2 buffers what it takes.
const SEND_CHUNK: usize = 16 * 1024;

struct Sending {
    inner: BoxBody,
    rest: Bytes,
    slot: Option<Arc<Slot>>,
    connection: Arc<ConnectionState>,
    polled: bool,  // hyper takes the first chunk before the client's window allows a byte
    done: bool,
    _stream: StreamGuard,
}
impl Sending {
    fn new(inner: BoxBody, slot: Arc<Slot>, stream: StreamGuard) -> Self {
        let connection = slot.connection.clone();
        if connection.sending.fetch_add(1, Ordering::AcqRel) == 0 {
            connection.progressed(); // the first answer waiting: a stall is timed from here
        }
        Sending { inner, rest: Bytes::new(), slot: Some(slot), connection, polled: false, done: false, _stream: stream }
    }
    fn finish(&mut self) {
        self.slot = None; // the answer is out: its place and bytes are free
        if !self.done {
            self.done = true;
            self.connection.sending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
impl Drop for Sending {
    fn drop(&mut self) {
        self.finish();
    }
}
impl Body for Sending {
    type Data = Bytes;
    type Error = Status;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        // hyper asks for more only once what it took before had window to go: that is progress.
        if std::mem::replace(&mut self.polled, true) {
            self.connection.progressed();
        }
        if self.rest.is_empty() {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.rest = data,
                    Err(frame) => {
                        self.finish(); // trailers
                        return Poll::Ready(Some(Ok(frame)));
                    }
                },
                Poll::Ready(None) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                other => return other,
            }
        }
        let n = self.rest.len().min(SEND_CHUNK);
        let chunk = self.rest.split_to(n);
        if let Some(slot) = &self.slot {
            slot.sent(n);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
    fn is_end_stream(&self) -> bool { self.rest.is_empty() && self.inner.is_end_stream() }
    fn size_hint(&self) -> http_body::SizeHint { http_body::SizeHint::default() }
}

struct Handler {
    shared: Arc<Shared>,
    method: usize,
    slot: Arc<Slot>,
}
impl UnaryService<Bytes> for Handler {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let shared = self.shared.clone();
        let slot = self.slot.clone();
        slot.handled.store(true, Ordering::Release);
        // The call's place under max_in_flight, taken once its whole message is here (a stream that
        // only sent headers holds none), within the connection's share.
        let total = shared.counters.in_flight.fetch_add(1, Ordering::AcqRel);
        let own = slot.connection.places.fetch_add(1, Ordering::AcqRel);
        slot.place.store(true, Ordering::Release);
        if !shared.make_room(&slot.connection, own, total, shared.max_in_flight, 1, 1, |c| c.places.load(Ordering::Acquire)) {
            let max = shared.max_in_flight;
            return Box::pin(async move {
                Err(Status::resource_exhausted(format!("more than {max} calls in progress (max_connections); retry later")))
            });
        }
        let method = self.method;
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
        shared.waiters.lock().unwrap().insert(id, Waiter { reply: tx, slot });
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
        if let Some(refused) = refuse_head(&request) {
            return Box::pin(async move { Ok(refused) });
        }
        let connection = request.extensions().get::<ConnectionInfo>()
            .map_or_else(|| Arc::new(ConnectionState::new()), |info| info.state.clone());
        connection.stream_began();
        let stream = StreamGuard(connection.clone());
        let slot = Arc::new(Slot {
            counters: shared.counters.clone(), connection, request_bytes: AtomicUsize::new(0),
            response_bytes: AtomicUsize::new(0), place: AtomicBool::new(false), handled: AtomicBool::new(false),
        });
        let deadline = Instant::now() + shared.request_timeout;
        let request = request.map(|inner| {
            BoxBody::new(Counted { inner, shared: shared.clone(), slot: slot.clone(), deadline, timer: None })
        });
        Box::pin(async move {
            let max_message = shared.max_message_bytes;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(usize::MAX);
            let response = grpc.unary(Handler { shared, method, slot: slot.clone() }, request).await;
            let code = response.headers().get("grpc-status").cloned();
            let response = if code.as_ref().map_or(false, |v| v == "11") {
                // Only tonic's size check ends a call with OUT_OF_RANGE, before the handler runs.
                Status::resource_exhausted(format!(
                    "the message is over {max_message} bytes (max_body_bytes); send fewer samples per call or raise it"
                ))
                .into_http()
            } else if code.as_ref().map_or(false, |v| v == "13") && !slot.handled.load(Ordering::Acquire) {
                // tonic's INTERNAL before the message is handed over is the client's framing
                // (no message, a compressed flag without grpc-encoding, an unknown flag): its fault.
                let (mut parts, body) = response.into_parts();
                parts.headers.insert("grpc-status", http::HeaderValue::from_static("3"));
                http::Response::from_parts(parts, body)
            } else {
                response
            };
            Ok(response.map(|inner| BoxBody::new(Sending::new(inner, slot, stream))))
        })
    }
}

/// A trailers-only answer for a call whose headers already say it cannot go on: a content type
/// that is not gRPC's (HTTP 415, as the protocol says) or metadata over `MAX_METADATA_BYTES`.
fn refuse_head(request: &http::Request<BoxBody>) -> Option<http::Response<BoxBody>> {
    let content_type = request.headers().get(http::header::CONTENT_TYPE).map(|v| v.as_bytes()).unwrap_or(b"");
    let grpc = content_type.strip_prefix(b"application/grpc")
        .map_or(false, |rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';');
    if !grpc {
        let mut response = Status::invalid_argument(
            "the content type is not gRPC's; send content-type: application/grpc"
        ).into_http();
        *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Some(response);
    }
    // Each field as HPACK counts it (RFC 7541 section 4.1: name, value and 32 bytes).
    let size: usize = request.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
    if size > MAX_METADATA_BYTES {
        return Some(Status::resource_exhausted(format!(
            "the call's metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}: send less metadata"
        )).into_http());
    }
    None
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
    eof_turn: Option<(u64, u64)>, // after the client's FIN: calls begun and bytes written as of the last turn
    eof_quiet_turns: u32,         // how many turns in a row have been quiet since
    written: u64,
}
impl Connection {
    /// Until the preface arrives: the handshake deadline; then the idle or stalled-answer one.
    fn deadline(&self) -> Option<Instant> {
        if self.read < PREFACE_BYTES {
            Some(self.opened + self.handshake)
        } else {
            self.info.state.deadline(self.idle)
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
        let state = self.info.state.clone();
        if state.cut.load(Ordering::Acquire) {
            // Over its share of a cap another connection needs: closing gives back all it holds.
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "cut to make room")));
        }
        if !state.eof.load(Ordering::Acquire) {
            let before = buf.filled().len();
            match Pin::new(&mut self.stream).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len() - before;
                    self.read = self.read.saturating_add(n);
                    if n > 0 || buf.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // The client half-closed: it still gets the answers to its calls, those h2 has
                    // read but not yet handed over included. The end is reported once a whole turn
                    // of the connection began no call and none is in progress (`stream_ended`
                    // wakes us when the last one is sent).
                    state.eof.store(true, Ordering::Release);
                }
                Poll::Pending => {}
                other => return other,
            }
        }
        remember(&state, cx);
        if state.eof.load(Ordering::Acquire) {
            // h2 drops what it has not written when the reader ends: the end waits for a whole
            // turn of the connection that began no call and wrote nothing, with no call left.
            // (h2 reads before it writes in a turn: a quiet turn is seen from the next one.)
            let turn = (state.began.load(Ordering::Acquire), self.written);
            if state.streams.load(Ordering::Acquire) > 0 {
                self.eof_turn = None; // `stream_ended` wakes us when the last one is done
                self.eof_quiet_turns = 0;
            } else if self.eof_turn == Some(turn) {
                // A call h2 has read may still be on its way to the service (a spawned task): the
                // end waits for EOF_QUIET_TURNS quiet turns in a row, each after a yield to the runtime.
                self.eof_quiet_turns += 1;
                if self.eof_quiet_turns >= EOF_QUIET_TURNS {
                    return Poll::Ready(Ok(()));
                }
                cx.waker().wake_by_ref();
            } else {
                self.eof_turn = Some(turn);
                self.eof_quiet_turns = 0;
                cx.waker().wake_by_ref(); // another turn: h2 hands over or writes what it holds
            }
        }
        // Waiting for the client: close the connection once its deadline has passed.
        if let Some(deadline) = self.deadline() {
            if self.armed != Some(deadline) {
                self.armed = Some(deadline);
                self.timer.as_mut().reset(tokio::time::Instant::from_std(deadline));
            }
            // The timer is ready at once when the deadline has already passed.
            if self.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "handshake, idle or stalled answers")));
            }
        }
        Poll::Pending
    }
}

/// Keep the reader's waker, so a cut or the end of a half-closed client's calls can wake it.
fn remember(state: &ConnectionState, cx: &Context<'_>) {
    let mut waker = state.waker.lock().unwrap();
    if !waker.as_ref().map_or(false, |w| w.will_wake(cx.waker())) {
        *waker = Some(cx.waker().clone());
    }
}
impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written += n as u64;
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.written += n as u64;
        }
        polled
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
                let state = Arc::new(ConnectionState::new());
                shared.connections.lock().unwrap().push(Arc::downgrade(&state));
                let info = ConnectionInfo { remote: stream.peer_addr().ok(), state };
                let connection = Connection {
                    stream, counters, info, read: 0, opened: Instant::now(),
                    handshake: shared.request_timeout, idle: shared.idle_timeout,
                    timer: Box::pin(tokio::time::sleep(shared.request_timeout)), armed: None, eof_turn: None, eof_quiet_turns: 0, written: 0,
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
    let line = format!(
        "{{\"ts\":\"{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z\",{fields}}}\n",
        rem / 3600, rem % 3600 / 60, rem % 60
    );
    // Never wait for a stalled log reader (a transport thread would stop serving): written only
    // when stderr has room, in one write of at most PIPE_BUF bytes (atomic on a pipe), else dropped.
    let bytes = &line.as_bytes()[..line.len().min(libc::PIPE_BUF)];
    let mut ready = libc::pollfd { fd: 2, events: libc::POLLOUT, revents: 0 };
    if unsafe { libc::poll(&mut ready, 1, 0) } == 1 && ready.revents & libc::POLLOUT != 0 {
        unsafe { libc::write(2, bytes.as_ptr() as *const libc::c_void, bytes.len()) };
    }
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
            connections: Mutex::new(Vec::new()),
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
                // h2's guard against reset floods (CVE-2023-44487) closes a connection once 20
                // streams reset by the client wait to be accepted: under load, calls with short
                // deadlines do that, and every other call on the connection failed with them.
                // A reset stream waiting costs a slab entry; nothing runs for it.
                .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
                // Metadata up to this reaches the service, which answers RESOURCE_EXHAUSTED over
                // MAX_METADATA_BYTES; beyond it h2 itself answers HTTP 431.
                .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
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
    /// The answer counts against the cap on unsent answer bytes (`max_buffered_bytes`) until it is
    /// handed to HTTP/2; a client over its share of it gets RESOURCE_EXHAUSTED instead.
    fn reply(&self, id: u64, message: &[u8]) -> bool {
        let Some(waiter) = self.shared.waiters.lock().unwrap().remove(&id) else { return false };
        let (shared, slot) = (&self.shared, &waiter.slot);
        slot.release_request(); // Python is done with the message
        if waiter.reply.is_closed() {
            return false;
        }
        let n = message.len();
        let connection = &slot.connection;
        let total = shared.counters.unsent.fetch_add(n, Ordering::AcqRel);
        let own = connection.unsent.fetch_add(n, Ordering::AcqRel);
        slot.response_bytes.fetch_add(n, Ordering::AcqRel);
        if !shared.make_room(connection, own, total, shared.max_buffered_bytes, n, shared.max_message_bytes,
                             |c| c.unsent.load(Ordering::Acquire)) {
            slot.sent(n);
            let status = Status::resource_exhausted(format!(
                "the client has not read {own} bytes of answers on this connection: more than its share of \
                 {} (max_buffered_bytes); read them", shared.max_buffered_bytes));
            return waiter.reply.send(Err(status)).is_ok();
        }
        waiter.reply.send(Ok(Bytes::copy_from_slice(message))).is_ok()
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
