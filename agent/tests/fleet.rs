//! The fleet model against deliberately broken workers: each is marked with
//! its reason, none delays the others, and dispatch skips them.

use std::sync::Arc;
use std::time::Duration;

use fossa_agent::events::Events;
use fossa_agent::fleet::{FleetModel, PollSettings};
use fossa_agent::testkit::simnode::{start, Behaviour, StaticBackend};
use fossa_web::model::{DispatchError, Fleet, Health, TaskRequest};

#[tokio::test(flavor = "multi_thread")]
async fn broken_workers_are_marked_and_do_not_delay_the_others() {
    let kinds = [
        Behaviour::Ok(Duration::from_millis(100)),
        Behaviour::Hang,
        Behaviour::Error500,
        Behaviour::Garbage,
        Behaviour::Truncated,
        Behaviour::Huge,
        Behaviour::Ok(Duration::from_millis(10)),
    ];
    let mut addrs = Vec::new();
    for k in kinds {
        addrs.push(start("127.0.0.1", k).await.unwrap());
    }
    // One address nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    addrs.push(closed);
    let timeout = Duration::from_millis(800);
    let scratch = fossa_agent::testkit::scratch_history();
    let fleet = FleetModel::new(
        Arc::new(StaticBackend::new(&addrs)),
        fossa_agent::duties::driver::fixed_board(Vec::new()),
        Events::default(),
        "t",
        PollSettings {
            timeout,
            ..Default::default()
        },
        scratch.history.clone(),
    );
    let t = std::time::Instant::now();
    fleet.refresh().await;
    let took = t.elapsed();
    let snap = fleet.snapshot();
    let health: Vec<&str> = snap.workers.iter().map(|w| w.health.word()).collect();
    assert_eq!(
        health,
        [
            "ok",
            "timeout",
            "error",
            "garbage",
            "garbage",
            "garbage",
            "ok",
            "unreachable"
        ],
        "{:#?}",
        snap.workers
    );
    for w in &snap.workers[1..6] {
        assert!(!w.health.reason().is_empty(), "{} has a reason", w.id);
    }
    assert!(matches!(&snap.workers[2].health, Health::Error(r) if r.contains("500")));
    // All were polled at once: one hanging worker costs one timeout, not one each.
    assert!(took < timeout * 3, "refresh took {took:?}");
    assert_eq!(
        snap.workers[0]
            .node
            .as_ref()
            .unwrap()
            .available_processing_capacity,
        4
    );
    println!(
        "refresh of {} workers with a hanging one: {took:?} (timeout {timeout:?})",
        addrs.len()
    );

    // Dispatch only tries answering workers; both healthy ones are fake, so they
    // refuse the POST (no route), which is reported, never a hang or a panic.
    let r = fleet.submit(TaskRequest {
        model_class: "QuickPartitionedEtl".into(),
        method: None,
        model_construction_kwargs: serde_json::json!({}),
        method_kwargs: serde_json::json!({}),
        resolver_context: serde_json::json!({}),
    });
    let r = tokio::time::timeout(Duration::from_secs(10), r)
        .await
        .expect("dispatch finishes");
    assert!(
        matches!(
            r,
            Err(DispatchError::Worker(_)) | Err(DispatchError::Invalid(_))
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dispatch_goes_to_the_most_free_worker_and_moves_on_after_503() {
    let busy = start("127.0.0.1", Behaviour::Busy).await.unwrap();
    let accepting = start("127.0.0.1", Behaviour::Accepting).await.unwrap();
    let hanging = start("127.0.0.1", Behaviour::Hang).await.unwrap();
    let scratch = fossa_agent::testkit::scratch_history();
    let fleet = FleetModel::new(
        Arc::new(StaticBackend::new(&[hanging, accepting, busy])),
        fossa_agent::duties::driver::fixed_board(Vec::new()),
        Events::default(),
        "t",
        PollSettings {
            timeout: Duration::from_millis(300),
            ..Default::default()
        },
        scratch.history.clone(),
    );
    fleet.refresh().await;
    let d = fleet
        .submit(TaskRequest {
            model_class: "QuickPartitionedEtl".into(),
            method: None,
            model_construction_kwargs: serde_json::json!({}),
            method_kwargs: serde_json::json!({}),
            resolver_context: serde_json::json!({}),
        })
        .await
        .unwrap();
    let fossa_web::model::Submitted::Dispatched(d) = d else {
        panic!("dispatched, not queued: {d:?}")
    };
    assert_eq!(d.task_id, "accepted-1");
    assert_eq!(
        d.worker_id, "sim-2",
        "the busy worker (4 free) was tried first and said 503"
    );
    assert_eq!(fleet.snapshot().dispatched.len(), 1);
    assert!(fleet
        .events()
        .iter()
        .any(|e| e.message.contains("sent to sim-2")));
}
