//! Following GetLogEvents' pages. AWS: "This operation can return empty
//! results while there are more log events available through the token",
//! a page holds at most 1 MB, and at the end of the stream the same token
//! comes back (GetLogEvents API reference:
//! <https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_GetLogEvents.html>).
//! So a read goes on from an empty page or a page cut by the size bound,
//! and stops on a repeated token, on enough lines, or after a few pages.

use std::future::Future;

use fossa_web::model::LogLine;

/// One page as GetLogEvents gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Its events, oldest first.
    pub lines: Vec<LogLine>,
    /// `nextForwardToken`.
    pub forward: Option<String>,
    /// `nextBackwardToken`.
    pub backward: Option<String>,
}

/// A page this large (bytes of messages) may have been cut by the 1 MB bound.
const NEAR_PAGE_BOUND: usize = 900 * 1024;

/// Reads up to `limit` lines from the head (`from_head`: the oldest first,
/// following forward tokens) or the tail (the newest, following backward
/// tokens), in at most `max_pages` calls of `fetch` (given the token, `None`
/// first). The lines come oldest first.
pub async fn follow<E, F, Fut>(
    from_head: bool,
    limit: usize,
    max_pages: usize,
    mut fetch: F,
) -> Result<Vec<LogLine>, E>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page, E>>,
{
    let mut out: Vec<LogLine> = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..max_pages.max(1) {
        let page = fetch(token.clone()).await?;
        let bytes: usize = page.lines.iter().map(|l| l.text.len()).sum();
        let empty = page.lines.is_empty();
        let next = if from_head {
            page.forward
        } else {
            page.backward
        };
        if from_head {
            out.extend(page.lines);
        } else {
            let mut older = page.lines;
            older.append(&mut out);
            out = older;
        }
        let more = empty || bytes >= NEAR_PAGE_BOUND;
        if out.len() >= limit || !more || next.is_none() || next == token {
            break;
        }
        token = next;
    }
    if out.len() > limit {
        if from_head {
            out.truncate(limit);
        } else {
            out.drain(..out.len() - limit);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn line(n: i64) -> LogLine {
        LogLine {
            at: n,
            text: format!("line {n}"),
        }
    }

    /// A stream as CloudWatch pages it: `pages[i]` under token `t{i}`, each
    /// page's forward token the next one, the last repeating its own.
    fn stream(pages: Vec<Vec<LogLine>>) -> impl Fn(Option<String>) -> Page {
        move |token| {
            let i: usize = token.map_or(0, |t| t[1..].parse().unwrap());
            let last = pages.len() - 1;
            Page {
                lines: pages[i.min(last)].clone(),
                forward: Some(format!("t{}", (i + 1).min(last))),
                backward: Some(format!("t{}", (i + 1).min(last))),
            }
        }
    }

    #[tokio::test]
    async fn empty_pages_before_the_end_are_followed() {
        let s = stream(vec![vec![], vec![], vec![line(1), line(2)], vec![]]);
        let calls = RefCell::new(0);
        let got = follow(true, 100, 10, |t| {
            *calls.borrow_mut() += 1;
            let p = s(t);
            async move { Ok::<_, ()>(p) }
        })
        .await
        .unwrap();
        assert_eq!(got, [line(1), line(2)]);
        assert_eq!(*calls.borrow(), 3, "it stops at the first page with lines");
    }

    #[tokio::test]
    async fn a_full_page_is_one_call_and_the_bounds_hold() {
        let s = stream(vec![(1..=5).map(line).collect(), vec![line(6)]]);
        let calls = RefCell::new(0);
        let got = follow(true, 3, 10, |t| {
            *calls.borrow_mut() += 1;
            let p = s(t);
            async move { Ok::<_, ()>(p) }
        })
        .await
        .unwrap();
        assert_eq!(got, [line(1), line(2), line(3)]);
        assert_eq!(*calls.borrow(), 1);
        // The tail keeps the newest; an endless run of empty pages stops at max_pages.
        let got = follow(false, 2, 10, |t| {
            let p = s(t);
            async move { Ok::<_, ()>(p) }
        })
        .await
        .unwrap();
        assert_eq!(got, [line(4), line(5)]);
        let calls = RefCell::new(0);
        let got = follow(true, 10, 4, |_| {
            *calls.borrow_mut() += 1;
            let n = *calls.borrow();
            async move {
                Ok::<_, ()>(Page {
                    lines: vec![],
                    forward: Some(format!("x{n}")),
                    backward: None,
                })
            }
        })
        .await
        .unwrap();
        assert!(got.is_empty());
        assert_eq!(*calls.borrow(), 4);
    }

    #[tokio::test]
    async fn a_big_page_goes_on_and_a_repeated_token_ends() {
        let big = LogLine {
            at: 1,
            text: "x".repeat(NEAR_PAGE_BOUND),
        };
        let s = stream(vec![vec![big.clone()], vec![line(2)], vec![line(3)]]);
        let got = follow(true, 100, 10, |t| {
            let p = s(t);
            async move { Ok::<_, ()>(p) }
        })
        .await
        .unwrap();
        assert_eq!(got, [big, line(2)]);
    }
}
