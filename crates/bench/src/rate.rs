//! `hoist-bench rate --url http://127.0.0.1:PORT/ --rate R [--duration S] [--connections C]`:
//! an open-loop HTTP/1.1 load generator, for the fixed-rate latency of
//! `bench/mesh/run.sh` (Debian ships wrk, not wrk2).
//!
//! Request `i` is due `i / R` seconds after the start and goes out on connection
//! `i mod C`; each of the C keep-alive connections has at most one request in flight.
//! Latency is measured from the time a request was due, not from the time it was written:
//! a slow response delays the next send on its connection, and that wait counts
//! (coordinated omission corrected, as in wrk2). Wake-ups use one timerfd per connection,
//! because tokio's timer works in whole milliseconds, which at 20,000 requests per second
//! would be most of what is measured.
//!
//! Everything runs on one thread (like `wrk -t1`), on its own current-thread runtime, so
//! the generator takes at most one core from the machine it measures.
//!
//! Prints one line of `key=value` pairs, latencies in microseconds:
//! `rate=R connections=C duration_s=S scheduled=N sent=N errors=N unsent=N p50_us=..
//! p90_us=.. p99_us=.. p999_us=.. max_us=..`. `errors` counts every scheduled request
//! that got no 2xx response (refused connection, I/O error, timeout, other status, or never
//! sent because the run overran its grace period; the last are also `unsent`). Errors
//! are data, not a failure of the command.
//!
//! It knows only what the benchmark needs: GET, bodies sized by Content-Length, and
//! keep-alive. It is no general HTTP client: a chunked response counts as an error.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// How long one connect, or one request and its response, may take before it counts as
/// an error (and the connection is dropped).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long past its duration a run may go on sending a backlog of late requests; what
/// is still unsent then is counted as errors, so the run stays bounded.
const GRACE: Duration = Duration::from_secs(5);
/// A response head larger than this is an error, not something to wait for.
const MAX_HEAD: usize = 64 * 1024;
/// Histogram bounds, in nanoseconds: 100 ns resolution up to 60 s, 3 significant digits.
const HISTOGRAM_LOW_NS: u64 = 100;
const HISTOGRAM_HIGH_NS: u64 = 60_000_000_000;

#[derive(Debug, Clone, PartialEq)]
struct RateConfig {
    /// `host:port` as written in the URL, sent as the Host header.
    authority: String,
    path: String,
    rate: u64,
    duration: Duration,
    connections: usize,
}

/// What a run counted; `histogram` holds the latencies of 2xx responses, in nanoseconds.
struct RunReport {
    histogram: Histogram<u64>,
    scheduled: u64,
    sent: u64,
    errors: u64,
    unsent: u64,
}

impl RunReport {
    fn new(scheduled: u64) -> anyhow::Result<Self> {
        Ok(Self {
            histogram: new_histogram()?,
            scheduled,
            sent: 0,
            errors: 0,
            unsent: 0,
        })
    }

    fn merge(&mut self, other: &RunReport) -> anyhow::Result<()> {
        self.histogram
            .add(&other.histogram)
            .context("merging latency histograms")?;
        self.sent += other.sent;
        self.errors += other.errors;
        self.unsent += other.unsent;
        Ok(())
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(HISTOGRAM_LOW_NS, HISTOGRAM_HIGH_NS, 3)
        .context("creating the latency histogram")
}

pub(crate) async fn run(args: &[String]) -> anyhow::Result<()> {
    let config = parse_args(args)?;
    let line_config = config.clone();
    // A runtime of its own, on one thread: see the module doc.
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<RunReport> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the generator's runtime")?;
        runtime.block_on(generate(config))
    })
    .await
    .context("the generator thread panicked")??;
    println!("{}", summary_line(&line_config, &report));
    Ok(())
}

fn parse_args(args: &[String]) -> anyhow::Result<RateConfig> {
    let mut url = None;
    let mut rate = None;
    let mut duration = Duration::from_secs(5);
    let mut connections = 32;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => url = Some(value.clone()),
            "--rate" => rate = Some(value.parse::<u64>().context("--rate needs a number")?),
            "--duration" => {
                // Seconds (`5`, `2.5`) or Docker's syntax (`30s`, `1m30s`).
                duration = hoist_types::duration::parse_duration(value)
                    .context("--duration needs seconds")?;
                if duration.is_zero() || duration > Duration::from_secs(3600) {
                    bail!("--duration must be in (0, 3600] seconds");
                }
            }
            "--connections" => {
                connections = value.parse().context("--connections needs a number")?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let (authority, path) = parse_url(&url.context("--url is required")?)?;
    let rate = rate.context("--rate is required")?;
    if rate == 0 || connections == 0 {
        bail!("--rate and --connections must be positive");
    }
    Ok(RateConfig {
        authority,
        path,
        rate,
        duration,
        connections,
    })
}

/// Splits `http://host:port/path` into `host:port` and `/path`.
fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    Ok((authority.to_string(), path.to_string()))
}

