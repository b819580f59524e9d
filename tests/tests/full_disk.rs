//! A nearly full disk under Docker's data refuses a worker image build with
//! the reason (a build that fills the gateway's disk takes the broker and
//! the history with it), and allows it again once there is room: a real
//! dockerd whose data root is a small filesystem, filled with `dd`.

use fossa_agent::duties::image::{build_local, ImageError};
use fossa_agent::events::Events;
use fossa_tests::docker::Dockerd;
use fossa_tests::{SmallDisk, TempDir};

#[tokio::test(flavor = "multi_thread")]
async fn a_build_on_a_nearly_full_disk_is_refused_with_the_reason() {
    let dir = TempDir::new("full-disk-dockerd");
    let disk = SmallDisk::mount(&dir.0.join("data"), "64m");
    let dockerd = Dockerd::start_with(None, dir);
    let docker = dockerd.client().await;
    let filler = disk.fill();
    let events = Events::default();
    let refused = build_local(&docker, "fossa-test/no-such-base:1", &[], &events)
        .await
        .expect_err("refused");
    let said = fossa_contract::aws::chain(&refused);
    assert!(matches!(refused, ImageError::DiskFull { .. }), "{said}");
    assert!(
        said.contains("% full")
            && said.contains("refused from 95 %")
            && said.contains("free space"),
        "{said}"
    );
    eprintln!("a full disk: {said}");
    // Room again: the build goes ahead (and fails on the missing base,
    // which proves it was tried).
    std::fs::remove_file(&filler).unwrap();
    let tried = build_local(&docker, "fossa-test/no-such-base:1", &[], &events)
        .await
        .expect_err("no such base");
    assert!(!matches!(tried, ImageError::DiskFull { .. }), "{tried:?}");
    drop(dockerd);
}
