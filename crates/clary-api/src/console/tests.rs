//! The console's gate (sign-in, sessions, CSRF, one-time links), its escaping of user data,
//! and the time the training-jobs page takes with 10,000 jobs.

use super::*;
use clary_control::domain::training::{InputMode, S3Location, TrainingJobSpec};
use std::time::Instant;

const AK: &str = "AKIACONSOLETEST";
const SK: &str = "console-test-secret-key";

pub(super) fn state(dir: &std::path::Path) -> Arc<ApiState> {
    let store = clary_store::LocalStore::open(dir.join("objects")).unwrap();
    crate::test_state(dir, crate::Backing::Local(store), AK, SK)
}

/// Rows written straight into the database (no job runs): `n` plain ones, and one whose
/// hyperparameter and status message are markup.
fn seed(dir: &std::path::Path, n: usize) {
    let db = clary_control::store::Db::open(&dir.join("data").join("clary.db")).unwrap();
    let spec = TrainingJobSpec {
        image: "img".into(),
        input_mode: InputMode::File,
        instance_type: "ml.c5.xlarge".into(),
        instance_count: 1,
        channels: vec![],
        output: S3Location {
            bucket: "b".into(),
            prefix: "out".into(),
        },
        hyperparameters: vec![("lr".into(), "<script>alert(1)</script>".into())],
        environment: vec![],
        max_runtime_secs: 60,
        checkpoints: None,
        max_retries: 0,
        metric_definitions: vec![],
        profiler: Default::default(),
        debug_rules: vec![],
        container: None,
    };
    let spec = serde_json::to_string(&spec).unwrap().replace('\'', "''");
    let mut sql = String::from("BEGIN;");
    let statuses = ["Completed", "Failed", "InProgress", "Stopped"];
    for i in 0..n {
        let status = statuses[i % statuses.len()];
        sql.push_str(&format!(
            "INSERT INTO training_jobs (name, arn, request, status, secondary_status, creation_time, last_modified_time, runtime)
             VALUES ('job-{i:05}', 'arn:job-{i:05}', '{{}}', '{status}', '{}', {t}, {t}, 'mxnet-1.9');",
            if status == "InProgress" { "Training" } else { status },
            t = 1_700_000_000.0 + i as f64,
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO training_jobs (name, arn, request, status, secondary_status, status_message, creation_time, last_modified_time, runtime, spec)
         VALUES ('evil', 'arn:evil', '{{}}', 'Failed', 'Failed', '<img src=x onerror=alert(1)>', 1.0, 1.0, 'mxnet-1.9', '{spec}');
         COMMIT;"
    ));
    db.lock().execute_batch(&sql).unwrap();
}

fn request(method: &str, uri: &str, cookie: Option<&str>) -> http::request::Parts {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:7070");
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    b.body(()).unwrap().into_parts().0
}

async fn call(
    state: &Arc<ApiState>,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let parts = request(method, uri, cookie);
    let form = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let resp = dispatch(state.clone(), &parts, form).await;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap()[name.len() + 1..].to_string())
}

/// Signs in with `ak`/`sk` through the form; the session cookie when accepted.
async fn sign_in(state: &Arc<ApiState>, ak: &str, sk: &str) -> (StatusCode, Option<String>) {
    let (_, h, _) = call(state, "GET", "/_clary/console/sign-in", None, &[]).await;
    let form_token = cookie_value(&h, "clary_console_sign_in").unwrap();
    let cookie = format!("clary_console_sign_in={form_token}");
    let (status, h, _) = call(
        state,
        "POST",
        "/_clary/console/sign-in",
        Some(&cookie),
        &[
            ("form", &form_token),
            ("access_key", ak),
            ("secret_key", sk),
        ],
    )
    .await;
    (status, cookie_value(&h, auth::SESSION_COOKIE))
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    page[at..at + 64].to_string()
}

