//! The filtered history as a download (`/api/v1/tasks/export`): CSV or JSON, streamed.

use rocket::http::Status;
use rocket::{get, State};
use serde_json::Value;

use super::tasks::Filters;
use super::{api_error, ApiResult, FleetState};
use crate::auth::User;
use crate::fmt;
use crate::model::TaskRow;

type Lines = std::pin::Pin<Box<dyn rocket::futures::Stream<Item = String> + Send>>;

/// The whole filtered history as a download.
pub struct Export {
    content_type: rocket::http::ContentType,
    file_name: &'static str,
    lines: Lines,
}

impl<'r> rocket::response::Responder<'r, 'r> for Export {
    fn respond_to(self, req: &'r rocket::Request<'_>) -> rocket::response::Result<'r> {
        let mut r = rocket::response::stream::TextStream(self.lines).respond_to(req)?;
        r.set_header(self.content_type);
        r.set_raw_header(
            "Content-Disposition",
            format!("attachment; filename=\"{}\"", self.file_name),
        );
        Ok(r)
    }
}

/// One CSV field: quoted, and a leading `= + - @` made inert (a
/// spreadsheet would run it as a formula).
fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    format!("\"{}\"", v.replace('"', "\"\""))
}

fn csv_row(r: &TaskRow) -> String {
    let t = &r.task;
    let fields = [
        t.task_id.clone(),
        t.model_class.clone(),
        t.method.clone().unwrap_or_default(),
        t.status.to_string(),
        r.worker_id.clone(),
        t.started.map(fmt::iso_time).unwrap_or_default(),
        t.finished.map(fmt::iso_time).unwrap_or_default(),
        t.duration().map(|d| d.to_string()).unwrap_or_default(),
        t.results.as_ref().map(Value::to_string).unwrap_or_default(),
    ];
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// The task history (filtered like `/api/v1/tasks`) as CSV or JSON,
/// streamed page by page so a long history never sits in memory whole.
#[get("/api/v1/tasks/export?<format>&<model>&<status>&<parents>")]
pub fn export(
    _user: User,
    fleet: &State<FleetState>,
    format: Option<&str>,
    model: Option<&str>,
    status: Option<&str>,
    parents: Option<bool>,
) -> Result<Export, ApiResult> {
    let f = Filters::new(model, status, None, parents)
        .map_err(|e| api_error(Status::BadRequest, e.to_string()))?;
    let csv = match format.unwrap_or("csv") {
        "csv" => true,
        "json" => false,
        other => {
            return Err(api_error(
                Status::BadRequest,
                format!("format {other:?} is not offered: use csv or json"),
            ))
        }
    };
    let fleet = fleet.0.clone();
    let mut q = f.query(1000);
    let stream = rocket::response::stream::stream! {
        if csv {
            yield "task_id,model_class,method,status,worker,started,finished,duration_s,result\r\n".to_owned();
        } else {
            yield "[".to_owned();
        }
        let mut first = true;
        loop {
            let page = match fleet.history(q.clone()).await {
                Ok(p) => p,
                Err(e) => {
                    // The download ends with the reason instead of looking complete.
                    yield format!("\nexport stopped: the task history cannot be read: {}\n", e.message());
                    return;
                }
            };
            for row in &page.tasks {
                if csv {
                    yield csv_row(row);
                } else {
                    let sep = if first { "" } else { "," };
                    yield format!("{sep}\n{}", serde_json::to_string(row).unwrap_or_default());
                }
                first = false;
            }
            match page.next_before {
                Some(b) => q.before = Some(b),
                None => break,
            }
        }
        if !csv {
            yield "\n]\n".to_owned();
        }
    };
    let (content_type, file_name) = if csv {
        (rocket::http::ContentType::CSV, "fossa-tasks.csv")
    } else {
        (rocket::http::ContentType::JSON, "fossa-tasks.json")
    };
    Ok(Export {
        content_type,
        file_name,
        lines: Box::pin(stream),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_made_inert() {
        assert_eq!(csv_field("plain"), "\"plain\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        for f in ["=HYPERLINK(\"x\")", "+1", "-1", "@SUM(A1)"] {
            assert!(csv_field(f).starts_with("\"'"), "{f}");
        }
    }
}