/// How many requests a run schedules: one every 1/rate seconds for `duration`.
fn total_requests(rate: u64, duration: Duration) -> u64 {
    let total = u128::from(rate) * duration.as_nanos() / 1_000_000_000;
    u64::try_from(total).unwrap_or(u64::MAX)
}

/// When request `index` is due, counted from the start of the run: `index / rate` seconds.
fn scheduled_offset(index: u64, rate: u64) -> Duration {
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The indices of the requests connection `connection_idx` sends, in order.
fn connection_schedule(
    connection_idx: usize,
    n_connections: usize,
    total: u64,
) -> impl Iterator<Item = u64> {
    (connection_idx as u64..total).step_by(n_connections)
}

/// The parts of a response head the generator acts on.
#[derive(Debug, PartialEq)]
struct ResponseHead {
    status: u16,
    /// Bytes up to and including the blank line that ends the head.
    head_len: usize,
    body_len: usize,
    /// The server will close the connection after this response.
    close: bool,
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is incomplete.
fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, String> {
    let Some(end) = buf.windows(4).position(|window| window == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(format!("no end of head in {} bytes", buf.len()));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let mut body_len = None;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("malformed header line {line:?}"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            body_len = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("unsupported Transfer-Encoding {value:?}"));
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                close = true;
            } else if value.contains("keep-alive") {
                close = false;
            }
        }
    }
    // 1xx, 204 and 304 responses have no body whatever their headers say.
    let bodiless = status < 200 || status == 204 || status == 304;
    let body_len = match body_len {
        _ if bodiless => 0,
        Some(length) => length,
        None => return Err("no Content-Length".to_string()),
    };
    Ok(Some(ResponseHead {
        status,
        head_len: end + 4,
        body_len,
        close,
    }))
}

fn request_bytes(config: &RateConfig) -> Vec<u8> {
    // The same request wrk sends.
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        config.path, config.authority
    )
    .into_bytes()
}

fn summary_line(config: &RateConfig, report: &RunReport) -> String {
    let histogram = &report.histogram;
    let micros = |nanos: u64| format!("{:.1}", nanos as f64 / 1000.0);
    let quantile = |fraction: f64| {
        if histogram.is_empty() {
            "-".to_string()
        } else {
            micros(histogram.value_at_quantile(fraction))
        }
    };
    format!(
        "rate={} connections={} duration_s={} scheduled={} sent={} errors={} unsent={} \
         p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        config.rate,
        config.connections,
        config.duration.as_secs_f64(),
        report.scheduled,
        report.sent,
        report.errors,
        report.unsent,
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(0.999),
        if histogram.is_empty() {
            "-".to_string()
        } else {
            micros(histogram.max())
        },
    )
}

async fn generate(config: RateConfig) -> anyhow::Result<RunReport> {
    let addr = tokio::net::lookup_host(&config.authority)
        .await
        .with_context(|| format!("resolving {}", config.authority))?
        .next()
        .with_context(|| format!("{} has no address", config.authority))?;
    let total = total_requests(config.rate, config.duration);
    let request: std::sync::Arc<[u8]> = request_bytes(&config).into();
    // Connections open before the clock starts, all at once (a server that drops SYNs
    // costs one IO_TIMEOUT, not one per connection); one that fails is retried on its
    // first request, which counts as an error if that fails too.
    let mut connecting = tokio::task::JoinSet::new();
    for connection_idx in 0..config.connections {
        connecting.spawn(async move { (connection_idx, connect(addr).await.ok()) });
    }
    let mut streams: Vec<Option<TcpStream>> = (0..config.connections).map(|_| None).collect();
    while let Some(connected) = connecting.join_next().await {
        let (connection_idx, stream) = connected.context("a connect task panicked")?;
        streams[connection_idx] = stream;
    }
    let start = Instant::now();
    let stop = start + config.duration + GRACE;
    let mut tasks = tokio::task::JoinSet::new();
    for (connection_idx, stream) in streams.into_iter().enumerate() {
        let schedule = Schedule {
            start,
            stop,
            rate: config.rate,
            connection_idx,
            n_connections: config.connections,
            total,
        };
        tasks.spawn(drive_connection(addr, request.clone(), schedule, stream));
    }
    let mut report = RunReport::new(total)?;
    while let Some(finished) = tasks.join_next().await {
        let connection_report = finished.context("a connection task panicked")??;
        report.merge(&connection_report)?;
    }
    Ok(report)
}

