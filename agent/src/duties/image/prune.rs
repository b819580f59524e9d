//! Keeps the gateway's disk for the images that matter: after a new worker
//! image is pushed, only the newest [`KEEP`] images of the stack's repository
//! stay on the gateway (the current one and the previous, for a rollback),
//! and dangling build layers go.

use std::collections::HashMap;

use bollard::query_parameters::{
    ListImagesOptionsBuilder, PruneImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;

use crate::events::Events;

/// Images of the repository kept on the gateway: the current and the previous.
pub const KEEP: usize = 2;

/// A local image: its id, when it was made, and its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// Image id.
    pub id: String,
    /// Seconds since the epoch.
    pub created: i64,
}

/// The images to remove: all but the newest `keep`.
pub fn to_remove(mut images: Vec<Local>, keep: usize) -> Vec<String> {
    images.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    images.dedup_by(|a, b| a.id == b.id);
    images.into_iter().skip(keep).map(|i| i.id).collect()
}

/// Removes the images of `repo` beyond the newest [`KEEP`] and the dangling
/// layers; what cannot be removed (a running container's) stays, said once.
pub async fn prune(docker: &Docker, repo: &str, events: &Events) {
    let filters = HashMap::from([("reference", vec![repo.to_owned()])]);
    let listed = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await;
    let Ok(listed) = listed else { return };
    let images = listed
        .into_iter()
        .map(|i| Local {
            id: i.id,
            created: i.created,
        })
        .collect();
    let mut removed = 0;
    for id in to_remove(images, KEEP) {
        let force = RemoveImageOptionsBuilder::default().force(true).build();
        match docker.remove_image(&id, Some(force), None).await {
            Ok(_) => removed += 1,
            Err(e) => events.push(
                "image",
                true,
                format!("cannot remove the old worker image {id}: {e}"),
            ),
        }
    }
    let dangling = HashMap::from([("dangling", vec!["true".to_owned()])]);
    let _ = docker
        .prune_images(Some(
            PruneImagesOptionsBuilder::default()
                .filters(&dangling)
                .build(),
        ))
        .await;
    if removed > 0 {
        events.push(
            "image",
            false,
            format!("removed {removed} old worker image(s); the current and previous stay"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_two_stay() {
        let l = |id: &str, created| Local {
            id: id.into(),
            created,
        };
        let gone = to_remove(
            vec![l("a", 1), l("d", 4), l("b", 2), l("c", 3), l("d", 4)],
            KEEP,
        );
        assert_eq!(gone, ["b", "a"]);
        assert!(to_remove(vec![l("a", 1)], KEEP).is_empty());
    }
}
