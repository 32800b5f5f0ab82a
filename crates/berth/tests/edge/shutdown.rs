//! Graceful shutdown: stop accepting, finish what is in flight, exit 0.

use std::time::Duration;

use berth_testkit::FakeUpstream;

use crate::common::{client, simple, start};

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let slow = FakeUpstream::builder()
        .name("slow")
        .latency(Duration::from_millis(1500))
        .start()
        .await;
    let mut env = start(&simple(&[slow.addr()], "", "")).await;
    let url = env.url("/");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.berth.signal(libc::SIGTERM).unwrap();
    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "slow");
    let status = env
        .berth
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("berth exits");
    assert!(status.success(), "{status:?}");
    assert!(tokio::net::TcpStream::connect(env.listen).await.is_err());
}