/// The requests one connection sends, and when.
struct Schedule {
    start: Instant,
    /// Past this, requests are no longer sent (they count as unsent errors).
    stop: Instant,
    rate: u64,
    connection_idx: usize,
    n_connections: usize,
    total: u64,
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn drive_connection(
    addr: SocketAddr,
    request: std::sync::Arc<[u8]>,
    schedule: Schedule,
    mut stream: Option<TcpStream>,
) -> anyhow::Result<RunReport> {
    let timer = Timer::new().context("creating a timerfd")?;
    let mut report = RunReport::new(0)?;
    let mut buf = Vec::with_capacity(4096);
    let mut indices = connection_schedule(
        schedule.connection_idx,
        schedule.n_connections,
        schedule.total,
    );
    while let Some(index) = indices.next() {
        if Instant::now() >= schedule.stop {
            let unsent = 1 + indices.count() as u64;
            report.unsent += unsent;
            report.errors += unsent;
            break;
        }
        let due = schedule.start + scheduled_offset(index, schedule.rate);
        timer
            .sleep_until(due)
            .await
            .context("waiting on the timerfd")?;
        let live = match stream.as_mut() {
            Some(live) => live,
            None => match connect(addr).await {
                Ok(fresh) => stream.insert(fresh),
                Err(_) => {
                    report.errors += 1;
                    continue;
                }
            },
        };
        report.sent += 1;
        match tokio::time::timeout(IO_TIMEOUT, exchange(live, &request, &mut buf)).await {
            Ok(Ok(head)) => {
                if (200..300).contains(&head.status) {
                    let nanos = u64::try_from(due.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    report.histogram.saturating_record(nanos);
                } else {
                    report.errors += 1;
                }
                if head.close {
                    stream = None;
                }
            }
            Ok(Err(_)) | Err(_) => {
                report.errors += 1;
                stream = None;
            }
        }
    }
    Ok(report)
}

/// Writes the request and reads one whole response into `buf`.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> io::Result<ResponseHead> {
    stream.write_all(request).await?;
    // One request in flight: nothing can be left over from the previous response.
    buf.clear();
    loop {
        let parsed = parse_response_head(buf)
            .map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, reason))?;
        if let Some(head) = parsed {
            let whole = head.head_len + head.body_len;
            while buf.len() < whole {
                read_more(stream, buf).await?;
            }
            return Ok(head);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-response",
        ));
    }
    Ok(())
}

