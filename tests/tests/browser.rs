//! A person's path through the UI in headless Chromium: log in, see every
//! worker, submit a partitioned task from the form, and watch it complete
//! with its subtasks grouped under it, its progress and its task stream
//! drawn; the overview's slots-in-use chart. Screenshots land in target/.

use std::time::Duration;

use fossa_tests::browser::Browser;
use fossa_tests::local::LocalAgent;

#[tokio::test(flavor = "multi_thread")]
async fn log_in_see_workers_submit_and_watch_a_task_complete() {
    let agent = LocalAgent::start(3, &[]);
    let b = Browser::start().await;
    b.goto(&format!("{}/", agent.url)).await;
    assert!(
        b.url().await.ends_with("/login"),
        "the overview needs a login"
    );
    b.type_into("input[name=password]", "wrong").await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_for("the login error", Duration::from_secs(10), |s| {
        s.contains("Wrong user or password")
    })
    .await;
    b.type_into("input[name=password]", &agent.password).await;
    b.click("form[action='/login'] button[type=submit]").await;
    let overview = b
        .wait_for("the workers", Duration::from_secs(10), |s| {
            s.contains("local-3")
        })
        .await;
    for w in ["local-1", "local-2", "local-3"] {
        assert!(overview.contains(w), "{w} is listed");
    }
    assert!(overview.contains("3/3"), "3 of 3 workers running");

    b.goto(&format!("{}/tasks", agent.url)).await;
    b.click("select[name=model_class] option[value=QuickPartitionedEtl]")
        .await;
    b.click("form.submit button[type=submit]").await;
    let page = b
        .wait_for(
            "the task complete with 8 subtasks",
            Duration::from_secs(180),
            |s| {
                s.contains("8 subtasks on")
                    && s.contains("badge complete\">complete")
                    && !s.contains("badge running")
            },
        )
        .await;
    assert!(
        b.url().await.contains("/tasks/"),
        "the reply links to the task"
    );
    assert!(page.contains("TaskComplete"));
    // Progress and the task stream: server-rendered SVG, one bar per subtask.
    assert!(page.contains("<b>8/8</b> subtasks done"), "{page}");
    assert_eq!(page.matches("class=\"bar\"").count(), 8, "{page}");
    let (w, h) = b.size_of("svg.stream").await;
    assert!(w > 300.0 && h > 40.0, "the task stream is drawn: {w}×{h}");
    let root = fossa_tests::repo_root();
    let png = b
        .screenshot_of("svg.stream", &root.join("target/browser-task-stream.png"))
        .await;
    assert!(
        png > 1000,
        "the task stream's screenshot has content ({png} bytes)"
    );
    b.screenshot(&root.join("target/browser-task.png")).await;
    // The page is whole without JavaScript: the server's HTML holds the picture.
    let (_, raw) = fossa_tests::local::page(
        &agent,
        &format!("/tasks/{}", b.url().await.rsplit('/').next().unwrap()),
    )
    .await;
    assert_eq!(raw.matches("class=\"bar\"").count(), 8);
    // The overview's slots chart, once it has two samples (30 s apart).
    b.goto(&format!("{}/", agent.url)).await;
    b.wait_for("the slots chart", Duration::from_secs(60), |s| {
        s.contains("local-1") && s.contains("<svg class=\"slots\"")
    })
    .await;
    let (w, _) = b.size_of("svg.slots").await;
    assert!(w > 300.0, "the slots chart is drawn: {w}");
    b.screenshot_of("svg.slots", &root.join("target/browser-slots.png"))
        .await;
    b.screenshot(&root.join("target/browser-overview.png"))
        .await;
}
