//! A node out of file descriptors: the mesh's connect to an endpoint fails with EMFILE,
//! and the endpoint is not ejected (the failure is this node's, not the task's).
//!
//! A test binary of its own, with one test: it takes every descriptor of its process,
//! which would break any test running beside it.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;

use common::*;
use hoist_mesh::Mesh;
use tokio::io::AsyncReadExt;

/// Opens `/dev/null` until the process has no descriptor left.
fn take_every_descriptor() -> Vec<File> {
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => held.push(file),
            Err(err) if err.raw_os_error() == Some(24) => return held,
            Err(err) => panic!("opening /dev/null: {err}"),
        }
    }
}

fn ejections_and_readiness(mesh: &Mesh, endpoint: &str) -> (f64, f64) {
    let text = mesh.render_metrics();
    let label = format!("endpoint=\"{endpoint}\"");
    (
        metric(&text, "hoist_mesh_endpoint_ejections_total", &label).unwrap_or(-1.0),
        metric(&text, "hoist_mesh_endpoint_ready", &label).unwrap_or(-1.0),
    )
}

#[tokio::test]
async fn emfile_on_the_way_to_an_endpoint_ejects_nothing() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let backend = Backend::start("only").await;
    let (tcp_port, http_port) = (free_port(), free_port());
    let mesh = Mesh::new(test_config()).unwrap();
    let report = mesh
        .set_services(vec![
            tcp_service("db", tcp_port, vec![backend.endpoint()]),
            http_service("web", http_port, vec![backend.endpoint()]),
        ])
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let tcp_addr = mesh.local_addr(tcp_port).unwrap();
    let http_addr = mesh.local_addr(http_port).unwrap();

    // Made before the descriptors run out: an HTTP client connection the mesh has
    // accepted (its endpoint connection is opened per request), and an unconnected
    // socket for the L4 port.
    let mut http_client = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    let tcp_client = tokio::net::TcpSocket::new_v4().unwrap();
    let http_label = format!("published=\"{http_port}\"");
    let accepted = wait_until(std::time::Duration::from_secs(10), || {
        metric(
            &mesh.render_metrics(),
            "hoist_mesh_port_open_connections",
            &http_label,
        ) == Some(1.0)
    })
    .await;
    assert!(accepted, "the mesh did not accept the HTTP client");

    let mut held = take_every_descriptor();
    // One back, for the mesh's accept of the L4 client; its connect to the endpoint then
    // finds none.
    held.pop();
    let mut tcp_stream = tcp_client.connect(tcp_addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp_stream.read(&mut buf),
    )
    .await
    .expect("the mesh closes the connection it cannot forward");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop(tcp_stream);
    // The accept's descriptor is back: held again so the endpoint connect finds none.
    held.extend(take_every_descriptor());

    let (status, body) = raw_exchange(
        &mut http_client,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("an answer from the mesh");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no file descriptor left"), "{body}");
    drop(held);

    assert_eq!(ejections_and_readiness(&mesh, "task-only"), (0.0, 1.0));
    // With descriptors back, both ports reach the endpoint at once (no ejection wait).
    let mut tcp_stream = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
    let (status, body) = raw_exchange(
        &mut tcp_stream,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, "only"));
    let answer = get(&client(), http_addr, "/").await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(ejections_and_readiness(&mesh, "task-only"), (0.0, 1.0));
    mesh.shutdown().await;
}