/// A one-shot timer with nanosecond resolution: a non-blocking timerfd (CLOCK_MONOTONIC,
/// the clock `Instant` reads) watched by the runtime's reactor.
struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    fn new() -> io::Result<Self> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new file
        // descriptor that nothing else owns.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a valid descriptor just returned to us (see above).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open, and the same
        // one, for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Returns at `due` (at once if it has passed).
    async fn sleep_until(&self, due: Instant) -> io::Result<()> {
        let wait = due.saturating_duration_since(Instant::now());
        // A zero it_value would disarm the timer rather than fire it.
        if wait.is_zero() {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: the descriptor is a timerfd we own; `spec` outlives the call; the old
        // value is not asked for (null).
        let armed =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if armed < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = self.fd.readable().await?;
            // Reading the expiration count resets readiness; EAGAIN (the reactor's cached
            // readiness from an earlier expiry) clears it and waits again.
            let read = guard.try_io(|fd| {
                let mut expirations = 0u64;
                // SAFETY: reads at most 8 bytes into a live, aligned u64.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        (&mut expirations as *mut u64).cast::<libc::c_void>(),
                        std::mem::size_of::<u64>(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn requests_are_due_every_one_over_rate_seconds() {
        assert_eq!(scheduled_offset(0, 20_000), Duration::ZERO);
        assert_eq!(scheduled_offset(1, 20_000), Duration::from_micros(50));
        assert_eq!(scheduled_offset(20_000, 20_000), Duration::from_secs(1));
        assert_eq!(scheduled_offset(1, 3), Duration::from_nanos(333_333_333));
        // No overflow of u64 nanoseconds in the intermediate product.
        assert_eq!(
            scheduled_offset(u64::MAX / 2, u64::MAX / 2),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_run_schedules_rate_times_duration_requests() {
        assert_eq!(total_requests(20_000, Duration::from_secs(5)), 100_000);
        assert_eq!(total_requests(3, Duration::from_millis(500)), 1);
        assert_eq!(total_requests(1, Duration::from_millis(999)), 0);
    }

    #[test]
    fn connections_share_the_schedule_round_robin_without_gaps_or_repeats() {
        assert_eq!(
            connection_schedule(1, 4, 10).collect::<Vec<_>>(),
            vec![1, 5, 9]
        );
        assert_eq!(connection_schedule(3, 4, 3).count(), 0);
        let mut all: Vec<u64> = (0..7)
            .flat_map(|idx| connection_schedule(idx, 7, 100))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_complete_head_gives_its_length_and_body_length() {
        let response =
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 12\r\n\r\nhello world\n";
        let head = parse_response_head(response).unwrap().unwrap();
        assert_eq!(
            head,
            ResponseHead {
                status: 200,
                head_len: response.len() - 12,
                body_len: 12,
                close: false,
            }
        );
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert_eq!(parse_response_head(b""), Ok(None));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n"),
            Ok(None)
        );
        assert!(parse_response_head(&vec![b'x'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn connection_close_and_http_1_0_end_the_connection() {
        let close =
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n";
        let head = parse_response_head(close).unwrap().unwrap();
        assert_eq!((head.status, head.close), (503, true));
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert!(parse_response_head(old).unwrap().unwrap().close);
        let old_kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
        assert!(!parse_response_head(old_kept).unwrap().unwrap().close);
    }

    #[test]
    fn responses_without_a_known_length_are_errors() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_response_head(chunked).is_err());
        let no_length = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n";
        assert!(parse_response_head(no_length).is_err());
        let bad = b"HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\n";
        assert!(parse_response_head(bad).is_err());
        let not_http = b"SSH-2.0-OpenSSH\r\n\r\n";
        assert!(parse_response_head(not_http).is_err());
        // 204 has no body, with or without a length.
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response_head(empty).unwrap().unwrap().body_len, 0);
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/").unwrap(),
            ("127.0.0.1:8080".to_string(), "/".to_string())
        );
        assert_eq!(
            parse_url("http://localhost:80").unwrap(),
            ("localhost:80".to_string(), "/".to_string())
        );
        assert_eq!(parse_url("http://h:1/a/b?c").unwrap().1, "/a/b?c");
        assert!(parse_url("https://127.0.0.1/").is_err());
        assert!(parse_url("http:///").is_err());
    }

    #[test]
    fn arguments_have_defaults_and_are_checked() {
        let config =
            parse_args(&strings(&["--url", "http://127.0.0.1:9/", "--rate", "500"])).unwrap();
        assert_eq!(
            config,
            RateConfig {
                authority: "127.0.0.1:9".into(),
                path: "/".into(),
                rate: 500,
                duration: Duration::from_secs(5),
                connections: 32,
            }
        );
        let config = parse_args(&strings(&[
            "--url",
            "http://127.0.0.1:9/",
            "--rate",
            "500",
            "--duration",
            "0.5",
            "--connections",
            "4",
        ]))
        .unwrap();
        assert_eq!(
            (config.duration, config.connections),
            (Duration::from_millis(500), 4)
        );
        assert!(parse_args(&strings(&["--url", "http://127.0.0.1:9/"])).is_err());
        assert!(parse_args(&strings(&["--rate", "5"])).is_err());
        assert!(parse_args(&strings(&["--url", "http://a:1/", "--rate", "0"])).is_err());
        assert!(parse_args(&strings(&["--url", "http://a:1/", "--rate"])).is_err());
        assert!(parse_args(&strings(&[
            "--url",
            "http://a:1/",
            "--rate",
            "1",
            "-x",
            "1"
        ]))
        .is_err());
    }

    #[test]
    fn the_summary_line_is_key_value_pairs_in_microseconds() {
        let config = parse_args(&strings(&["--url", "http://a:1/", "--rate", "4"])).unwrap();
        let mut report = RunReport::new(20).unwrap();
        report.sent = 19;
        report.errors = 2;
        report.unsent = 1;
        for micros in [50u64, 50, 50, 60, 1000] {
            report.histogram.record(micros * 1000).unwrap();
        }
        let line = summary_line(&config, &report);
        assert!(
            line.starts_with("rate=4 connections=32 duration_s=5 scheduled=20 sent=19 errors=2 unsent=1 p50_us=50.0 "),
            "{line}"
        );
        assert!(line.contains(" max_us=1000."), "{line}");
        let empty = RunReport::new(0).unwrap();
        assert!(summary_line(&config, &empty).ends_with("p999_us=- max_us=-"));
    }
}