#[tokio::test]
async fn nothing_is_readable_without_signing_in_with_the_servers_key_pair() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    seed(dir.path(), 3);
    // Unsigned: a page redirects to the form, a stream or an action gets a bare 401.
    let (s, h, body) = call(&st, "GET", "/_clary/console/training-jobs", None, &[]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/_clary/console/sign-in");
    assert!(body.is_empty());
    let (s, _, body) = call(
        &st,
        "GET",
        "/_clary/console/training-jobs/job-00001/events",
        None,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(!body.contains("job-00001"));
    let (s, _, _) = call(
        &st,
        "POST",
        "/_clary/console/training-jobs/job-00001/stop",
        None,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A forged cookie is nobody.
    let (s, _, _) = call(
        &st,
        "GET",
        "/_clary/console/training-jobs",
        Some("clary_console=0000"),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);

    // Wrong secret, or a key pair that is not the server's: refused, no session.
    assert_eq!(sign_in(&st, AK, "nope").await.1, None);
    assert_eq!(sign_in(&st, "AKIAOTHER", SK).await.1, None);
    let (s, session) = sign_in(&st, AK, SK).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let session = session.unwrap();

    // The session cookie's attributes.
    let (_, h, _) = call(&st, "GET", "/_clary/console/sign-in", None, &[]).await;
    let form_token = cookie_value(&h, "clary_console_sign_in").unwrap();
    let (_, h, _) = call(
        &st,
        "POST",
        "/_clary/console/sign-in",
        Some(&format!("clary_console_sign_in={form_token}")),
        &[
            ("form", &form_token),
            ("access_key", AK),
            ("secret_key", SK),
        ],
    )
    .await;
    let set = h
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("clary_console="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/_clary/console"] {
        assert!(set.contains(attr), "{set}");
    }

    // Signed in: the page, and no secret anywhere in it.
    let cookie = format!("clary_console={session}");
    let (s, h, page) = call(
        &st,
        "GET",
        "/_clary/console/training-jobs",
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("job-00002"), "{page}");
    assert!(!page.contains(SK));
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
}

#[tokio::test]
async fn a_scoped_key_cannot_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let key = st
        .control
        .credentials
        .issue(
            clary_control::domain::credentials::Holder::Job {
                kind: clary_control::domain::job::Kind::TrainingJob,
                name: "job-1".into(),
            },
            vec![],
        )
        .unwrap();
    assert_eq!(sign_in(&st, &key.access_key, &key.secret_key).await.1, None);
}

#[tokio::test]
async fn every_action_needs_the_sessions_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    seed(dir.path(), 3);
    let session = sign_in(&st, AK, SK).await.1.unwrap();
    let cookie = format!("clary_console={session}");
    let (_, _, page) = call(
        &st,
        "GET",
        "/_clary/console/training-jobs/job-00002",
        Some(&cookie),
        &[],
    )
    .await;
    let csrf = csrf_of(&page);
    let stop = "/_clary/console/training-jobs/job-00002/stop";
    for form in [vec![], vec![("csrf", "0".repeat(64))]] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, _, _) = call(&st, "POST", stop, Some(&cookie), &form).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        st.control.training.get("job-00002").unwrap().state.status,
        clary_control::domain::job::JobStatus::InProgress
    );
    // Sign-out is an action too.
    let (s, _, _) = call(&st, "POST", "/_clary/console/sign-out", Some(&cookie), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &st,
        "POST",
        "/_clary/console/sign-out",
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = call(
        &st,
        "GET",
        "/_clary/console/training-jobs",
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "signed out");
}

#[tokio::test]
async fn a_one_time_link_signs_in_once() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let token = auth::sign_in_link_token(SK, std::process::id(), clary_control::now_secs());
    let use_link = |token: String| {
        let st = st.clone();
        async move {
            let (_, h, page) = call(
                &st,
                "GET",
                &format!("/_clary/console/sign-in?link={token}"),
                None,
                &[],
            )
            .await;
            assert!(!page.contains(SK));
            let form_token = cookie_value(&h, "clary_console_sign_in").unwrap();
            let (_, h, _) = call(
                &st,
                "POST",
                "/_clary/console/sign-in",
                Some(&format!("clary_console_sign_in={form_token}")),
                &[("form", &form_token), ("link", &token)],
            )
            .await;
            cookie_value(&h, auth::SESSION_COOKIE)
        }
    };
    assert!(use_link(token.clone()).await.is_some());
    assert!(use_link(token.clone()).await.is_none(), "used twice");
    // Made with another secret, for another server process, or expired: refused.
    let other = auth::sign_in_link_token("other", std::process::id(), clary_control::now_secs());
    assert!(use_link(other).await.is_none());
    let stale = auth::sign_in_link_token(SK, std::process::id() + 1, clary_control::now_secs());
    assert!(use_link(stale).await.is_none());
    let expired = auth::sign_in_link_token(SK, std::process::id(), 1000.0);
    assert!(use_link(expired).await.is_none());
}

#[tokio::test]
async fn user_data_is_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    seed(dir.path(), 0);
    let session = sign_in(&st, AK, SK).await.1.unwrap();
    let (s, _, page) = call(
        &st,
        "GET",
        "/_clary/console/training-jobs/evil",
        Some(&format!("clary_console={session}")),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("<img src=x"));
}

/// The issue's bar: the jobs page with 10,000 jobs renders in under 300 ms (paged in SQL: one
/// query for 50 rows). Measured through the whole console path, signed in.
#[tokio::test]
async fn the_jobs_page_with_10000_jobs_renders_fast() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    seed(dir.path(), 10_000);
    let session = sign_in(&st, AK, SK).await.1.unwrap();
    let cookie = format!("clary_console={session}");
    let mut worst = std::time::Duration::ZERO;
    for uri in [
        "/_clary/console/training-jobs",
        "/_clary/console/training-jobs?page=150",
        "/_clary/console/training-jobs?status=Failed&sort=name",
        "/_clary/console/training-jobs?q=job-09",
    ] {
        let started = Instant::now();
        let (s, _, page) = call(&st, "GET", uri, Some(&cookie), &[]).await;
        let took = started.elapsed();
        worst = worst.max(took);
        assert_eq!(s, StatusCode::OK);
        assert!(page.matches("<tr data-job=").count() == 50, "{uri}");
        println!("{uri}: {took:?}");
    }
    println!("10,000 jobs: slowest page {worst:?}");
    assert!(
        worst < std::time::Duration::from_millis(300),
        "took {worst:?}"
    );
}
