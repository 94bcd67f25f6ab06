//! Socket tests of the mesh on 127.0.0.1: L4 and L7 forwarding, balancing spread,
//! failover, draining, slowloris, limits, forwarding headers, routing, health checks and
//! listener updates. Backends are small hyper servers inside the test; every wait is on a
//! condition with a deadline.
//!
//! Knows the mesh only through its public API and its sockets.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hoist_mesh::{Balancing, HealthCheck, HostPathRoute, Mesh, MeshConfig, MeshError};
use hyper::{Method, Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start_mesh(config: MeshConfig, services: Vec<hoist_mesh::ServiceRoute>) -> Mesh {
    // Logs show up in the output of a failing test only.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mesh = Mesh::new(config).unwrap();
    let report = mesh.set_services(services).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    mesh
}

async fn spread_over_three(balancing: Balancing) {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let port = free_port();
    let config = MeshConfig {
        balancing,
        ..test_config()
    };
    let endpoints = backends.iter().map(Backend::endpoint).collect();
    let mesh = start_mesh(config, vec![http_service("web", port, endpoints)]).await;
    let addr = mesh.local_addr(port).unwrap();

    // 3000 requests from 6 concurrent keep-alive clients.
    let failures = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let failures = failures.clone();
        workers.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..500 {
                match get(&client, addr, "/").await {
                    Ok(answer) if answer.status == StatusCode::OK => {}
                    _ => {
                        failures.fetch_add(1, SeqCst);
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(failures.load(SeqCst), 0);
    for backend in &backends {
        let hits = backend.hits();
        assert!(
            (900..=1100).contains(&hits),
            "{balancing:?}: backend {} got {hits} of 3000",
            backend.name
        );
    }
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_spreads_3000_requests_evenly_least_connections() {
    spread_over_three(Balancing::LeastConnections).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_spreads_3000_requests_evenly_power_of_two() {
    spread_over_three(Balancing::PowerOfTwoChoices).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_forwards_and_ejects_a_refused_endpoint() {
    let alive = Backend::start("alive").await;
    let (dead_addr, _dead_socket) = refused_addr();
    let dead = hoist_mesh::Endpoint {
        id: "task-dead".into(),
        addr: dead_addr,
        state: hoist_mesh::EndpointState::Active,
    };
    let port = free_port();
    // The dead endpoint comes first, so the very first pick lands on it.
    let service = tcp_service("db", port, vec![dead, alive.endpoint()]);
    let mesh = start_mesh(test_config(), vec![service]).await;
    let addr = mesh.local_addr(port).unwrap();

    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (status, body) = raw_exchange(
            &mut stream,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!((status, body.as_str()), (200, "alive"));
    }
    assert_eq!(alive.hits(), 20);
    let text = mesh.render_metrics();
    let dead_label = "endpoint=\"task-dead\"";
    // Refused once, then skipped for the ejection time.
    assert_eq!(
        metric(&text, "hoist_mesh_endpoint_errors_total", dead_label),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "hoist_mesh_endpoint_ejections_total", dead_label),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "hoist_mesh_endpoint_ready", dead_label),
        Some(0.0)
    );
    let alive_label = "endpoint=\"task-alive\"";
    assert_eq!(
        metric(&text, "hoist_mesh_endpoint_connections_total", alive_label),
        Some(20.0)
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_keeps_a_session_open_across_updates() {
    let backend = Backend::start("a").await;
    let other = Backend::start("b").await;
    let port = free_port();
    let mesh = start_mesh(
        test_config(),
        vec![tcp_service("db", port, vec![backend.endpoint()])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();
    let mut session = TcpStream::connect(addr).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(raw_exchange(&mut session, request).await.unwrap().1, "a");

    // The endpoint drains and a new one arrives; the established session goes on.
    mesh.set_services(vec![tcp_service(
        "db",
        port,
        vec![backend.draining_endpoint(), other.endpoint()],
    )])
    .await
    .unwrap();
    assert_eq!(raw_exchange(&mut session, request).await.unwrap().1, "a");
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    assert_eq!(raw_exchange(&mut fresh, request).await.unwrap().1, "b");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_killing_a_backend_mid_stream_fails_no_request() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let port = free_port();
    let endpoints = backends.iter().map(Backend::endpoint).collect();
    let mesh = start_mesh(test_config(), vec![http_service("web", port, endpoints)]).await;
    let addr = mesh.local_addr(port).unwrap();

    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (done, failures) = (done.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..400 {
                // Some requests take a moment, so some are in flight when the kill lands.
                let path = if done.load(SeqCst) % 7 == 0 {
                    "/slow/20"
                } else {
                    "/"
                };
                match get(&client, addr, path).await {
                    Ok(answer) if answer.status == StatusCode::OK => {}
                    Ok(answer) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", answer.status, answer.body)),
                    Err(error) => failures.lock().unwrap().push(error),
                }
                done.fetch_add(1, SeqCst);
            }
        }));
    }
    assert!(wait_until(Duration::from_secs(30), || done.load(SeqCst) >= 300).await);
    backends[1].kill();
    let hits_at_kill = backends[1].hits();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(done.load(SeqCst), 1600);
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    // The killed backend got nothing new (a request or two may have been on their way).
    assert!(backends[1].hits() <= hits_at_kill + 4);
    // The mesh did run into the dead backend, and stepped over it by ejecting it.
    let text = mesh.render_metrics();
    let ejections = metric(&text, "hoist_mesh_endpoint_ejections_total", "task-b");
    assert!(ejections >= Some(1.0), "{ejections:?}");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_draining_endpoint_finishes_its_long_request() {
    let old = Backend::start("old").await;
    let new = Backend::start("new").await;
    let port = free_port();
    let mesh = start_mesh(
        test_config(),
        vec![http_service("web", port, vec![old.endpoint()])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();

    let long_request = tokio::spawn(async move { get(&client(), addr, "/slow/1500").await });
    assert!(wait_until(Duration::from_secs(5), || old.hits() == 1).await);

    mesh.set_services(vec![http_service(
        "web",
        port,
        vec![old.draining_endpoint(), new.endpoint()],
    )])
    .await
    .unwrap();
    let client = client();
    for _ in 0..20 {
        let answer = get(&client, addr, "/").await.unwrap();
        assert_eq!(
            (answer.status, answer.backend.as_str()),
            (StatusCode::OK, "new")
        );
    }
    let long = long_request.await.unwrap().unwrap();
    assert_eq!((long.status, long.body.as_str()), (StatusCode::OK, "old"));
    assert_eq!(old.hits(), 1);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_slowloris_gets_408_and_does_not_starve_others() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let deadline = Duration::from_millis(2000);
    let config = MeshConfig {
        header_read_timeout: deadline,
        ..test_config()
    };
    let mesh = start_mesh(
        config,
        vec![http_service("web", port, vec![backend.endpoint()])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();

    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Some connect and send nothing at all: closed at the deadline, without a 408.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // A normal client is served while the 200 connections hang.
    let client = client();
    for _ in 0..20 {
        let answer = get(&client, addr, "/").await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert!(
        started.elapsed() < deadline,
        "the normal client took too long"
    );

    let mut statuses = Vec::new();
    for mut stream in slow {
        let answer = tokio::time::timeout(Duration::from_secs(10), read_raw_response(&mut stream))
            .await
            .expect("no answer within 10 s");
        statuses.push(answer.map(|(status, _)| status).unwrap_or(0));
    }
    assert!(started.elapsed() >= deadline);
    assert!(statuses.iter().all(|&status| status == 408), "{statuses:?}");
    for mut stream in silent {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
            .await
            .expect("silent connection not closed within 10 s");
        assert!(
            read.is_err() || buf.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&buf)
        );
    }
    assert_eq!(backend.hits(), 20);
    // The counter moves just after the 408 is written, so it may trail the clients.
    let timeouts = || {
        metric(
            &mesh.render_metrics(),
            "hoist_mesh_port_header_timeouts_total",
            "",
        )
    };
    assert!(
        wait_until(Duration::from_secs(2), || timeouts() == Some(200.0)).await,
        "{:?}",
        timeouts()
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_oversized_head_gets_431_and_never_reaches_the_backend() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let mesh = start_mesh(
        test_config(),
        vec![http_service("web", port, vec![backend.endpoint()])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();

    let big = "a".repeat(20 * 1024);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let (status, _) = raw_exchange(&mut stream, request.as_bytes()).await.unwrap();
    assert_eq!(status, 431);
    assert_eq!(backend.hits(), 0);

    // Under the limit goes through.
    let fine = "a".repeat(8 * 1024);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {fine}\r\nConnection: close\r\n\r\n");
    let (status, _) = raw_exchange(&mut stream, request.as_bytes()).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(backend.hits(), 1);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_adds_forwarding_headers() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let mesh = start_mesh(
        test_config(),
        vec![http_service("web", port, vec![backend.endpoint()])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();

    let request = Request::get(format!("http://{addr}/"))
        .header("x-forwarded-for", "10.9.8.7")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .body(String::new())
        .unwrap();
    let answer = send(&client(), request).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let seen = backend.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["x-forwarded-for"], "10.9.8.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["forwarded"], "for=127.0.0.1;proto=http");
    assert_eq!(seen["host"], addr.to_string());
    assert!(!seen.contains_key("x-hop"));
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_retries_idempotent_requests_but_never_a_post() {
    let alive = Backend::start("alive").await;
    let (dead_addr, _dead_socket) = refused_addr();
    let dead = hoist_mesh::Endpoint {
        id: "task-dead".into(),
        addr: dead_addr,
        state: hoist_mesh::EndpointState::Active,
    };
    let port = free_port();
    let endpoints = vec![dead.clone(), alive.endpoint()];
    let mesh = start_mesh(test_config(), vec![http_service("web", port, endpoints)]).await;
    let addr = mesh.local_addr(port).unwrap();
    let client = client();

    // The first pick of a fresh service is the first endpoint, the refused one: a POST is
    // not retried and fails with 502; the endpoint is ejected.
    let post = Request::post(format!("http://{addr}/"))
        .body("payload".to_string())
        .unwrap();
    let answer = send(&client, post).await.unwrap();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    assert_eq!(alive.hits(), 0);

    // An idempotent request landing on a refused endpoint is retried on the other one.
    // Each round brings a fresh (not yet ejected) refused endpoint; ties rotate, so at
    // least every other request lands on it first.
    let mut refused_attempts = 0.0;
    for (round, method) in [Method::GET, Method::DELETE, Method::GET, Method::HEAD]
        .into_iter()
        .enumerate()
    {
        let dead_id = format!("task-dead-{round}");
        let endpoints = vec![
            hoist_mesh::Endpoint {
                id: dead_id.clone(),
                ..dead.clone()
            },
            alive.endpoint(),
        ];
        mesh.set_endpoints("web", &endpoints).unwrap();
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}/"))
            .body(String::new())
            .unwrap();
        let answer = send(&client, request).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        let label = format!("endpoint=\"{dead_id}\"");
        refused_attempts += metric(
            &mesh.render_metrics(),
            "hoist_mesh_endpoint_errors_total",
            &label,
        )
        .unwrap();
    }
    assert!(refused_attempts >= 2.0, "{refused_attempts}");
    assert_eq!(alive.hits(), 4);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_answers_503_504_and_404_with_clear_bodies() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let config = MeshConfig {
        upstream_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let mut shop = http_service("shop", port, vec![backend.endpoint()]);
    shop.routes = vec![HostPathRoute {
        host: Some("shop.example".into()),
        path_prefix: None,
    }];
    let mut empty = http_service("empty", port, vec![]);
    empty.routes = vec![HostPathRoute {
        host: None,
        path_prefix: Some("/empty".into()),
    }];
    let mesh = start_mesh(config, vec![shop, empty]).await;
    let addr = mesh.local_addr(port).unwrap();
    let client = client();

    let with_host = |path: &str, host: &str| {
        Request::get(format!("http://{addr}{path}"))
            .header("host", host)
            .body(String::new())
            .unwrap()
    };
    let answer = send(&client, with_host("/", "shop.example")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let answer = send(&client, with_host("/slow/2000", "shop.example"))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(answer.body.contains("did not answer"), "{}", answer.body);
    let answer = send(&client, with_host("/empty/x", "other")).await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer
            .body
            .contains("no healthy endpoint for service empty-name"),
        "{}",
        answer.body
    );
    let answer = send(&client, with_host("/", "other")).await.unwrap();
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(
        answer.body.contains("no service is routed"),
        "{}",
        answer.body
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_routes_by_host_and_path_on_a_shared_port() {
    let api = Backend::start("api").await;
    let web = Backend::start("web").await;
    let shop = Backend::start("shop").await;
    let port = free_port();
    let mut api_service = http_service("api", port, vec![api.endpoint()]);
    api_service.routes = vec![HostPathRoute {
        host: None,
        path_prefix: Some("/api".into()),
    }];
    let web_service = http_service("web", port, vec![web.endpoint()]);
    let mut shop_service = http_service("shop", port, vec![shop.endpoint()]);
    shop_service.routes = vec![HostPathRoute {
        host: Some("*.shop.example".into()),
        path_prefix: None,
    }];
    let mesh = start_mesh(test_config(), vec![api_service, web_service, shop_service]).await;
    let addr = mesh.local_addr(port).unwrap();
    let client = client();
    let cases = [
        ("/api/users", "anything", "api"),
        ("/apix", "anything", "web"),
        ("/", "eu.shop.example:80", "shop"),
        ("/api", "eu.shop.example", "shop"),
    ];
    for (path, host, want) in cases {
        let request = Request::get(format!("http://{addr}{path}"))
            .header("host", host)
            .body(String::new())
            .unwrap();
        let answer = send(&client, request).await.unwrap();
        assert_eq!(answer.backend, want, "{host} {path}");
    }
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_serves_h2c_prior_knowledge() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let mesh = start_mesh(
        test_config(),
        vec![http_service("web", port, vec![backend.endpoint()])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();
    let h2_client: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    for _ in 0..3 {
        let answer = get(&h2_client, addr, "/").await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "a"));
    }
    let seen = backend.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["host"], addr.to_string());
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_endpoints_out_and_back() {
    let sick = Backend::start("sick").await;
    let fine = Backend::start("fine").await;
    let port = free_port();
    let mut service = http_service("web", port, vec![sick.endpoint(), fine.endpoint()]);
    service.health = Some(HealthCheck {
        path: "/health".into(),
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        fall: 3,
        rise: 2,
    });
    let mesh = start_mesh(test_config(), vec![service]).await;
    let addr = mesh.local_addr(port).unwrap();
    let sick_ready = |mesh: &Mesh| {
        metric(
            &mesh.render_metrics(),
            "hoist_mesh_endpoint_ready",
            "task-sick",
        )
    };
    assert_eq!(sick_ready(&mesh), Some(1.0));

    sick.set_healthy(false);
    assert!(wait_until(Duration::from_secs(5), || sick_ready(&mesh) == Some(0.0)).await);
    let client = client();
    let hits_before = sick.hits();
    for _ in 0..10 {
        assert_eq!(get(&client, addr, "/").await.unwrap().backend, "fine");
    }
    assert_eq!(sick.hits(), hits_before);

    sick.set_healthy(true);
    assert!(wait_until(Duration::from_secs(5), || sick_ready(&mesh) == Some(1.0)).await);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_services_opens_and_closes_listeners() {
    let backend = Backend::start("a").await;
    let (port_a, port_b) = (free_port(), free_port());
    let mesh = Mesh::new(test_config()).unwrap();
    let report = mesh
        .set_services(vec![http_service("one", port_a, vec![backend.endpoint()])])
        .await
        .unwrap();
    assert_eq!(report.opened, [port_a]);
    let addr_a = mesh.local_addr(port_a).unwrap();

    // A keep-alive connection on port A, used before and after an update that keeps A.
    let mut kept = TcpStream::connect(addr_a).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(raw_exchange(&mut kept, request).await.unwrap().0, 200);
    let report = mesh
        .set_services(vec![
            http_service("one", port_a, vec![backend.endpoint()]),
            tcp_service("two", port_b, vec![backend.endpoint()]),
        ])
        .await
        .unwrap();
    assert_eq!((report.opened, report.closed), (vec![port_b], vec![]));
    assert_eq!(raw_exchange(&mut kept, request).await.unwrap().0, 200);
    let addr_b = mesh.local_addr(port_b).unwrap();
    let mut via_b = TcpStream::connect(addr_b).await.unwrap();
    assert_eq!(raw_exchange(&mut via_b, request).await.unwrap().0, 200);

    // Dropping service one closes port A; B stays.
    let report = mesh
        .set_services(vec![tcp_service("two", port_b, vec![backend.endpoint()])])
        .await
        .unwrap();
    assert_eq!((report.opened, report.closed), (vec![], vec![port_a]));
    assert!(mesh.local_addr(port_a).is_none());
    assert!(TcpStream::connect(addr_a).await.is_err());
    assert_eq!(raw_exchange(&mut via_b, request).await.unwrap().0, 200);

    // An invalid set is refused whole and changes nothing.
    let clash = vec![
        tcp_service("two", port_b, vec![backend.endpoint()]),
        tcp_service("three", port_b, vec![]),
    ];
    assert!(matches!(
        mesh.set_services(clash).await,
        Err(MeshError::InvalidRoute { .. })
    ));
    assert!(mesh.local_addr(port_b).is_some());
    assert!(matches!(
        mesh.set_endpoints("nope", &[]),
        Err(MeshError::UnknownService { .. })
    ));

    mesh.shutdown().await;
    assert!(TcpStream::connect(addr_b).await.is_err());
    let mut buf = [0u8; 1];
    // The L4 session ends with the mesh.
    assert_eq!(via_b.read(&mut buf).await.unwrap_or(0), 0);
    assert!(matches!(
        mesh.set_services(vec![]).await,
        Err(MeshError::ShutDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_render_in_prometheus_text_format() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let mesh = start_mesh(
        test_config(),
        vec![http_service("web", port, vec![backend.endpoint()])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();
    let client = client();
    for _ in 0..5 {
        get(&client, addr, "/").await.unwrap();
    }
    let text = mesh.render_metrics();
    let label = "endpoint=\"task-a\"";
    assert_eq!(
        metric(&text, "hoist_mesh_endpoint_requests_total", label),
        Some(5.0)
    );
    assert_eq!(
        metric(&text, "hoist_mesh_endpoint_latency_seconds_count", label),
        Some(5.0)
    );
    assert_eq!(
        metric(
            &text,
            "hoist_mesh_endpoint_latency_seconds_bucket",
            "le=\"+Inf\""
        ),
        Some(5.0)
    );
    assert!(
        wait_until(Duration::from_secs(2), || {
            metric(&mesh.render_metrics(), "hoist_mesh_endpoint_active", label) == Some(0.0)
        })
        .await
    );
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line}");
    }
    mesh.shutdown().await;
}

#[test]
fn mesh_and_its_futures_can_move_between_threads() {
    // The daemon keeps the mesh in an `Arc` and calls it from spawned tasks.
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let mesh = Mesh::new(test_config()).unwrap();
    assert_send_sync(&mesh);
    assert_send(&mesh.set_services(vec![]));
    assert_send(&mesh.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_reuses_upstream_connections() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let mesh = start_mesh(
        test_config(),
        vec![http_service("web", port, vec![backend.endpoint()])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();
    let client = client();
    for round in 0..30 {
        let method = if round % 3 == 0 {
            Method::HEAD
        } else {
            Method::GET
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}/"))
            .body(String::new())
            .unwrap();
        assert_eq!(send(&client, request).await.unwrap().status, StatusCode::OK);
    }
    // Sequential requests, bodiless HEAD answers included, ride one kept-alive connection.
    assert_eq!(backend.connections.load(SeqCst), 1);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_survives_an_endpoint_closing_idle_connections() {
    // A backend that answers one request per connection and then closes it without
    // saying so (no `Connection: close`): every pooled connection goes stale.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                let _ = stream.write_all(response).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let endpoint = hoist_mesh::Endpoint {
        id: "task-closer".into(),
        addr: backend_addr,
        state: hoist_mesh::EndpointState::Active,
    };
    let port = free_port();
    let mesh = start_mesh(
        test_config(),
        vec![http_service("web", port, vec![endpoint])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();
    let client = client();
    for _ in 0..10 {
        let post = Request::post(format!("http://{addr}/"))
            .body("payload".to_string())
            .unwrap();
        let answer = send(&client, post).await.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "ok")
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    backend.abort();
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_streams_large_bodies_both_ways() {
    let backend = Backend::start("a").await;
    let port = free_port();
    let mesh = start_mesh(
        test_config(),
        vec![http_service("web", port, vec![backend.endpoint()])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();
    let client = client();
    for _ in 0..3 {
        let answer = get(&client, addr, "/bytes/3000000").await.unwrap();
        assert_eq!(
            (answer.status, answer.body.len()),
            (StatusCode::OK, 3_000_000)
        );
        let upload = "y".repeat(2_000_000);
        let post = Request::post(format!("http://{addr}/echo"))
            .body(upload.clone())
            .unwrap();
        let answer = send(&client, post).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer.body == upload,
            "echo came back with {} bytes",
            answer.body.len()
        );
    }
    // All of it rode one kept-alive upstream connection.
    assert_eq!(backend.connections.load(SeqCst), 1);
    mesh.shutdown().await;
}

/// A backend that answers every request head with `101 Switching Protocols` (`Upgrade:
/// echo`) and then echoes bytes; it keeps the heads it received.
async fn start_echo_upgrade_backend() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_lowercase());
                let switched = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
                if stream.write_all(switched).await.is_err() {
                    return;
                }
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    (addr, heads)
}

/// A mesh with one http port whose one endpoint is an echo-upgrade backend; the port's
/// address and the heads the backend received.
async fn start_mesh_on_echo_upgrade_backend(
) -> (Mesh, std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    start_mesh_on_echo_upgrade_backend_with(test_config()).await
}

async fn start_mesh_on_echo_upgrade_backend_with(
    config: MeshConfig,
) -> (Mesh, std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (backend_addr, heads) = start_echo_upgrade_backend().await;
    let port = free_port();
    let endpoint = hoist_mesh::Endpoint {
        id: "task-echo".into(),
        addr: backend_addr,
        state: hoist_mesh::EndpointState::Active,
    };
    let mesh = start_mesh(config, vec![http_service("ws", port, vec![endpoint])]).await;
    let addr = mesh.local_addr(port).unwrap();
    (mesh, addr, heads)
}

/// Reads one response head (up to the blank line) from a raw client socket.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n_read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        assert_eq!(
            n_read,
            1,
            "closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_forwards_a_protocol_upgrade_and_tunnels_both_ways() {
    let (mesh, addr, heads) = start_mesh_on_echo_upgrade_backend().await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nhost: example\r\nconnection: keep-alive, Upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    let forwarded = heads.lock().unwrap()[0].clone();
    assert!(forwarded.contains("upgrade: echo\r\n"), "{forwarded}");
    assert!(forwarded.contains("connection: upgrade\r\n"), "{forwarded}");
    assert!(
        forwarded.contains("x-forwarded-for: 127.0.0.1\r\n"),
        "{forwarded}"
    );

    // Bytes go both ways, as often as the two sides like, outside HTTP.
    for message in [&b"ping\n"[..], b"a second message, not HTTP at all\n"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(echoed, message);
    }

    // A shutdown closes the tunnel instead of waiting for the client to leave.
    tokio::time::timeout(Duration::from_secs(10), mesh.shutdown())
        .await
        .expect("shutdown with a tunnel open");
    let mut rest = Vec::new();
    let n_read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("tunnel closed by shutdown");
    assert!(matches!(n_read, Ok(0) | Err(_)), "{n_read:?} {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_tunnel_lives_while_busy_and_closes_when_idle() {
    let config = MeshConfig {
        idle_timeout: Duration::from_secs(1),
        ..test_config()
    };
    let (mesh, addr, _heads) = start_mesh_on_echo_upgrade_backend_with(config).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nhost: example\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");

    // A message every 300 ms for 2.4 s: past the 1 s idle timeout, and still open.
    for _ in 0..8 {
        stream.write_all(b"ping\n").await.unwrap();
        let mut echoed = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
            .await
            .expect("echo in time")
            .expect("the busy tunnel is open");
        assert_eq!(&echoed, b"ping\n");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then silence: closed about a second later.
    let quiet = Instant::now();
    let mut rest = Vec::new();
    let n_read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the idle tunnel closed");
    assert!(matches!(n_read, Ok(0) | Err(_)), "{n_read:?} {rest:?}");
    assert!(
        quiet.elapsed() >= Duration::from_millis(500),
        "closed after {:?} of silence",
        quiet.elapsed()
    );
    mesh.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_source_cap_are_closed_at_once_and_others_still_served() {
    let backend = Backend::start("capped").await;
    let port = free_port();
    // Four connections for the whole mesh: one client address gets two.
    let config = MeshConfig {
        max_open_connections: 4,
        ..test_config()
    };
    let mesh = start_mesh(
        config,
        vec![tcp_service("db", port, vec![backend.endpoint()])],
    )
    .await;
    let addr = mesh.local_addr(port).unwrap();
    let connect_from = |source: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    };
    let held = [
        connect_from("127.0.0.1").await,
        connect_from("127.0.0.1").await,
    ];
    let mut refused = connect_from("127.0.0.1").await;
    let mut rest = Vec::new();
    let n_read = tokio::time::timeout(Duration::from_secs(10), refused.read_to_end(&mut rest))
        .await
        .expect("the third connection closed at once");
    assert!(matches!(n_read, Ok(0) | Err(_)), "{n_read:?}");
    // Another client address is still served while the first holds its share.
    let mut other = connect_from("127.0.0.2").await;
    let (status, body) = raw_exchange(
        &mut other,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, "capped"));
    let text = mesh.render_metrics();
    assert_eq!(
        metric(&text, "hoist_mesh_port_refused_total", "protocol=\"tcp\""),
        Some(1.0)
    );
    // Closed connections free their places.
    drop(held);
    drop(other);
    let freed = wait_until(Duration::from_secs(10), || {
        metric(
            &mesh.render_metrics(),
            "hoist_mesh_port_open_connections",
            "protocol=\"tcp\"",
        ) == Some(0.0)
    })
    .await;
    assert!(freed);
    let mut again = connect_from("127.0.0.1").await;
    let (status, _) = raw_exchange(
        &mut again,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_refuses_a_switch_of_protocols_the_client_did_not_ask_for() {
    let (mesh, addr, heads) = start_mesh_on_echo_upgrade_backend().await;
    let answer = get(&client(), addr, "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(
        answer.body.contains("switched protocols unasked"),
        "{}",
        answer.body
    );

    // An h2c upgrade is not passed on (it would tunnel requests past the mesh), so the
    // endpoint's 101 is one nobody asked for here too.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: example\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    let forwarded = heads.lock().unwrap().last().cloned().unwrap();
    assert!(!forwarded.contains("upgrade"), "{forwarded}");
    mesh.shutdown().await;
}
