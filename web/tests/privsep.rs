//! The UI served through the privilege-separation wire: the pages and the
//! API work over `RemoteFleet`, every action reaches the core's fleet, a
//! rotation reaches the UI, and the core refuses what is not a request.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use fossa_web::model::Fleet;
use fossa_web::privsep::{client::RemoteFleet, server, wire};
use rocket::http::{ContentType, Status};
use rocket::local::asynchronous::Client;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::watch;

/// A core serving `fleet` on one end of a socket pair, and the UI's
/// fleet on the other.
async fn pair(
    fleet: Arc<FakeFleet>,
) -> (
    Arc<RemoteFleet>,
    fossa_web::privsep::client::SecretUpdates,
    watch::Sender<String>,
) {
    let (core, ui) = UnixStream::pair().unwrap();
    let (pw_tx, pw_rx) = watch::channel(String::new());
    let (_tok_tx, tok_rx) = watch::channel(String::new());
    let (r, w) = core.into_split();
    tokio::spawn(async move {
        let _keep = _tok_tx;
        server::serve(r, w, fleet, (pw_rx, tok_rx)).await
    });
    let (r, w) = ui.into_split();
    let (remote, updates, _gone) = RemoteFleet::connect(r, w).await.unwrap();
    (remote, updates, pw_tx)
}

#[rocket::async_test]
async fn pages_and_actions_work_through_the_core() {
    let fake = fake_fleet();
    let (remote, updates, pw_tx) = pair(fake.clone()).await;
    // The first snapshot is there before the first page.
    assert_eq!(remote.snapshot().workers.len(), 3);
    assert_eq!(remote.events()[0].message, "<b>boom</b>");
    let mut config = web_config();
    config.password_updates = Some(updates.password);
    config.scrape_token_updates = Some(updates.scrape_token);
    let c = Client::tracked(fossa_web::build(config, remote.clone()))
        .await
        .unwrap();
    let r = c
        .get("/api/v1/overview")
        .header(basic(PASSWORD))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
    let o: serde_json::Value = r.into_json().await.unwrap();
    assert_eq!(o["desired_workers"], 3, "{o}");
    // A scale reaches the core's fleet, and its snapshot comes back.
    let r = c
        .post("/api/v1/scale")
        .header(basic(PASSWORD))
        .header(ContentType::JSON)
        .body(r#"{"workers": 5}"#)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok, "{:?}", r.into_string().await);
    assert_eq!(fake.snapshot().desired_workers, 5);
    // The answer waits for the snapshot the action made: what the page or
    // the next call reads shows it at once.
    assert_eq!(remote.snapshot().desired_workers, 5, "a stale snapshot");
    // A submission reaches it, and so does the core's refusal of bad bounds.
    let r = c
        .post("/api/v1/tasks")
        .header(basic(PASSWORD))
        .header(ContentType::JSON)
        .body(r#"{"model_class": "QuickEtl"}"#)
        .dispatch()
        .await;
    assert!(r.status().code < 300, "{}", r.status());
    assert_eq!(fake.submitted.lock().unwrap().len(), 1);
    let r = c
        .post("/api/v1/autoscale")
        .header(basic(PASSWORD))
        .header(ContentType::JSON)
        .body(r#"{"min_workers": 3, "max_workers": 1}"#)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::BadRequest);
    // A rotation in the core reaches the UI: only the new password works.
    pw_tx.send_replace("a brand new password".into());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = c
            .get("/api/v1/overview")
            .header(basic(PASSWORD))
            .dispatch()
            .await;
        if r.status() == Status::Unauthorized {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "old password kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .get("/api/v1/overview")
        .header(basic("a brand new password"))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);
}

#[tokio::test]
async fn the_core_hangs_up_on_what_is_not_a_request() {
    for junk in [
        // A length far over the limit.
        (u32::MAX).to_be_bytes().to_vec(),
        // A frame that is no request.
        [&7u32.to_be_bytes()[..], b"{\"x\":1}"].concat(),
        // A request of no known kind.
        {
            let body = br#"{"id":1,"body":{"RunShell":"id"}}"#;
            [&(body.len() as u32).to_be_bytes()[..], body].concat()
        },
    ] {
        let (core, mut ui) = UnixStream::pair().unwrap();
        let (_a, pw) = watch::channel(String::new());
        let (_b, tok) = watch::channel(String::new());
        let (r, w) = core.into_split();
        let serving = tokio::spawn(server::serve(r, w, fake_fleet(), (pw, tok)));
        ui.write_all(&junk).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("the core kept reading")
            .unwrap();
        assert!(
            matches!(
                ended,
                Err(wire::WireError::TooLarge(..) | wire::WireError::Malformed(_))
            ),
            "{ended:?}"
        );
        // Nothing reached the fleet.
    }
}

#[rocket::async_test]
async fn a_core_that_hangs_up_fails_requests_at_once() {
    let (core, ui) = UnixStream::pair().unwrap();
    let (_a, pw) = watch::channel(String::new());
    let (_b, tok) = watch::channel(String::new());
    let (r, w) = core.into_split();
    let serving = tokio::spawn(server::serve(r, w, fake_fleet(), (pw, tok)));
    let (r, w) = ui.into_split();
    let (remote, _updates, gone) = RemoteFleet::connect(r, w).await.unwrap();
    serving.abort();
    let _ = serving.await;
    tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .expect("the UI did not learn the core is gone")
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), remote.scale(1))
        .await
        .expect("a request waited on a core that is gone")
        .unwrap_err();
    assert!(e.message().contains("core"), "{}", e.message());
}
